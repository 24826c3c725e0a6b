"""The inspection service over HTTP (FastAPI TestClient, SQLite): decisions, bad requests, limits, robustness."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from serve_fixtures import need_serve_extra, png_bytes, site_files, texture, tiff_bytes, train_tiny

need_serve_extra()

from fastapi.testclient import TestClient  # noqa: E402

from seminspect.inference import Inspector  # noqa: E402
from seminspect.serve.app import create_app  # noqa: E402
from seminspect.serve.config import ServeConfig  # noqa: E402


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> tuple[TestClient, Path, Path]:
    root = tmp_path_factory.mktemp("serve")
    ds, art = train_tiny(root)
    (root / "secret.png").write_bytes(png_bytes(texture(1)))  # outside the data root
    cfg = ServeConfig(db_url=str(root / "review.db"), data_root=ds, store=root / "store",
                      max_upload_bytes=2_000_000, max_pixels=300 * 300, max_views=15)
    app = create_app(Inspector.load(art), cfg)
    return TestClient(app, raise_server_exceptions=False), ds, art


def _error(resp, status: int, field: str | None) -> str:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and body["error"]["field"] == field, body
    assert body["error"]["problem"]
    return body["error"]["problem"]


def test_upload_8_and_16_bit_png_and_tiff_returns_and_stores_the_decision(service):
    client, _, _ = service
    for k, (bits, fmt) in enumerate([(8, "png"), (16, "png"), (8, "tiff"), (16, "tiff")]):
        resp = client.post("/v1/sites", files=site_files(k, bits=bits, fmt=fmt),
                           data={"sample_id": f"up{k}", "meta": json.dumps({"lot": "L7", "wafer": "3"})})
        assert resp.status_code == 201, resp.text
        out = resp.json()
        assert out["decision"]["sample_id"] == f"up{k}" and out["decision"]["route"] in {
            "review", "auto_normal", "auto_abnormal"}
        got = client.get(f"/v1/sites/{out['site_id']}").json()
        assert got["decision"] == out["decision"] and got["meta"] == {"lot": "L7", "wafer": "3"}
        assert [v["bits"] for v in got["views"]] == [bits, bits]


def test_json_reference_under_the_data_root_matches_the_inspector(service):
    client, ds, art = service
    m = pd.read_csv(ds / "manifest.csv", dtype=str, keep_default_na=False)
    sid = m.sample_id.iloc[0]
    rows = m[m.sample_id == sid]
    views = [{"role": r.role, "index": int(r["index"]), "path": r.path} for _, r in rows.iterrows()]
    resp = client.post("/v1/sites", json={"sample_id": sid, "views": views})
    assert resp.status_code == 201, resp.text
    from seminspect.data.dataset import SampleDataset

    sample = next(s for s in SampleDataset(ds) if s.sample_id == sid)
    want = Inspector.load(art).inspect([sample]).frame().iloc[0]
    assert resp.json()["decision"]["abnormal_prob"] == pytest.approx(float(want["abnormal_prob"]), abs=1e-6)
    assert resp.json()["decision"]["route"] == want["route"]


@pytest.mark.parametrize("path", ["../secret.png", "/etc/passwd", "a/../../secret.png", "..\\secret.png",
                                  "images/../../secret.png"])
def test_path_traversal_is_refused(service, path):
    client, _, _ = service
    resp = client.post("/v1/sites", json={"views": [{"role": "target", "index": 0, "path": path}]})
    assert resp.status_code in (400, 404)
    assert resp.json()["error"]["field"] == "views[0].path"


def test_a_symlink_out_of_the_data_root_is_refused(service, tmp_path):
    client, ds, _ = service
    link = ds / "escape.png"
    if not link.exists():
        link.symlink_to(ds.parent / "secret.png")
    problem = _error(client.post("/v1/sites", json={"views": [{"role": "target", "index": 0,
                                                                 "path": "escape.png"}]}), 400, "views[0].path")
    assert "outside" in problem


def test_bad_requests_are_4xx_json_naming_the_field(service):
    client, _, _ = service
    files = site_files(0)
    assert "unknown view role" in _error(client.post("/v1/sites", files={"bogus_0": files["target_0"]}),
                                         422, "bogus_0")
    assert "missing" in _error(client.post("/v1/sites", json={"sample_id": "x"}), 422, "views")
    _error(client.post("/v1/sites", json={"views": [{"role": "target", "index": 0}]}), 422, "views[0].path")
    _error(client.post("/v1/sites", json={"views": [{"role": "target", "path": "a.png"}]}), 422, "views[0].index")
    corrupt = {"target_0": ("t.png", b"\x89PNG\r\n\x1a\n garbage", "image/png")}
    assert "cannot decode" in _error(client.post("/v1/sites", files=corrupt), 422, "target_0")
    floats = {"target_0": ("t.tiff", tiff_bytes(np.zeros((32, 32), np.float32)), "image/tiff")}
    assert "8- or 16-bit" in _error(client.post("/v1/sites", files=floats), 422, "target_0")
    rgb = np.dstack([texture(1), texture(2), texture(3)])
    assert "colour" in _error(client.post("/v1/sites", files={"target_0": ("t.png", png_bytes(rgb), "x")}),
                              422, "target_0")
    _error(client.post("/v1/sites", files={"target_0": ("t.jpg", b"xx", "image/jpeg")}), 415, "target_0")
    _error(client.post("/v1/sites", files={"target_7": files["target_0"]}), 422, "target_7")
    _error(client.post("/v1/sites", files=files, data={"meta": "[1, 2]"}), 422, "meta")
    _error(client.post("/v1/sites", json={"meta": "x", "views": []}), 422, "meta")
    _error(client.post("/v1/sites", files={"reference_0": files["reference_0"]}), 422, "views")  # no target
    _error(client.post("/v1/sites", content=b"{not json", headers={"content-type": "application/json"}), 400, "body")
    _error(client.post("/v1/sites", content=b"x", headers={"content-type": "text/plain"}), 415, "content-type")
    _error(client.get("/v1/sites/999999"), 404, "site_id")
    _error(client.get("/v1/sites/abc"), 422, "site_id")
    assert client.get("/healthz").json() == {"status": "ok"}


def test_limits_upload_size_views_and_pixels(service):
    client, _, _ = service
    big = {"target_0": ("t.png", png_bytes(texture(5, size=400)), "image/png")}  # 160,000 px > 90,000
    assert "pixels" in _error(client.post("/v1/sites", files=big), 413, "target_0")
    noise = np.random.default_rng(0).integers(0, 65535, (1200, 1200), dtype=np.uint16)
    huge = {"target_0": ("t.tiff", tiff_bytes(noise), "image/tiff")}  # ~2.9 MB > 2 MB
    _error(client.post("/v1/sites", files=huge), 413, "body")
    sixteen = [{"role": "target", "index": 0, "path": "x.png"}] * 16
    assert "at most 15" in _error(client.post("/v1/sites", json={"views": sixteen}), 413, "views")


def test_requests_in_flight_are_bounded(service):
    client, _, _ = service
    state = client.app.state
    state.in_flight = state.cfg.max_in_flight
    try:
        resp = client.post("/v1/sites", files=site_files(3))
        assert resp.status_code == 503 and "busy" in resp.json()["error"]["problem"]
    finally:
        state.in_flight = 0
    assert client.post("/v1/sites", files=site_files(3)).status_code == 201


def test_an_exception_in_one_request_leaves_the_service_serving_and_writes_nothing(service, monkeypatch):
    client, _, _ = service
    from sqlalchemy import func, select

    from seminspect.serve import store
    from seminspect.serve.tables import Site, SiteView

    state = client.app.state

    def count() -> tuple[int, int]:
        with state.sessions() as s:
            return s.scalar(select(func.count(Site.id))), s.scalar(select(func.count(SiteView.id)))

    before = count()
    real = store.Decision

    def broken(*_a, **_k):  # the decision insert fails after the site and its views were added
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(store, "Decision", broken)
    resp = client.post("/v1/sites", files=site_files(9))
    assert resp.status_code == 500 and "disk on fire" in resp.json()["error"]["problem"]
    assert count() == before  # one transaction: no half-written site
    monkeypatch.setattr(store, "Decision", real)
    monkeypatch.setattr(state.inspector, "inspect", broken)
    assert client.post("/v1/sites", files=site_files(9)).status_code == 500
    monkeypatch.undo()
    assert client.get("/readyz").json()["status"] == "ready"
    assert client.post("/v1/sites", files=site_files(9)).status_code == 201
    assert count()[0] == before[0] + 1


def test_openapi_docs_are_served(service):
    client, _, _ = service
    assert "/v1/sites" in client.get("/openapi.json").json()["paths"]

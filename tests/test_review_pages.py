"""The review page over HTTP (TestClient): sign-in required for every write, claims visible, conflicts refused."""

from __future__ import annotations

import json

import pytest

from serve_fixtures import need_serve_extra, site_files, train_tiny

need_serve_extra()

from fastapi.testclient import TestClient  # noqa: E402

from seminspect.serve.app import create_app  # noqa: E402
from seminspect.serve.auth import add_user  # noqa: E402
from seminspect.serve.config import ServeConfig  # noqa: E402


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    root = tmp_path_factory.mktemp("pages")
    ds, art = train_tiny(root)
    app = create_app(art, ServeConfig(db_url=str(root / "review.db"), data_root=ds, store=root / "store"))
    with app.state.sessions.begin() as s:
        add_user(s, "ana", "password-a")
        add_user(s, "ben", "password-b")
    client = TestClient(app)
    for k in range(3):
        client.post("/v1/sites", files=site_files(k), data={"meta": json.dumps({"lot": "L1"})})
    return app


def _signed_in(app, name: str, password: str) -> TestClient:
    c = TestClient(app)
    assert c.post("/review/login", data={"name": name, "password": password}, follow_redirects=False).status_code == 303
    return c


def test_writes_and_images_need_a_signed_in_reviewer(app):
    anon = TestClient(app)
    assert anon.get("/review", follow_redirects=False).status_code == 303
    assert anon.post("/review/api/task/1/decision", json={"label": "normal"}).status_code == 401
    assert anon.post("/review/api/undo").status_code == 401
    assert anon.get("/review/image/view/1.png").status_code == 401
    assert anon.post("/review/login", data={"name": "ana", "password": "nope"}).status_code == 401
    anon.cookies.set("seminspect_session", "1.99999999999.forged")
    assert anon.post("/review/api/undo").status_code == 401


def test_a_claimed_task_shows_who_holds_it_and_refuses_the_other_reviewer(app):
    ana, ben = _signed_in(app, "ana", "password-a"), _signed_in(app, "ben", "password-b")
    assert ana.get("/review/task/2").status_code == 200
    page = ben.get("/review/task/2").text
    assert "ana is reviewing this site" in page
    resp = ben.post("/review/api/task/2/decision", json={"label": "normal"})
    assert resp.status_code == 409 and "ana" in resp.json()["error"]["problem"]
    bad = ana.post("/review/api/task/2/decision", json={"label": "banana"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "label"
    ok = ana.post("/review/api/task/2/decision", json={"label": "normal"})
    assert ok.status_code == 200 and ok.json()["remaining"] == 2
    assert ana.get("/review/image/view/1.png").headers["content-type"] == "image/png"
    assert ana.get("/review/image/diff/1/0.png").status_code == 200
    assert ana.get("/review?status=done").text.count("/review/task/2?") == 1


def test_the_anomaly_map_of_a_joined_artefact_is_shown_on_one_fixed_scale(tmp_path):
    import io

    from PIL import Image

    from seminspect.data.dataset import SampleDataset
    from seminspect.inference.join import join
    from seminspect.models.anomaly import AnomalyConfig, AnomalyDetector

    ds, art = train_tiny(tmp_path, n=48)
    det = AnomalyDetector(AnomalyConfig(backbone="tiny", pretrained=False, out_indices=[0, 1, 2], layers=[0, 1],
                                        conditioning="reference", sigma=2.0, max_bank_patches=200, batch_size=8))
    det.fit(SampleDataset(ds).split("train"))
    det.save(tmp_path / "anomaly")
    join(art, tmp_path / "anomaly", out=tmp_path / "joined", normals=ds, split="calib")
    app = create_app(tmp_path / "joined", ServeConfig(db_url=str(tmp_path / "r.db"), data_root=ds))
    with app.state.sessions.begin() as s:
        add_user(s, "ana", "password-a")
    ana = _signed_in(app, "ana", "password-a")
    out = ana.post("/v1/sites", files=site_files(1)).json()
    assert out["decision"]["anomaly_score"] is not None
    task = out["review_task"]
    assert task, out["decision"]["route"]
    assert "anomaly map over target 0" in ana.get(f"/review/task/{task}").text
    resp = ana.get(f"/review/image/anomaly/{out['site_id']}.png")
    assert resp.status_code == 200
    assert Image.open(io.BytesIO(resp.content)).size == (64, 64)

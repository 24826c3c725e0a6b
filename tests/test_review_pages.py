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

"""The review page in a real browser: Debian's headless Chromium driven by Playwright over loopback.

Sign in, review 5 sites with the keyboard only (suggestion keys, N, the type picker), undo the last one,
then check the database rows and the exported dataset. ``SEMINSPECT_SCREENSHOTS=DIR`` also saves
screenshots of the queue and a site page there (docs/review.md uses them).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from serve_fixtures import need_serve_extra, site_files, train_tiny

need_serve_extra()
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")

import uvicorn  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import select  # noqa: E402

from seminspect.serve.app import create_app  # noqa: E402
from seminspect.serve.auth import add_user  # noqa: E402
from seminspect.serve.config import ServeConfig  # noqa: E402
from seminspect.serve.tables import ReviewerAction, ReviewTask  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    ds, art = train_tiny(root)
    app = create_app(art, ServeConfig(db_url=str(root / "review.db"), data_root=ds, store=root / "store"))
    with app.state.sessions.begin() as s:
        add_user(s, "ana", "correct horse")
    client = TestClient(app)
    m = pd.read_csv(ds / "manifest.csv", dtype=str, keep_default_na=False)
    for k, sid in enumerate(m.sample_id.unique()[:6]):  # by path under the data root
        rows = m[m.sample_id == sid]
        views = [{"role": r.role, "index": int(r["index"]), "path": r.path} for _, r in rows.iterrows()]
        meta = {"lot": f"L{k % 2}", "wafer": str(k), "tool": "SEM-3", "product": "P9"}
        resp = client.post("/v1/sites", json={"sample_id": sid, "views": views, "meta": meta})
        assert resp.status_code == 201 and resp.json()["review_task"], resp.text
    resp = client.post("/v1/sites", files=site_files(7, size=96), data={"sample_id": "uploaded"})  # by upload
    assert resp.status_code == 201 and resp.json()["review_task"], resp.text
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield app, f"http://127.0.0.1:{port}", root
    server.should_exit = True
    thread.join(10)


def test_review_five_sites_with_the_keyboard_undo_one_and_export(served):
    app, base, root = served
    shots = os.environ.get("SEMINSPECT_SCREENSHOTS")
    keys = [["1"], ["n"], ["t", *"spu", "Enter"], ["2"], ["3"]]
    expected: dict[int, str] = {}
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(15000)
        page.goto(f"{base}/review")
        assert "/review/login" in page.url
        page.fill("#name", "ana")
        page.fill("#password", "wrong password")
        page.click("#signin")
        assert page.locator("#error").inner_text() == "unknown name or password"
        page.fill("#name", "ana")
        page.fill("#password", "correct horse")
        page.click("#signin")
        assert page.locator("#remaining").inner_text() == "7"
        if shots:
            page.screenshot(path=str(Path(shots) / "review_queue.png"), full_page=True)
        page.click("#start")
        page.wait_for_selector("body[data-ready='1']")
        for k, seq in enumerate(keys):
            data = json.loads(page.locator("#task-data").inner_text())
            if shots and k == 0:
                page.screenshot(path=str(Path(shots) / "review_site.png"), full_page=True)
            for key in seq:
                page.keyboard.press(key)
            label = page.locator("#pending").inner_text()
            want = {"1": data["suggestions"][0], "n": "normal", "t": "spur", "2": data["suggestions"][1],
                    "3": data["suggestions"][2]}[seq[0]]
            assert label == want
            expected[data["task"]] = want
            with page.expect_navigation():
                page.keyboard.press("Enter")
            page.wait_for_selector("body[data-ready='1']")
            assert json.loads(page.locator("#task-data").inner_text())["task"] != data["task"]
        assert page.locator("#remaining").inner_text() == "2"
        last = list(expected)[-1]
        with page.expect_navigation():
            page.keyboard.press("u")
        page.wait_for_selector("body[data-ready='1']")
        assert json.loads(page.locator("#task-data").inner_text())["task"] == last
        assert page.locator("#remaining").inner_text() == "3"
        page.keyboard.press("ArrowLeft")
        page.wait_for_selector("body[data-ready='1']")
        browser.close()
    del expected[last]
    with app.state.sessions() as s:
        done = {t.id: t.label for t in s.scalars(select(ReviewTask).where(ReviewTask.status == "done"))}
        assert done == expected
        acts = [(a.action, a.undone) for a in s.scalars(select(ReviewerAction).order_by(ReviewerAction.id))]
        assert acts == [("label", False)] * 4 + [("label", True), ("undo", False)]
        from seminspect.serve.export import export_reviewed

        assert export_reviewed(s, root / "export") == 4
    from seminspect.data.dataset import SampleDataset
    from seminspect.data.validate import validate_dataset

    assert validate_dataset(root / "export", progress=False).ok
    labels = sorted("normal" if not x.is_abnormal else x.defect_type for x in SampleDataset(root / "export"))
    assert labels == sorted(expected.values())

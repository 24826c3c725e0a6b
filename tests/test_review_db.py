"""The review database on SQLite and PostgreSQL (``SEMINSPECT_TEST_PG_URL``): schema, queue, claims, audit, export."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from serve_fixtures import need_serve_extra

need_serve_extra()

from sqlalchemy import func, inspect, select, text  # noqa: E402

from seminspect.data.imageio import write_image  # noqa: E402
from seminspect.data.taxonomy import Taxonomy  # noqa: E402
from seminspect.serve import queue as q  # noqa: E402
from seminspect.serve.auth import add_user, authenticate, make_cookie, read_cookie  # noqa: E402
from seminspect.serve.database import make_engine, migrate, sessions  # noqa: E402
from seminspect.serve.stats import review_stats  # noqa: E402
from seminspect.serve.store import ensure_model_version, save_site  # noqa: E402
from seminspect.serve.tables import Base, ReviewerAction, ReviewTask, Site, SiteView, utcnow  # noqa: E402
from seminspect.serve.uploads import StoredView  # noqa: E402

TAX = Taxonomy.builtin("deeppcb")
LABELS = {"normal", *TAX.leaves}
PG_URL = os.environ.get("SEMINSPECT_TEST_PG_URL")


def _reset_pg(url: str) -> None:
    engine = make_engine(url)
    Base.metadata.drop_all(engine)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'review.db'}"
    if not PG_URL:
        pytest.skip("PostgreSQL not configured: set SEMINSPECT_TEST_PG_URL (e.g. postgresql+psycopg://u:p@host/db)")
    _reset_pg(PG_URL)
    return PG_URL


@pytest.fixture
def db(db_url):
    engine = make_engine(db_url)
    assert migrate(engine) == "0001"
    yield sessions(engine)
    engine.dispose()


def _row(sid: str, route: str, p: float, top1: str, p1: float, flag: bool = False, typ: str | None = None) -> dict:
    return {"sample_id": sid, "model_version": "v1", "route": route, "abnormal_prob": p, "type": typ,
            "top1_type": top1, "top1_prob": p1, "anomaly_flag": flag, "route_reason": "test", "n_views": 2}


def _views(root: Path, k: int) -> list[StoredView]:
    out = []
    for role in ("target", "reference"):
        img = np.random.default_rng(k).integers(0, 255, (32, 32), dtype=np.uint8)
        path = root / f"{k}_{role}.png"
        write_image(path, img)
        out.append(StoredView(role, 0, str(path), "0" * 64, 32, 32, 8))
    return out


def _fill(db, root: Path) -> dict[str, int]:
    rows = [_row("calm", "review", 0.5, "open", 0.3),                       # confidence 0.15
            _row("sure", "review", 0.9, "short", 0.9),                      # confidence 0.81
            _row("flagged", "review", 0.9, "short", 0.95, flag=True),       # anomaly hit: first
            _row("auto", "auto_abnormal", 0.99, "mousebite", 0.99, typ="mousebite"),  # no task
            _row("untyped", "auto_abnormal", 0.99, "spur", 0.4),            # type left to a person
            _row("normal", "auto_normal", 0.01, "open", 0.5)]               # no task
    ids = {}
    with db.begin() as s:
        ensure_model_version(s, "v1", TAX.to_dict(), "art")
        for k, r in enumerate(rows):
            ids[r["sample_id"]] = save_site(s, r["sample_id"], "upload", {"lot": f"L{k % 2}"}, _views(root, k), r).id
    return ids


def test_schema_is_migrated_once_and_has_every_table(db_url):
    engine = make_engine(db_url)
    assert migrate(engine) == migrate(engine) == "0001"
    names = set(inspect(engine).get_table_names())
    assert {"sites", "views", "model_versions", "decisions", "review_tasks", "reviewer_actions",
            "reviewers", "alembic_version"} <= names


def test_review_tasks_queue_order_and_filters(db, tmp_path):
    _fill(db, tmp_path)
    with db() as s:
        order = [i.site.sample_id for i in q.queue(s)]
        assert order == ["flagged", "calm", "untyped", "sure"]
        assert q.remaining(s) == 4
        assert [i.site.sample_id for i in q.queue(s, {"lot": "L0"})] == ["flagged", "calm", "untyped"]
        assert [i.site.sample_id for i in q.queue(s, {"route": "auto_abnormal"})] == ["untyped"]
        assert [i.site.sample_id for i in q.queue(s, {"type": "short"})] == ["flagged", "sure"]


def test_claims_decisions_undo_and_the_audit_trail(db, tmp_path):
    _fill(db, tmp_path)
    with db.begin() as s:
        a, b = add_user(s, "ana", "password-a"), add_user(s, "ben", "password-b")
        first = q.queue(s)[0].task.id
        assert q.claim(s, first, a.id, 10)
        assert not q.claim(s, first, b.id, 10)
        with pytest.raises(q.ClaimConflict, match="ana"):
            q.decide(s, first, b.id, "short", LABELS, 10)
        with pytest.raises(ValueError, match="unknown label"):
            q.decide(s, first, a.id, "not-a-type", LABELS, 10)
        q.decide(s, first, a.id, "short", LABELS, 10)
        q.decide(s, first, a.id, "normal", LABELS, 10)  # changed her mind: previous value recorded
        second = q.queue(s)[0].task.id
        assert q.claim(s, second, b.id, 10)
        s.get(ReviewTask, second).claim_expires = utcnow() - timedelta(seconds=1)  # ben walked away
        s.flush()
        assert q.claim(s, second, a.id, 10)
        assert q.undo(s, a.id) == first
    with db() as s:
        task = s.get(ReviewTask, first)
        assert task.label == "short" and task.status == "done"
        trail = [(r.action, r.value, r.previous, r.undone)
                 for r in s.scalars(select(ReviewerAction).order_by(ReviewerAction.id))]
        assert trail == [("label", "short", None, False), ("label", "normal", "short", True),
                         ("undo", "short", "normal", False)]
        stats = review_stats(s)
        assert stats["queue"] == {"open": 3, "done": 1, "sites": 6}
        assert stats["decisions_per_reviewer"] == {"ana": 1}
        assert stats["agreement"]["short"] == {"reviewed": 1, "kept": 1, "rate": 1.0}
        assert list(stats["automation_per_day"].values())[0]["automatic"] == 2


def test_export_writes_a_dataset_that_validate_passes(db, tmp_path):
    from seminspect.data.dataset import SampleDataset
    from seminspect.data.validate import validate_dataset
    from seminspect.serve.export import export_reviewed

    _fill(db, tmp_path)
    with db.begin() as s:
        a = add_user(s, "ana", "password-a")
        items = q.queue(s)
        q.decide(s, items[0].task.id, a.id, "short", LABELS, 10)
        q.decide(s, items[1].task.id, a.id, "normal", LABELS, 10)
    with db() as s:
        assert export_reviewed(s, tmp_path / "out") == 2
    report = validate_dataset(tmp_path / "out", progress=False)
    assert report.ok, report
    got = {x.sample_id: (x.is_abnormal, x.defect_type, x.metadata["reviewer"]) for x in SampleDataset(tmp_path / "out")}
    assert got == {"flagged": (True, "short", "ana"), "calm": (False, None, "ana")}


def test_reviewer_passwords_are_argon2_hashed_and_cookies_signed(db):
    with db.begin() as s:
        user = add_user(s, "ana", "correct horse")
        assert user.password_hash.startswith("$argon2id$") and "correct" not in user.password_hash
        assert authenticate(s, "ana", "correct horse").id == user.id
        assert authenticate(s, "ana", "wrong") is None and authenticate(s, "nobody", "x") is None
        with pytest.raises(ValueError):
            add_user(s, "bob", "short")
    cookie = make_cookie("k", 7)
    assert read_cookie("k", cookie) == 7
    assert read_cookie("other", cookie) is None and read_cookie("k", "8" + cookie[1:]) is None
    assert read_cookie("k", make_cookie("k", 7, hours=-1)) is None


KILLED_WRITER = """
import sys, time
from seminspect.serve.database import make_engine, sessions
from seminspect.serve.tables import Site, SiteView
s = sessions(make_engine(sys.argv[1]))()
s.begin()
site = Site(sample_id="half", source="upload", meta={})
s.add(site); s.flush()
s.add(SiteView(site_id=site.id, role="target", view_index=0, path="x", sha256="0", height=1, width=1, bits=8))
s.flush()
print("written", flush=True)
time.sleep(60)
"""


def test_a_process_killed_mid_write_leaves_no_half_written_site(db, db_url, tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, db_url], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "written"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    with db() as s:
        assert s.scalar(select(func.count(Site.id))) == 0 and s.scalar(select(func.count(SiteView.id))) == 0

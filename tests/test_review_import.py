"""``seminspect review import``: a predict run fills the same review queue as the service, once."""

from __future__ import annotations

from serve_fixtures import need_serve_extra, train_tiny

need_serve_extra()

import pandas as pd  # noqa: E402
from sqlalchemy import func, select  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from seminspect.cli import app  # noqa: E402
from seminspect.inference.predict import predict  # noqa: E402
from seminspect.serve.database import make_engine, sessions  # noqa: E402
from seminspect.serve.store import needs_review  # noqa: E402
from seminspect.serve.tables import Decision, ReviewTask, Site, SiteView  # noqa: E402


def test_predict_decisions_become_sites_decisions_and_tasks_once(tmp_path):
    ds, art = train_tiny(tmp_path, n=32)
    out = tmp_path / "day3.parquet"
    predict(art, ds, out)
    db = str(tmp_path / "review.db")
    runner = CliRunner()
    first = runner.invoke(app, ["review", "import", str(art), str(out), str(ds), "--db", db])
    assert first.exit_code == 0, first.output
    table = pd.read_parquet(out)
    assert f"{len(table)} sites imported, 0 already there" in " ".join(first.output.split())
    again = runner.invoke(app, ["review", "import", str(art), str(out), str(ds), "--db", db])
    assert f"0 sites imported, {len(table)} already there" in " ".join(again.output.split())
    with sessions(make_engine(db))() as s:
        assert s.scalar(select(func.count(Site.id)).where(Site.source == "predict")) == len(table)
        assert s.scalar(select(func.count(Decision.id))) == len(table)
        assert s.scalar(select(func.count(SiteView.id))) == len(pd.read_csv(ds / "manifest.csv"))
        want = sum(needs_review(r) for r in table.to_dict("records"))
        assert s.scalar(select(func.count(ReviewTask.id))) == want > 0
        d = s.scalar(select(Decision).join(Site).where(Site.sample_id == table.sample_id.iloc[0]))
        assert d.abnormal_prob == table.abnormal_prob.iloc[0] and d.route == table.route.iloc[0]


def test_predict_with_db_fills_the_same_queue(tmp_path):
    ds, art = train_tiny(tmp_path, n=32)
    db = str(tmp_path / "review.db")
    res = CliRunner().invoke(app, ["predict", str(art), str(ds), "--out", str(tmp_path / "d.parquet"), "--db", db])
    assert res.exit_code == 0, res.output
    table = pd.read_parquet(tmp_path / "d.parquet")
    assert f"{len(table)} sites stored, 0 already there" in " ".join(res.output.split())
    with sessions(make_engine(db))() as s:
        assert s.scalar(select(func.count(Site.id)).where(Site.source == "predict")) == len(table)
        assert s.scalar(select(func.count(ReviewTask.id))) == sum(needs_review(r) for r in table.to_dict("records"))


def test_review_commands_migrate_add_user_stats_and_export(tmp_path):
    import json

    from seminspect.serve.auth import authenticate

    db = str(tmp_path / "cli.db")
    runner = CliRunner()
    assert "revision 0001" in runner.invoke(app, ["review", "migrate", "--db", db]).output
    added = runner.invoke(app, ["review", "add-user", "ana", "--db", db],
                          env={"SEMINSPECT_REVIEWER_PASSWORD": "s3cret-pw"})
    assert added.exit_code == 0, added.output
    with sessions(make_engine(db))() as s:
        assert authenticate(s, "ana", "s3cret-pw") is not None
    short = runner.invoke(app, ["review", "add-user", "bo", "--db", db], env={"SEMINSPECT_REVIEWER_PASSWORD": "x"})
    assert short.exit_code != 0
    stats = runner.invoke(app, ["review", "stats", "--db", db, "--json", str(tmp_path / "s.json")])
    assert stats.exit_code == 0, stats.output
    assert json.loads((tmp_path / "s.json").read_text())["queue"] == {"open": 0, "done": 0, "sites": 0}
    exported = runner.invoke(app, ["review", "export", str(tmp_path / "out"), "--db", db])
    assert exported.exit_code != 0 and "no reviewed sites" in str(exported.exception)
    assert not (tmp_path / "out").exists()

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

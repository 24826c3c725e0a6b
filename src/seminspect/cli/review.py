"""``seminspect review ...``: the review database from the command line (migrate, add-user, stats, export).

Needs the optional extra ``seminspect[serve]``; its modules are imported inside the commands.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from seminspect.cli._common import console
from seminspect.cli.serve import need_serve_extra
from seminspect.errors import SeminspectError

review_app = typer.Typer(help="The review database: migrate, add reviewers, statistics, export reviewed sites.",
                         no_args_is_help=True)
DB = typer.Option("seminspect-review.db", "--db", help="SQLite file or database URL (postgresql+psycopg://...).")


def _sessions(db: str):  # noqa: ANN202 - sessionmaker, imported lazily
    need_serve_extra()
    from seminspect.serve.database import make_engine, migrate, sessions

    engine = make_engine(db)
    migrate(engine)
    return sessions(engine)


@review_app.command("migrate")
def migrate_cmd(db: str = DB) -> None:
    """Create or upgrade the review database schema (idempotent)."""
    need_serve_extra()
    from seminspect.serve.database import make_engine, migrate

    console.print(f"schema at revision {migrate(make_engine(db))}")


@review_app.command("add-user")
def add_user_cmd(name: str = typer.Argument(..., help="Reviewer name (sign-in)."), db: str = DB,
                 password: str = typer.Option(..., prompt=True, hide_input=True, confirmation_prompt=True,
                                              envvar="SEMINSPECT_REVIEWER_PASSWORD")) -> None:
    """Add a reviewer (or set a new password); the password is stored argon2-hashed."""
    from seminspect.serve.auth import add_user

    try:
        with _sessions(db).begin() as s:
            add_user(s, name, password)
    except ValueError as exc:
        raise SeminspectError(str(exc)) from None
    console.print(f"reviewer {name!r} saved")


@review_app.command("stats")
def stats_cmd(db: str = DB, out: Path | None = typer.Option(None, "--json", help="Also write them here.")) -> None:
    """Queue size, decisions per reviewer, model-reviewer agreement per type, automation rate per day."""
    from seminspect.serve.stats import review_stats
    from seminspect.utils.io import atomic_write_text, finite_json

    with _sessions(db)() as s:
        stats = review_stats(s)
    text = json.dumps(finite_json(stats), indent=2, allow_nan=False)  # strict JSON: NaN written as null + note
    if out:
        atomic_write_text(out, text + "\n")
    console.print_json(text)


@review_app.command("export")
def export_cmd(out: Path = typer.Argument(..., help="Dataset folder to write."), db: str = DB) -> None:
    """Write the reviewed sites as a seminspect dataset (`seminspect validate` passes, `train` reads it)."""
    from seminspect.serve.export import export_reviewed

    try:
        with _sessions(db)() as s:
            n = export_reviewed(s, out)
    except ValueError as exc:
        raise SeminspectError(str(exc)) from None
    console.print(f"{n} reviewed sites written to {out}")


@review_app.command("import")
def import_cmd(artefact: Path = typer.Argument(..., help="The artefact predict ran with."),
               decisions: Path = typer.Argument(..., help="predict's decisions table (.parquet or .csv)."),
               data: Path = typer.Argument(..., help="The DATA predict read (dataset folder or manifest)."),
               db: str = DB) -> None:
    """Store a `seminspect predict` run in the review database: batch runs and the service fill one queue."""
    done, skipped = store_predictions(artefact, decisions, data, db)
    console.print(f"{done} sites imported, {skipped} already there")


def store_predictions(artefact: Path, decisions: Path, data: Path, db: str) -> tuple[int, int]:
    """``review import`` and ``predict --db``: a predict run's decisions into the review tables and queue."""
    from seminspect.inference import Inspector
    from seminspect.serve.app import rare_types_of
    from seminspect.serve.ingest import import_predictions

    sessions = _sessions(db)
    inspector = Inspector.load(artefact, with_anomaly=False)
    art = inspector.artefact
    try:
        return import_predictions(sessions, decisions, data, art.model_version, art.taxonomy.to_dict(),
                                  str(art.path), rare_types_of(inspector), log=console.print)
    except ValueError as exc:
        raise SeminspectError(str(exc)) from None


def register(app: typer.Typer) -> None:
    app.add_typer(review_app, name="review")

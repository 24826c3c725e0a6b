"""``seminspect serve``: the inspection service and review page (optional extra ``seminspect[serve]``).

FastAPI, uvicorn and SQLAlchemy are imported inside the command, so the CLI (and the core package)
work without the extra.
"""

from __future__ import annotations

from pathlib import Path

import typer

from seminspect.cli._common import console
from seminspect.errors import SeminspectError


def need_serve_extra() -> None:
    """One clear line when the optional dependencies are missing."""
    import importlib.util

    missing = [m for m in ("fastapi", "uvicorn", "sqlalchemy", "alembic", "multipart", "jinja2", "argon2")
               if importlib.util.find_spec(m) is None]
    if missing:
        raise SeminspectError(f"the serve extra is not installed (missing {', '.join(missing)}): "
                              "pip install 'seminspect[serve]'")


def serve(
    artefact: Path = typer.Argument(..., help="Inspection artefact folder (from `seminspect train` / `join`)."),
    db: str = typer.Option("seminspect-review.db", "--db", help="SQLite file or database URL (postgresql+psycopg://...)."),
    data_root: Path = typer.Option(..., "--data-root", help="The only folder JSON requests may reference files under."),
    store: Path | None = typer.Option(None, "--store", help="Uploaded views (default DATA_ROOT/.seminspect-uploads)."),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port"),
    max_upload_mb: float = typer.Option(64.0, "--max-upload-mb", help="Largest request body."),
    max_views: int = typer.Option(15, "--max-views", help="Views per site (<= 15)."),
    max_pixels: int = typer.Option(4096 * 4096, "--max-pixels", help="Pixels per view."),
    max_in_flight: int = typer.Option(8, "--max-in-flight", help="Concurrent inspections; more get 503."),
    claim_minutes: float = typer.Option(10.0, "--claim-minutes", help="How long a reviewer holds a task."),
    secret: str | None = typer.Option(None, "--secret", envvar="SEMINSPECT_SECRET",
                                      help="Signs session cookies (keep sign-ins across restarts)."),
) -> None:
    """Serve POST /v1/sites (judge and store a site), GET /v1/sites/{id}, /healthz, /readyz, /docs and /review."""
    need_serve_extra()
    import uvicorn

    from seminspect.serve.app import create_app
    from seminspect.serve.config import ServeConfig

    kwargs = {"secret": secret} if secret else {}
    cfg = ServeConfig(db_url=db, data_root=data_root, store=store, max_upload_bytes=int(max_upload_mb * 2**20),
                      max_views=max_views, max_pixels=max_pixels, max_in_flight=max_in_flight,
                      claim_minutes=claim_minutes, **kwargs)
    app = create_app(artefact, cfg)
    console.print(f"serving {artefact} on http://{host}:{port} (review page /review, API docs /docs)")
    uvicorn.run(app, host=host, port=port, log_level="info")


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)

"""The FastAPI application: loads the artefact once, migrates the database, mounts the API and the review page."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from seminspect.inference import Inspector
from seminspect.serve.config import ServeConfig
from seminspect.serve.database import make_engine, migrate, sessions
from seminspect.serve.errors import RequestError, error_body
from seminspect.serve.store import ensure_model_version

log = logging.getLogger("seminspect.serve")


def rare_types_of(inspector: Inspector) -> list[str]:
    """Leaves the policy never auto-classifies for lack of training sites (they go up the queue)."""
    pol = inspector.artefact.policy
    reasons = list(getattr(pol, "type_reasons_", None) or []) if pol is not None else []
    leaves = inspector.artefact.taxonomy.leaves
    return [leaves[i] for i, why in enumerate(reasons) if why and ("rare" in why or "training" in why)]


def create_app(artefact: str | Path | Inspector, cfg: ServeConfig) -> FastAPI:
    """The service for ``artefact`` (a folder, or an already loaded :class:`Inspector`)."""
    app = FastAPI(title="seminspect", version="1", description="Judge multi-view SEM sites; review what the model "
                  "leaves to a person.")
    state = app.state
    state.cfg = cfg
    state.inspector = artefact if isinstance(artefact, Inspector) else Inspector.load(artefact)
    state.inspect_lock = threading.Lock()
    state.in_flight = 0
    state.rare_types = rare_types_of(state.inspector)
    state.engine = make_engine(cfg.db_url)
    state.revision = migrate(state.engine)
    state.sessions = sessions(state.engine)
    tax = state.inspector.artefact.taxonomy
    with state.sessions.begin() as s:
        ensure_model_version(s, state.inspector.model_version, tax.to_dict(), str(state.inspector.artefact.path))
    state.taxonomy = tax

    @app.exception_handler(RequestError)
    async def _request_error(_: Request, exc: RequestError) -> JSONResponse:
        return JSONResponse(exc.body(), exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        first: dict[str, Any] = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ())[1:]) or None
        return JSONResponse(error_body(where, str(first.get("msg", "invalid request"))), 422)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse(error_body(None, str(exc.detail)), exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _crash(_: Request, exc: Exception) -> JSONResponse:
        log.exception("request failed")
        return JSONResponse(error_body(None, f"internal error: {type(exc).__name__}"), 500)

    from seminspect.serve.api import router

    app.include_router(router)
    try:
        from seminspect.serve.review_pages import mount_review
    except ImportError:  # the page is added in its own module; the API works without it
        mount_review = None
    if mount_review is not None:
        mount_review(app)
    return app

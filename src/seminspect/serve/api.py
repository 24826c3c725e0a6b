"""The ``/v1`` routes: judge a site (``POST /v1/sites``), read it back, and the health probes.

``POST /v1/sites`` takes either ``multipart/form-data`` (one file part per view, named ``<role>_<index>``,
e.g. ``target_0``, ``reference_0``; optional ``sample_id`` and ``meta`` (a JSON object) fields) or JSON
``{"sample_id": ..., "meta": {...}, "views": [{"role": "target", "index": 0, "path": "rel/to/root.png"}]}``.
It answers ``{"site_id", "sample_id", "decision": <the documented decision row>, "review_task"}``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select, text

from seminspect.data.sample import Sample, View
from seminspect.serve.errors import RequestError, error_body
from seminspect.serve.store import save_site
from seminspect.serve.tables import ReviewTask
from seminspect.serve.uploads import (
    META_KEYS,
    StoredView,
    build_sample,
    parse_role_index,
    referenced_view,
    store_upload,
)

log = logging.getLogger("seminspect.serve")
router = APIRouter()


async def _multipart(request: Request, cfg: Any) -> tuple[Any, Any, list[tuple[str, str, bytes]]]:
    try:
        form = await request.form(max_files=64, max_fields=64)
    except Exception as exc:
        raise RequestError(400, "body", f"malformed multipart form ({exc})") from None
    files: list[tuple[str, str, bytes]] = []
    total = 0
    meta: dict[str, Any] = {}
    for name, value in form.multi_items():
        if hasattr(value, "read"):
            data = await value.read()
            total += len(data)
            if total > cfg.max_upload_bytes:
                raise RequestError(413, name, f"upload exceeds {cfg.max_upload_bytes} bytes")
            files.append((name, value.filename or "", data))
        elif name == "meta":
            try:
                parsed = json.loads(value)
            except (ValueError, TypeError):
                parsed = None
            if not isinstance(parsed, dict):
                raise RequestError(422, "meta", "not a JSON object")
            meta.update(parsed)
        elif name in META_KEYS:
            meta[name] = value
    return form.get("sample_id"), meta, files


def _upload_views(files: list[tuple[str, str, bytes]], cfg: Any) -> list[tuple[View, StoredView]]:
    if len(files) > cfg.max_views:
        raise RequestError(413, "views", f"{len(files)} views, at most {cfg.max_views} per site")
    out = []
    for name, filename, data in files:
        role, _, index = name.rpartition("_")
        if not role:
            raise RequestError(422, name, "file part must be named <role>_<index>, e.g. target_0")
        r, i = parse_role_index(name, role, index)
        out.append(store_upload(name, filename, data, r, i, cfg))
    return out


def _json_views(body: Any, cfg: Any) -> list[tuple[View, StoredView]]:
    if not isinstance(body, dict):
        raise RequestError(422, "body", "expected a JSON object with sample_id, meta and views")
    views = body.get("views")
    if views is None:
        raise RequestError(422, "views", "missing")
    if not isinstance(views, list):
        raise RequestError(422, "views", "must be a list of {role, index, path}")
    if len(views) > cfg.max_views:
        raise RequestError(413, "views", f"{len(views)} views, at most {cfg.max_views} per site")
    return [referenced_view(f"views[{k}]", item, cfg) for k, item in enumerate(views)]


def _judge_and_store(state: Any, sample: Sample, source: str, stored: list[StoredView]) -> dict[str, Any]:
    """Run the inspector (one site at a time per process) and write everything in one transaction."""
    with state.inspect_lock:
        row = state.inspector.inspect([sample]).frame().iloc[0].to_dict()
    with state.sessions.begin() as session:
        site = save_site(session, sample.sample_id, source, sample.metadata, stored, row, state.rare_types)
        task = session.scalar(select(ReviewTask.id).where(ReviewTask.site_id == site.id))
        decision = site.decision.payload if site.decision else None
        return {"site_id": site.id, "sample_id": sample.sample_id, "decision": decision, "review_task": task}


@router.post("/v1/sites")
async def post_site(request: Request) -> JSONResponse:
    state = request.app.state
    cfg = state.cfg
    if state.in_flight >= cfg.max_in_flight:
        return JSONResponse(error_body(None, f"busy: {state.in_flight} requests in flight, retry later"), 503,
                            headers={"Retry-After": "1"})
    state.in_flight += 1
    try:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > cfg.max_upload_bytes:
            raise RequestError(413, "body", f"{length} bytes, at most {cfg.max_upload_bytes} per request")
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("multipart/form-data"):
            sample_id, meta, files = await _multipart(request, cfg)
            pairs = await anyio.to_thread.run_sync(_upload_views, files, cfg)
            source = "upload"
        elif ctype.startswith("application/json"):
            raw = await request.body()
            if len(raw) > cfg.max_upload_bytes:
                raise RequestError(413, "body", f"at most {cfg.max_upload_bytes} bytes per request")
            try:
                body = json.loads(raw)
            except ValueError as exc:
                raise RequestError(400, "body", f"invalid JSON ({exc})") from None
            pairs = await anyio.to_thread.run_sync(_json_views, body, cfg)
            sample_id, meta, source = body.get("sample_id"), body.get("meta"), "path"
        else:
            raise RequestError(415, "content-type", "send multipart/form-data (uploads) or application/json (paths)")
        sample = build_sample(sample_id, [v for v, _ in pairs], meta, cfg)
        out = await anyio.to_thread.run_sync(_judge_and_store, state, sample, source, [s for _, s in pairs])
        return JSONResponse(out, 201)
    except RequestError as exc:
        return JSONResponse(exc.body(), exc.status)
    except Exception as exc:  # one request's failure never takes the service down
        log.exception("POST /v1/sites failed")
        return JSONResponse(error_body(None, f"internal error: {type(exc).__name__}: {exc}"), 500)
    finally:
        state.in_flight -= 1


@router.get("/v1/sites/{site_id}")
def get_site(site_id: int, request: Request) -> JSONResponse:
    from seminspect.serve.store import site_json

    with request.app.state.sessions() as session:
        out = site_json(session, site_id)
    if out is None:
        return JSONResponse(error_body("site_id", f"no site {site_id}"), 404)
    return JSONResponse(out)


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
def readyz(request: Request) -> JSONResponse:
    state = request.app.state
    try:
        with state.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        return JSONResponse({"status": "not ready", "problem": f"database: {exc}"}, 503)
    if state.inspector is None:
        return JSONResponse({"status": "not ready", "problem": "model not loaded"}, 503)
    return JSONResponse({"status": "ready", "model_version": state.inspector.model_version})

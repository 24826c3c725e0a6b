"""The review web page: sign-in, the queue, a site page, and the JSON calls its keyboard handler makes.

Server-rendered Jinja2 templates (``templates/``) and one small script (``static/review.js``); no
build step. Every write needs a signed-in reviewer and leaves an audit row (:mod:`~seminspect.serve.queue`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy import select

from seminspect.serve import queue as q
from seminspect.serve.auth import COOKIE, authenticate, make_cookie, read_cookie
from seminspect.serve.errors import error_body
from seminspect.serve.review_images import anomaly_png, diff_png, map_scale, view_png
from seminspect.serve.tables import Reviewer, ReviewTask, Site, SiteView

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
router = APIRouter(prefix="/review")
FILTERS = (*q.FILTER_KEYS, "route", "type")


def _reviewer(request: Request) -> Reviewer | None:
    rid = read_cookie(request.app.state.cfg.secret, request.cookies.get(COOKIE))
    if rid is None:
        return None
    with request.app.state.sessions() as s:
        return s.get(Reviewer, rid)


def _filters(request: Request) -> dict[str, str]:
    return {k: request.query_params[k] for k in FILTERS if request.query_params.get(k)}


def _login_redirect(request: Request) -> RedirectResponse:
    return RedirectResponse(f"/review/login?{urlencode({'next': str(request.url.path)})}", 303)


@router.get("/login")
def login_page(request: Request, next: str = "/review") -> Response:  # noqa: A002 - query name
    return templates.TemplateResponse(request, "login.html", {"next": next, "error": None})


@router.post("/login")
def login(request: Request, name: str = Form(...), password: str = Form(...), next: str = Form("/review")) -> Response:  # noqa: A002
    with request.app.state.sessions() as s:
        user = authenticate(s, name, password)
    if user is None:
        return templates.TemplateResponse(request, "login.html", {"next": next, "error": "unknown name or password"},
                                          status_code=401)
    target = next if next.startswith("/review") else "/review"
    resp = RedirectResponse(target, 303)
    resp.set_cookie(COOKIE, make_cookie(request.app.state.cfg.secret, user.id), httponly=True, samesite="strict")
    return resp


@router.post("/logout")
def logout() -> Response:
    resp = RedirectResponse("/review/login", 303)
    resp.delete_cookie(COOKIE)
    return resp


@router.get("")
def queue_page(request: Request) -> Response:
    user = _reviewer(request)
    if user is None:
        return _login_redirect(request)
    f = _filters(request)
    status = request.query_params.get("status", "open")
    with request.app.state.sessions() as s:
        items = q.queue(s, f, status=None if status == "all" else status)
        names = {r.id: r.name for r in s.scalars(select(Reviewer))}
        left = q.remaining(s)
        choices = {k: sorted({str(i.site.meta.get(k, "")) for i in q.queue(s, status=None)} - {""})
                   for k in q.FILTER_KEYS}
    return templates.TemplateResponse(request, "queue.html", {
        "user": user, "items": items, "remaining": left, "filters": f, "status": status, "names": names,
        "choices": choices, "types": request.app.state.taxonomy.leaves, "query": urlencode(f)})


@router.get("/next")
def next_task(request: Request) -> Response:
    if _reviewer(request) is None:
        return _login_redirect(request)
    f = _filters(request)
    with request.app.state.sessions() as s:
        items = q.queue(s, f)
    if not items:
        return RedirectResponse(f"/review?{urlencode(f)}", 303)
    return RedirectResponse(f"/review/task/{items[0].task.id}?{urlencode(f)}", 303)


def _task_context(s: Any, task: ReviewTask, user: Reviewer, request: Request) -> dict[str, Any]:
    state = request.app.state
    site = s.get(Site, task.site_id)
    payload = site.decision.payload if site.decision else {}
    tax = state.taxonomy
    top = [{"type": payload.get(f"top{k}_type"), "prob": payload.get(f"top{k}_prob"),
            "path": payload.get(f"top{k}_path")} for k in (1, 2, 3) if payload.get(f"top{k}_type")]
    by_index: dict[int, dict[str, SiteView]] = {}
    zooms = []
    for v in site.views:
        if v.role == "zoom":
            zooms.append(v)
        else:
            by_index.setdefault(v.view_index, {})[v.role] = v
    claimed = q.claim(s, task.id, user.id, state.cfg.claim_minutes)
    s.commit()
    s.refresh(task)
    f = _filters(request)
    nav = q.neighbours(s, task.id, f)
    return {
        "user": user, "task": task, "site": site, "d": payload, "top": top, "pairs": sorted(by_index.items()),
        "zooms": zooms, "holder": None if claimed else q.holder(s, task, user.id), "claim_expires": task.claim_expires,
        "nav": nav, "remaining": q.remaining(s), "query": urlencode(f), "has_anomaly": state.inspector.has_anomaly,
        "map_scale": map_scale(state.inspector.artefact.anomaly_rule),
        "js": {"task": task.id, "suggestions": [t["type"] for t in top], "types": list(tax.leaves),
               "paths": ["/".join(tax.path(x)) for x in tax.leaves], "label": task.label, "query": urlencode(f),
               "nav": nav},
    }


@router.get("/task/{task_id}")
def task_page(task_id: int, request: Request) -> Response:
    user = _reviewer(request)
    if user is None:
        return _login_redirect(request)
    with request.app.state.sessions() as s:
        task = s.get(ReviewTask, task_id)
        if task is None:
            return JSONResponse(error_body("task_id", f"no review task {task_id}"), 404)
        ctx = _task_context(s, task, user, request)
        return templates.TemplateResponse(request, "task.html", ctx)


@router.post("/api/task/{task_id}/decision")
async def decide(task_id: int, request: Request) -> JSONResponse:
    user = _reviewer(request)
    if user is None:
        return JSONResponse(error_body("session", "sign in first"), 401)
    try:
        body = await request.json()
    except ValueError:
        return JSONResponse(error_body("body", "expected JSON {\"label\": ...}"), 400)
    label = body.get("label") if isinstance(body, dict) else None
    if not isinstance(label, str):
        return JSONResponse(error_body("label", "missing: normal or a type of the taxonomy"), 422)
    state = request.app.state
    labels = {q.NORMAL, *state.taxonomy.leaves}
    try:
        with state.sessions.begin() as s:
            q.decide(s, task_id, user.id, label, labels, state.cfg.claim_minutes)
    except ValueError as exc:
        return JSONResponse(error_body("label", str(exc)), 422)
    except LookupError as exc:
        return JSONResponse(error_body("task_id", str(exc)), 404)
    except q.ClaimConflict as exc:
        return JSONResponse(error_body("task_id", str(exc)), 409)
    with state.sessions() as s:
        nav = q.neighbours(s, task_id, _filters(request))
        left = q.remaining(s)
    return JSONResponse({"task_id": task_id, "label": label, "next_open": nav["next_open"], "remaining": left})


@router.post("/api/undo")
def undo(request: Request) -> JSONResponse:
    user = _reviewer(request)
    if user is None:
        return JSONResponse(error_body("session", "sign in first"), 401)
    with request.app.state.sessions.begin() as s:
        task_id = q.undo(s, user.id)
    if task_id is None:
        return JSONResponse(error_body(None, "nothing to undo"), 409)
    return JSONResponse({"task_id": task_id})


@router.get("/image/view/{view_id}.png")
def view_image(view_id: int, request: Request) -> Response:
    if _reviewer(request) is None:
        return JSONResponse(error_body("session", "sign in first"), 401)
    with request.app.state.sessions() as s:
        view = s.get(SiteView, view_id)
    if view is None:
        return JSONResponse(error_body("view_id", f"no view {view_id}"), 404)
    return Response(view_png(view.path), media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


@router.get("/image/diff/{site_id}/{index}.png")
def diff_image(site_id: int, index: int, request: Request) -> Response:
    if _reviewer(request) is None:
        return JSONResponse(error_body("session", "sign in first"), 401)
    with request.app.state.sessions() as s:
        site = s.get(Site, site_id)
        views = {(v.role, v.view_index): v.path for v in site.views} if site else {}
        payload = site.decision.payload if site and site.decision else {}
    t, r = views.get(("target", index)), views.get(("reference", index))
    if t is None or r is None:
        return JSONResponse(error_body("index", f"site {site_id} has no target/reference pair {index}"), 404)
    png = diff_png(t, r, payload.get(f"reg_dy_{index}"), payload.get(f"reg_dx_{index}"))
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


@router.get("/image/anomaly/{site_id}.png")
def anomaly_image(site_id: int, request: Request) -> Response:
    """The site's anomaly map, recomputed by the inspector (same alignment as its decision)."""
    from seminspect.data.imageio import read_image
    from seminspect.data.sample import Sample, View

    if _reviewer(request) is None:
        return JSONResponse(error_body("session", "sign in first"), 401)
    state = request.app.state
    if not state.inspector.has_anomaly:
        return JSONResponse(error_body(None, "the artefact has no anomaly model"), 404)
    with state.sessions() as s:
        site = s.get(Site, site_id)
        views = [(v.role, v.view_index, v.path) for v in site.views] if site else []
    if not views:
        return JSONResponse(error_body("site_id", f"no site {site_id}"), 404)
    sample = Sample(str(site_id), [View(r, i, read_image(p), source=p) for r, i, p in views])
    with state.inspect_lock:
        amap = state.inspector.inspect([sample], maps=True).anomaly_maps[0]
    target = sample.targets[0].image.shape if sample.targets else None
    png = anomaly_png(amap, map_scale(state.inspector.artefact.anomaly_rule), target)
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


def mount_review(app: FastAPI) -> None:
    app.mount("/review/static", StaticFiles(directory=str(HERE / "static")), name="review-static")
    app.include_router(router)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/review", 303)

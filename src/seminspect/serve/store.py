"""Writing judged sites: site, views, decision and (when a person must look) a review task, in one transaction.

A task's ``priority`` sorts the queue (lower first): the site's confidence ``max(p, 1 - p) * p(top-1 type)``,
minus 1 for anomaly-rule hits and rare types so they come before every ordinary site.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from seminspect.serve.tables import Decision, ModelVersion, ReviewTask, Site, SiteView
from seminspect.serve.uploads import StoredView


def clean_row(row: dict[str, Any]) -> dict[str, Any]:
    """A decision row as plain JSON values (NaN and numpy scalars become None and Python numbers)."""
    out: dict[str, Any] = {}
    for k, v in row.items():
        if hasattr(v, "item"):
            v = v.item()
        if isinstance(v, float) and math.isnan(v):
            v = None
        out[k] = v
    return out


def needs_review(row: dict[str, Any]) -> bool:
    """Routed to review, or auto-abnormal with its type left to a person."""
    return row.get("route") == "review" or (row.get("route") == "auto_abnormal" and not row.get("type"))


def priority(row: dict[str, Any], rare_types: Sequence[str] = ()) -> float:
    p = float(row.get("abnormal_prob") or 0.0)
    conf = max(p, 1.0 - p) * float(row.get("top1_prob") or 1.0)
    urgent = bool(row.get("anomaly_flag")) or (row.get("top1_type") in set(rare_types))
    return conf - (1.0 if urgent else 0.0)


def ensure_model_version(session: Session, version: str, taxonomy: dict[str, Any], artefact: str) -> None:
    if session.get(ModelVersion, version) is None:
        session.add(ModelVersion(id=version, taxonomy_name=str(taxonomy.get("name", "")), taxonomy=taxonomy,
                                 artefact=artefact))
        session.flush()


def save_site(session: Session, sample_id: str, source: str, meta: dict[str, str], views: Sequence[StoredView],
              row: dict[str, Any], rare_types: Sequence[str] = ()) -> Site:
    """Add a site with its views and decision (and a task when it needs review); the caller commits once."""
    site = Site(sample_id=sample_id, source=source, meta=dict(meta))
    session.add(site)
    session.flush()
    for v in views:
        session.add(SiteView(site_id=site.id, role=v.role, view_index=v.index, path=v.path, sha256=v.sha256,
                             height=v.height, width=v.width, bits=v.bits))
    row = clean_row({**row, "site": site.id})
    session.add(Decision(site_id=site.id, model_version=row["model_version"], route=row["route"],
                         abnormal_prob=float(row["abnormal_prob"]), type=row.get("type"),
                         top1_type=row.get("top1_type"), top1_prob=row.get("top1_prob"),
                         anomaly_flag=row.get("anomaly_flag"), payload=row))
    if needs_review(row):
        session.add(ReviewTask(site_id=site.id, priority=priority(row, rare_types), status="open"))
    session.flush()
    return site


def site_json(session: Session, site_id: int) -> dict[str, Any] | None:
    site = session.get(Site, site_id)
    if site is None:
        return None
    task = session.scalar(select(ReviewTask).where(ReviewTask.site_id == site_id))
    return {
        "site_id": site.id, "sample_id": site.sample_id, "source": site.source, "meta": site.meta,
        "created_at": site.created_at.isoformat() + "Z",
        "views": [{"role": v.role, "index": v.view_index, "sha256": v.sha256, "height": v.height, "width": v.width,
                   "bits": v.bits} for v in site.views],
        "decision": site.decision.payload if site.decision else None,
        "review": None if task is None else {"task_id": task.id, "status": task.status, "label": task.label},
    }


def decision_of(session: Session, site_id: int) -> Decision | None:
    return session.scalar(select(Decision).where(Decision.site_id == site_id))

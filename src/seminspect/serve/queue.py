"""Review tasks: the ordered queue with filters, claims that expire, decisions with an audit row, undo.

Order: ``priority`` ascending (anomaly-rule hits and rare types first, then lowest confidence), then id.
A claim is taken with one conditional ``UPDATE`` (free, expired or already ours), so two reviewers
cannot both hold a task; deciding a task another reviewer holds is refused (:class:`ClaimConflict`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from seminspect.serve.tables import Decision, Reviewer, ReviewerAction, ReviewTask, Site, utcnow

FILTER_KEYS = ("lot", "wafer", "tool", "product")
NORMAL = "normal"


class ClaimConflict(Exception):
    """Another reviewer holds the task."""


@dataclass
class QueueItem:
    task: ReviewTask
    site: Site
    decision: Decision


def queue(session: Session, filters: dict[str, str] | None = None, status: str | None = "open") -> list[QueueItem]:
    """Tasks in review order; ``filters``: lot, wafer, tool, product (site metadata), route, type (top-1)."""
    f = {k: v for k, v in (filters or {}).items() if v}
    q = (select(ReviewTask, Site, Decision).join(Site, ReviewTask.site_id == Site.id)
         .join(Decision, Decision.site_id == Site.id).order_by(ReviewTask.priority, ReviewTask.id))
    if status:
        q = q.where(ReviewTask.status == status)
    if f.get("route"):
        q = q.where(Decision.route == f["route"])
    if f.get("type"):
        q = q.where(Decision.top1_type == f["type"])
    items = [QueueItem(t, s, d) for t, s, d in session.execute(q).all()]
    meta = {k: f[k] for k in FILTER_KEYS if k in f}
    return [i for i in items if all(str(i.site.meta.get(k, "")) == v for k, v in meta.items())]


def remaining(session: Session) -> int:
    return int(session.scalar(select(func.count(ReviewTask.id)).where(ReviewTask.status == "open")) or 0)


def claim(session: Session, task_id: int, reviewer_id: int, minutes: float, now: datetime | None = None) -> bool:
    """Take (or renew) the claim on a task; False when another reviewer holds it."""
    now = now or utcnow()
    res = session.execute(
        update(ReviewTask).where(ReviewTask.id == task_id)
        .where(or_(ReviewTask.claimed_by.is_(None), ReviewTask.claimed_by == reviewer_id,
                   ReviewTask.claim_expires < now))
        .values(claimed_by=reviewer_id, claim_expires=now + timedelta(minutes=minutes)))
    session.flush()
    return res.rowcount == 1


def holder(session: Session, task: ReviewTask, reviewer_id: int, now: datetime | None = None) -> str | None:
    """The name of another reviewer holding ``task`` now, else None."""
    now = now or utcnow()
    if task.claimed_by in (None, reviewer_id) or task.claim_expires is None or task.claim_expires < now:
        return None
    other = session.get(Reviewer, task.claimed_by)
    return other.name if other else f"reviewer {task.claimed_by}"


def decide(session: Session, task_id: int, reviewer_id: int, label: str, labels: set[str], minutes: float) -> Any:
    """Record ``label`` (``normal`` or a leaf type) for a task, with its audit row; the claim is released."""
    if label not in labels:
        raise ValueError(f"unknown label {label!r}; expected normal or a type of the taxonomy")
    task = session.get(ReviewTask, task_id)
    if task is None:
        raise LookupError(f"no review task {task_id}")
    if not claim(session, task_id, reviewer_id, minutes):
        session.refresh(task)
        raise ClaimConflict(f"task {task_id} is being reviewed by {holder(session, task, reviewer_id)}")
    session.refresh(task)
    previous = task.label
    task.label, task.status, task.reviewed_by, task.reviewed_at = label, "done", reviewer_id, utcnow()
    task.claimed_by, task.claim_expires = None, None
    session.add(ReviewerAction(task_id=task_id, reviewer_id=reviewer_id, action="label", value=label,
                               previous=previous))
    session.flush()
    return task


def undo(session: Session, reviewer_id: int) -> int | None:
    """Revert this reviewer's last not-yet-undone decision (audit row ``undo``); the task id, or None."""
    last = session.scalar(select(ReviewerAction).where(ReviewerAction.reviewer_id == reviewer_id,
                                                       ReviewerAction.action == "label",
                                                       ReviewerAction.undone.is_(False))
                          .order_by(ReviewerAction.id.desc()).limit(1))
    if last is None:
        return None
    task = session.get(ReviewTask, last.task_id)
    assert task is not None
    current = task.label
    task.label = last.previous
    task.status = "done" if last.previous else "open"
    if not last.previous:
        task.reviewed_by, task.reviewed_at = None, None
    last.undone = True
    session.add(ReviewerAction(task_id=task.id, reviewer_id=reviewer_id, action="undo", value=last.previous,
                               previous=current))
    session.flush()
    return task.id


def neighbours(session: Session, task_id: int, filters: dict[str, str] | None = None) -> dict[str, int | None]:
    """Previous and next task in queue order (any status), and the next open one after ``task_id``."""
    order = queue(session, filters, status=None)
    ids = [i.task.id for i in order]
    if task_id not in ids:
        return {"prev": None, "next": None, "next_open": next((i.task.id for i in order
                                                               if i.task.status == "open"), None)}
    k = ids.index(task_id)
    after = [i for i in order[k + 1:] + order[:k] if i.task.status == "open"]
    return {"prev": ids[k - 1] if k > 0 else None, "next": ids[k + 1] if k + 1 < len(ids) else None,
            "next_open": after[0].task.id if after else None}

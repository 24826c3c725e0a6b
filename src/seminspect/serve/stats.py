"""Review statistics: queue size, decisions per reviewer, model-reviewer agreement per type, automation per day.

``agreement`` is what triage calibration can read: per model suggestion (``normal`` or the top-1 type),
how often reviewers kept it. A type whose suggestions reviewers keep overturning should not be automated.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from seminspect.serve.queue import NORMAL, queue, remaining
from seminspect.serve.tables import Decision, Reviewer, ReviewerAction, ReviewTask, Site


def suggestion(decision: Decision) -> str:
    """What the model proposes to a reviewer: normal below p(abnormal) 0.5, else its top-1 type."""
    return NORMAL if decision.abnormal_prob < 0.5 else (decision.top1_type or "abnormal")


def review_stats(session: Session) -> dict[str, Any]:
    names = {r.id: r.name for r in session.scalars(select(Reviewer))}
    actions = session.scalars(select(ReviewerAction).where(ReviewerAction.action == "label",
                                                           ReviewerAction.undone.is_(False))).all()
    per_reviewer = Counter(names.get(a.reviewer_id, str(a.reviewer_id)) for a in actions)
    agree: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for item in queue(session, status="done"):
        s = suggestion(item.decision)
        agree[s][0] += 1
        agree[s][1] += int(item.task.label == s)
    days: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    tasked = set(session.scalars(select(ReviewTask.site_id)))
    for site in session.scalars(select(Site)):
        day = site.created_at.date().isoformat()
        days[day][0] += 1
        days[day][1] += int(site.id not in tasked)
    return {
        "queue": {"open": remaining(session), "done": len(queue(session, status="done")),
                  "sites": sum(v[0] for v in days.values())},
        "decisions_per_reviewer": dict(sorted(per_reviewer.items())),
        "agreement": {k: {"reviewed": n, "kept": kept, "rate": kept / n} for k, (n, kept) in sorted(agree.items())},
        "automation_per_day": {d: {"sites": n, "automatic": a, "rate": a / n} for d, (n, a) in sorted(days.items())},
    }

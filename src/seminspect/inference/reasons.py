"""Why each site went where it went: one plain sentence per route and per type decision.

    route_reasons(artefact, triage, anomaly_scores)  ->  ["p(abnormal) 0.998 >= 0.981: ...", ...]
    type_reasons(artefact, triage)                   ->  ["", "type to review: 'bridge' has 12 ...", ...]

The sentences quote the calibrated bound behind the decision (which threshold, which precision or
miss-rate target at which confidence), the anomaly rule when it blocked an auto-normal call, or the
reason a type is never auto-classified (a rare type, a bar the calibration split could not reach).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from seminspect.decision import AUTO_ABNORMAL, AUTO_NORMAL, TriageResult


def _bound(thresholder: Any) -> str:
    reason = getattr(thresholder, "reason_", "") or "not certifiable on the calibration split"
    return reason.rstrip(".")


def route_reasons(art: Any, triage: TriageResult, anomaly: np.ndarray | None) -> list[str]:
    """One sentence per site explaining ``triage.route`` (see the module docstring)."""
    pol = art.policy
    s = triage.abnormal_scores
    if pol is None:
        note = art.notes[0] if art.notes else "no calibrated triage policy"
        return [f"review: {note}"] * len(s)
    a_thr, n_thr, conf = pol.abnormal_threshold_, pol.normal_threshold_, pol.confidence
    a_ok, n_ok = np.isfinite(a_thr), np.isfinite(n_thr)
    rule, cover = pol.anomaly_threshold, pol.normal_coverage
    out = []
    for i, route in enumerate(triage.route):
        p = float(s[i])
        if route == AUTO_ABNORMAL:
            out.append(f"p(abnormal) {p:.4f} >= {a_thr:.4f}, the threshold calibrated for precision >= "
                       f"{pol.abnormal_precision:.0%} at {conf:.0%} confidence")
        elif route == AUTO_NORMAL:
            extra = "" if rule is None else f"; anomaly score {anomaly[i]:.4g} <= rule {rule:.4g}"
            if cover is None:
                out.append(f"p(abnormal) {p:.4f} <= {n_thr:.4f}, the threshold calibrated for missed defects <= "
                           f"{pol.normal_miss_rate:.1%} at {conf:.0%} confidence{extra}")
            else:
                out.append(f"p(abnormal) {p:.4f} <= {n_thr:.4f}, the {cover:.0%} quantile of calibration normals "
                           f"(fixed coverage, not certified){extra}")
        elif rule is not None and anomaly is not None and anomaly[i] > rule and n_ok and p <= n_thr:
            out.append(f"anomaly score {anomaly[i]:.4g} > rule {rule:.4g}: an anomalous site is never auto-normal "
                       f"(p(abnormal) {p:.4f} alone would have been)")
        elif not a_ok and not n_ok:
            out.append("neither route could be certified on the calibration split (auto-abnormal: "
                       f"{_bound(pol.abnormal_thresholder_)}; auto-normal: {_bound(pol.normal_thresholder_)})")
        elif not a_ok:
            out.append(f"p(abnormal) {p:.4f} > {n_thr:.4f} (auto-normal bound); auto-abnormal is not certified: "
                       f"{_bound(pol.abnormal_thresholder_)}")
        elif not n_ok:
            out.append(f"p(abnormal) {p:.4f} < {a_thr:.4f} (auto-abnormal bound); auto-normal is not certified: "
                       f"{_bound(pol.normal_thresholder_)}")
        else:
            out.append(f"p(abnormal) {p:.4f} lies between the auto-normal ({n_thr:.4f}) and auto-abnormal "
                       f"({a_thr:.4f}) thresholds")
    return out


def type_reasons(art: Any, triage: TriageResult) -> list[str]:
    """Why the type of an auto-abnormal site was not decided (empty where it was, or where no type applies)."""
    pol = art.policy
    names = art.taxonomy.leaves
    out = []
    for i, route in enumerate(triage.route):
        if route != AUTO_ABNORMAL or triage.type_decision[i] >= 0 or triage.top_k_types.shape[1] == 0 or pol is None:
            out.append("")
            continue
        best, p = int(triage.top_k_types[i, 0]), float(triage.top_k_probs[i, 0])
        why = pol.type_reasons_[best] if pol.type_reasons_ else ""
        if why:
            out.append(f"type to review: {names[best]!r}: {why}")
        else:
            out.append(f"type to review: p({names[best]}) {p:.3f} < the type's calibrated bar "
                       f"{pol.type_thresholds_[best]:.3f} (type precision >= {pol.type_precision:.0%})")
    return out


def unknown_types(rule: Any, triage: TriageResult, outputs: np.ndarray, route_reason: list[str],
                  type_reason: list[str]) -> tuple[TriageResult, list[str], list[str]]:
    """Auto-abnormal sites that the artefact's open-set rule calls none of the known types go to review,
    their type undecided, with the rule's score and bar as the reason (``triage.open_set``)."""
    new, flags = rule.apply(triage, outputs)
    route_reason, type_reason = list(route_reason), list(type_reason)
    flagged = np.flatnonzero(flags == "unknown_type")
    scores = rule.scores(np.asarray(outputs)[flagged]) if flagged.size else []  # flagged sites only
    for i, score in zip(flagged, scores, strict=True):
        route_reason[i] = (f"unknown type: open-set score ({rule.score}) {score:.4g} < {rule.threshold_:.4g}, "
                           f"the bar that gives up {rule.rejection_rate:.0%} of known-type calibration defects "
                           f"(p(abnormal) {triage.abnormal_scores[i]:.4f} alone was auto-abnormal)")
        type_reason[i] = ""
    return new, route_reason, type_reason

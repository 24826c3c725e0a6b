"""The triage part of the report: what each route received and, in plain words, why.

    rows = route_rows(inspection.route, is_abnormal, confidence=0.95)    # one row per route + total
    text = why_automated(artefact, calib_sites=1100)                     # sentences from the policy

The sentences quote the fitted policy only (its thresholds, the calibration counts it kept, the
confidence bound and the smallest error-free selection that bound can certify); nothing is
re-estimated here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from seminspect.decision import (
    AUTO_ABNORMAL,
    AUTO_NORMAL,
    REVIEW,
    clopper_pearson_interval,
    min_samples_for_zero_errors,
)
from seminspect.evaluation.humanize import count, is_number, pct, pct_ci, prob

ROUTE_NAMES = {AUTO_ABNORMAL: "auto-abnormal", AUTO_NORMAL: "auto-normal", REVIEW: "review"}


def route_rows(route: np.ndarray, y: np.ndarray, confidence: float = 0.95) -> list[dict[str, str]]:
    """Per route: sites, share, labelled defects / normals, and the realised error with an exact CI."""
    route, y = np.asarray(route).astype(str), np.asarray(y)
    n = len(route)
    rows = []
    for r in (AUTO_ABNORMAL, AUTO_NORMAL, REVIEW):
        sel = route == r
        k = int(sel.sum())
        ab, no = int((sel & (y == 1)).sum()), int((sel & (y == 0)).sum())
        lab = ab + no
        if k == 0:
            realised = "n/a (no site took this route)"
        elif r == REVIEW:
            realised = "n/a (a person decides)"
        elif lab == 0:
            realised = "n/a (no labelled site on this route)"
        elif r == AUTO_ABNORMAL:
            realised = "precision " + pct_ci(ab / lab, clopper_pearson_interval(ab, lab, confidence), confidence)
        else:
            realised = "missed defects " + pct_ci(ab / lab, clopper_pearson_interval(ab, lab, confidence), confidence)
        rows.append({"route": ROUTE_NAMES[r], "sites": count(k), "share": pct(k / n) if n else "n/a (no sites)",
                     "defects": count(ab), "normal": count(no), "realised on this split": realised})
    rows.append({"route": "all", "sites": count(n), "share": "100 %" if n else "n/a (no sites)",
                 "defects": count(int((y == 1).sum())), "normal": count(int((y == 0).sum())),
                 "realised on this split": f"automated {pct(np.isin(route, [AUTO_ABNORMAL, AUTO_NORMAL]).mean())}"
                 if n else "n/a (no sites)"})
    return rows


def _abnormal_sentence(pol: Any, calib: str) -> str:
    th = pol.abnormal_thresholder_
    target, conf = pol.abnormal_precision, pol.confidence
    need = min_samples_for_zero_errors(1.0 - target, conf)
    if np.isfinite(pol.abnormal_threshold_):
        return (f"Auto-abnormal is on: a site with p(abnormal) >= {prob(pol.abnormal_threshold_)} is called a defect "
                f"without review. On the calibration split {count(th.n_selected_)} sites scored that high, "
                f"{pct(th.precision_)} of them defects; the {pct(conf, 0)} lower bound of that precision, "
                f"{pct(th.precision_lower_bound_)}, meets the {pct(target, 0)} target.")
    n_pos = int(th.n_positive_)
    if n_pos < need:
        why = (f"{calib} holds {count(n_pos)} defects; certifying {pct(target, 0)} precision at {pct(conf, 0)} "
               f"confidence needs >= {count(need)} error-free automatic calls")
    elif getattr(th, "min_recall", 0.0) and "min_recall" in (th.reason_ or ""):
        why = f"the best recall at the precision bound is below the required minimum of {pct(th.min_recall)}"
    else:
        why = (f"{calib} holds {count(n_pos)} defects, but no threshold keeps {pct(conf, 0)} lower bound of "
               f"precision >= {pct(target, 0)} (normal sites score as high as the defects the model is surest of)")
    return f"Auto-abnormal is off: {why}."


def _normal_sentence(pol: Any, calib: str, calib_sites: int | None) -> str:
    th = pol.normal_thresholder_
    target, conf = pol.normal_miss_rate, pol.confidence
    need = min_samples_for_zero_errors(target, conf)
    rule = pol.anomaly_threshold
    rule_text = "" if rule is None else (f" A site whose anomaly score exceeds {prob(rule)} is never auto-normal "
                                         "(the calibration used only the sites below that rule).")
    cover = pol.normal_coverage
    if cover is not None:
        return (f"Auto-normal is on at a fixed coverage, not certified: a site with p(abnormal) <= "
                f"{prob(pol.normal_threshold_)} (the {pct(cover, 0)} quantile of the calibration normals) is called "
                f"normal without review. On the calibration split {count(th.n_selected_)} sites scored that low, "
                f"{pct(th.miss_rate_)} of them defects (the {pct(conf, 0)} upper bound, "
                f"{pct(th.miss_rate_upper_bound_, 3)}, {'meets' if th.feasible_ else 'misses'} the "
                f"{pct(target)} target).{rule_text}")
    if np.isfinite(pol.normal_threshold_):
        return (f"Auto-normal is on: a site with p(abnormal) <= {prob(pol.normal_threshold_)} is called normal "
                f"without review. On the calibration split {count(th.n_selected_)} sites scored that low, "
                f"{pct(th.miss_rate_)} of them defects; the {pct(conf, 0)} upper bound of missed defects, "
                f"{pct(th.miss_rate_upper_bound_)}, meets the {pct(target)} target, and the route covers "
                f"{pct(th.normal_coverage_)} of the calibration split's normal sites.{rule_text}")
    if calib_sites is not None and calib_sites < need:
        why = (f"{calib} holds {count(calib_sites)} sites; certifying missed defects <= {pct(target)} at "
               f"{pct(conf, 0)} confidence needs >= {count(need)} miss-free automatic normal calls")
    else:
        why = (f"no threshold on {calib} keeps the {pct(conf, 0)} upper bound of missed defects <= {pct(target)} "
               f"(defects score as low as the normal sites the model is surest of; >= {count(need)} miss-free "
               "calls are needed)")
    return f"Auto-normal is off: {why}.{rule_text}"


def _type_sentence(pol: Any, names: list[str]) -> str:
    if not pol.n_types_:
        return "Types are never decided automatically: the policy was calibrated without type probabilities."
    bars = np.asarray(pol.type_thresholds_, dtype=np.float64)
    auto = [names[t] for t in range(len(bars)) if np.isfinite(bars[t])]
    counts = pol.type_train_counts_
    rare = [t for t in range(len(bars)) if not np.isfinite(bars[t]) and counts is not None
            and counts[t] < pol.min_train_samples]
    unmet = len(bars) - len(auto) - len(rare)
    bar = f"type precision >= {pct(pol.type_precision, 0)} at {pct(pol.confidence, 0)} confidence"
    text = (f"Types: {count(len(auto))} of {count(len(bars))} types are decided automatically on auto-abnormal "
            f"sites ({bar})" + (f": {', '.join(auto)}." if auto else "."))
    others = []
    if rare:
        others.append(f"{count(len(rare))} had fewer than {count(pol.min_train_samples)} training samples")
    if unmet:
        others.append(f"{count(unmet)} did not reach the bar on the calibration split")
    if others:
        text += (f" The other types go to review with the top {count(pol.top_k)} suggestions: "
                 + " and ".join(others) + ".")
    return text


def why_automated(art: Any, calib_sites: int | None = None) -> list[str]:
    """Plain sentences: why each route is on or off, and which types are decided automatically."""
    pol = art.policy
    if pol is None:
        note = art.notes[0] if getattr(art, "notes", None) else "the artefact has no calibrated triage policy"
        if "review" in note:  # the artefact's own note already says where the sites go
            return [f"Nothing is automated: {note.rstrip('.')}."]
        return [f"Nothing is automated: every site goes to review ({note})."]
    calib = "the calibration split"
    n_pos = int(pol.abnormal_thresholder_.n_positive_)
    head = "The triage thresholds were calibrated on a held-out calibration split"
    if calib_sites is not None and is_number(calib_sites):
        head += f" of {count(calib_sites)} sites ({count(n_pos)} defects)"
    head += (f", never on training data; every bound holds at {pct(pol.confidence, 0)} confidence "
             "(exact Clopper-Pearson).")
    return [head, _abnormal_sentence(pol, calib), _normal_sentence(pol, calib, calib_sites),
            _type_sentence(pol, list(art.taxonomy.leaves))]

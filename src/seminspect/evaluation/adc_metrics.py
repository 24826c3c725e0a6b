"""Headline metrics of the multi-view ADC: inference output scored against labels.

    m = compute_metrics(pred, (is_abnormal, type_index), taxonomy, thresholds, target_precision=0.99)
    m["triage"] = triage_metrics(route, type_decision, is_abnormal, type_index)

``pred`` holds ``abnormal (N,)``, ``types (N, L)`` and ``levels {level: (N, n)}`` probabilities (the
inspector's output, or ``predict_features`` on cached features); labels are ``is_abnormal`` 1/0/-1
and ``type_index`` (leaf index, -1 = none). Pure functions on arrays: no model, no images.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import f1_score, precision_recall_fscore_support, roc_auc_score

from seminspect.data.taxonomy import Taxonomy
from seminspect.decision import (
    AUTO_ABNORMAL,
    AUTO_NORMAL,
    ROUTES,
    PrecisionThreshold,
    clopper_pearson_interval,
    clopper_pearson_lower,
)
from seminspect.evaluation.metrics import recall_at_precision


def compute_metrics(pred: dict[str, Any], labels: tuple[np.ndarray, np.ndarray], taxonomy: Taxonomy,
                    thresholds: dict[str, Any] | None = None, target_precision: float = 0.99) -> dict[str, Any]:
    """Binary, calibrated-threshold, type and tree-level metrics of ``pred`` on the labelled sites."""
    ab_true, ti = (np.asarray(x) for x in labels)
    lab = ab_true >= 0
    scores, y = np.asarray(pred["abnormal"])[lab], ab_true[lab]
    m: dict[str, Any] = {"n": int(lab.sum()), "n_abnormal": int((y == 1).sum())}
    if len(np.unique(y)) == 2:
        m["auroc"] = float(roc_auc_score(y, scores))
        # Threshold chosen on this set (optimistic); the calibrated figure is under "calibrated".
        m["recall_at_precision"] = recall_at_precision(y, scores, target_precision).as_dict()
        m["recall_at_precision_bound"] = recall_at_precision(y, scores, target_precision,
                                                             criterion="bound").as_dict()
    if thresholds is not None and thresholds.get("precision_threshold"):
        thr = float(PrecisionThreshold.from_dict(thresholds["precision_threshold"]).threshold_)
        flag = scores >= thr
        tp, fp = int((flag & (y == 1)).sum()), int((flag & (y == 0)).sum())
        m["calibrated"] = {"threshold": thr, "tp": tp, "fp": fp, "recall": tp / max(1, int((y == 1).sum())),
                           "precision": tp / max(1, tp + fp),
                           "precision_lower_95": float(clopper_pearson_lower(tp, tp + fp, 0.95)) if tp + fp else 0.0}
    m.update(type_metrics(np.asarray(pred["types"]), pred.get("levels", {}), ab_true, ti, taxonomy))
    return m


def type_metrics(probs: np.ndarray, levels: dict[str, np.ndarray], ab_true: np.ndarray, ti: np.ndarray,
                 taxonomy: Taxonomy) -> dict[str, Any]:
    """Type accuracy, macro-F1, top-3, per-type precision/recall/F1 with counts, tree levels, confusion."""
    typed = (ab_true == 1) & (ti >= 0)
    if not typed.any():
        return {}
    t = ti[typed]
    p = probs[typed]
    yhat = p.argmax(1)
    present = np.unique(t)
    m: dict[str, Any] = {
        "type_accuracy": float((yhat == t).mean()),
        "type_macro_f1": float(f1_score(t, yhat, labels=present, average="macro", zero_division=0)),
        "type_top3": float((np.argsort(-p, 1)[:, :3] == t[:, None]).any(1).mean()),
    }
    prec, rec, f1, support = precision_recall_fscore_support(t, yhat, labels=present, zero_division=0)
    m["type_f1"] = {taxonomy.leaves[k]: float(v) for k, v in zip(present, f1, strict=True)}
    m["per_type"] = [{"type": taxonomy.leaves[k], "n": int(s), "predicted": int((yhat == k).sum()),
                      "precision": float(a), "recall": float(b), "f1": float(c)}
                     for k, a, b, c, s in zip(present, prec, rec, f1, support, strict=True)]
    m["level_accuracy"] = {}
    for name, pl in levels.items():
        anc = taxonomy.leaf_to_level(name)
        m["level_accuracy"][name] = float((np.asarray(pl)[typed].argmax(1) == anc[t]).mean())
    m["level_accuracy"][taxonomy.levels[-1]] = m["type_accuracy"]
    cm = np.zeros((taxonomy.num_leaves, taxonomy.num_leaves), dtype=np.int64)
    np.add.at(cm, (t, yhat), 1)
    m["confusion"] = cm.tolist()
    return m


def triage_metrics(route: np.ndarray, type_decision: np.ndarray, y: np.ndarray, ti: np.ndarray,
                   confidence: float = 0.95) -> dict[str, Any]:
    """What the triage automated on labelled sites and how often it was wrong, with exact intervals.

    ``automation_rate``: share of sites decided without a person (auto-abnormal or auto-normal);
    ``abnormal_precision`` / ``normal_miss_rate``: realised error of each automated route with a
    two-sided Clopper-Pearson interval at ``confidence``.
    """
    route, td, y, ti = np.asarray(route).astype(str), np.asarray(type_decision), np.asarray(y), np.asarray(ti)
    lab = y >= 0
    route, td, y, ti = route[lab], td[lab], y[lab], ti[lab]
    auto_ab, auto_no = route == AUTO_ABNORMAL, route == AUTO_NORMAL
    auto = auto_ab | auto_no
    n_ab, n_no = int(auto_ab.sum()), int(auto_no.sum())
    tp, miss = int((auto_ab & (y == 1)).sum()), int((auto_no & (y == 1)).sum())
    out: dict[str, Any] = {
        "n": int(len(route)),
        "routes": {r: int((route == r).sum()) for r in ROUTES},
        "automation_rate": float(auto.mean()) if len(route) else 0.0,
        "error_rate_automated": float((((auto_ab & (y == 0)) | (auto_no & (y == 1)))[auto]).mean()) if auto.any()
        else 0.0,
        "abnormal_precision": tp / n_ab if n_ab else None,
        "abnormal_precision_ci": list(clopper_pearson_interval(tp, n_ab, confidence)) if n_ab else None,
        "abnormal_recall": tp / max(1, int((y == 1).sum())),
        "normal_miss_rate": miss / n_no if n_no else None,
        "normal_miss_rate_ci": list(clopper_pearson_interval(miss, n_no, confidence)) if n_no else None,
        "confidence": confidence,
    }
    typed = auto_ab & (td >= 0) & (y == 1) & (ti >= 0)
    out["type_automation_rate"] = float(((td >= 0) & auto_ab).sum() / max(1, n_ab))
    out["type_error_rate_automated"] = float((td[typed] != ti[typed]).mean()) if typed.any() else 0.0
    return out


def policy_triage_metrics(thresholds: dict[str, Any], pred: dict[str, Any], y: np.ndarray,
                          ti: np.ndarray) -> dict[str, Any] | None:
    """:func:`triage_metrics` of the triage policy saved in ``thresholds`` applied to ``pred`` (None if absent)."""
    from seminspect.decision import TriagePolicy

    if not thresholds.get("triage"):
        return None
    policy = TriagePolicy.from_dict(thresholds["triage"])
    res = policy.predict(np.asarray(pred["abnormal"]), type_probs=np.asarray(pred["types"]) if policy.n_types_
                         else None)
    return triage_metrics(res.route, res.type_decision, y, ti, policy.confidence)

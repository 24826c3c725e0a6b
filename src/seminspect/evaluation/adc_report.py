"""The HTML report of ``seminspect evaluate``: what a fab engineer reads after a run.

    write_report(Path("eval.html"), result, inspector)    # result: EvaluationResult

Sections, in order: a summary in words; the headline figures; precision-recall and ROC curves;
the triage (route table, and why each route is on or off); defect types (per-type precision,
recall, F1 with counts, taxonomy levels, confusion matrix); the worst errors of both kinds, each
site shown whole (:mod:`seminspect.evaluation.error_gallery`); provenance (artefact, data,
splits, code, the training config). Every number is written for people
(:mod:`seminspect.evaluation.humanize`): percentages with their intervals, counts with
thousands separators, "n/a (why)" where a figure does not exist.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np

from seminspect.decision import AUTO_ABNORMAL, AUTO_NORMAL, REVIEW, min_samples_for_zero_errors
from seminspect.evaluation.humanize import count, is_number, na, number, pct, pct_ci, prob, share, words
from seminspect.evaluation.report import HtmlReport
from seminspect.evaluation.triage_section import route_rows, why_automated


def _target(inspector: Any) -> float:
    art = inspector.artefact
    if art.policy is not None:
        return float(art.policy.abnormal_precision)
    return float(art.precision_threshold.target_precision) if art.precision_threshold is not None else 0.99


def _headline_rows(m: dict[str, Any], y: np.ndarray, p: np.ndarray, route: np.ndarray,
                   target: float) -> list[dict[str, str]]:
    from seminspect.evaluation.metrics import average_precision

    lab = y >= 0
    two = len(np.unique(y[lab])) == 2
    one_class = "this split does not hold both defects and normal sites"
    rows = [{"figure": "sites judged", "value": count(len(y)),
             "note": f"{count(int((y == 1).sum()))} defects, {count(int((y == 0).sum()))} normal"
                     + (f", {count(int((~lab).sum()))} unlabelled" if (~lab).any() else "")}]
    rows.append({"figure": "AUROC (defect vs normal)",
                 "value": number(m.get("auroc"), 3, one_class if not two else None),
                 "note": "chance of ranking a random defect above a random normal site"})
    rows.append({"figure": "average precision", "value": number(average_precision(y[lab], p[lab])) if two
                 else na(one_class), "note": "area under the precision-recall curve"})
    rap = m.get("recall_at_precision") or {}
    tp = pct(target, 0)
    if rap:
        thr = rap.get("threshold")
        rows.append({"figure": f"recall at {tp} precision", "value": pct_ci(rap.get("recall"), rap.get("recall_ci"),
                     rap.get("confidence", 0.95), missing="no threshold reaches it"),
                     "note": f"threshold p(abnormal) >= {prob(thr)} chosen on this split (optimistic)"
                     if is_number(thr) else "no threshold on this split reaches it"})
    rab = m.get("recall_at_precision_bound") or {}
    if rab:
        conf = pct(rab.get("confidence", 0.95), 0)
        thr = rab.get("threshold")
        rows.append({"figure": f"recall at {tp} precision, certified ({conf} lower bound)",
                     "value": pct(rab.get("recall")) if is_number(thr) else na("not certifiable on this split"),
                     "note": f"threshold p(abnormal) >= {prob(thr)} chosen on this split" if is_number(thr) else
                     f"no threshold on this split has a {conf} lower bound of precision >= {tp} "
                     f"({count(rab.get('n_positive'))} defects here; an error-free selection needs >= "
                     f"{count(min_samples_for_zero_errors(1 - target, rab.get('confidence', 0.95)))})"})
    cal = m.get("calibrated")
    if cal and not is_number(cal.get("threshold")):
        rows.append({"figure": "at the threshold calibrated before this split",
                     "value": na("none was certified"),
                     "note": "the calibration split could not certify a precision threshold (see Triage)"})
    elif cal:
        rows.append({"figure": "at the threshold calibrated before this split",
                     "value": f"recall {pct(cal['recall'])}, precision {pct(cal['precision'])}",
                     "note": f"p(abnormal) >= {prob(cal['threshold'])}: {count(cal['tp'])} defects and "
                             f"{count(cal['fp'])} normal sites flagged"})
    for key, name, note in (("type_accuracy", "type accuracy", "defects whose most likely type is the true one"),
                            ("type_macro_f1", "type macro-F1", "mean F1 over the types present"),
                            ("type_top3", "type in the top 3", "defects whose true type is among 3 suggestions")):
        if key in m:
            rows.append({"figure": name, "value": pct(m[key]), "note": note})
    auto = int(np.isin(route, [AUTO_ABNORMAL, AUTO_NORMAL]).sum())
    rows.append({"figure": "decided without a person",
                 "value": pct(auto / len(route)) if len(route) else na("no sites"),
                 "note": f"{share(auto, len(route))} sites (see Triage)"})
    if "anomaly_auroc" in m:
        rows.append({"figure": "anomaly model AUROC", "value": number(m["anomaly_auroc"]),
                     "note": "the unsupervised model alone"})
    return rows


def _summary(m: dict[str, Any], split: str, art: Any, y: np.ndarray, route: np.ndarray) -> str:
    n, n_lab = len(y), int((y >= 0).sum())
    labels = (f"{count(n_lab)} labelled, {count(int((y == 1).sum()))} of them defects" if n_lab
              else "none labelled")
    text = (f"{count(n)} sites of the {split} split ({labels}) were judged by model "
            f"{art.model_version or 'unknown'} through the same path as predict. "
            f"AUROC {number(m.get('auroc'), missing='this split does not hold both defects and normal sites')}. ")
    k = {r: int((route == r).sum()) for r in (AUTO_ABNORMAL, AUTO_NORMAL, REVIEW)}
    if n:
        text += (f"{pct((k[AUTO_ABNORMAL] + k[AUTO_NORMAL]) / n)} of them were decided without a person "
                 f"({count(k[AUTO_ABNORMAL])} auto-abnormal, {count(k[AUTO_NORMAL])} auto-normal, "
                 f"{count(k[REVIEW])} to review).")
    return text


def _curves(rep: HtmlReport, y: np.ndarray, p: np.ndarray, inspector: Any, target: float) -> None:
    import matplotlib.pyplot as plt

    from seminspect.evaluation.displays import PRCurveDisplay, ROCCurveDisplay

    lab = y >= 0
    if len(np.unique(y[lab])) != 2:
        rep.add_text("No curves: this split does not hold both defects and normal sites.")
        return
    pol = inspector.artefact.policy
    point = pol.abnormal_threshold_ if pol is not None and np.isfinite(pol.abnormal_threshold_) else None
    fig, ax = plt.subplots(1, 2, figsize=(9, 4))
    PRCurveDisplay.from_predictions(y[lab], p[lab], operating_point=point, target_precision=target).plot(ax[0])
    ROCCurveDisplay.from_predictions(y[lab], p[lab], operating_point=point).plot(ax[1])
    fig.tight_layout()
    rep.add_figure(fig, caption="operating point = the calibrated auto-abnormal threshold" if point is not None
                   else "no operating point: auto-abnormal is off")


def _types(rep: HtmlReport, m: dict[str, Any], inspector: Any) -> None:
    import matplotlib.pyplot as plt

    from seminspect.evaluation.displays import ConfusionMatrixDisplay

    rep.add_heading("Defect types")
    if not m.get("per_type"):
        rep.add_text("No labelled defects with a type known to the model on this split: no type figures.")
        return
    tax = inspector.artefact.taxonomy
    rows = [{"type": r["type"], "family": " / ".join(tax.path(r["type"])[:-1]) or "-",
             "defects (support)": count(r["n"]), "predicted as this type": count(r["predicted"]),
             "precision": pct(r["precision"]) if r["predicted"] else na("never predicted"),
             "recall": pct(r["recall"]), "F1": pct(r["f1"])} for r in m["per_type"]]
    rep.add_text(f"Among the {count(sum(r['n'] for r in m['per_type']))} labelled defects: macro-F1 "
                 f"{pct(m.get('type_macro_f1'))} over the {count(len(rows))} types present, accuracy "
                 f"{pct(m.get('type_accuracy'))}, true type in the top 3 {pct(m.get('type_top3'))} "
                 "(scikit-learn precision, recall and F1 per type; support = defects of the type on this split).")
    rep.add_table(rows, right=("defects (support)", "predicted as this type", "precision", "recall", "F1"))
    levels = m.get("level_accuracy") or {}
    if levels:
        rep.add_table([{"taxonomy level": words(k), "accuracy": pct(v)} for k, v in levels.items()],
                      title="Accuracy at each level of the taxonomy", right=("accuracy",))
    if "confusion" in m:
        fig, ax = plt.subplots(figsize=(7, 6))
        ConfusionMatrixDisplay(np.array(m["confusion"], dtype=np.int64), list(tax.leaves)).plot(ax)
        fig.tight_layout()
        rep.add_figure(fig, caption="rows: true type; columns: the model's most likely type")


def _provenance(rep: HtmlReport, result: Any, inspector: Any) -> None:
    from datetime import UTC, datetime

    from seminspect import __version__
    from seminspect.utils.provenance import code_provenance

    art = inspector.artefact
    prov = art.manifest.get("provenance") or {}
    code = prov.get("code") or {}
    splits = prov.get("splits") or {}

    def commit(c: dict[str, Any]) -> str:
        if not c.get("commit"):
            return "unknown (not run from a git checkout)"
        return str(c["commit"])[:12] + (" (with uncommitted changes)" if c.get("dirty") else "")

    rows = [
        {"item": "artefact", "value": str(art.path)},
        {"item": "model version", "value": art.model_version or "unknown"},
        {"item": "artefact written", "value": str(art.manifest.get("created", "unknown"))},
        {"item": "training data", "value": str(prov.get("dataset", "unknown"))},
        {"item": "split sizes at training", "value": ", ".join(f"{k} {count(v)}" for k, v in splits.items())
         or "unknown"},
        {"item": "evaluated data", "value": str(result.dataset.root)},
        {"item": "evaluated split",
         "value": f"{result.metrics.get('split', 'all')}: {count(len(result.dataset))} sites"},
        {"item": "seminspect at training", "value": str(code.get("seminspect", "unknown"))},
        {"item": "git commit at training", "value": commit(code)},
        {"item": "seminspect now", "value": __version__},
        {"item": "git commit now", "value": commit(code_provenance())},
        {"item": "report generated", "value": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")},
    ]
    rep.add_heading("Provenance")
    rep.add_table(rows)
    cfg = art.path / art.manifest.get("parts", {}).get("config", "config.yaml")
    if cfg.is_file():
        rep.add_details(f"training config ({cfg.name})", cfg.read_text(encoding="utf-8"))


MAX_BYTES = 2_900_000  # the whole report, images included (the main job's must stay under 3 MB)
_PROVENANCE_RESERVE = 60_000  # room kept for the provenance section, written after the gallery


def write_report(path: Path, result: Any, inspector: Any, k: int = 6, max_bytes: int = MAX_BYTES) -> dict[str, Any]:
    """Write the report to ``path``; returns the error gallery's summary (sites shown, thumbnail size).

    The gallery gets what ``max_bytes`` leaves after the other sections: its thumbnails shrink
    (down to 64 px) until it fits."""
    import matplotlib

    matplotlib.use("Agg")

    m, insp = result.metrics, result.inspection
    art = inspector.artefact
    target = _target(inspector)
    y, p = np.asarray(result.is_abnormal), np.asarray(insp.abnormal)
    split = str(m.get("split", "all"))
    rep = HtmlReport(f"Defect classification: evaluation on the {split} split")
    route = np.asarray(insp.route).astype(str)
    rep.add_html(f'<p class="why">{html.escape(_summary(m, split, art, y, route))}</p>')
    rep.add_heading("Headline")
    rep.add_table(_headline_rows(m, y, p, route, target), right=("value",))
    _curves(rep, y, p, inspector, target)

    rep.add_heading("Triage: what was decided without a person")
    conf = art.policy.confidence if art.policy is not None else 0.95
    rep.add_table(route_rows(insp.route, y, conf), right=("sites", "share", "defects", "normal"))
    splits = (art.manifest.get("provenance") or {}).get("splits") or {}
    calib = splits.get("calib")
    why = why_automated(art, int(calib) if is_number(calib) else None)
    rep.add_html('<div class="why">' + "".join(f"<p>{html.escape(s)}</p>" for s in why) + "</div>")

    _types(rep, m, inspector)
    from seminspect.evaluation.error_gallery import add_error_gallery

    budget = max_bytes - len(rep.to_html().encode("utf-8")) - _PROVENANCE_RESERVE
    gallery = add_error_gallery(rep, result, inspector, k=k, budget_bytes=max(budget, 0))
    _provenance(rep, result, inspector)
    rep.save(path)
    return gallery

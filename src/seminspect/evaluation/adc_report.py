"""The HTML report of ``seminspect evaluate``: what a fab engineer reads after a run.

    write_report(Path("eval.html"), result, inspector)    # result: EvaluationResult
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from seminspect.evaluation.report import HtmlReport


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def write_report(path: Path, result: Any, inspector: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from seminspect.evaluation.displays import ConfusionMatrixDisplay, PRCurveDisplay, ROCCurveDisplay

    m, insp, ds = result.metrics, result.inspection, result.dataset
    taxonomy = inspector.artefact.taxonomy
    pol = inspector.artefact.policy
    target = pol.abnormal_precision if pol is not None else 0.99
    rep = HtmlReport("Multi-view ADC evaluation")
    rep.add_heading("Headline")
    rows = [["samples", m.get("n")], ["AUROC", _fmt(m.get("auroc"))]]
    rap = m.get("recall_at_precision", {})
    rows.append([f"recall at precision >= {target:.0%} (threshold on this set)", _fmt(rap.get("recall"))])
    for k in ("type_macro_f1", "type_accuracy", "type_top3"):
        rows.append([k, _fmt(m.get(k))])
    tri = m.get("triage", {})
    rows.append(["automation rate", _fmt(tri.get("automation_rate"))])
    rep.add_table([{"metric": r[0], "value": r[1]} for r in rows])
    y = result.is_abnormal
    lab = y >= 0
    if len(np.unique(y[lab])) == 2:
        fig, ax = plt.subplots(1, 2, figsize=(9, 4))
        PRCurveDisplay.from_predictions(y[lab], insp.abnormal[lab], target_precision=target).plot(ax[0])
        ROCCurveDisplay.from_predictions(y[lab], insp.abnormal[lab]).plot(ax[1])
        fig.tight_layout()
        rep.add_figure(fig)
        plt.close(fig)
    if "confusion" in m:
        fig, ax = plt.subplots(figsize=(7, 6))
        ConfusionMatrixDisplay(np.array(m["confusion"], dtype=np.int64), list(taxonomy.leaves)).plot(ax)
        fig.tight_layout()
        rep.add_figure(fig)
        plt.close(fig)
    err = np.where(y == 1, 1 - insp.abnormal, insp.abnormal)
    err[~lab] = -1
    rep.add_heading("Worst errors (all views side by side)")
    for i in np.argsort(-err)[:5]:
        if err[i] < 0.5:
            break
        s = ds[int(i)]
        rep.add_image_strip([v.image for v in s.views], [f"{v.role.value}{v.index}" for v in s.views],
                            title=f"{s.sample_id}: true {s.defect_type or 'normal'}, p(abnormal) = "
                                  f"{insp.abnormal[i]:.3f}")
    rep.save(path)

"""Write an anomaly evaluation: ``metrics.json``, ``overlays.png`` and ``report.html`` when available."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from seminspect.evaluation.anomaly_figures import colour_scale, overlay_grid
from seminspect.evaluation.anomaly_metrics import metrics_table, per_type_metrics
from seminspect.utils.io import atomic_path, atomic_write_json


def write_anomaly_report(detector: Any, result: Any, out: str | Path, n_figures: int = 12,
                         extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Metrics per defect type at the detector's threshold, plus overlays on one fixed colour scale.

    ``extra`` (e.g. ``{"mask_rule": ...}``) is written into ``metrics.json`` beside the metrics.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    thr = detector.threshold["threshold"] if detector.threshold else None
    report = per_type_metrics(result, thr)
    atomic_write_json(out / "metrics.json", {"metrics": report, "threshold": detector.threshold,
                                             **(extra or {}), "config": detector.config.model_dump()})
    fig = None
    if result.images is not None and n_figures > 0 and len(result.scores):
        vmin, vmax = colour_scale(thr, detector.normal_score_range, result.maps)
        order = np.argsort(-result.scores)
        ab = [i for i in order if result.labels[i] == 1][: n_figures // 2]
        no = [i for i in order if result.labels[i] != 1][: n_figures - len(ab)]
        pick = ab + no
        caps = [f"{result.sample_ids[i]}\n{result.defect_types[i] or 'normal'} {result.scores[i]:.3g}" for i in pick]
        masks = None if result.masks is None else [result.masks[i] for i in pick]
        fig = overlay_grid([result.images[i] for i in pick], [result.maps[i] for i in pick], caps, vmin, vmax,
                           masks=masks)
        with atomic_path(out / "overlays.png") as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    try:
        from seminspect.evaluation.report import HtmlReport
    except ImportError:
        HtmlReport = None  # noqa: N806 - the report module belongs to another part of the project
    if HtmlReport is not None:
        html = HtmlReport(f"Anomaly evaluation ({detector.config.model})")
        html.add_heading("Metrics per defect type (each type against all normal samples)")
        header, rows = metrics_table(report)
        html.add_table([dict(zip(header, r, strict=True)) for r in rows])
        if fig is not None:
            html.add_heading("Highest-scoring abnormal and normal samples (one fixed colour scale)")
            html.add_figure(fig)
        html.save(out / "report.html")
    if fig is not None:
        import matplotlib.pyplot as plt

        plt.close(fig)
    return report


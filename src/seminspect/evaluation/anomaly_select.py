"""Choosing anomaly-detector settings from normal images alone: pseudo-defects stand in for real ones.

A fab rarely has labelled anomalies of a new product. :func:`select_config` holds out part of the
normal images, paints a pseudo-defect (:class:`seminspect.data.pseudo_defects.PseudoDefectGenerator`,
the same generator DRAEM trains on) into a copy of each held-out image, fits every candidate
configuration on the remaining normals and ranks the candidates by how well they separate the
clean held-out images from their pseudo-defective copies (image AUROC, then pixel AUROC). No
real anomaly, and no test image, enters the choice. How well this proxy ranks configurations
against real labels is measured per data set in ``benchmarks/results/single_view_selection.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from seminspect.data.imageio import to_float
from seminspect.data.sample import Sample, View


def proxy_split(samples: Sequence[Sample], fraction: float = 0.25, seed: int = 0) -> tuple[list[Sample], list[Sample]]:
    """Normal samples split into (fit, held-out) at random with ``seed``."""
    normal = [s for s in samples if s.is_abnormal is not True]
    order = np.random.default_rng(seed).permutation(len(normal))
    n_held = max(1, int(round(fraction * len(normal))))
    if len(normal) - n_held < 1:
        raise ValueError(f"select_config: {len(normal)} normal samples are too few to hold {n_held} out")
    held = sorted(order[:n_held])
    rest = sorted(order[n_held:])
    return [normal[i] for i in rest], [normal[i] for i in held]


def with_pseudo_defects(samples: Sequence[Sample], sources: Sequence[str] = ("perlin", "cutpaste"),
                        seed: int = 0) -> list[Sample]:
    """A copy of each sample whose first target view carries one pseudo-defect (labelled abnormal, with its mask)."""
    from seminspect.data.pseudo_defects import PseudoDefectGenerator

    gen = PseudoDefectGenerator(sources=tuple(sources), seed=seed)
    rng = np.random.default_rng(seed)
    out = []
    for s in samples:
        first = s.targets[0]
        views = []
        for v in s.views:
            if v is first:
                image, mask = gen.apply(to_float(v.image), rng)
                v = View(v.role, v.index, image.astype(np.float32), mask=mask)
            views.append(v)
        out.append(Sample(f"{s.sample_id}~pseudo", views, is_abnormal=True, defect_type="pseudo",
                          metadata=dict(s.metadata)))
    return out


def select_config(samples: Sequence[Sample], candidates: Mapping[str, Mapping[str, Any]], fraction: float = 0.25,
                  sources: Sequence[str] = ("perlin", "cutpaste"), seed: int = 0
                  ) -> tuple[str, list[dict[str, Any]]]:
    """The best candidate's name and one row per candidate (proxy image / pixel AUROC, fit seconds)."""
    from seminspect.evaluation.anomaly_metrics import anomaly_metrics
    from seminspect.models.anomaly.detector import AnomalyDetector

    fit, held = proxy_split(samples, fraction, seed)
    test = [*held, *with_pseudo_defects(held, sources, seed)]
    rows = []
    for name, settings in candidates.items():
        det = AnomalyDetector({**settings, "calib_fraction": 0.0}).fit(fit)
        res = det.score(test, progress=False)
        m = anomaly_metrics(res.scores, res.labels, res.maps, res.masks)
        rows.append({"candidate": name, "proxy_image_auroc": m["image_auroc"],
                     "proxy_pixel_auroc": m.get("pixel_auroc"), "fit_seconds": det.history.get("fit_seconds"),
                     "n_fit": len(fit), "n_held": len(held)})
    best = max(rows, key=lambda r: (r["proxy_image_auroc"], r["proxy_pixel_auroc"] or 0.0))
    return best["candidate"], rows

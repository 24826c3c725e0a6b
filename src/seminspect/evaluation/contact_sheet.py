"""Contact sheets: samples as a PNG grid (rows = samples; target, reference and zoom views).

Each cell shows one view in grey levels (full 8/16-bit range, so brightness differences stay
visible), the view's defect mask as a red outline, and a short tag (``T0`` target 0, ``R0``
reference 0, ``Z0`` zoom 0). Each row is labelled with the sample id, label and defect type.
Works for any dataset: missing roles or masks simply leave fewer cells / no outline.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from seminspect.data.imageio import to_float
from seminspect.data.sample import Sample
from seminspect.utils.io import atomic_path

_TAGS = {"target": "T", "reference": "R", "zoom": "Z"}


def sample_label(sample: Sample) -> str:
    """Row label: id, normal/abnormal/unlabelled, type and product."""
    label = {True: "abnormal", False: "normal", None: "unlabelled"}[sample.is_abnormal]
    parts = [sample.sample_id, label if not sample.defect_type else sample.defect_type]
    product = sample.metadata.get("product")
    if product:
        parts.append(product)
    return "\n".join(parts)


def render_contact_sheet(samples: Sequence[Sample], out: str | Path, title: str | None = None,
                         cell_inches: float = 1.6, max_views: int | None = None,
                         extra_columns: Sequence[Sequence[tuple[np.ndarray, str]]] | None = None) -> Path:
    """Write a PNG contact sheet of ``samples`` to ``out`` (atomically) and return the path.

    Args:
        samples: samples to show, one row each.
        out: output ``.png`` path.
        title: optional figure title.
        cell_inches: size of one image cell.
        max_views: show at most this many views per sample (in target, reference, zoom order).
        extra_columns: per sample, extra ``(image, caption)`` cells appended to the row (e.g. a depth map).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not samples:
        raise ValueError("contact sheet needs at least one sample")
    rows = []
    for i, s in enumerate(samples):
        cells = [(to_float(v.image), v.mask, f"{_TAGS.get(v.role.value, '?')}{v.index}") for v in s.views]
        if max_views is not None:
            cells = cells[:max_views]
        if extra_columns is not None:
            cells += [(np.asarray(img, np.float32), None, cap) for img, cap in extra_columns[i]]
        rows.append(cells)
    n_cols = max(len(r) for r in rows)
    label_w = 1.3
    fig_w = label_w + n_cols * cell_inches
    fig_h = len(rows) * (cell_inches + 0.12) + (0.4 if title else 0.1)
    fig = plt.figure(figsize=(fig_w, fig_h), dpi=110)
    top = 1 - (0.4 / fig_h if title else 0.1 / fig_h)
    gs = fig.add_gridspec(len(rows), n_cols, left=label_w / fig_w, right=0.995, top=top, bottom=0.005,
                          wspace=0.04, hspace=0.12)
    for r, (sample, cells) in enumerate(zip(samples, rows, strict=True)):
        for c, (img, mask, tag) in enumerate(cells):
            ax = fig.add_subplot(gs[r, c])
            is_view = c < len(sample.views)
            vmin, vmax = (0.0, 1.0) if is_view else (float(np.min(img)), float(np.max(img)) or 1.0)
            ax.imshow(img, cmap="gray", vmin=vmin, vmax=vmax, interpolation="antialiased")
            if mask is not None and mask.any():
                ax.contour(mask.astype(np.float32), levels=[0.5], colors="red", linewidths=0.7)
            ax.text(0.02, 0.97, tag, transform=ax.transAxes, color="yellow", fontsize=6, va="top",
                    ha="left", bbox={"facecolor": "black", "alpha": 0.5, "pad": 1, "linewidth": 0})
            ax.set_xticks([])
            ax.set_yticks([])
        fig.text(0.005, 1 - (r + 0.5) / len(rows) * (1 - (1 - top)) - (1 - top), sample_label(sample),
                 fontsize=7, va="center", ha="left", family="monospace")
    if title:
        fig.suptitle(title, fontsize=9, y=1 - 0.1 / fig_h, va="top")
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return out

"""Anomaly heatmap overlays on ONE fixed colour scale.

Per-image min-max scaling makes every normal image look defective (its largest noise becomes
bright red). Every overlay here uses the same ``vmin..vmax`` -- by default ``0 .. 2 x threshold``
(the threshold sits mid-scale), or a calibrated normal-score range -- so colour means the same
score in every image.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def colour_scale(threshold: float | None = None, normal_range: tuple[float, float] | None = None,
                 maps: np.ndarray | None = None) -> tuple[float, float]:
    """The fixed ``(vmin, vmax)``: ``0..2*threshold``, else the normal range, else ``0..`` 99th pct of maps."""
    if threshold is not None and np.isfinite(threshold) and threshold > 0:
        return 0.0, 2.0 * float(threshold)
    if normal_range is not None:
        lo, hi = normal_range
        return float(lo), float(hi + (hi - lo))
    if isinstance(maps, list):  # maps of several native sizes
        maps = np.concatenate([np.ravel(m) for m in maps]) if maps else None
    if maps is not None and np.size(maps):
        return 0.0, float(np.percentile(maps, 99.5)) or 1.0
    return 0.0, 1.0


def overlay(image: np.ndarray, amap: np.ndarray, vmin: float, vmax: float, alpha: float = 0.45) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB: the grey image with the map (jet colours) blended where it is above ``vmin``."""
    from matplotlib import colormaps

    g = np.clip(np.asarray(image, dtype=np.float32), 0, 1)
    rgb = np.repeat(g[..., None], 3, axis=2)
    norm = np.clip((np.asarray(amap, dtype=np.float32) - vmin) / max(vmax - vmin, 1e-12), 0, 1)
    heat = colormaps["jet"](norm)[..., :3]
    a = alpha * norm[..., None]  # weak scores stay transparent, so the die remains readable
    return (255 * ((1 - a) * rgb + a * heat)).astype(np.uint8)


def overlay_grid(images: Sequence[np.ndarray], maps: Sequence[np.ndarray], captions: Sequence[str],
                 vmin: float, vmax: float, masks: Sequence[np.ndarray | None] | None = None, ncols: int = 6):
    """A matplotlib figure of overlays (all on ``vmin..vmax``, one colour bar), mask outlines in white."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = max(1, int(np.ceil(n / ncols)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.2 * ncols + 0.8, 2.4 * nrows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(n):
        ax = axes.ravel()[i]
        ax.imshow(overlay(images[i], maps[i], vmin, vmax))
        if masks is not None and masks[i] is not None and np.any(masks[i]):
            ax.contour(masks[i].astype(float), levels=[0.5], colors="white", linewidths=0.8)
        ax.set_title(captions[i], fontsize=7)
    fig.colorbar(ScalarMappable(Normalize(vmin, vmax), cmap="jet"), ax=axes.ravel().tolist(), shrink=0.8,
                 label=f"anomaly score (fixed scale {vmin:.3g}..{vmax:.3g})")
    return fig

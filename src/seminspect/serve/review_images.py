"""Pictures for the review page: a view as an 8-bit PNG, and the target minus its aligned reference.

16-bit views are shown at full range (``>> 8``), so every site is on the same grey scale; the
difference image is ``|target - reference moved by the inspector's registration|`` on one fixed
scale (0 black, ``DIFF_FULL_SCALE`` of the full range white), the same for every site.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from seminspect.data.imageio import read_image, to_float

DIFF_FULL_SCALE = 0.5


def png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def display(image: np.ndarray) -> np.ndarray:
    """uint8 for the browser: 8-bit as is, 16-bit by its top byte."""
    return image if image.dtype == np.uint8 else (image >> 8).astype(np.uint8)


def view_png(path: str) -> bytes:
    return png(display(read_image(path)))


def diff_png(target_path: str, reference_path: str, dy: float | None, dx: float | None) -> bytes:
    """``|target - aligned reference|`` (shift from the decision's ``reg_dy_i`` / ``reg_dx_i``; none: as is)."""
    t = to_float(read_image(target_path))
    r = to_float(read_image(reference_path))
    if r.shape != t.shape:
        raise ValueError(f"reference {r.shape} and target {t.shape} differ in size")
    if dy or dx:
        from scipy import ndimage

        r = ndimage.shift(r, (float(dy or 0.0), float(dx or 0.0)), order=1, mode="nearest")
    d = np.clip(np.abs(t - r) / DIFF_FULL_SCALE, 0.0, 1.0)
    return png(np.rint(d * 255).astype(np.uint8))


def anomaly_png(amap: np.ndarray, scale: float, shape: tuple[int, int] | None = None) -> bytes:
    """The anomaly map in colour (inferno) on one fixed scale: 0 dark, ``scale`` (twice the rule) bright.

    Resized (nearest) to ``shape`` so it lies over the target view pixel for pixel.
    """
    from matplotlib import colormaps

    v = np.clip(np.asarray(amap, dtype=np.float64) / scale, 0.0, 1.0)
    rgb = (colormaps["inferno"](v)[..., :3] * 255).astype(np.uint8)
    im = Image.fromarray(rgb)
    if shape is not None and (im.height, im.width) != tuple(shape):
        im = im.resize((shape[1], shape[0]), Image.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def map_scale(rule: dict | None) -> float:
    """The value shown brightest: twice the anomaly rule's threshold (as ``predict --maps``), else 1."""
    thr = (rule or {}).get("threshold")
    return float(2 * thr) if thr and np.isfinite(thr) and thr > 0 else 1.0

"""Which mask pixels are defect: half of full scale by default, not "anything nonzero".

A mask saved with anti-aliased or JPEG-like edges holds values 1..127 around a 255 defect; read
as "nonzero = defect" those edges counted as defect too. The rule now:

* ``mask_threshold`` absent (the default): an 8-bit mask pixel is a defect when it is >= 128, a
  16-bit one when >= 32768; a mask holding only 0 and 1 (a label image) counts its 1s; a float
  mask (in memory) counts values >= 0.5; a bool mask is taken as it is.
* ``mask_threshold: T`` in ``dataset.yaml`` (a number > 0): a pixel is a defect when >= T, for
  every mask of the dataset (``mask_threshold: 1`` restores "nonzero = defect").

``SampleDataset.mask_rule`` says which rule a dataset's masks were read with; ``anomaly
evaluate`` writes it into ``metrics.json`` beside the pixel metrics.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["AUTO_RULE", "binarise_mask", "mask_rule", "parse_threshold"]

AUTO_RULE = (
    "defect where >= 128 (8-bit masks) or >= 32768 (16-bit), or where 1 in a 0/1 mask "
    "(set mask_threshold in dataset.yaml to change)"
)


def parse_threshold(value: Any, where: str, error: type[Exception]) -> float | None:
    """``dataset.yaml``'s ``mask_threshold`` (None when absent); anything but a number > 0 raises ``error``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0 or value != value:
        raise error(f"{where}: mask_threshold must be a number > 0 (a mask pixel >= it is a defect), got {value!r}")
    return float(value)


def binarise_mask(values: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """``(H, W)`` bool: the defect pixels of a mask read as numbers (see the module docstring)."""
    values = np.asarray(values)
    if values.dtype == bool:
        return values
    if threshold is not None:
        return values >= threshold
    if values.dtype.kind == "f":
        return values >= 0.5
    if values.size and values.max() <= 1:
        return values > 0
    half = (int(np.iinfo(values.dtype).max) + 1) // 2 if values.dtype.kind in "ui" else 0.5
    return values >= half


def mask_rule(threshold: float | None) -> str:
    """The rule :func:`binarise_mask` applies, in words."""
    return AUTO_RULE if threshold is None else f"defect where >= {threshold:g} (mask_threshold in dataset.yaml)"

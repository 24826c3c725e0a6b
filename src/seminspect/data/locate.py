"""Where to look in a site: the crop centre found by die-to-die comparison over the whole field.

    oy, ox = difference_offset(pairs, crop=128, margin=8)   # pairs: (target, reference, dy, dx)

A review SEM centres its field of view on where the inspection tool saw the defect, but not
exactly: a defect can sit anywhere in the inner part of a 460 px field. Cropping the centre
then cuts it away and the site is called normal. This module looks at the whole field once,
cheaply: each registered reference is subtracted from its target (the die comparison an
inspection tool makes), the standardised absolute differences of all detector pairs are
summed, smoothed over a small window, and the crop is centred on the strongest difference.
The classifier then sees its usual 128 px window, at native resolution, where the defect is.
Only NumPy/SciPy; the caller (:class:`~seminspect.data.prepare.PrepareSample`) applies it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SMOOTH_PX = 9  # box filter over the summed difference: a defect is a blob, shot noise single pixels


def _standardised(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float32, copy=False)
    return (a - a.mean()) / (a.std() + 1e-6)


def difference_map(pairs: Sequence[tuple[np.ndarray, np.ndarray, int, int]], margin: int) -> np.ndarray:
    """Summed ``|target - reference|`` of standardised, registered pairs on the common window.

    ``pairs``: ``(target, reference, dy, dx)`` with ``target[y, x] ~= reference[y - dy, x - dx]``
    and ``|dy|, |dx| <= margin``. Returns an ``(H - 2 margin, W - 2 margin)`` float32 map whose
    pixel ``(i, j)`` is image pixel ``(i + margin, j + margin)``.
    """
    h, w = pairs[0][0].shape
    out = np.zeros((h - 2 * margin, w - 2 * margin), np.float32)
    for t, r, dy, dx in pairs:
        tw = t[margin:h - margin, margin:w - margin]
        rw = r[margin - dy:h - margin - dy, margin - dx:w - margin - dx]
        out += np.abs(_standardised(tw) - _standardised(rw))
    return out


def window_room(shape: tuple[int, int], crop: int, margin: int) -> tuple[int, int]:
    """``(room_y, room_x)``: how far a ``crop`` window's centre may move from the centre of a view of
    ``shape`` while the window, and a reference window moved by up to ``margin``, stay inside it."""
    h, w = shape
    return max(0, (h - crop) // 2 - margin), max(0, (w - crop) // 2 - margin)


def difference_offset(pairs: Sequence[tuple[np.ndarray, np.ndarray, int, int]], crop: int,
                      margin: int) -> tuple[int, int]:
    """``(oy, ox)``: how far the crop centre moves from the image centre to sit on the strongest
    smoothed difference, clamped so that every view's window (reference windows moved by up to
    ``margin``) stays inside the image. ``(0, 0)`` when the views are no larger than the crop."""
    from scipy.ndimage import uniform_filter

    h, w = pairs[0][0].shape
    room_y, room_x = window_room((h, w), crop, margin)
    if room_y == 0 and room_x == 0:
        return 0, 0
    score = uniform_filter(difference_map(pairs, margin), size=SMOOTH_PX, mode="nearest")
    y, x = np.unravel_index(int(np.argmax(score)), score.shape)
    oy = int(y) + margin - h // 2
    ox = int(x) + margin - w // 2
    return int(np.clip(oy, -room_y, room_y)), int(np.clip(ox, -room_x, room_x))

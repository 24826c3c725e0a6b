"""The crop that follows the die-to-die difference (data/locate.py, PrepareSample(centre="difference"))."""

from __future__ import annotations

import numpy as np
import pytest

from seminspect.data.locate import difference_offset
from seminspect.data.prepare import PrepareSample
from seminspect.data.sample import Role, Sample, View
from seminspect.models.adc_spec import ImageConfig


def _site(defect_yx: tuple[int, int] | None, size: int = 200, shift: tuple[int, int] = (2, -3),
          seed: int = 0) -> Sample:
    """Two detector pairs of a textured die; the reference is the target's die moved by ``shift``
    (``target[y, x] == reference[y - dy, x - dx]``); a bright 6 px blob only in the target at ``defect_yx``."""
    rng = np.random.default_rng(seed)
    from scipy.ndimage import gaussian_filter

    die = gaussian_filter(np.random.default_rng(99).normal(0, 1, (size + 20, size + 20)), 3)
    die = 128 + 60 * die / die.std()
    views = []
    dy, dx = shift
    for k in range(2):
        t = die[10:10 + size, 10:10 + size].astype(np.float32) + rng.normal(0, 4, (size, size))
        r = die[10 + dy:10 + dy + size, 10 + dx:10 + dx + size].astype(np.float32) + rng.normal(0, 4, (size, size))
        mask = np.zeros((size, size), bool)
        if defect_yx is not None:
            y, x = defect_yx
            t[y - 3:y + 3, x - 3:x + 3] = 250
            mask[y - 3:y + 3, x - 3:x + 3] = True
        views.append(View(Role.TARGET, k, np.clip(t, 0, 255).astype(np.uint8), mask))
        views.append(View(Role.REFERENCE, k, np.clip(r, 0, 255).astype(np.uint8)))
    return Sample("s", views, is_abnormal=defect_yx is not None)


def test_offset_points_at_the_defect() -> None:
    s = _site((40, 150))
    prep = PrepareSample(crop=64, method="joint", max_shift=8, centre="difference")
    align = prep.align(s)
    assert align[0].shift == (2.0, -3.0)
    oy, ox = prep.crop_offset(s, align)
    assert abs((100 + oy) - 40) <= 4 and abs((100 + ox) - 150) <= 4


def test_prepared_views_hold_the_defect_and_stay_registered() -> None:
    s = _site((40, 150))
    prep = PrepareSample(crop=64, method="joint", max_shift=8, centre="difference")
    out = prep.apply(s, prep.align(s))
    t, r = out.view(Role.TARGET, 0), out.view(Role.REFERENCE, 0)
    assert t.image.shape == r.image.shape == (64, 64)
    assert t.mask is not None and t.mask.sum() == 36  # the whole blob is inside the window
    diff = np.abs(t.image.astype(float) - r.image.astype(float))
    diff[t.mask] = 0
    assert diff.mean() < 8  # the reference window moved with the target's: the dies line up
    centred = PrepareSample(crop=64, method="joint", max_shift=8).apply(s, prep.align(s))
    assert centred.view(Role.TARGET, 0).mask.sum() == 0  # the centre crop misses it


def test_window_is_clamped_inside_the_image() -> None:
    s = _site((5, 195))
    prep = PrepareSample(crop=64, method="joint", max_shift=8, centre="difference")
    align = prep.align(s)
    oy, ox = prep.crop_offset(s, align)
    room = (200 - 64) // 2 - 8
    assert abs(oy) <= room and abs(ox) <= room
    out = prep.apply(s, align)
    assert all(v.image.shape == (64, 64) for v in out.views)


def test_no_difference_no_pairs_and_small_views_fall_back_to_the_centre() -> None:
    prep = PrepareSample(crop=64, method="joint", max_shift=8, centre="difference")
    small = _site(None, size=64)
    assert prep.crop_offset(small, prep.align(small)) == (0, 0)
    alone = Sample("a", [View(Role.TARGET, 0, np.zeros((200, 200), np.uint8))])
    assert prep.crop_offset(alone, prep.align(alone)) == (0, 0)
    pairs = [(np.ones((100, 100), np.float32), np.ones((100, 100), np.float32), 0, 0)]
    assert abs(difference_offset(pairs, 32, 4)[0]) <= (100 - 32) // 2


def test_config_refuses_difference_without_integer_registration() -> None:
    assert ImageConfig(crop=128, registration_method="joint", crop_centre="difference").crop_centre == "difference"
    with pytest.raises(ValueError, match="crop_centre"):
        ImageConfig(crop=128, registration_method="phase", crop_centre="difference")
    with pytest.raises(ValueError, match="crop_centre"):
        ImageConfig(crop=None, crop_centre="difference")

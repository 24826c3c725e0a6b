"""Registration: sub-pixel shift recovery, residual, batch/sample helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from seminspect.data.batch import collate
from seminspect.data.registration import RegistrationError, register_batch_views, register_pair, register_sample
from seminspect.data.sample import Sample, View


def _texture(seed: int = 0, size: int = 96) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = ndimage.gaussian_filter(rng.random((size, size)), 2.0)
    return ((img - img.min()) / (img.max() - img.min())).astype(np.float32)


@pytest.mark.parametrize("method", ["phase", "ecc"])
def test_recovers_subpixel_shift(method: str) -> None:
    rng = np.random.default_rng(1)
    img = _texture()
    for _ in range(5):
        true = rng.uniform(-3.5, 3.5, 2)
        target = ndimage.shift(img, true, order=3, mode="reflect")
        reg = register_pair(target, img, method=method)
        assert np.abs(np.array(reg.shift) - true).max() < 0.1, (reg.shift, true)
        assert reg.residual < 0.5 * reg.residual_before
        assert reg.warped.shape == img.shape and reg.warped.dtype == np.float32


def test_uint8_input_and_max_shift() -> None:
    img = (_texture(2) * 255).astype(np.uint8)
    target = np.roll(img, (5, -3), axis=(0, 1))
    reg = register_pair(target, img)
    assert np.allclose(reg.shift, (5, -3), atol=0.1)
    capped = register_pair(target, img, max_shift=2)
    assert capped.shift == (0.0, 0.0)


def test_bad_input() -> None:
    with pytest.raises(RegistrationError):
        register_pair(np.zeros((10, 10)), np.zeros((10, 12)))
    with pytest.raises(RegistrationError):
        register_pair(np.zeros((10, 10)), np.zeros((10, 10)), method="sift")
    flat = register_pair(np.ones((16, 16)), np.ones((16, 16)))
    assert flat.shift == (0.0, 0.0)


def test_sample_and_batch_helpers() -> None:
    img = _texture(3, 64)
    target = ndimage.shift(img, (1.5, -2.0), order=3, mode="reflect")
    sample = Sample("s", [View("target", 0, target), View("reference", 0, img),
                          View("target", 1, img), View("zoom", 0, img)])
    aligned, regs = register_sample(sample)
    assert set(regs) == {0}
    assert np.allclose(regs[0].shift, (1.5, -2.0), atol=0.1)
    ref = aligned.view("reference", 0).image
    assert np.abs(ref - target)[8:-8, 8:-8].mean() < 0.01
    batch = collate([sample, sample])
    out, shifts, residuals = register_batch_views(batch)
    slot = int(((batch.roles[0] == 1) & (batch.indices[0] == 0)).nonzero()[0, 0])
    assert torch.allclose(shifts[:, slot], torch.tensor([1.5, -2.0]), atol=0.1)
    assert torch.isnan(residuals[:, 0]).all()  # target slots are not registered
    assert not torch.equal(out.images, batch.images)
    assert torch.equal(out.images[:, 0], batch.images[:, 0])  # targets untouched


def test_valid_mask_marks_the_uncovered_strip() -> None:
    big = _texture(4, 96)  # the target sees the scene beyond the reference's field of view
    img = big[16:80, 16:80]
    target = ndimage.shift(big, (2.4, -1.3), order=3, mode="reflect")[16:80, 16:80]
    reg = register_pair(target, img)
    assert np.allclose(reg.shift, (2.4, -1.3), atol=0.1)
    valid = reg.valid_mask()
    # dy > 0 uncovers the first ceil(2.4) = 3 rows (+1 margin); dx < 0 the last ceil(1.3) = 2 columns (+1)
    assert not valid[:4].any() and valid[4:, :-3].all()
    assert not valid[:, -3:].any()
    assert valid.sum() == (64 - 4) * (64 - 3)
    # inside the mask the warped reference matches the target; the reflected strip does not
    inner = np.abs(reg.warped - target)[valid].mean()
    strip = np.abs(reg.warped - target)[:3, :-3].mean()
    assert inner < 0.02 and strip > 5 * inner
    assert register_pair(img, img).valid_mask().all()  # no shift: nothing uncovered
    assert not reg.valid_mask(margin=0)[:3].any() and reg.valid_mask(margin=0)[3, 0]


def test_joint_shift_recovers_the_common_offset_where_single_noisy_pairs_disagree():
    from seminspect.data.prepare import PrepareSample, joint_integer_shift
    from seminspect.data.sample import Role

    rng = np.random.default_rng(3)
    base = ndimage.gaussian_filter(rng.random((200, 200)), 2.0)
    true = (2, -3)
    pairs, views = [], []
    for k in range(5):
        scene = base + 0.02 * k
        target = scene[40:184, 40:184] + rng.normal(0, 0.12, (144, 144))
        reference = np.roll(scene, (-true[0], -true[1]), axis=(0, 1))[40:184, 40:184] + rng.normal(0, 0.12, (144, 144))
        pairs.append((target, reference))
        views += [View(Role.TARGET, k, target.astype(np.float32)),
                  View(Role.REFERENCE, k, reference.astype(np.float32))]
    assert joint_integer_shift(pairs, 8) == true
    aligned = PrepareSample(crop=128, method="joint", max_shift=8).align(Sample("s", views))
    assert {a.shift for a in aligned.values()} == {(2.0, -3.0)} and len(aligned) == 5

"""Augment: views move together, masks follow the image, dtype kept, deterministic."""

from __future__ import annotations

import numpy as np
import pytest

from seminspect.data.augment import Augment, GeometricOp, center_crop_sample, resize_sample
from seminspect.data.sample import Sample, View


def _sample(dtype=np.uint8, h: int = 24, w: int = 32) -> Sample:
    """Views are the same random pattern (+ a per-view constant) so geometry can be compared."""
    rng = np.random.default_rng(0)
    top = 255 if dtype == np.uint8 else 65535
    base = rng.integers(0, top // 2, (h, w)).astype(dtype)
    mask = np.zeros((h, w), bool)
    mask[5:9, 20:26] = True  # off-centre so every flip/rotation moves it
    bright = base.copy()
    bright[mask] = top - 20  # the bright "defect" (base stays below top // 2) in target views
    views = [View("target", i, (bright + i).astype(dtype), mask.copy()) for i in range(3)]
    views += [View("reference", i, (base + i).astype(dtype)) for i in range(3)]
    depth = np.arange(h * w, dtype=np.float32).reshape(h, w)
    return Sample("s", views, is_abnormal=True, defect_type="bridge", depth=depth, metadata={"lot": "a"})


def _geom_only(**kw) -> Augment:
    return Augment(p_photometric=0.0, **kw)


def test_masks_move_with_images_and_views_share_geometry():
    s = _sample()
    for seed in range(12):
        out = _geom_only(max_shift=3, seed=seed)(s)
        t0 = out.targets[0]
        # the bright defect pixels are exactly the mask pixels, after any transform
        assert np.array_equal(t0.mask, t0.image >= 235)
        for i, v in enumerate(out.targets):
            assert np.array_equal(v.mask, t0.mask)
            assert np.array_equal(v.image.astype(int) - i, t0.image.astype(int))
        for i, v in enumerate(out.references):
            assert np.array_equal(v.image.astype(int) - i, out.references[0].image.astype(int))
        # the depth ramp went through the same transform: recompute with the op
        assert out.depth.shape == t0.image.shape


def test_depth_follows_same_op():
    s = _sample()
    aug = _geom_only(max_shift=2, seed=3)
    op = _geom_only(max_shift=2, seed=3).draw_geometry(np.random.default_rng(3))
    out = aug(s, rng=np.random.default_rng(3))
    assert np.array_equal(out.depth, op.apply(s.depth))
    assert np.array_equal(out.targets[1].image, op.apply(s.targets[1].image))
    assert np.array_equal(out.targets[1].mask, op.apply(s.targets[1].mask))


def test_geometric_op_exact():
    a = np.arange(12).reshape(3, 4)
    assert np.array_equal(GeometricOp(flip_h=True).apply(a), a[:, ::-1])
    assert np.array_equal(GeometricOp(k=1).apply(a), np.rot90(a))
    shifted = GeometricOp(shift=(1, 0)).apply(a)
    assert np.array_equal(shifted[1:], a[:-1]) and np.array_equal(shifted[0], a[1])  # reflect pad
    shifted = GeometricOp(shift=(0, -2)).apply(a)
    assert np.array_equal(shifted[:, :2], a[:, 2:])


def test_rotation_of_non_square_swaps_shape():
    s = _sample()
    out = _geom_only(hflip=0, vflip=0, max_shift=0)(s, rng=np.random.default_rng(1))
    shapes = {v.image.shape for v in out.views} | {out.depth.shape}
    assert len(shapes) == 1


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_photometric_keeps_dtype_and_range_and_is_per_view(dtype):
    s = _sample(np.uint8)
    if dtype != np.uint8:
        for v in s.views:
            v.image = (v.image.astype(np.float64) / 255 * (65535 if dtype == np.uint16 else 1)).astype(dtype)
    aug = Augment(hflip=0, vflip=0, rot90=False, max_shift=0, brightness=0.2, contrast=0.3, noise_std=0.05,
                  poisson_peak=50, p_photometric=1.0, seed=0)
    out = aug(s)
    diffs = []
    for before, after in zip(s.views, out.views, strict=True):
        assert after.image.dtype == before.image.dtype
        if dtype == np.float32:
            assert after.image.min() >= 0.0 and after.image.max() <= 1.0
        assert not np.array_equal(after.image, before.image)
        diffs.append(float(np.mean(after.image.astype(np.float64) - before.image.astype(np.float64))))
        assert after.mask is None or np.array_equal(after.mask, before.mask)  # masks untouched
    assert len({round(d, 6) for d in diffs}) > 1  # independent draws per view
    assert np.array_equal(out.depth, s.depth)


def test_deterministic_and_input_untouched():
    s = _sample()
    copy = [v.image.copy() for v in s.views]
    a = [Augment(seed=7, max_shift=3)(s) for _ in range(2)]
    assert all(np.array_equal(x.image, y.image) for x, y in zip(a[0].views, a[1].views, strict=True))
    seq1 = Augment(seed=7)
    seq2 = Augment(seed=7)
    for _ in range(3):
        x, y = seq1(s), seq2(s)
        assert all(np.array_equal(p.image, q.image) for p, q in zip(x.views, y.views, strict=True))
    assert all(np.array_equal(v.image, c) for v, c in zip(s.views, copy, strict=True))
    outs = {Augment(seed=k)(s).targets[0].image.tobytes() for k in range(6)}
    assert len(outs) > 1
    assert a[0].metadata == {"lot": "a"} and a[0].defect_type == "bridge"


def test_as_dataset_transform(tmp_path):
    from seminspect.data.dataset import SampleDataset
    from seminspect.data.manifest import DatasetWriter

    with DatasetWriter(tmp_path / "d") as w:
        w.add(_sample())
    ds = SampleDataset(tmp_path / "d", transform=Augment(seed=0, p_photometric=0.0))
    out = ds[0]
    assert np.array_equal(out.targets[0].mask, out.targets[0].image >= 235)


def test_resize_and_center_crop():
    s = _sample(np.uint16)
    r = resize_sample(s, (12, 16))
    assert all(v.image.shape == (12, 16) and v.image.dtype == np.uint16 for v in r.views)
    assert r.targets[0].mask.dtype == bool and r.targets[0].mask.shape == (12, 16)
    assert 4 <= r.targets[0].mask.sum() <= 12  # 24 px mask at half scale ~ 6 px
    assert r.depth.shape == (12, 16)
    c = center_crop_sample(s, 16)
    assert all(v.image.shape == (16, 16) for v in c.views)
    assert np.array_equal(c.targets[0].image, s.targets[0].image[4:20, 8:24])
    assert np.array_equal(c.targets[0].mask, s.targets[0].mask[4:20, 8:24])
    big = center_crop_sample(s, (30, 32))
    assert big.targets[0].image.shape == (30, 32) and big.depth.shape == (30, 32)


def test_bad_arguments():
    with pytest.raises(ValueError):
        Augment(hflip=2.0)
    with pytest.raises(ValueError):
        Augment(max_shift=-1)
    with pytest.raises(ValueError):
        resize_sample(_sample(), 0)


def test_zoom_views_get_flips_but_not_pixel_shifts_by_default():
    s = _sample()
    zoom = np.arange(16 * 16, dtype=np.uint8).reshape(16, 16)
    s = Sample("z", s.views + [View("zoom", 0, zoom)], is_abnormal=True, defect_type="bridge")
    op = GeometricOp(flip_h=True, k=1, shift=(2, -1))
    for shift_zooms, expect in ((False, GeometricOp(flip_h=True, k=1)), (True, op)):
        aug = _geom_only(shift_zooms=shift_zooms)
        aug.draw_geometry = lambda rng, op=op: op  # fix the draw to compare exactly
        out = aug(s)
        assert np.array_equal(out.zooms[0].image, expect.apply(zoom))
        assert np.array_equal(out.targets[0].image, op.apply(s.targets[0].image))

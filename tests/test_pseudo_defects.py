"""Pseudo-defect generator: determinism, masks = changed pixels, range, shapes, every source."""

from __future__ import annotations

import numpy as np
import pytest

from seminspect.data.pseudo_defects import SOURCES, PseudoDefectError, PseudoDefectGenerator, perlin_noise


def _image(shape: tuple[int, int], seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    lines = ((xx // 6) % 2).astype(np.float32) * 0.4 + 0.3  # a line pattern, like a die
    return np.clip(lines + rng.normal(0, 0.03, shape), 0, 1).astype(np.float32)


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("shape", [(64, 64), (48, 130), (150, 40)])
def test_each_source_mask_is_exactly_the_changed_pixels(source, shape):
    img = _image(shape)
    gen = PseudoDefectGenerator(sources=SOURCES, seed=3)
    for _ in range(5):
        out, mask = gen.apply(img, source=source)
        assert out.shape == shape and mask.shape == shape
        assert out.dtype == np.float32 and mask.dtype == bool
        assert mask.any()
        np.testing.assert_array_equal(out != img, mask)
        assert out.min() >= 0.0 and out.max() <= 1.0
        assert np.abs(out - img)[mask].min() >= gen.min_change - 1e-7


def test_deterministic_by_seed_and_rng():
    img = _image((80, 96))
    a = [PseudoDefectGenerator(SOURCES, seed=7).apply(img) for _ in range(1)]
    g1, g2 = PseudoDefectGenerator(SOURCES, seed=7), PseudoDefectGenerator(SOURCES, seed=7)
    for _ in range(6):
        (o1, m1), (o2, m2) = g1.apply(img), g2.apply(img)
        np.testing.assert_array_equal(o1, o2)
        np.testing.assert_array_equal(m1, m2)
    o3, m3 = PseudoDefectGenerator(SOURCES, seed=8).apply(img)
    assert not (np.array_equal(o3, a[0][0]) and np.array_equal(m3, a[0][1]))
    # an explicit rng gives the same result whatever the generator's own seed
    r1 = PseudoDefectGenerator(SOURCES, seed=0).apply(img, np.random.default_rng(5))
    r2 = PseudoDefectGenerator(SOURCES, seed=99).apply(img, np.random.default_rng(5))
    np.testing.assert_array_equal(r1[0], r2[0])


def test_texture_from_another_image_and_batch():
    imgs = np.stack([_image((40, 72), s) for s in range(4)])
    tex = np.full((20, 30), 0.9, np.float32)  # smaller than the image: tiled
    gen = PseudoDefectGenerator(("perlin", "cutpaste"), seed=0)
    out, mask = gen.apply(imgs[0], texture=tex)
    np.testing.assert_array_equal(out != imgs[0], mask)
    bo, bm = gen.batch(imgs)
    assert bo.shape == imgs.shape and bm.shape == imgs.shape
    assert bm.reshape(4, -1).any(axis=1).all()
    np.testing.assert_array_equal(bo != imgs, bm)
    bo2, bm2 = PseudoDefectGenerator(("perlin", "cutpaste"), seed=0).batch(imgs, np.random.default_rng(1))
    bo3, _ = PseudoDefectGenerator(("perlin", "cutpaste"), seed=5).batch(imgs, np.random.default_rng(1))
    np.testing.assert_array_equal(bo2, bo3)


def test_area_bounds_and_flat_images():
    img = _image((128, 128))
    gen = PseudoDefectGenerator(("perlin", "cutpaste"), seed=2, min_area=0.01, max_area=0.05)
    areas = [gen.apply(img)[1].mean() for _ in range(30)]
    assert max(areas) <= 0.05 * 1.5  # rotation / scaling of a pasted patch may exceed the drawn area a little
    for value in (0.0, 1.0):  # saturated images still get a visible anomaly
        flat = np.full((32, 32), value, np.float32)
        out, mask = PseudoDefectGenerator(SOURCES, seed=0).apply(flat)
        assert mask.any()
        np.testing.assert_array_equal(out != flat, mask)


def test_perlin_noise_any_shape():
    n = perlin_noise((37, 91), (4, 8), np.random.default_rng(0))
    assert n.shape == (37, 91) and n.dtype == np.float32 and np.isfinite(n).all()
    assert 0.1 < float(n.std()) < 0.5


@pytest.mark.parametrize("kwargs", [dict(sources=("blur",)), dict(min_area=0.2, max_area=0.1),
                                    dict(fab_types=("bridge",)), dict(weights=(1.0,))])
def test_bad_settings(kwargs):
    with pytest.raises(PseudoDefectError):
        PseudoDefectGenerator(**{"sources": ("perlin", "cutpaste"), **kwargs})


@pytest.mark.parametrize("image", [np.zeros((4, 4), np.float32), np.full((16, 16), 2.0, np.float32),
                                   np.zeros((2, 16, 16), np.float32), np.full((16, 16), np.nan, np.float32)])
def test_bad_images(image):
    with pytest.raises(PseudoDefectError, match="image"):
        PseudoDefectGenerator().apply(image)

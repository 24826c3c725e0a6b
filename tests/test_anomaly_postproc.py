"""Map post-processing: ``map_dilation`` (local max before the Gaussian) spreads a peak over its box.

DeepPCB's ground truth is boxes larger than the defects; a map that only lights the defect's
most different patch loses pixel AUROC on the rest of the box. These tests fail on the code
before ``map_dilation`` existed (the config refused the key).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import ndimage

from seminspect.data.imageio import to_uint
from seminspect.data.sample import Sample, View
from seminspect.evaluation.pixel_metrics import pixel_auroc
from seminspect.models.anomaly import AnomalyConfig, AnomalyDetector, features
from seminspect.models.anomaly.features import dilate_map, gaussian_blur

SIZE = 64


@pytest.mark.parametrize(("h", "w"), [(64, 64), (1, 5), (3, 40), (33, 7)])
@pytest.mark.parametrize("sigma", [0.7, 4.0])
def test_gaussian_blur_by_matrices_equals_scipy_reflect(h: int, w: int, sigma: float, monkeypatch) -> None:
    maps = torch.rand(2, 1, h, w, generator=torch.Generator().manual_seed(0))
    dense = gaussian_blur(maps, sigma)
    monkeypatch.setattr(features, "DENSE_BLUR_MAX", 0)  # the 1-D convolutions, as for maps over 2,048 px
    conv = gaussian_blur(maps, sigma)
    assert dense.shape == maps.shape and torch.allclose(dense, conv, atol=1e-6)
    if min(h, w) > round(4 * sigma):  # one reflection suffices: scipy's "mirror" mode is the same filter
        ref = ndimage.gaussian_filter(maps.numpy()[:, 0].astype(np.float64), (0, sigma, sigma), mode="mirror",
                                      truncate=round(4 * sigma) / sigma)
        np.testing.assert_allclose(dense.numpy()[:, 0], ref, atol=1e-5)


def test_dilate_map_is_a_centred_local_max() -> None:
    m = torch.zeros(1, 1, 9, 9)
    m[0, 0, 4, 4] = 2.0
    m[0, 0, 0, 8] = 1.0
    out = dilate_map(m, 3)
    assert out.shape == m.shape
    assert torch.equal(out[0, 0, 3:6, 3:6], torch.full((3, 3), 2.0))  # the peak now covers its 3x3 window
    assert float(out[0, 0, 2, 4]) == 0.0  # and nothing beyond it
    assert torch.equal(out[0, 0, 0:2, 7:9], torch.ones(2, 2))  # clipped at the border, same size
    assert torch.equal(dilate_map(m, 4), dilate_map(m, 5))  # even sizes round up to a centred odd window
    assert dilate_map(m, 0) is m and dilate_map(m, 1) is m


def pair(i: int, seed: int, abnormal: bool) -> Sample:
    """A textured die pair; an abnormal target has a 3 px bright dot, its mask a 21 px box around it."""
    rng = np.random.default_rng(seed * 100 + i)
    scene = ndimage.gaussian_filter(rng.random((SIZE, SIZE)), 2.0)
    scene = 0.3 + 0.4 * (scene > np.median(scene))
    target = scene + rng.normal(0, 0.02, scene.shape)
    ref = scene + rng.normal(0, 0.02, scene.shape)
    mask = np.zeros((SIZE, SIZE), bool)
    if abnormal:
        cy, cx = rng.integers(24, 40, 2)
        target[cy - 1:cy + 2, cx - 1:cx + 2] = 1.0
        mask[cy - 10:cy + 11, cx - 10:cx + 11] = True  # box-style ground truth, larger than the defect
    views = [View("target", 0, to_uint(np.clip(target, 0, 1)), mask=mask),
             View("reference", 0, to_uint(np.clip(ref, 0, 1)))]
    return Sample(f"p{seed}_{i}", views, is_abnormal=abnormal)


def cfg(**kw) -> AnomalyConfig:
    base = dict(backbone="tiny", pretrained=False, out_indices=[0, 1, 2], layers=[0, 1], sigma=1.0,
                max_bank_patches=500, batch_size=8, conditioning="difference", pool=1, calib_fraction=0.0,
                registration="off")
    base.update(kw)
    return AnomalyConfig(**base)


@pytest.fixture(scope="module")
def data() -> tuple[list[Sample], list[Sample]]:
    train = [pair(i, 1, False) for i in range(10)]
    test = [pair(i, 2, False) for i in range(6)] + [pair(i, 3, True) for i in range(6)]
    return train, test


def test_map_dilation_raises_pixel_auroc_against_box_masks(data) -> None:
    train, test = data
    plain = AnomalyDetector(cfg()).fit(train).score(test)
    wide = AnomalyDetector(cfg(map_dilation=15)).fit(train).score(test)
    assert plain.masks is not None and wide.masks is not None
    auc_plain = pixel_auroc(plain.masks, plain.maps)
    auc_wide = pixel_auroc(wide.masks, wide.maps)
    assert auc_wide > auc_plain + 0.02, (auc_plain, auc_wide)
    # a local max never lowers a map value, and the image score (the max) is unchanged
    raw = AnomalyDetector(cfg(sigma=0.0)).fit(train).score(test)
    dil = AnomalyDetector(cfg(sigma=0.0, map_dilation=15)).fit(train).score(test)
    assert (dil.maps >= raw.maps - 1e-6).all()
    np.testing.assert_allclose(dil.scores, raw.scores, rtol=1e-6)


def test_models_saved_before_map_dilation_load_without_it(data, tmp_path) -> None:
    train, test = data
    det = AnomalyDetector(cfg()).fit(train)
    det.save(tmp_path)
    meta = json.loads((tmp_path / "config.json").read_text())
    del meta["config"]["map_dilation"]  # as written by the code before the setting existed
    (tmp_path / "config.json").write_text(json.dumps(meta))
    loaded = AnomalyDetector.load(tmp_path)
    assert loaded.config.map_dilation == 0
    np.testing.assert_array_equal(loaded.score(test).maps, det.score(test).maps)

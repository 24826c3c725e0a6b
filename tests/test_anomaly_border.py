"""The strip a registered reference's shift uncovers holds no reference data: it must not score as a defect."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from seminspect.data.imageio import to_uint
from seminspect.data.sample import Sample, View
from seminspect.models.anomaly import AnomalyConfig, AnomalyDetector

SIZE = 64


def scene_sample(i: int, seed: int, shift: tuple[float, float], abnormal: bool = False) -> Sample:
    """Target and reference crops of one larger line scene; the reference is offset by ``shift`` px."""
    rng = np.random.default_rng(seed * 1000 + i)
    big = SIZE + 16
    # a non-periodic binary layout (a periodic one lets phase correlation lock onto the wrong period)
    blobs = ndimage.gaussian_filter(rng.random((big, big)), 3.0)
    scene = ndimage.gaussian_filter(0.3 + 0.4 * (blobs > np.median(blobs)), 1.0)
    target = scene[8:8 + SIZE, 8:8 + SIZE] + rng.normal(0, 0.02, (SIZE, SIZE))
    # the reference die imaged the same scene displaced by `shift` (it sees a different field at its borders)
    ref = ndimage.shift(scene, shift, order=3, mode="nearest")[8:8 + SIZE, 8:8 + SIZE]
    ref = ref + rng.normal(0, 0.02, (SIZE, SIZE))
    mask = np.zeros((SIZE, SIZE), bool)
    if abnormal:
        cy, cx = rng.integers(24, 40, 2)
        mask = (np.mgrid[:SIZE, :SIZE][0] - cy) ** 2 + (np.mgrid[:SIZE, :SIZE][1] - cx) ** 2 <= 9
        target = np.where(mask, 0.95, target)
    views = [View("target", 0, to_uint(np.clip(target, 0, 1)), mask=mask),
             View("reference", 0, to_uint(np.clip(ref, 0, 1)))]
    return Sample(f"b{seed}_{i}", views, is_abnormal=abnormal, defect_type="blob" if abnormal else None)


def cfg(**kw) -> AnomalyConfig:
    base = dict(backbone="tiny", pretrained=False, out_indices=[0, 1, 2], layers=[0, 1], sigma=2.0,
                max_bank_patches=600, batch_size=8, conditioning="difference", pool=1, calib_fraction=0.0)
    base.update(kw)
    return AnomalyConfig(**base)


@pytest.fixture(scope="module")
def samples() -> dict[str, list[Sample]]:
    rng = np.random.default_rng(5)
    train = [scene_sample(i, 1, tuple(rng.uniform(-0.4, 0.4, 2))) for i in range(16)]  # well aligned dies
    # test dies 3-4 px off: registration fixes the interior, the uncovered strip is filled by reflection
    shifts = [tuple(rng.uniform(3, 4, 2) * rng.choice([-1, 1], 2)) for _ in range(12)]
    normal = [scene_sample(i, 2, s) for i, s in enumerate(shifts)]
    abnormal = [scene_sample(i, 3, s, abnormal=True) for i, s in enumerate(shifts)]
    return {"train": train, "normal": normal, "abnormal": abnormal}


def test_fill_border_removes_false_border_differences(samples) -> None:
    from sklearn.metrics import roc_auc_score

    normal, abnormal = {}, {}
    for fill in (False, True):
        det = AnomalyDetector(cfg(fill_border=fill)).fit(samples["train"])
        res = det.score(samples["normal"])
        normal[fill] = res.scores
        abnormal[fill] = det.score(samples["abnormal"]).scores
        if not fill:  # the reflected strip, not the registered interior, is what scores high
            interior = np.array([m[8:-8, 8:-8].max() for m in res.maps])
            assert np.median(res.scores) > 1.8 * np.median(interior)
    labels = np.r_[np.zeros(len(normal[True])), np.ones(len(abnormal[True]))]
    auc = {f: roc_auc_score(labels, np.r_[normal[f], abnormal[f]]) for f in (False, True)}
    # without the fill, misaligned normal dies score as high as the defective ones
    assert auc[False] < 0.8
    assert np.median(normal[True]) < 0.5 * np.median(normal[False])
    assert np.mean(abnormal[True] > normal[True].max()) >= 0.9 and auc[True] > 0.98


def test_older_saved_models_keep_their_behaviour(tmp_path, samples) -> None:
    det = AnomalyDetector(cfg(fill_border=False, match_radius=1)).fit(samples["train"][:6])
    det.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    del meta["config"]["fill_border"]  # as written before the setting existed
    (tmp_path / "m" / "config.json").write_text(json.dumps(meta))
    old = AnomalyDetector.load(tmp_path / "m")
    assert old.config.fill_border is False and old.config.match_radius == 1
    np.testing.assert_array_equal(old.predict(samples["normal"][:3])[0], det.predict(samples["normal"][:3])[0])
    assert AnomalyConfig().fill_border is True and AnomalyConfig().match_radius == 0


def test_denoise_sigma_smooths_both_images_before_the_model() -> None:
    rng = np.random.default_rng(0)
    noise = [to_uint(np.clip(0.5 + rng.normal(0, 0.1, (SIZE, SIZE)), 0, 1)) for _ in range(2)]
    s = Sample("n", [View("target", 0, noise[0]), View("reference", 0, noise[1])], is_abnormal=False)
    stds = {}
    for sigma in (0.0, 1.0):
        det = AnomalyDetector(cfg(denoise_sigma=sigma, registration="off"))
        item = next(det._items_of_sample(0, s))
        stds[sigma] = (float(item.target.std()), float(item.reference.std()))
    # white noise through a 1 px Gaussian keeps 1 / (2 sqrt(pi) sigma) = 0.28 of its standard deviation
    for raw, smooth in zip(stds[0.0], stds[1.0], strict=True):
        assert 0.22 < smooth / raw < 0.34


@pytest.mark.parametrize("how", ["max", "mean"])
def test_view_combine(samples, how: str) -> None:
    det = AnomalyDetector(cfg(view_combine=how)).fit(samples["train"][:6])
    a, b = samples["abnormal"][0], samples["normal"][1]
    # one sample with two detector views: view 0 from a defective die, view 1 from a normal one
    two = Sample("two", [a.views[0], a.views[1],
                         View("target", 1, b.views[0].image, mask=b.views[0].mask),
                         View("reference", 1, b.views[1].image)], is_abnormal=True)
    res = det.score([two, a, b])
    want = np.maximum(res.maps[1], res.maps[2]) if how == "max" else (res.maps[1] + res.maps[2]) / 2
    np.testing.assert_allclose(res.maps[0], want, rtol=1e-5, atol=1e-6)
    assert res.scores[0] == pytest.approx(float(want.max()), rel=1e-5)

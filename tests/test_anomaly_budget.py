"""Separate image-score post-processing, and the PatchCore working-memory budget.

- ``score_sigma`` / ``score_dilation``: the image score is taken from its own smoothing of the raw
  maps while the returned maps keep ``sigma`` / ``map_dilation`` (fails on code where both came
  from one map: the config refused the keys).
- ``memory_budget_mib``: one number sets the batch, pool, bank and search block so that each
  phase's planned bytes stay within the budget; the detector follows the plan.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from seminspect.data.imageio import to_float, to_uint
from seminspect.data.sample import Sample, View
from seminspect.models.anomaly import AnomalyConfig, AnomalyConfigError, AnomalyDetector
from seminspect.models.anomaly.features import TinyConvBackbone, postprocess_maps
from seminspect.models.anomaly.memory import USABLE, activation_bytes, item_bytes, plan_memory

SIZE = 64
MiB = 2**20


def site(i: int, abnormal: bool, views: int = 2) -> Sample:
    """A textured die with ``views`` target/reference angles; an abnormal target has a bright dot."""
    rng = np.random.default_rng(i)
    out = []
    for v in range(views):
        scene = ndimage.gaussian_filter(rng.random((SIZE, SIZE)), 2.0)
        scene = 0.3 + 0.4 * (scene > np.median(scene))
        target = scene + rng.normal(0, 0.02, scene.shape)
        if abnormal:
            target[30:33, 30:33] = 1.0
        out += [View("target", v, to_uint(np.clip(target, 0, 1))),
                View("reference", v, to_uint(np.clip(scene + rng.normal(0, 0.02, scene.shape), 0, 1)))]
    return Sample(f"s{i}", out, is_abnormal=abnormal)


def cfg(**kw) -> AnomalyConfig:
    base = dict(backbone="tiny", pretrained=False, out_indices=[0, 1, 2], layers=[0, 1], sigma=1.0, pool=1,
                max_bank_patches=400, batch_size=8, conditioning="difference", calib_fraction=0.0,
                registration="off", view_combine="mean")
    base.update(kw)
    return AnomalyConfig(**base)


def clone(det: AnomalyDetector, **changes) -> AnomalyDetector:
    """A detector with ``det``'s fitted bank and weights under changed scoring settings."""
    other = AnomalyDetector(det.config.model_copy(update=changes))
    other.model.bank = torch.empty_like(det.model.bank)
    other.model.load_state_dict(det.model.state_dict())
    return other


@pytest.fixture(scope="module")
def sites() -> tuple[list[Sample], list[Sample]]:
    return [site(i, False) for i in range(12)], [site(100 + i, i % 2 == 1) for i in range(6)]


def test_score_smoothing_is_separate_from_the_maps(sites) -> None:
    normal, test = sites
    plain = AnomalyDetector(cfg()).fit(normal, calib=[])
    split = clone(plain, score_sigma=4.0, score_dilation=5)
    assert split.separate_score_maps and not plain.separate_score_maps
    a, b = plain.score(test), split.score(test)
    np.testing.assert_array_equal(a.maps, b.maps)  # the returned maps keep sigma / map_dilation
    assert not np.allclose(a.scores, b.scores)
    # the scores are the max of the view-mean of the raw maps post-processed with the score settings
    model = split.model
    expected = []
    for s in test:
        t = torch.stack([torch.from_numpy(to_float(v.image))[None] for v in s.targets])
        r = torch.stack([torch.from_numpy(to_float(v.image))[None] for v in s.references])
        m = postprocess_maps(model.raw_maps(t, r), 5, 4.0, 0.0)[:, 0].mean(0)
        expected.append(float(m.max()))
    np.testing.assert_allclose(b.scores, expected, rtol=1e-5)
    # equal settings are not "separate": scores identical to the plain detector's
    same = clone(plain, score_sigma=1.0, score_dilation=0)
    assert not same.separate_score_maps
    np.testing.assert_array_equal(same.score(test).scores, a.scores)


def test_activation_bytes_scale_with_area() -> None:
    bb = TinyConvBackbone(out_indices=(0, 1, 2))
    a64, a128 = activation_bytes(bb, 64, 64), activation_bytes(bb, 128, 128)
    assert a64 > 64 * 64 * 4  # more than the input alone
    assert a128 == pytest.approx(4 * a64, rel=0.01)


@pytest.mark.parametrize("budget_mib", [8, 32, 256])
def test_plan_keeps_every_phase_within_the_budget(budget_mib: int) -> None:
    budget = budget_mib * MiB
    plan = plan_memory(budget, per_item_bytes=2 * MiB, dim=112, proj_dim=64, max_batch=32, max_pool=200_000,
                       max_bank=16384)
    for phase in (plan.embed_phase_bytes, plan.coreset_phase_bytes, plan.score_phase_bytes):
        assert phase <= USABLE * budget
    assert plan.max_bank_patches <= plan.max_pool_patches
    assert 1 <= plan.batch_size <= 32 and 1 <= plan.query_chunk <= 4096


def test_plan_grows_with_the_budget_and_respects_the_config() -> None:
    kw = dict(per_item_bytes=2 * MiB, dim=112, proj_dim=64, max_batch=32, max_pool=200_000, max_bank=16384)
    small, big = plan_memory(16 * MiB, **kw), plan_memory(512 * MiB, **kw)
    assert small.batch_size < big.batch_size == 32  # capped by the config's batch_size
    assert small.max_pool_patches < big.max_pool_patches <= 200_000
    assert small.max_bank_patches < big.max_bank_patches <= 16384
    fixed = plan_memory(16 * MiB, **kw, bank_rows=10_000)  # scoring a larger bank: a smaller search block
    assert fixed.query_chunk < small.query_chunk
    with pytest.raises(AnomalyConfigError, match="too small for one item"):
        plan_memory(4 * MiB, **dict(kw, per_item_bytes=3 * MiB))


def test_detector_follows_its_memory_plan(sites) -> None:
    normal, test = sites
    det = AnomalyDetector(cfg(memory_budget_mib=12.0, max_pool_patches=10**6, max_bank_patches=10**6))
    det.fit(normal, calib=[])
    plan = det.history["memory_plan"]
    assert plan["budget_bytes"] == 12 * MiB
    assert det.history["pool_patches"] <= plan["max_pool_patches"] < 12 * 2 * 32 * 32  # the pool was cut
    assert det.history["bank_patches"] <= plan["max_bank_patches"]
    assert det.history["bank_bytes"] <= 0.15 * 12 * MiB
    per_item = item_bytes(det.model.backbone, SIZE, SIZE, images_per_item=2, raw_dim=det.model.raw_dim,
                          reduction=det.model.backbone.feature_info[0]["reduction"])
    assert plan["batch_size"] == min(8, int(0.35 * 12 * MiB // per_item))
    scores, maps = det.predict(test)
    assert det.model.query_chunk < 4096  # the search block was sized for the budget too
    assert scores[1::2].min() > scores[0::2].max()  # still finds the dots
    # the same model without the budget: identical bank size limits aside, scoring is unchanged
    free = clone(det, memory_budget_mib=None)
    np.testing.assert_allclose(free.predict(test)[0], scores, rtol=1e-5)


def test_budget_is_patchcore_only() -> None:
    with pytest.raises(AnomalyConfigError, match="memory_budget_mib applies to model: patchcore"):
        AnomalyDetector(dict(cfg().model_dump(), model="stpm", memory_budget_mib=64))

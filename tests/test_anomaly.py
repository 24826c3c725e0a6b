"""Anomaly models: PatchCore (plain and reference-conditioned), STPM, estimator API, save/load."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import ndimage

from seminspect.data.batch import collate
from seminspect.data.imageio import to_uint
from seminspect.data.sample import Sample, View
from seminspect.models.anomaly import (
    AnomalyConfig,
    AnomalyConfigError,
    AnomalyDetector,
    TinyConvBackbone,
    greedy_coreset,
)
from seminspect.models.anomaly.patchcore import chunked_min_distance

SIZE = 64


def make_sample(i: int, abnormal: bool, seed: int = 0, shift: float = 0.0) -> Sample:
    """A die pattern (lines + texture), its reference (noise, optional misalignment), optional blob."""
    rng = np.random.default_rng(seed * 10_000 + i)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    period = rng.uniform(7, 9)
    base = 0.5 + 0.25 * np.sign(np.sin(2 * np.pi * xx / period + rng.uniform(0, 6)))
    base = ndimage.gaussian_filter(base, 1.0)
    target = base + rng.normal(0, 0.02, base.shape)
    ref = ndimage.shift(base, (shift, -shift), order=1, mode="reflect") + rng.normal(0, 0.02, base.shape)
    mask = None
    if abnormal:
        cy, cx = rng.integers(20, 44, 2)
        r = rng.uniform(3, 5)
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        target = np.where(mask, 0.95, target)
    views = [View("target", 0, to_uint(np.clip(target, 0, 1)), mask=mask if abnormal else np.zeros_like(base, bool)),
             View("reference", 0, to_uint(np.clip(ref, 0, 1)))]
    return Sample(f"s{seed}_{i}", views, is_abnormal=abnormal, defect_type="blob" if abnormal else None)


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


@pytest.fixture(scope="module")
def data() -> dict[str, list[Sample]]:
    return {
        "train": [make_sample(i, False, seed=1) for i in range(24)],
        "test": [make_sample(i, i % 2 == 1, seed=2) for i in range(20)],
    }


def tiny_cfg(**kw) -> AnomalyConfig:
    base = dict(backbone="tiny", pretrained=False, out_indices=[0, 1, 2], layers=[0, 1], sigma=2.0,
                max_bank_patches=600, batch_size=8)
    base.update(kw)
    return AnomalyConfig(**base)


@pytest.mark.parametrize("conditioning", ["none", "reference", "difference"])
def test_patchcore_detects_blob(data, conditioning: str) -> None:
    det = AnomalyDetector(tiny_cfg(conditioning=conditioning)).fit(data["train"])
    res = det.score(data["test"])
    assert res.maps.shape == (20, SIZE, SIZE)
    assert auroc(res.scores, res.labels) > 0.9
    # the map peaks inside the blob on abnormal samples
    ab = np.flatnonzero(res.labels == 1)
    inside = [res.maps[i][res.masks[i]].max() > np.percentile(res.maps[i], 95) for i in ab]
    assert np.mean(inside) > 0.8
    assert det.threshold is not None and det.threshold["kind"] == "normal_quantile"
    # 5 held-out normals cannot bound a 1 % false-alarm rate: the largest normal score is used, with a warning
    assert "warning" in det.threshold
    assert det.threshold["threshold"] == pytest.approx(det.normal_score_range[1])
    assert det.decide(res.scores).sum() >= (res.labels == 1).sum() * 0.8


def test_bank_respects_memory_bound(data) -> None:
    det = AnomalyDetector(tiny_cfg(max_bank_bytes=64 * 1024, max_pool_patches=3000)).fit(data["train"])
    bank = det.model.bank
    assert bank.numel() * 4 <= 64 * 1024
    assert det.history["pool_patches"] <= 3000
    det2 = AnomalyDetector(tiny_cfg(max_bank_patches=100, embed_dim=16)).fit(data["train"])
    assert det2.model.bank.shape == (100, 16)


def test_greedy_coreset_covers_clusters() -> None:
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(5, 32, generator=gen) * 10
    pts = torch.cat([c + 0.1 * torch.randn(200, 32, generator=gen) for c in centres])
    idx = greedy_coreset(pts, 5, proj_dim=16, chunk=64)
    assert len(set((idx // 200).tolist())) == 5  # one point from every cluster
    q = torch.randn(50, 8, generator=gen)
    b = torch.randn(300, 8, generator=gen)
    assert torch.allclose(chunked_min_distance(q, b, chunk=7, bank_chunk=11), torch.cdist(q, b).min(1).values,
                          atol=1e-5)


@pytest.mark.parametrize("proj_dim", [16, 0])  # projected, and the features as they are
def test_int8_coreset_covers_like_fp32(proj_dim: int) -> None:
    gen = torch.Generator().manual_seed(1)
    centres = torch.randn(40, 32, generator=gen) * 3
    pts = centres[torch.randint(0, 40, (3000,), generator=gen)] + torch.randn(3000, 32, generator=gen)
    radius = {}
    for precision in ("fp32", "int8"):
        idx = greedy_coreset(pts, 60, proj_dim=proj_dim, chunk=700, precision=precision)
        assert idx.unique().numel() == 60  # k-center never picks a chosen point again
        radius[precision] = float(torch.cdist(pts, pts[idx]).min(1).values.max())  # the k-center objective
    assert radius["int8"] <= 1.1 * radius["fp32"]
    assert torch.equal(greedy_coreset(pts, 60, proj_dim=proj_dim, chunk=700, precision="int8"),
                       greedy_coreset(pts, 60, proj_dim=proj_dim, chunk=3000, precision="int8"))  # chunks: same
    with pytest.raises(ValueError, match="coreset precision"):
        greedy_coreset(pts, 5, precision="bf16")


def test_int8_coreset_in_the_detector(data) -> None:
    det = AnomalyDetector(tiny_cfg(coreset_precision="int8", max_bank_patches=100)).fit(data["train"])
    scores, _ = det.predict(data["test"])
    assert det.model.bank.shape[0] == 100 and np.isfinite(scores).all()


def test_save_load_roundtrip(tmp_path, data) -> None:
    det = AnomalyDetector(tiny_cfg(conditioning="reference", embed_dim=24)).fit(data["train"])
    s1, m1 = det.predict(data["test"][:6])
    det.save(tmp_path / "model")
    assert json.loads((tmp_path / "model" / "config.json").read_text())["config"]["conditioning"] == "reference"
    det2 = AnomalyDetector.load(tmp_path / "model")
    s2, m2 = det2.predict(data["test"][:6])
    np.testing.assert_array_equal(s1, s2)
    np.testing.assert_array_equal(m1, m2)
    assert det2.threshold == det.threshold
    with pytest.raises(AnomalyConfigError):
        AnomalyDetector.load(tmp_path / "missing")


def test_batch_input_matches_samples(data) -> None:
    det = AnomalyDetector(tiny_cfg(registration="off")).fit(data["train"][:10], calib=data["train"][10:])
    s_samples, _ = det.predict(data["test"][:4])
    s_batch, _ = det.predict(collate(data["test"][:4]))
    np.testing.assert_allclose(s_samples, s_batch, rtol=1e-5)


def test_custom_backbone_module(data, tmp_path) -> None:
    bb = TinyConvBackbone(out_indices=(0, 1), width=8, seed=3)
    det = AnomalyDetector(tiny_cfg(backbone="custom"), backbone=bb).fit(data["train"][:8])
    det.save(tmp_path / "m")
    with pytest.raises(AnomalyConfigError, match="custom backbone"):
        AnomalyDetector.load(tmp_path / "m")
    again = AnomalyDetector.load(tmp_path / "m", backbone=bb)
    np.testing.assert_array_equal(det.predict(data["test"][:2])[0], again.predict(data["test"][:2])[0])


def test_reference_required(data) -> None:
    det = AnomalyDetector(tiny_cfg(conditioning="reference"))
    lonely = Sample("x", [View("target", 0, np.zeros((SIZE, SIZE), np.uint8))])
    with pytest.raises(AnomalyConfigError, match="no reference"):
        det.fit([lonely])


@pytest.mark.parametrize("mode", ["classic", "template"])
def test_stpm_trains_and_resumes(tmp_path, data, mode: str) -> None:
    cfg = tiny_cfg(model="stpm", stpm_mode=mode, layer_weights=[1, 1, 1], epochs=3, lr=3e-3, loss="l2")
    det = AnomalyDetector(cfg).fit(data["train"], checkpoint_dir=tmp_path / "ckpt")
    losses = det.history["losses"]
    assert len(losses) == 3 and losses[-1] < losses[0]
    # reflect padding is on in the student only
    convs = [m for m in det.model.student.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.padding_mode == "reflect" for c in convs)
    assert all(m.padding_mode == "zeros" for m in det.model.teacher.modules() if isinstance(m, torch.nn.Conv2d))
    scores, maps = det.predict(data["test"][:4])
    assert scores.shape == (4,) and maps.shape == (4, SIZE, SIZE) and np.isfinite(maps).all()
    # resume: more epochs continue from the checkpoint (3 done -> 1 more)
    det2 = AnomalyDetector(cfg.model_copy(update={"epochs": 4})).fit(data["train"], checkpoint_dir=tmp_path / "ckpt")
    assert det2.history["losses"][:3] == pytest.approx(losses)
    assert len(det2.history["losses"]) == 4


def test_stpm_huber_and_centre_prior(data) -> None:
    cfg = tiny_cfg(model="stpm", layer_weights=[1, 0.5, 0.25], epochs=1, loss="huber", centre_sigma=0.3)
    det = AnomalyDetector(cfg).fit(data["train"][:8])
    _, maps = det.predict(data["test"][:2])
    assert maps.shape == (2, SIZE, SIZE)


def test_bad_config() -> None:
    with pytest.raises(AnomalyConfigError):
        AnomalyDetector({"model": "padim"})
    with pytest.raises(AnomalyConfigError):
        AnomalyDetector(tiny_cfg(layers=[5]))

"""PatchCore's ``position_weight``: a normal pattern in the wrong place is found only with position channels."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from seminspect.data.sample import Role, Sample, View
from seminspect.models.anomaly import AnomalyDetector

TINY = {"backbone": "tiny", "pretrained": False, "max_bank_patches": 2048, "max_pool_patches": 40000,
        "batch_size": 8, "conditioning": "none", "crop": None, "registration": "off", "image_size": 128,
        "calib_fraction": 0.0}


def _cell(sid: str, rng: np.random.Generator, misplaced: bool) -> Sample:
    """A bright square at one of three fixed places near row 26 (normal) or near row 90 (the anomaly), at least
    24 px from every border: the square and its surroundings look the same either way, only the place is wrong."""
    img = 0.5 + rng.normal(0, 0.01, (128, 128))
    y = (90 if misplaced else 26) + int(rng.integers(-2, 3))
    x = int(rng.choice([28, 60, 92])) + int(rng.integers(-2, 3))
    img[y:y + 8, x:x + 8] += 0.45
    return Sample(sid, [View(Role.TARGET, 0, np.clip(img, 0, 1).astype(np.float32))], is_abnormal=misplaced)


def _cells(seed: int, n: int, misplaced: bool) -> list[Sample]:
    rng = np.random.default_rng(seed)
    return [_cell(f"c{seed}_{i}", rng, misplaced) for i in range(n)]


def test_position_channels_find_a_pattern_out_of_place_and_round_trip(tmp_path) -> None:
    fit = _cells(1, 20, False)
    test = _cells(2, 10, False) + _cells(3, 10, True)
    y = np.array([s.is_abnormal for s in test])
    plain = AnomalyDetector(TINY).fit(fit)
    placed = AnomalyDetector({**TINY, "position_weight": 2.0}).fit(fit)
    assert placed.model.bank.shape[1] == plain.model.bank.shape[1] + 2
    auc_plain = roc_auc_score(y, plain.score(test, progress=False).scores)
    res = placed.score(test, progress=False)
    auc_placed = roc_auc_score(y, res.scores)
    assert auc_placed == 1.0 and auc_plain < 0.9, (auc_plain, auc_placed)
    placed.save(tmp_path / "m")
    again = AnomalyDetector.load(tmp_path / "m")
    assert again.config.position_weight == 2.0
    np.testing.assert_allclose(again.score(test, progress=False).scores, res.scores, rtol=1e-5)
    pytest.importorskip("onnxruntime")
    from seminspect.inference.anomaly_runtime import use_runtime

    use_runtime(again, tmp_path / "m", "onnxruntime", "fp32", 1)  # the exported embedding, positions added after
    np.testing.assert_allclose(again.score(test, progress=False).scores, res.scores, rtol=1e-4, atol=1e-6)


def test_position_weight_is_patchcores_alone() -> None:
    with pytest.raises(ValueError, match="position_weight applies to model: patchcore"):
        AnomalyDetector({**TINY, "model": "stpm", "position_weight": 1.0})

"""STPM teacher fine-tuning (``teacher_finetune_epochs``): pseudo-defect heads move the teacher's deep weights.

The first ``teacher_frozen_layers`` maps' weights and every BatchNorm statistic stay pretrained; the tuned
teacher is saved with the model, reproducible from the seed, resumed from a checkpoint folder only with the
same settings; off (0) by default, refused for other models and when no map is left to tune."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.conftest import STPM64, stpm64_config, stpm64_sample

from seminspect.data.sample import Sample
from seminspect.models.anomaly import AnomalyConfig, AnomalyConfigError, AnomalyDetector
from seminspect.models.anomaly.features import build_backbone
from seminspect.models.anomaly.teacher_tune import map_parameters

SIZE = STPM64
sample = stpm64_sample


@pytest.fixture(scope="module")
def train(stpm64_train) -> list[Sample]:
    return stpm64_train


def cfg(**kw) -> AnomalyConfig:
    tuned = dict(epochs=1, calib_fraction=0, teacher_finetune_epochs=2, teacher_lr=1e-2, draem_min_area=0.02,
                 draem_max_area=0.1)
    return stpm64_config(**{**tuned, **kw})


def teacher_state(det: AnomalyDetector) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in det.model.teacher.state_dict().items()}


def test_map_parameters_finds_the_stem_and_leaves_grads_as_they_were() -> None:
    bb = build_backbone("mobilenetv2", pretrained=False, out_indices=[1, 2, 3])
    for p in bb.parameters():
        p.requires_grad_(False)
    probe = torch.rand(2, 1, SIZE, SIZE)
    names = [n for n, _ in bb.named_parameters()]
    one, two = map_parameters(bb, probe, 1), map_parameters(bb, probe, 2)
    assert map_parameters(bb, probe, 0) == set()
    assert names[0] in one and one < two < set(names)  # nested: map 2 needs everything map 1 needs, and more
    assert names[-1] not in two  # the last stage computes only the last map
    assert all(not p.requires_grad and p.grad is None for p in bb.parameters())


def test_tuning_moves_only_the_deep_weights_and_is_saved(tmp_path, train) -> None:
    det = AnomalyDetector(cfg())
    before = teacher_state(det)
    det.fit(train)
    after = teacher_state(det)
    frozen = map_parameters(det.model.teacher, torch.rand(2, 1, SIZE, SIZE), 1)
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved, "no teacher weight moved"
    assert not moved & frozen  # layer 1's weights stay pretrained
    assert not any("running_" in k or "num_batches" in k for k in moved)  # BatchNorm statistics untouched
    assert all(not p.requires_grad for p in det.model.teacher.parameters())
    h = det.history
    assert len(h["teacher_finetune_losses"]) == 2 and np.isfinite(h["teacher_finetune_losses"]).all()
    assert h["teacher_tuned_parameters"] > 0 and h["teacher_frozen_parameters"] == len(frozen)
    test = [sample(100, True), sample(101)]
    res = det.score(test)
    loaded = AnomalyDetector.load(det.save(tmp_path / "m"))
    assert all(torch.equal(after[k], v) for k, v in loaded.model.teacher.state_dict().items())
    np.testing.assert_allclose(loaded.score(test).scores, res.scores, rtol=1e-5)


def test_default_is_off_and_the_seed_reproduces_the_teacher(train) -> None:
    torch.manual_seed(0)
    plain = AnomalyDetector(cfg(teacher_finetune_epochs=0))
    start = teacher_state(plain)
    plain.fit(train)
    assert all(torch.equal(start[k], v) for k, v in plain.model.teacher.state_dict().items())
    assert "teacher_finetune_losses" not in plain.history
    assert AnomalyConfig(model="stpm").teacher_finetune_epochs == 0
    torch.manual_seed(0)  # pretrained=False: the teacher's random start comes from the global generator
    a = AnomalyDetector(cfg()).fit(train)
    torch.manual_seed(0)
    b = AnomalyDetector(cfg()).fit(train)
    assert a.history["teacher_finetune_losses"] == b.history["teacher_finetune_losses"]
    sa, sb = teacher_state(a), teacher_state(b)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_resume_reuses_the_tuned_teacher_only_with_the_same_settings(tmp_path, train) -> None:
    ck = tmp_path / "ck"
    torch.manual_seed(0)
    first = AnomalyDetector(cfg()).fit(train, checkpoint_dir=ck)
    assert (ck / "teacher.safetensors").is_file() and (ck / "teacher.json").is_file()
    again = AnomalyDetector(cfg(epochs=2)).fit(train, checkpoint_dir=ck)  # one more student epoch
    assert again.history["teacher_finetune_losses"] == first.history["teacher_finetune_losses"]
    sf, sa = teacher_state(first), teacher_state(again)
    assert all(torch.equal(sf[k], sa[k]) for k in sf)
    with pytest.raises(AnomalyConfigError, match="tuned teacher was written with different settings.*teacher_lr"):
        AnomalyDetector(cfg(teacher_lr=1e-3)).fit(train, checkpoint_dir=ck)


def test_refusals_are_one_line(train) -> None:
    with pytest.raises(ValueError, match="teacher_finetune_epochs applies to model: stpm"):
        AnomalyConfig(model="patchcore", teacher_finetune_epochs=1)
    with pytest.raises(AnomalyConfigError, match="teacher_frozen_layers 3 leaves none of the teacher's 3 maps"):
        AnomalyDetector(cfg(teacher_frozen_layers=3)).fit(train)

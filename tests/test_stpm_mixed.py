"""STPM mixed pairs: a student of another registered backbone than the teacher (``student_backbone``).

The default (None, or the teacher's own name) keeps today's student; another backbone with the teacher's
reductions trains through 1x1 adapters where its channel counts differ, saves, loads and resumes; a student
with other reductions, an unknown name or a non-STPM model are refused with one line."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from tests.conftest import STPM64, stpm64_config, stpm64_sample

from seminspect.data.sample import Sample
from seminspect.models.anomaly import AnomalyConfigError, AnomalyDetector
from seminspect.models.anomaly.config import load_anomaly_config
from seminspect.models.anomaly.features import build_backbone
from seminspect.models.anomaly.stpm import AdaptedStudent
from seminspect.models.backbones import _registry, get_backbone_cfg
from seminspect.models.backbones.simple_cnn import SimpleCNN, SimpleCNNFeatures

SIZE = STPM64
sample = stpm64_sample
cfg = stpm64_config


@pytest.fixture(scope="module")
def train(stpm64_train) -> list[Sample]:
    return stpm64_train


def trainable(det: AnomalyDetector) -> int:
    return sum(p.numel() for p in det.model.student.parameters() if p.requires_grad)


def test_default_student_is_the_teachers_architecture_unchanged(train) -> None:
    """None and the teacher's own name build today's student: same module, same keys, same training."""
    torch.manual_seed(0)
    default = AnomalyDetector(cfg(calib_fraction=0))
    torch.manual_seed(0)
    same = AnomalyDetector(cfg(student_backbone="mobilenetv2", calib_fraction=0))
    plain = build_backbone("mobilenetv2", pretrained=False, out_indices=[1, 2, 3])
    for det in (default, same):
        assert not isinstance(det.model.student, AdaptedStudent)
        assert type(det.model.student) is type(plain)
        assert {k: v.shape for k, v in det.model.student.state_dict().items()} == {
            k: v.shape for k, v in plain.state_dict().items()}
    sd_a, sd_b = default.model.state_dict(), same.model.state_dict()
    assert list(sd_a) == list(sd_b) and all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    assert trainable(default) == trainable(same) == sum(p.numel() for p in plain.parameters())
    assert default.fit(train).history["losses"] == same.fit(train).history["losses"]


@pytest.mark.parametrize(("student", "adapted"), [("efficientnet_lite0", [False, True, True]),
                                                  ("simple_cnn", [True, True, True])])
def test_mixed_pair_fits_scores_saves_and_loads(tmp_path, train, student: str, adapted: list[bool]) -> None:
    det = AnomalyDetector(cfg(student_backbone=student))
    st = det.model.student
    assert isinstance(st, AdaptedStudent) and st.backbone.name == student
    assert [isinstance(a, torch.nn.Conv2d) for a in st.adapters] == adapted
    assert [f["num_chs"] for f in st.feature_info] == [f["num_chs"] for f in det.model.teacher.feature_info]
    assert all(p.requires_grad for p in st.parameters())
    before = [a.weight.detach().clone() for a in st.adapters if isinstance(a, torch.nn.Conv2d)]
    det.fit(train)
    losses = det.history["losses"]
    assert len(losses) == 2 and np.isfinite(losses).all() and det.history["non_finite_steps"] == 0
    after = [a.weight for a in st.adapters if isinstance(a, torch.nn.Conv2d)]
    assert all(not torch.equal(b, a) for b, a in zip(before, after, strict=True))  # the adapters train
    test = [sample(100, True), sample(101)]
    res = det.score(test)
    assert res.maps.shape == (2, SIZE, SIZE) and np.isfinite(res.maps).all() and np.isfinite(res.scores).all()
    det.save(tmp_path / "m")
    back = AnomalyDetector.load(tmp_path / "m")
    assert back.config.student_backbone == student and isinstance(back.model.student, AdaptedStudent)
    again = back.score(test)
    np.testing.assert_array_equal(again.maps, res.maps)
    np.testing.assert_array_equal(again.scores, res.scores)
    from seminspect.inference.anomaly_runtime import use_runtime

    assert use_runtime(back, tmp_path / "m") == "torch (fp32)"  # STPM runs in torch, adapters included


def test_mixed_pair_checkpoints_and_resumes(tmp_path, train) -> None:
    from safetensors.torch import load_file

    c = cfg(student_backbone="efficientnet_lite0", calib_fraction=0)
    det = AnomalyDetector(c).fit(train, checkpoint_dir=tmp_path / "ckpt")
    assert any(k.startswith("student.adapters.") for k in load_file(str(tmp_path / "ckpt" / "checkpoint.safetensors")))
    det2 = AnomalyDetector(c.model_copy(update={"epochs": 3})).fit(train, checkpoint_dir=tmp_path / "ckpt")
    assert det2.history["losses"][:2] == pytest.approx(det.history["losses"])
    assert len(det2.history["losses"]) == 3
    with pytest.raises(AnomalyConfigError, match="student_backbone"):  # another student cannot resume it
        AnomalyDetector(c.model_copy(update={"student_backbone": "simple_cnn", "epochs": 3})).fit(
            train, checkpoint_dir=tmp_path / "ckpt")


def test_mixed_student_is_seeded_by_the_config() -> None:
    a = AnomalyDetector(cfg(student_backbone="simple_cnn")).model.student.state_dict()
    torch.manual_seed(123)  # the global generator does not matter
    b = AnomalyDetector(cfg(student_backbone="simple_cnn")).model.student.state_dict()
    c = AnomalyDetector(cfg(student_backbone="simple_cnn", seed=1)).model.student.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_other_reductions_are_refused(monkeypatch) -> None:
    """A registered backbone whose stem strides by 4 (reductions 4..64) cannot be mobilenetv2's student."""
    base = get_backbone_cfg("simple_cnn")
    strided = dataclasses.replace(base, name="strided_cnn",
                                  stages=tuple({**s, "reduction": 2 * s["reduction"]} for s in base.stages))

    def full() -> SimpleCNN:
        net = SimpleCNN()
        net.stages[0][0].stride = (4, 4)
        return net

    monkeypatch.setitem(_registry._REGISTRY, "strided_cnn", (strided, SimpleCNNFeatures))
    monkeypatch.setitem(_registry._FULL_MODELS, "strided_cnn", full)
    maps = build_backbone("strided_cnn", pretrained=False, out_indices=[1, 2, 3])(torch.rand(1, 1, SIZE, SIZE))
    assert [m.shape[-1] for m in maps] == [SIZE // 8, SIZE // 16, SIZE // 32]  # the declared reductions are real
    with pytest.raises(AnomalyConfigError, match=r"'strided_cnn'.*'mobilenetv2'.*\[8, 16, 32\].*\[4, 8, 16\]") as exc:
        AnomalyDetector(cfg(student_backbone="strided_cnn"))
    assert "\n" not in str(exc.value)


def test_unknown_or_misplaced_student_is_refused_in_one_line(tmp_path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text("model: stpm\nstudent_backbone: resnet18\n")
    with pytest.raises(AnomalyConfigError, match=r"student_backbone: .*unknown backbone.*mobilenetv2") as exc:
        load_anomaly_config(path)
    assert "\n" not in str(exc.value) and str(path) in str(exc.value)
    with pytest.raises(AnomalyConfigError, match="did you mean 'simple_cnn'"):
        load_anomaly_config(None, ["model=stpm", "student_backbone=simple_cn"])
    for model in ("patchcore", "draem"):
        with pytest.raises(AnomalyConfigError, match="student_backbone applies to model: stpm") as exc:
            AnomalyDetector({"model": model, "student_backbone": "simple_cnn"})
        assert "\n" not in str(exc.value)
    assert load_anomaly_config(None, ["model=stpm", "student_backbone=tiny"]).student_backbone == "tiny"

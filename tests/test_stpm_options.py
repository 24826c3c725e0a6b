"""STPM study options: loss (l2 / huber / cosine), student padding (reflect / zeros / constant), the reverse
template mode, the no-NaN statement in the history, and old saved models' ``reflect_padding``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tests.conftest import stripe_pair

from seminspect.data.sample import Sample
from seminspect.models.anomaly import AnomalyConfig, AnomalyConfigError, AnomalyDetector, TinyConvBackbone
from seminspect.models.anomaly.config import load_anomaly_config
from seminspect.models.anomaly.stpm import STPMModel, set_padding

SIZE = 32


def sample(i: int, abnormal: bool = False) -> Sample:
    return stripe_pair(i, SIZE, slice(12, 18), abnormal)


@pytest.fixture(scope="module")
def train() -> list[Sample]:
    return [sample(i) for i in range(8)]


def cfg(**kw) -> AnomalyConfig:
    base = dict(model="stpm", backbone="tiny", pretrained=False, out_indices=[0, 1, 2], layer_weights=[1, 1, 1],
                sigma=1.0, batch_size=4, epochs=2, lr=3e-3)
    return AnomalyConfig(**{**base, **kw})


def model(**kw) -> STPMModel:
    return STPMModel(TinyConvBackbone(out_indices=(0, 1, 2), seed=0), TinyConvBackbone(out_indices=(0, 1, 2), seed=1),
                     **kw)


@pytest.mark.parametrize("loss", ["l2", "huber", "cosine"])
def test_each_loss_trains_and_says_no_nan(train, loss: str) -> None:
    det = AnomalyDetector(cfg(loss=loss, epochs=3)).fit(train)
    losses = det.history["losses"]
    assert len(losses) == 3 and all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert det.history["non_finite_steps"] == 0
    scores, maps = det.predict([sample(100, True)])
    assert np.isfinite(scores).all() and maps.shape == (1, SIZE, SIZE)


def test_cosine_is_global_on_raw_features() -> None:
    """cosine = 1 - cos of the flattened raw layer: not l2 (which is 1 - cos per location), 0 for a copy."""
    x, r = torch.rand(2, 1, SIZE, SIZE), torch.rand(2, 1, SIZE, SIZE)
    cos, l2 = model(loss="cosine", mode="classic"), model(loss="l2", mode="classic")
    l2.student.load_state_dict(cos.student.state_dict())
    with torch.no_grad():
        assert float(cos.loss(x)) != pytest.approx(float(l2.loss(x)), rel=1e-3)
    same = model(loss="cosine", mode="classic", padding="zeros")
    same.student.load_state_dict(same.teacher.state_dict())
    same.student.eval()
    assert float(same.loss(x, r)) == pytest.approx(0.0, abs=1e-5)


def test_padding_modes() -> None:
    x = torch.rand(1, 1, SIZE, SIZE)
    zeros = model(padding="zeros").student.eval()
    const0 = model(padding="constant", padding_value=0.0).student.eval()
    const1 = model(padding="constant", padding_value=1.0).student.eval()
    refl = model(padding="reflect").student.eval()
    assert set(zeros.state_dict()) == set(const1.state_dict()) == set(refl.state_dict())
    assert all(c.padding_mode == "reflect" for c in refl.modules() if isinstance(c, torch.nn.Conv2d))
    with torch.no_grad():
        z, c0, c1, rf = zeros(x)[0], const0(x)[0], const1(x)[0], refl(x)[0]
    assert torch.allclose(z, c0, atol=1e-6)  # constant 0 is zeros padding
    assert not torch.allclose(z, c1) and not torch.allclose(z, rf)
    # the value only matters near the border: the centre of the first map (reduction 2, receptive field
    # 1 + 2 + 2x2 px = 7 at that layer) is the same
    h = z.shape[-1]
    assert torch.allclose(z[..., 4:h - 4, 4:h - 4], c1[..., 4:h - 4, 4:h - 4], atol=1e-5)
    with pytest.raises(ValueError, match="padding must be one of"):
        set_padding(torch.nn.Conv2d(1, 1, 3, padding=1), "circular")


def test_constant_padding_saves_and_loads(tmp_path, train) -> None:
    det = AnomalyDetector(cfg(stpm_padding="constant", padding_value=0.5, epochs=1)).fit(train)
    det.save(tmp_path / "m")
    back = AnomalyDetector.load(tmp_path / "m")
    assert back.config.stpm_padding == "constant" and back.config.padding_value == 0.5
    test = [sample(100, True), sample(101)]
    np.testing.assert_allclose(back.predict(test)[0], det.predict(test)[0], rtol=1e-5)


@pytest.mark.parametrize(("old", "new"), [(True, "reflect"), (False, "zeros")])
def test_old_saved_model_reflect_padding_loads_the_same(tmp_path, train, old: bool, new: str) -> None:
    det = AnomalyDetector(cfg(stpm_padding=new, epochs=1)).fit(train)
    det.save(tmp_path / "m")
    meta_path = tmp_path / "m" / "config.json"
    meta = json.loads(meta_path.read_text())
    del meta["config"]["stpm_padding"], meta["config"]["padding_value"]
    meta["config"]["reflect_padding"] = old  # as written before stpm_padding existed
    meta_path.write_text(json.dumps(meta))
    back = AnomalyDetector.load(tmp_path / "m")
    assert back.config.stpm_padding == new
    test = [sample(100, True), sample(101)]
    np.testing.assert_allclose(back.predict(test)[0], det.predict(test)[0], rtol=1e-5)


def test_old_yaml_key_and_contradiction(tmp_path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text("model: stpm\nreflect_padding: false\n")
    assert load_anomaly_config(path).stpm_padding == "zeros"
    path.write_text("model: stpm\nreflect_padding: false\nstpm_padding: reflect\n")
    with pytest.raises(AnomalyConfigError, match="contradicts stpm_padding") as exc:
        load_anomaly_config(path)
    assert "\n" not in str(exc.value)
    with pytest.raises(AnomalyConfigError, match="padding_value"):
        AnomalyDetector(dict(model="stpm", stpm_padding="constant", padding_value=100))


def test_template_student_is_the_reverse(train) -> None:
    """template_student feeds the target to the teacher and the reference to the student."""
    fwd, rev = model(mode="template"), model(mode="template_student")
    rev.student.load_state_dict(fwd.student.state_dict())
    fwd.eval(), rev.eval()
    a, b = torch.rand(2, 1, SIZE, SIZE), torch.rand(2, 1, SIZE, SIZE)
    torch.testing.assert_close(rev.raw_maps(a, b), fwd.raw_maps(b, a))
    with pytest.raises(ValueError, match="needs the registered reference"):
        rev.raw_maps(a)
    det = AnomalyDetector(cfg(stpm_mode="template_student", epochs=1))
    assert det.needs_reference
    det.fit(train)
    assert det.history["non_finite_steps"] == 0

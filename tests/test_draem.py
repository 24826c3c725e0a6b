"""DRAEM behind the anomaly estimator: fit / score / save / load, resume after a kill, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from seminspect.data.imageio import to_uint
from seminspect.data.pseudo_defects import FAB_TYPES
from seminspect.data.sample import Sample, View
from seminspect.models.anomaly import AnomalyConfig, AnomalyConfigError, AnomalyDetector, DRAEMModel
from seminspect.models.anomaly.draem_fit import generator_of, train_draem

SIZE = 32
TINY = dict(model="draem", draem_width=4, epochs=2, batch_size=6, registration="off", sigma=1.0, calib_fraction=0.25)


def make_sample(i: int, abnormal: bool, seed: int = 0, size: int = SIZE) -> Sample:
    """Lines with noise, the same lines as reference; an abnormal target has a bright disc."""
    rng = np.random.default_rng(seed * 1000 + i)
    yy, xx = np.mgrid[:size, :size]
    base = ndimage.gaussian_filter(0.5 + 0.25 * np.sign(np.sin(2 * np.pi * xx / 8 + rng.uniform(0, 6))), 1.0)
    target = base + rng.normal(0, 0.02, base.shape)
    mask = np.zeros(base.shape, bool)
    if abnormal:
        cy, cx = rng.integers(8, size - 8, 2)
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= 9
        target = np.where(mask, 0.95, target)
    ref = base + rng.normal(0, 0.02, base.shape)
    return Sample(f"s{seed}_{i}", [View("target", 0, to_uint(np.clip(target, 0, 1)), mask=mask),
                                   View("reference", 0, to_uint(np.clip(ref, 0, 1)))],
                  is_abnormal=abnormal, defect_type="disc" if abnormal else None)


@pytest.fixture(scope="module")
def train() -> list[Sample]:
    return [make_sample(i, False, seed=1) for i in range(16)]


@pytest.mark.parametrize("conditioning", ["none", "reference"])
def test_fit_score_save_load(tmp_path, train, conditioning):
    det = AnomalyDetector(dict(TINY, conditioning=conditioning)).fit(train)
    assert isinstance(det.model, DRAEMModel) and det.needs_reference == (conditioning == "reference")
    assert det.threshold is not None and len(det.history["losses"]) == 2
    test = [make_sample(i, i % 2 == 1, seed=2) for i in range(6)]
    res = det.score(test)
    assert res.maps.shape == (6, SIZE, SIZE) and np.isfinite(res.maps).all()
    assert res.maps.min() >= 0 and res.maps.max() <= 1  # a smoothed probability
    assert res.masks is not None and res.labels.tolist() == [0, 1] * 3
    det.save(tmp_path / "m")
    again = AnomalyDetector.load(tmp_path / "m")
    res2 = again.score(test)
    np.testing.assert_allclose(res2.scores, res.scores, rtol=1e-6, atol=1e-7)
    assert again.threshold == det.threshold and again.config == det.config


def test_any_image_size():
    model = DRAEMModel(width=4, reference=True).eval()
    x = torch.rand(2, 1, 27, 45)
    assert model.raw_maps(x, x).shape == (2, 1, 27, 45)


def test_resume_after_kill_matches_uninterrupted(tmp_path):
    torch.manual_seed(0)
    targets = torch.rand(8, 1, SIZE, SIZE)
    cfg = AnomalyConfig(**dict(TINY, epochs=2, batch_size=4))
    full = DRAEMModel(width=4)
    torch.manual_seed(1)
    full.load_state_dict(DRAEMModel(width=4).state_dict())
    start = {k: v.clone() for k, v in full.state_dict().items()}
    train_draem(full, targets, None, cfg)
    # "killed" after epoch 1: a fresh process resumes from the checkpoint of epoch 1
    first = DRAEMModel(width=4)
    first.load_state_dict(start)
    train_draem(first, targets, None, cfg.model_copy(update={"epochs": 1}), tmp_path / "ck")
    resumed = DRAEMModel(width=4)
    hist = train_draem(resumed, targets, None, cfg, tmp_path / "ck")
    assert len(hist["losses"]) == 2
    for k, v in full.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v)


def test_checkpoint_of_other_settings_refused(tmp_path):
    targets = torch.rand(4, 1, SIZE, SIZE)
    cfg = AnomalyConfig(**dict(TINY, epochs=1, batch_size=4))
    train_draem(DRAEMModel(width=4), targets, None, cfg, tmp_path)
    with pytest.raises(AnomalyConfigError, match="different settings.*lr"):
        train_draem(DRAEMModel(width=4), targets, None, cfg.model_copy(update={"lr": 0.1, "epochs": 2}), tmp_path)


@pytest.mark.parametrize("bad", [dict(conditioning="difference"), dict(draem_sources=["blur"]),
                                 dict(draem_min_area=0.3, draem_max_area=0.1), dict(draem_width=2),
                                 dict(draem_fab_types=["bridge"]), dict(draem_fab_types=[])])
def test_bad_config_is_one_line(bad):
    with pytest.raises(AnomalyConfigError) as err:
        AnomalyDetector(dict(TINY, **bad))
    assert "\n" not in str(err.value)


def test_fab_source_paints_only_the_chosen_injectors(monkeypatch):
    """``draem_fab_types`` reaches the generator: held-out kinds are never painted (the fab study's premise)."""
    from seminspect.data import pseudo_defects

    called: list[str] = []

    def spy(kind: str, injector):
        def run(*args):
            called.append(kind)
            return injector(*args)
        return run

    spied = {k: spy(k, f) for k, f in pseudo_defects.INJECTORS.items()}
    monkeypatch.setattr(pseudo_defects, "INJECTORS", spied)
    assert generator_of(AnomalyConfig(**TINY)).fab_types == FAB_TYPES  # default: every injector
    gen = generator_of(AnomalyConfig(**dict(TINY, draem_sources=["fab"], draem_fab_types=["scratch", "pit_void"])))
    rng = np.random.default_rng(0)
    image = np.full((64, 64), 0.5, np.float32)
    for _ in range(12):
        out, mask = gen.apply(image, rng)
        assert mask.any()
    assert set(called) == {"scratch", "pit_void"}


def test_bad_training_input_is_one_line(train):
    mixed = train[:6] + [make_sample(0, False, seed=3, size=48)]
    with pytest.raises(AnomalyConfigError, match="images of one size") as err:
        AnomalyDetector(dict(TINY, calib_fraction=0.0)).fit(mixed)
    assert "\n" not in str(err.value)
    cfg = AnomalyConfig(**TINY)
    with pytest.raises(AnomalyConfigError, match="NaN"):
        train_draem(DRAEMModel(width=4), torch.full((4, 1, SIZE, SIZE), float("nan")), None, cfg)
    with pytest.raises(AnomalyConfigError, match="at least 8 px"):
        train_draem(DRAEMModel(width=4), torch.rand(4, 1, 4, 4), None, cfg)


@pytest.mark.parametrize("model", ["draem", "diffusion"])
def test_initial_weights_follow_the_seed_alone(model):
    """Networks trained from scratch start from weights of ``seed``, whatever ran before in the process, and
    building one leaves the caller's global torch RNG where it was."""
    cfg = dict(model=model, draem_width=4, diffusion_width=4, registration="off")
    first = AnomalyDetector(dict(cfg, seed=3)).model.state_dict()
    torch.rand(100)  # the global stream moves on
    state = torch.random.get_rng_state()
    again = AnomalyDetector(dict(cfg, seed=3)).model.state_dict()
    assert torch.equal(torch.random.get_rng_state(), state)
    other = AnomalyDetector(dict(cfg, seed=4)).model.state_dict()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first if first[k].is_floating_point())

"""Training's moved classifier window (``train.window_jitter``): PrepareSample(jitter=...) and the extra
feature slices it gives (``compute_features(moved=...)``, slices ``op + MOVED``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seminspect.data.prepare import PrepareSample
from seminspect.data.sample import Role, Sample, View
from seminspect.models.adc_features import MOVED, compute_features
from seminspect.training.config import ADCConfig
from test_adc import TAX, make_sample, tiny_model


def _textured_site(sid: str, size: int = 120, shift: tuple[int, int] = (2, -1)) -> Sample:
    """Two detector pairs and a zoom; each reference is its target's die moved by ``shift``."""
    from scipy.ndimage import gaussian_filter

    die = gaussian_filter(np.random.default_rng(7).normal(0, 1, (size + 20, size + 20)), 2)
    die = np.clip(128 + 50 * die / die.std(), 0, 255).astype(np.uint8)
    dy, dx = shift
    views = []
    for k in range(2):
        views.append(View(Role.TARGET, k, die[10:10 + size, 10:10 + size].copy()))
        views.append(View(Role.REFERENCE, k, die[10 + dy:10 + dy + size, 10 + dx:10 + dx + size].copy()))
    views.append(View(Role.ZOOM, 0, die[:size, :size].copy()))
    return Sample(sid, views)


def _offset_of(prepared: Sample, site: Sample, crop: int) -> tuple[int, int]:
    """Where the prepared target-0 window sits in the site's target 0 (its top-left corner)."""
    t, win = site.view(Role.TARGET, 0).image, prepared.view(Role.TARGET, 0).image
    for y in range(t.shape[0] - crop + 1):
        for x in range(t.shape[1] - crop + 1):
            if np.array_equal(t[y:y + crop, x:x + crop], win):
                return y, x
    raise AssertionError("window not found in the target view")


def test_jitter_moves_target_and_reference_together_by_a_seeded_draw() -> None:
    plain = PrepareSample(crop=48, method="joint", max_shift=4)
    moved = PrepareSample(crop=48, method="joint", max_shift=4, jitter=10, seed=3)
    tops = set()
    for k in range(12):
        site = _textured_site(f"site{k}")
        a = plain.align(site)
        centre = _offset_of(plain.apply(site, a), site, 48)
        out = moved.apply(site, a)
        y, x = _offset_of(out, site, 48)
        assert abs(y - centre[0]) <= 10 and abs(x - centre[1]) <= 10
        tops.add((y, x))
        t, r = out.view(Role.TARGET, 1).image, out.view(Role.REFERENCE, 1).image
        assert np.array_equal(t, r)  # the reference window moved with the target's: same die positions
        assert np.array_equal(out.view(Role.ZOOM, 0).image, plain.apply(site, a).view(Role.ZOOM, 0).image)
        again = PrepareSample(crop=48, method="joint", max_shift=4, jitter=10, seed=3).apply(site, a)
        assert np.array_equal(again.view(Role.TARGET, 0).image, out.view(Role.TARGET, 0).image)  # deterministic
    assert len(tops) > 6  # sites draw different moves


def test_jitter_stays_inside_the_field() -> None:
    site = _textured_site("edge", size=60)
    moved = PrepareSample(crop=48, method="joint", max_shift=4, jitter=30, seed=0)
    out = moved.apply(site, moved.align(site))
    assert all(v.image.shape == (48, 48) for v in out.views)
    y, x = _offset_of(out, site, 48)
    room = (60 - 48) // 2 - 4  # the reference window, moved by up to the margin, must stay inside too
    assert abs(y - 6) <= room and abs(x - 6) <= room
    assert np.array_equal(out.view(Role.TARGET, 0).image, out.view(Role.REFERENCE, 0).image)


def test_jitter_is_checked() -> None:
    with pytest.raises(ValueError, match="jitter"):
        PrepareSample(crop=48, jitter=-1)
    with pytest.raises(ValueError, match="jitter"):
        PrepareSample(crop=48, method="phase", jitter=4)
    base = {"data": {"path": "x"}, "train": {"window_jitter": 8}}
    with pytest.raises(ValueError, match="window_jitter"):
        ADCConfig.model_validate({**base, "image": {"crop": None}})
    with pytest.raises(ValueError, match="window_jitter"):
        ADCConfig.model_validate({**base, "image": {"crop": 64, "registration_method": "ecc"}})
    assert ADCConfig.model_validate({**base, "image": {"crop": 64}}).train.window_jitter == 8


def test_moved_windows_are_extra_slices_after_the_unmoved_ones() -> None:
    rng = np.random.default_rng(0)
    samples = [make_sample(i, rng, size=64) for i in range(6)]
    model = tiny_model().eval()
    prep = PrepareSample(crop=40, method="joint", max_shift=4)
    plain = compute_features(model, samples, TAX, prep, ops=(0, 4), batch_size=4)
    both = compute_features(model, samples, TAX, prep, ops=(0, 4), batch_size=4,
                            moved=PrepareSample(crop=40, method="joint", max_shift=4, jitter=8, seed=1))
    assert both.ops == [0, 4, MOVED, 4 + MOVED] and both.feats.shape[0] == 4
    torch.testing.assert_close(both.feats[:2], plain.feats)  # the unmoved slices are what they were
    assert not torch.allclose(both.feats[2], both.feats[0])  # the moved windows see other pixels


def test_training_with_jitter_caches_both_windows_and_calibrates_on_the_unmoved(tmp_path) -> None:
    import json

    from seminspect.training.feature_cache import load_features
    from seminspect.workflow import train_and_evaluate
    from test_adc import make_dataset

    ds = make_dataset(tmp_path / "ds", n=48)
    cfg = ADCConfig.model_validate({
        "data": {"path": str(ds)}, "image": {"crop": 48, "registration_method": "joint", "max_shift": 4},
        "model": {"backbone": "tiny", "grid": 4, "dim": 16},
        "train": {"epochs": 3, "batch_size": 8, "window_jitter": 6}, "triage": {"min_train_samples": 2},
        "output": str(tmp_path / "run"), "threads": 1})
    result = train_and_evaluate(cfg, log=None)
    caches = {len(f.ops): f for f in (load_features(p) for p in (tmp_path / "run" / "cache").glob("*.safetensors"))}
    assert caches[2].ops == [0, MOVED]  # training: unmoved and moved windows
    assert caches[1].ops == [0]  # calibration: the unmoved window only
    assert result.metrics["val_samples"] > 0
    assert "window_jitter: 6" in (tmp_path / "run" / "config.yaml").read_text()
    json.loads((tmp_path / "run" / "metrics.json").read_text())

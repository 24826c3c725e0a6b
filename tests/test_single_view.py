"""Single-view anomaly detection: images of any size and aspect, native-size maps, the automatic preset."""

from __future__ import annotations

import numpy as np
import pytest

from seminspect.data.sample import Sample, View
from seminspect.evaluation.anomaly_metrics import anomaly_metrics
from seminspect.models.anomaly import AnomalyConfig, AnomalyDetector
from seminspect.models.anomaly.presets import MAX_NATIVE, TRAINED_MAX, choose, native_size, resolve
from seminspect.models.anomaly.views import letterbox, unletterbox

TINY = {"backbone": "tiny", "pretrained": False, "calib_fraction": 0.0, "max_bank_patches": 256,
        "max_pool_patches": 4000, "batch_size": 4}


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    img = 0.5 + 0.2 * np.sin(x / 3.0) * np.cos(y / 5.0) + rng.normal(0, 0.02, (h, w))
    return np.clip(img, 0, 1).astype(np.float32)


def _single(sid: str, img: np.ndarray, abnormal: bool = False) -> Sample:
    mask = np.zeros(img.shape, bool)
    if abnormal:
        h, w = img.shape
        img = img.copy()
        img[h // 2 - 4:h // 2 + 4, w // 2 - 4:w // 2 + 4] = 0.0
        mask[h // 2 - 4:h // 2 + 4, w // 2 - 4:w // 2 + 4] = True
    return Sample(sid, [View("target", 0, img, mask=mask)], is_abnormal=abnormal)


def test_letterbox_keeps_the_whole_image_and_round_trips() -> None:
    img = np.linspace(0, 1, 40 * 120, dtype=np.float32).reshape(40, 120)  # tall-narrow's transpose: wide
    out, box = letterbox(img, 64, "reflect")
    assert out.shape == (64, 64)
    y0, x0, h, w = box
    assert (x0, w) == (0, 64) and h == round(40 * 64 / 120) and y0 == (64 - h) // 2
    back = unletterbox(out, box, img.shape)
    assert back.shape == img.shape
    assert np.abs(back - img).mean() < 0.02  # content survives the round trip (resampling only)
    const, _ = letterbox(img, 64, "constant")
    assert np.isclose(const[0, 0], out[y0:y0 + h].mean(), atol=0.05)
    mask, _ = letterbox(np.ones((40, 120), np.float32), 64, is_mask=True)
    assert mask[:y0].sum() == 0 and mask[y0:y0 + h].all()


def test_keep_aspect_returns_maps_at_each_native_size_and_finds_the_defect() -> None:
    rng = np.random.default_rng(0)
    train = [_single(f"n{i}", _texture(rng, 48, 96) if i % 2 else _texture(rng, 96, 40)) for i in range(12)]
    test = [_single("a_wide", _texture(rng, 48, 96), True), _single("n_tall", _texture(rng, 96, 40)),
            _single("a_tall", _texture(rng, 96, 40), True), _single("n_wide", _texture(rng, 48, 96))]
    det = AnomalyDetector({**TINY, "image_size": 64, "resize": "keep_aspect", "layers": [0]}).fit(train)
    res = det.score(test, keep_images=True)
    assert isinstance(res.maps, list)
    assert [m.shape for m in res.maps] == [(48, 96), (96, 40), (96, 40), (48, 96)]
    assert [m.shape for m in res.masks] == [m.shape for m in res.maps]
    assert [m.shape for m in res.images] == [m.shape for m in res.maps]
    assert min(res.scores[[0, 2]]) > max(res.scores[[1, 3]])
    m = anomaly_metrics(res.scores, res.labels, res.maps, res.masks)
    assert m["image_auroc"] == 1.0
    assert m["pixel_auroc"] > 0.8 and "aupro_note" in m


def test_square_resize_is_unchanged_and_keep_aspect_on_one_size_stacks() -> None:
    rng = np.random.default_rng(1)
    train = [_single(f"n{i}", _texture(rng, 64, 64)) for i in range(6)]
    det = AnomalyDetector({**TINY, "image_size": 32, "layers": [0]}).fit(train)
    res = det.score(train[:2])
    assert isinstance(res.maps, np.ndarray) and res.maps.shape == (2, 32, 32)  # square: model size, as before
    det2 = AnomalyDetector({**TINY, "image_size": 32, "resize": "keep_aspect", "layers": [0]}).fit(train)
    res2 = det2.score(train[:2])
    assert isinstance(res2.maps, np.ndarray) and res2.maps.shape == (2, 64, 64)  # native size


def test_auto_preset_chooses_single_view_and_your_keys_win(tmp_path) -> None:
    rng = np.random.default_rng(2)
    singles = [_single(f"n{i}", _texture(rng, 40, 80)) for i in range(4)]
    pairs = [Sample(f"p{i}", [View("target", 0, _texture(rng, 40, 40)), View("reference", 0, _texture(rng, 40, 40))],
                    is_abnormal=False) for i in range(4)]
    assert choose(singles)[0] == "single_view" and choose(pairs)[0] == "reference"
    cfg = AnomalyConfig.model_validate({"preset": "auto", "image_size": 48})
    out, info = resolve(cfg, singles)
    assert out.image_size == 48 and "image_size" in info["kept_yours"]  # the user's key wins
    assert out.conditioning == "none" and out.resize == "keep_aspect" and out.layers == [1, 2] and out.crop is None
    det = AnomalyDetector({**TINY, "preset": "auto", "image_size": 32, "out_indices": [0, 1, 2]}).fit(singles)
    assert det.config.preset == "none" and det.history["preset"]["preset"] == "single_view"
    assert det.config.conditioning == "none" and det.config.layers == [1, 2]
    det.save(tmp_path / "m")
    again = AnomalyDetector.load(tmp_path / "m")
    np.testing.assert_allclose(again.score(singles).scores, det.score(singles).scores, rtol=1e-5)


def test_auto_preset_keeps_single_view_images_at_native_resolution() -> None:
    rng = np.random.default_rng(3)
    mixed = [_single("a", _texture(rng, 40, 80)), _single("b", _texture(rng, 60, 50))]
    assert choose(mixed)[1]["image_size"] == 80  # the largest long side: nothing is shrunk
    out, info = resolve(AnomalyConfig.model_validate({"preset": "auto"}), mixed)
    assert out.image_size == 80 and info["applied"]["image_size"] == 80 and info["seen"]["long_side"] == 80
    assert native_size(640) == 640 and native_size(5000) == MAX_NATIVE and native_size(8) == 32
    assert native_size(640, "draem") == TRAINED_MAX == 256 and native_size(80, "stpm") == 80


def test_auto_preset_keeps_trained_detectors_at_most_256_px() -> None:
    rng = np.random.default_rng(4)
    big = [_single("a", _texture(rng, 300, 400))]
    for model in ("stpm", "draem", "diffusion"):
        out, info = resolve(AnomalyConfig.model_validate({"preset": "auto", "model": model}), big)
        assert out.image_size == 256 and info["applied"]["image_size"] == 256, model
    out, _ = resolve(AnomalyConfig.model_validate({"preset": "auto", "model": "draem", "image_size": 400}), big)
    assert out.image_size == 400  # the user's key wins
    assert resolve(AnomalyConfig.model_validate({"preset": "auto"}), big)[0].image_size == 400  # PatchCore: native


def test_single_view_config_file_loads() -> None:
    from pathlib import Path

    from seminspect.models.anomaly import load_anomaly_config

    path = Path(__file__).resolve().parents[1] / "configs" / "anomaly_single_view.yaml"
    cfg = load_anomaly_config(path)
    assert cfg.conditioning == "none" and cfg.crop is None and cfg.resize == "keep_aspect"
    assert cfg.registration == "off"


@pytest.mark.parametrize("pad", ["reflect", "constant"])
def test_letterbox_tiny_and_extreme_aspect(pad: str) -> None:
    img = np.random.default_rng(3).random((3, 300)).astype(np.float32)
    out, box = letterbox(img, 64, pad)
    assert out.shape == (64, 64) and np.isfinite(out).all() and box[3] == 64


def test_select_config_ranks_candidates_on_pseudo_defects_from_normals_alone() -> None:
    from seminspect.evaluation.anomaly_select import proxy_split, select_config, with_pseudo_defects

    rng = np.random.default_rng(4)
    normals = [_single(f"n{i}", _texture(rng, 48, 48)) for i in range(16)]
    fit, held = proxy_split(normals, 0.25, seed=0)
    assert len(held) == 4 and len(fit) == 12 and not {s.sample_id for s in fit} & {s.sample_id for s in held}
    pseudo = with_pseudo_defects(held, seed=0)
    assert all(s.is_abnormal and s.targets[0].mask.any() for s in pseudo)
    assert with_pseudo_defects(held, seed=0)[0].targets[0].image.tobytes() == pseudo[0].targets[0].image.tobytes()
    cands = {"fine": {**TINY, "layers": [0]}, "blind": {**TINY, "layers": [0], "sigma": 0.0, "top_k": 10_000}}
    best, rows = select_config(normals, cands, seed=0)
    assert [r["candidate"] for r in rows] == ["fine", "blind"]
    better = [r for r in rows[1:] if r["significant"]]
    assert best == (max(better, key=lambda r: r["proxy_image_auroc"])["candidate"] if better else "fine")
    assert all(0.0 <= r["proxy_image_auroc"] <= 1.0 for r in rows)
    assert rows[0]["gain_over_default"] == 0.0 and not rows[0]["significant"]


def test_paired_auroc_gain_needs_a_gain_beyond_the_bootstrap_noise() -> None:
    from seminspect.evaluation.anomaly_select import paired_auroc_gain

    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 100)
    base = rng.normal(size=200) + 0.8 * labels
    gain, q05 = paired_auroc_gain(labels, base, base.copy())
    assert gain == 0.0 and q05 == 0.0  # identical scores: no gain, never significant
    noisy = base + rng.normal(scale=0.05, size=200)  # a tie up to noise
    assert paired_auroc_gain(labels, base, noisy)[1] < 0
    sharp = rng.normal(size=200) + 3.0 * labels  # clearly better on the same images
    gain, q05 = paired_auroc_gain(labels, base, sharp)
    assert gain > 0.15 and q05 > 0.1


def test_a_checkpoint_without_the_new_preprocessing_keys_still_resumes() -> None:
    from seminspect.models.anomaly.train_state import changed_settings

    now = AnomalyConfig().model_dump()
    old = {k: v for k, v in now.items() if k not in ("resize", "pad", "preset")}  # written before those keys
    assert changed_settings(old, now, ()) == []
    assert changed_settings(old, {**now, "resize": "keep_aspect"}, ()) == ["resize"]


def test_views_of_different_sizes_without_a_resize_are_refused_naming_the_sample() -> None:
    from seminspect.models.anomaly.features import AnomalyConfigError

    rng = np.random.default_rng(5)
    det = AnomalyDetector({**TINY, "crop": None, "layers": [0]}).fit([_single(f"n{i}", _texture(rng, 48, 48))
                                                                     for i in range(6)])
    two_sizes = Sample("mixed", [View("target", 0, _texture(rng, 48, 48)), View("target", 1, _texture(rng, 40, 48))])
    with pytest.raises(AnomalyConfigError, match=r"sample 'mixed': map size \(40, 48\) differs from \(48, 48\)"):
        det.score([two_sizes], progress=False)
    # one view per sample, each sample its own size: one (N, H, W) array cannot hold them either
    with pytest.raises(AnomalyConfigError, match="sample 'small': map size"):
        det.score([_single("big", _texture(rng, 48, 48)), _single("small", _texture(rng, 40, 40))], progress=False)

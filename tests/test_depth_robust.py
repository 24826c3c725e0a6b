"""What should help on unseen structures: per-site intensity normalisation and intensity augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from seminspect.models.depth import UNet
from seminspect.training.depth import DepthConfig, DepthData, DepthPredictor, Normaliser, train_depth
from seminspect.training.depth_schedule import _intensity_aug


def _data(n: int, seed: int) -> DepthData:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 2, 12, 10, generator=g) * 0.5 + 0.2
    return DepthData(x, 100 * x.mean(1), [f"s{i}" for i in range(n)], "nm")


def test_site_norm_ignores_brightness_and_contrast_and_survives_save_load_and_onnx(tmp_path: Path) -> None:
    train = _data(16, 0)
    norm = Normaliser.fit(train, per_site=True)
    torch.manual_seed(0)
    p = DepthPredictor(UNet(2, 1, 1, 4), norm)
    x = train.x[:4]
    a, b = p.predict(x), p.predict(0.1 + 0.8 * x)  # another acquisition's brightness and contrast
    assert np.max(np.abs(a - b)) < 1e-2  # up to the 1/255 floor of the spread
    p.save(tmp_path / "m.pt")
    q = DepthPredictor.load(tmp_path / "m.pt")
    assert q.norm.per_site and np.allclose(q.predict(x), a, atol=1e-5)
    pytest.importorskip("onnxruntime")
    from seminspect.export import OnnxModule

    p.export_onnx(tmp_path / "m.onnx", 12, 10)
    assert np.max(np.abs(OnnxModule(tmp_path / "m.onnx")(x)[0] - a)) < 1e-3


def test_old_model_files_load_without_site_norm(tmp_path: Path) -> None:
    p = DepthPredictor(UNet(2, 1, 1, 4), Normaliser(0.5, 0.2, 10.0, 3.0))
    st = p.state()
    st["norm"].pop("per_site")
    torch.save(st, tmp_path / "old.pt")
    assert not DepthPredictor.load(tmp_path / "old.pt").norm.per_site


def test_intensity_aug_is_seeded_bounded_and_off_at_zero() -> None:
    xb = torch.rand(8, 4, 12, 10)
    a = _intensity_aug(xb, 0, 1, 2, 1.0, 0.2)
    assert torch.equal(a, _intensity_aug(xb, 0, 1, 2, 1.0, 0.2))
    assert not torch.equal(a, _intensity_aug(xb, 0, 1, 3, 1.0, 0.2))
    assert torch.allclose(_intensity_aug(xb, 0, 1, 2, 0.0, 0.2), xb, atol=1e-6)
    shift = (a.mean(dim=(1, 2, 3)) - xb.mean(dim=(1, 2, 3))).abs()
    assert float(shift.max()) <= 0.1 / 0.2 + 0.05 and float(shift.max()) > 0


def test_config_ranges() -> None:
    with pytest.raises(Exception, match="intensity_aug"):
        DepthConfig.model_validate({"optim": {"intensity_aug": 2}})
    cfg = DepthConfig.model_validate({"data": {"site_norm": True}, "optim": {"intensity_aug": 0.5}})
    assert cfg.data.site_norm and cfg.optim.intensity_aug == 0.5


def test_training_with_both_runs(tmp_path: Path) -> None:
    cfg = DepthConfig.model_validate({"model": {"levels": 1, "width": 4}, "data": {"site_norm": True},
                                      "optim": {"epochs": 2, "batch_size": 8, "warmup_steps": 1, "intensity_aug": 1.0},
                                      "channels_last": False})
    r = train_depth(cfg, tmp_path, data=(_data(24, 0), _data(8, 1)), verbose=False)
    assert r.finished and np.isfinite(r.best_rmse)
    assert DepthPredictor.load(tmp_path / "best.pt").norm.per_site

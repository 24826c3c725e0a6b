"""Depth from SEM: U-Net/PatchGAN shapes, training, resume, metrics, CLI, Samsung loader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.conftest import shared_data

from seminspect.models.depth import PatchGAN, UNet
from seminspect.training.depth import (
    DepthConfig,
    DepthConfigError,
    DepthData,
    DepthPredictor,
    Normaliser,
    _flip,
    load_samsung_npz,
    samsung_split,
    train_depth,
)
from seminspect.training.depth_eval import mean_map, plot_sites, results_table, score_depth


# ----- models ----------------------------------------------------------------------------------
@pytest.mark.parametrize("channels", [1, 4])
@pytest.mark.parametrize(("h", "w", "levels"), [(66, 45, 2), (66, 45, 3), (13, 7, 2), (5, 3, 3), (32, 32, 0)])
def test_unet_keeps_odd_sizes(channels: int, h: int, w: int, levels: int) -> None:
    net = UNet(channels, 1, levels=levels, width=4).eval()
    out = net(torch.rand(2, channels, h, w))
    assert out.shape == (2, 1, h, w)


def test_unet_rejects_wrong_channels() -> None:
    with pytest.raises(ValueError, match=r"expects \(N, 4, H, W\)"):
        UNet(4, 1, 2, 4)(torch.rand(1, 1, 16, 16))


def test_unet_output_is_local_not_shifted_by_padding() -> None:
    # Padding is at the bottom/right: the crop must return the original pixel grid. A 0-level
    # net with 1x1 behaviour is hard to build, so check that flipping the input flips the output
    # of a net whose input is already a multiple of 4 (no padding involved) -- and that padding
    # a 66x45 input does not change the top-left region much compared to a 68x48 input.
    torch.manual_seed(0)
    net = UNet(1, 1, 2, 4, norm="none").eval()
    x = torch.rand(1, 1, 68, 48)
    full = net(x)
    cropped = net(x[..., :66, :45])
    assert torch.allclose(full[..., :40, :30], cropped[..., :40, :30], atol=1e-5)


@pytest.mark.parametrize("global_context", [False, True])
def test_global_context_reaches_across_the_site(global_context: bool) -> None:
    # A 1-level U-Net sees about 15 px around a pixel: a change in the top rows cannot reach
    # the bottom rows. With the global context vector it must (the hole-floor depth is a
    # property of the whole site).
    torch.manual_seed(0)
    net = UNet(1, 1, levels=1, width=4, norm="none", global_context=global_context).eval()
    x = torch.rand(1, 1, 40, 40)
    x2 = x.clone()
    x2[..., :16, :] += 5.0  # top rows; the bottom rows are > 20 px away
    with torch.no_grad():
        delta = (net(x2) - net(x))[..., -4:, -4:].abs().max().item()
    assert (delta > 1e-6) is global_context


def test_global_context_survives_save_and_load(tmp_path: Path) -> None:
    torch.manual_seed(0)
    p = DepthPredictor(UNet(2, 1, 1, 4, global_context=True), Normaliser(0.5, 0.2, 100.0, 30.0))
    p.save(tmp_path / "m.pt")
    q = DepthPredictor.load(tmp_path / "m.pt")
    assert q.generator.global_context
    x = torch.rand(3, 2, 12, 9)
    np.testing.assert_allclose(q.predict(x), p.predict(x), atol=1e-6)


def test_architecture_survives_save_and_load_and_old_files_load(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = UNet(3, 1, 2, 4, norm="group", max_width=6, global_context=True)
    p = DepthPredictor(net, Normaliser(0.5, 0.2, 100.0, 30.0))
    p.save(tmp_path / "m.pt")
    q = DepthPredictor.load(tmp_path / "m.pt")
    assert q.generator.hparams() == net.hparams()
    x = torch.rand(2, 3, 13, 10)
    np.testing.assert_allclose(q.predict(x), p.predict(x), atol=1e-6)
    # A file written before hparams() (five keys) still loads, with the defaults for the others.
    old = DepthPredictor(UNet(3, 1, 1, 4), Normaliser(0.5, 0.2, 100.0, 30.0)).state()
    old["model"] = {"in_channels": 3, "levels": 1, "width": 4, "norm": "batch", "global_context": False}
    torch.save(old, tmp_path / "old.pt")
    assert DepthPredictor.load(tmp_path / "old.pt").generator.hparams() == UNet(3, 1, 1, 4).hparams()
    # A file whose weights do not fit its stated architecture is one clear error.
    old["model"]["width"] = 6
    torch.save(old, tmp_path / "bad.pt")
    with pytest.raises(DepthConfigError, match=r"bad.pt: model does not match"):
        DepthPredictor.load(tmp_path / "bad.pt")


def test_patchgan_patch_logits() -> None:
    d = PatchGAN(4, 1, width=8, n_layers=2)
    out = d(torch.rand(3, 4, 66, 45), torch.rand(3, 1, 66, 45))
    assert out.ndim == 4 and out.shape[:2] == (3, 1)
    assert out.shape[2] > 1 and out.shape[3] > 1  # one verdict per patch, not per image


def test_flip_applies_same_transform_to_inputs_and_depth() -> None:
    x = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 1, 3, 4)
    code = torch.tensor([1, 2])
    y = _flip(x, code)
    assert torch.equal(y[0], torch.flip(x[0], [-1]))
    assert torch.equal(y[1], torch.flip(x[1], [-2]))


def test_flip_reorders_channels_as_the_virtual_fab_detectors_see_a_mirrored_die() -> None:
    # Render a die and its mirror image through the virtual fab's detector model: the mirror's
    # view from each detector must equal the mirrored view of the configured partner detector.
    from seminspect.data.synth.die import DieRender
    from seminspect.data.synth.sem_model import DETECTORS, detector_signal, shading_basis

    rng = np.random.default_rng(0)
    height = np.zeros((40, 32), np.float32)
    height[8:30, 6:14] = 60.0  # an asymmetric pattern: two lines of different size
    height[12:20, 20:29] = 45.0
    height += rng.normal(0, 0.5, height.shape).astype(np.float32)

    def views(h: np.ndarray) -> torch.Tensor:
        die = DieRender(h, (h > 20).astype(np.uint8), np.where(h > 20, 1.0, 0.6).astype(np.float32))
        basis = shading_basis(die, pixel_nm=5.0, line_height_nm=60.0, neighbourhood_px=9)
        return torch.from_numpy(np.stack([detector_signal(basis, d) for d in DETECTORS]))

    x = views(height)[None]
    lr, ud = [0, 3, 2, 1, 4], [0, 1, 4, 3, 2]
    for code, mirrored in ((1, height[:, ::-1]), (2, height[::-1]), (3, height[::-1, ::-1])):
        expected = views(np.ascontiguousarray(mirrored))
        got = _flip(x, torch.tensor([code]), lr, ud)[0]
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
        assert not torch.allclose(_flip(x, torch.tensor([code]))[0], expected, atol=1e-3)  # order matters


def test_flip_channel_order_is_checked_against_the_data(tmp_path: Path) -> None:
    train, val = _tiny_data(8, 0), _tiny_data(4, 1)
    with pytest.raises(DepthConfigError, match=r"flip_lr_channels = \[0, 0\] is not an order of the data's 2"):
        train_depth(_cfg(optim={"flips": True, "flip_lr_channels": [0, 0]}), tmp_path, data=(train, val),
                    verbose=False)


# ----- tiny synthetic task ---------------------------------------------------------------------
def _tiny_data(n: int, seed: int = 0, c: int = 2, h: int = 12, w: int = 10) -> DepthData:
    """Depth = 100 * smoothed mean of the inputs: learnable, spatially local."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, h, w, generator=g)
    k = torch.ones(1, 1, 3, 3) / 9
    y = 100 * torch.nn.functional.conv2d(x.mean(1, keepdim=True), k, padding=1)[:, 0]
    return DepthData(x, y, [f"s{i}" for i in range(n)], "nm")


def _cfg(**over) -> DepthConfig:
    base = {"model": {"levels": 1, "width": 4}, "optim": {"epochs": 3, "batch_size": 8, "lr": 5e-3,
                                                           "warmup_steps": 2, "patience": None},
            "checkpoint_every": 2, "channels_last": False}
    for k, v in over.items():
        base.setdefault(k, {}).update(v) if isinstance(v, dict) else base.__setitem__(k, v)
    return DepthConfig.model_validate(base)


def test_training_reduces_error(tmp_path: Path) -> None:
    train, val = _tiny_data(48, 0), _tiny_data(16, 1)
    torch.manual_seed(0)
    untrained = DepthPredictor(UNet(2, 1, 1, 4), Normaliser.fit(train))
    before = score_depth(untrained.predict(val.x), val.y.numpy()).rmse
    r = train_depth(_cfg(optim={"epochs": 6, "lr": 2e-2, "batch_size": 4}), tmp_path, data=(train, val),
                    verbose=False)
    assert r.finished and r.epochs_run == 6
    assert r.history[-1]["train_loss"] < r.history[0]["train_loss"]
    assert r.best_rmse < 0.75 * before  # measured: 10.75 -> 6.4
    p = DepthPredictor.load(tmp_path / "best.pt")
    assert score_depth(p.predict(val.x), val.y.numpy()).rmse == pytest.approx(r.best_rmse, rel=1e-5)


def test_ema_weights_are_validated_and_saved(tmp_path: Path) -> None:
    train, val = _tiny_data(48, 0), _tiny_data(16, 1)
    r = train_depth(_cfg(optim={"epochs": 4, "lr": 2e-2, "batch_size": 4, "ema_decay": 0.9}), tmp_path,
                    data=(train, val), verbose=False)
    # Both the average and the raw weights are scored; they differ, and best.pt is the average.
    assert all("val_rmse_raw" in h for h in r.history)
    assert r.history[-1]["val_rmse"] != r.history[-1]["val_rmse_raw"]
    p = DepthPredictor.load(tmp_path / "best.pt")
    assert score_depth(p.predict(val.x), val.y.numpy()).rmse == pytest.approx(r.best_rmse, rel=1e-5)


def test_resampled_acquisitions_come_from_the_same_site(tmp_path: Path) -> None:
    from seminspect.training.depth import _resample_plan

    a, b = _resample_plan(0, 0, 50, 4), _resample_plan(0, 1, 50, 4)
    assert a.shape == (50, 4) and int(a.min()) >= 0 and int(a.max()) <= 3
    assert torch.equal(a, _resample_plan(0, 0, 50, 4)) and not torch.equal(a, b)  # seeded, new per epoch
    assert (a != torch.arange(4)).any(dim=1).float().mean() > 0.8  # most sites get a new mix
    train, val = _tiny_data(24, 0), _tiny_data(8, 1)
    off = train_depth(_cfg(), tmp_path / "off", data=(train, val), verbose=False)
    on = train_depth(_cfg(optim={"resample_acquisitions": True}), tmp_path / "on", data=(train, val), verbose=False)
    assert on.history[0]["train_loss"] != off.history[0]["train_loss"]  # the inputs changed


@pytest.mark.parametrize("mode", ["l1", "pix2pix", "l1+ema", "l1+resample", "l1+aug+sitenorm"])
def test_resume_after_stop_equals_uninterrupted(tmp_path: Path, mode: str) -> None:
    train, val = _tiny_data(20, 0, h=16, w=12), _tiny_data(8, 1, h=16, w=12)
    extra = {"ema_decay": 0.9} if "ema" in mode else {}
    if "resample" in mode:
        extra["resample_acquisitions"] = True
    if "aug" in mode:
        extra["intensity_aug"] = 1.0
    cfg = _cfg(loss={"mode": mode.split("+")[0], "mse_epochs": 1, "disc_width": 4},
               optim={"flips": True, **extra}, data={"site_norm": "sitenorm" in mode})
    full = train_depth(cfg, tmp_path / "full", data=(train, val), verbose=False)
    # 3 batches per epoch: stop mid-epoch (step 4), then at an epoch end (step 6), then finish.
    part = train_depth(cfg, tmp_path / "cut", data=(train, val), stop_after_steps=4, verbose=False)
    assert not part.finished and part.steps == 4
    part = train_depth(cfg, tmp_path / "cut", data=(train, val), stop_after_steps=6, verbose=False)
    assert part.steps == 6
    resumed = train_depth(cfg, tmp_path / "cut", data=(train, val), verbose=False)
    assert resumed.finished and resumed.steps == full.steps == 9
    def drop_time(hist: list[dict]) -> list[dict]:
        return [{k: v for k, v in h.items() if k != "seconds"} for h in hist]

    assert drop_time(resumed.history) == drop_time(full.history)
    a = torch.load(tmp_path / "full" / "best.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "cut" / "best.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_ensemble_is_the_mean_of_its_members_and_survives_save_load_and_onnx(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from seminspect.export import OnnxModule
    from seminspect.models.depth import UNetEnsemble

    torch.manual_seed(0)
    members = [UNet(3, 1, 1, 4, global_context=True).eval(), UNet(3, 1, 2, 6).eval()]
    ens = UNetEnsemble(members).eval()
    x = torch.rand(2, 3, 13, 10)
    with torch.no_grad():
        torch.testing.assert_close(ens(x), (members[0](x) + members[1](x)) / 2)
    p = DepthPredictor(ens, Normaliser(0.5, 0.2, 100.0, 30.0))
    p.save(tmp_path / "e.pt")
    q = DepthPredictor.load(tmp_path / "e.pt")
    assert isinstance(q.generator, UNetEnsemble) and q.generator.hparams() == ens.hparams()
    np.testing.assert_allclose(q.predict(x), p.predict(x), atol=1e-6)
    q.export_onnx(tmp_path / "e.onnx", 13, 10)
    assert np.max(np.abs(OnnxModule(tmp_path / "e.onnx")(x)[0] - p.predict(x))) < 1e-3
    with pytest.raises(ValueError, match="different input channels"):
        UNetEnsemble([UNet(3, 1, 1, 4), UNet(2, 1, 1, 4)])


def test_ensemble_training_saves_members_and_their_average(tmp_path: Path) -> None:
    from seminspect.models.depth import UNetEnsemble

    train, val = _tiny_data(24, 0), _tiny_data(8, 1)
    r = train_depth(_cfg(ensemble=2, optim={"ema_decay": 0.9}), tmp_path, data=(train, val), verbose=False)
    assert r.finished and r.steps == 2 * 3 * 3  # 2 members x 3 epochs x 3 batches
    info = json.loads((tmp_path / "ensemble.json").read_text())
    assert [m["seed"] for m in info["members"]] == [0, 1]
    one = [DepthPredictor.load(tmp_path / f"member{k}" / "best.pt") for k in range(2)]
    assert not torch.equal(one[0].generator.head.weight, one[1].generator.head.weight)  # other seeds
    avg = DepthPredictor.load(tmp_path / "best.pt")
    assert isinstance(avg.generator, UNetEnsemble) and len(avg.generator.members) == 2
    np.testing.assert_allclose(avg.predict(val.x), (one[0].predict(val.x) + one[1].predict(val.x)) / 2, atol=1e-4)
    assert score_depth(avg.predict(val.x), val.y.numpy()).rmse == pytest.approx(r.best_rmse, rel=1e-5)
    assert info["val_rmse_best"] == pytest.approx(r.best_rmse, rel=1e-6)
    hists = [json.loads((tmp_path / f"member{k}" / "history.json").read_text()) for k in range(2)]
    assert [m["val_rmse_best"] for m in info["members"]] == [min(h["val_rmse"] for h in hist) for hist in hists]
    final = DepthPredictor.load(tmp_path / "final.pt")
    assert score_depth(final.predict(val.x), val.y.numpy()).rmse == pytest.approx(info["val_rmse_final"], rel=1e-5)


def test_ensemble_resumes_inside_any_member(tmp_path: Path) -> None:
    train, val = _tiny_data(20, 0, h=16, w=12), _tiny_data(8, 1, h=16, w=12)
    cfg = _cfg(ensemble=2, optim={"ema_decay": 0.9, "resample_acquisitions": True})
    full = train_depth(cfg, tmp_path / "full", data=(train, val), verbose=False)
    # 9 steps per member: stop inside member 0, then inside member 1, then finish.
    for stop in (4, 13):
        part = train_depth(cfg, tmp_path / "cut", data=(train, val), stop_after_steps=stop, verbose=False)
        assert not part.finished and part.steps == stop
    resumed = train_depth(cfg, tmp_path / "cut", data=(train, val), verbose=False)
    assert resumed.finished and resumed.steps == full.steps == 18
    assert resumed.best_rmse == full.best_rmse
    a = torch.load(tmp_path / "full" / "best.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "cut" / "best.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_ensemble_members_share_the_time_budget(tmp_path: Path) -> None:
    # A zero budget stops every member at its first epoch end; the average is still built.
    train, val = _tiny_data(16, 0), _tiny_data(8, 1)
    r = train_depth(_cfg(ensemble=3, optim={"max_minutes": 0.0}), tmp_path, data=(train, val), verbose=False)
    assert r.finished and r.epochs_run == 3
    for k in range(3):
        assert len(json.loads((tmp_path / f"member{k}" / "history.json").read_text())) == 1
    assert (tmp_path / "best.pt").is_file()


def test_resume_refuses_other_config(tmp_path: Path) -> None:
    train, val = _tiny_data(16, 0), _tiny_data(8, 1)
    train_depth(_cfg(), tmp_path, data=(train, val), stop_after_steps=2, verbose=False)
    with pytest.raises(DepthConfigError, match="different config"):
        train_depth(_cfg(model={"width": 6}), tmp_path, data=(train, val), verbose=False)


def test_config_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "depth_bad.yaml"
    bad.write_text("model:\n  levels: 2\n  widht: 8\n")
    with pytest.raises(DepthConfigError, match=r"depth_bad.yaml.*widht"):
        DepthConfig.load(bad)
    with pytest.raises(DepthConfigError, match="not found"):
        DepthConfig.load(tmp_path / "missing.yaml")


def test_shipped_configs_load() -> None:
    root = Path(__file__).resolve().parents[1] / "configs"
    for path in sorted(root.glob("depth*.yaml")):
        DepthConfig.load(path)


# ----- metrics ---------------------------------------------------------------------------------
def test_rmse_mae_hand_computed(tmp_path: Path) -> None:
    true = np.zeros((2, 2, 2), np.float32)
    pred = np.array([[[1, 1], [1, 1]], [[0, 0], [0, 4]]], np.float32)
    s = score_depth(pred, true, "m")
    # site 0: errors 1,1,1,1 -> RMSE 1, MAE 1; site 1: 0,0,0,4 -> RMSE sqrt(16/4)=2, MAE 1
    assert s.site_rmse.tolist() == pytest.approx([1.0, 2.0])
    assert s.site_mae.tolist() == pytest.approx([1.0, 1.0])
    # overall over 8 pixels: sqrt((4 + 16) / 8), MAE (4 + 4) / 8
    assert s.rmse == pytest.approx(np.sqrt(20 / 8))
    assert s.mae == pytest.approx(1.0)
    assert "| m | 1.581 | 1.000 |" in results_table([s])
    mm = mean_map(np.stack([np.zeros((2, 2)), np.full((2, 2), 4.0)]))
    assert mm.tolist() == [[2.0, 2.0], [2.0, 2.0]]
    sem = np.random.default_rng(0).random((2, 3, 2, 2))
    png = plot_sites(sem, true, pred, s.site_rmse, tmp_path / "f.png", ids=["a", "b"], k=1)
    assert png.stat().st_size > 1000


# ----- dataset folders and the CLI -------------------------------------------------------------
def _write_dataset(root: Path, n: int = 12, size: tuple[int, int] = (14, 11)) -> Path:
    from seminspect.data.manifest import DatasetInfo, DatasetWriter
    from seminspect.data.sample import Sample, View

    rng = np.random.default_rng(0)
    with DatasetWriter(root, DatasetInfo(depth_units="nm")) as w:
        for i in range(n):
            imgs = [rng.integers(0, 256, size, dtype=np.uint8) for _ in range(2)]
            depth = np.mean(imgs, axis=0).astype(np.float32) / 5
            w.add(Sample(f"site{i:02d}", [View("target", j, im) for j, im in enumerate(imgs)],
                         depth=depth, metadata={"split": "val" if i % 4 == 0 else "train"}))
    return root


def test_cli_train_predict_evaluate(tmp_path: Path) -> None:
    import tifffile
    from typer.testing import CliRunner

    from seminspect.cli import app

    data = _write_dataset(tmp_path / "ds")
    cfg = tmp_path / "depth_tiny.yaml"
    cfg.write_text("model: {levels: 1, width: 4}\noptim: {epochs: 2, batch_size: 4, warmup_steps: 1}\n"
                   "channels_last: false\n")
    runner = CliRunner()
    r = runner.invoke(app, ["depth", "train", "-c", str(cfg), "--data", str(data), "-o", str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    model = tmp_path / "run" / "best.pt"
    assert model.is_file() and (tmp_path / "run" / "last.pt").is_file()
    hist = json.loads((tmp_path / "run" / "history.json").read_text())
    assert len(hist) == 2

    r = runner.invoke(app, ["depth", "predict", "-m", str(model), "--data", str(data), "-o", str(tmp_path / "pred"),
                            "--split", "val"])
    assert r.exit_code == 0, r.output
    maps = sorted((tmp_path / "pred").glob("*.tiff"))
    assert [m.stem for m in maps] == ["site00", "site04", "site08"]
    d = tifffile.imread(maps[0])
    assert d.dtype == np.float32 and d.shape == (14, 11)

    r = runner.invoke(app, ["depth", "evaluate", "-m", str(model), "--data", str(data), "-o", str(tmp_path / "ev"),
                            "--split", "val"])
    assert r.exit_code == 0, r.output
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    names = [s["model"] for s in metrics["scores"]]
    assert names == ["training mean depth map", "run"] and metrics["n_sites"] == 3
    # The evaluated RMSE is the one of the saved predictions.
    from seminspect.data.dataset import SampleDataset

    val = SampleDataset(data).split("val")
    true = np.stack([val[i].depth for i in range(len(val))])
    pred = np.stack([tifffile.imread(m) for m in maps])
    assert metrics["scores"][1]["rmse"] == pytest.approx(score_depth(pred, true).rmse, rel=1e-4)
    assert (tmp_path / "ev" / "depth_run.png").is_file()


def test_cli_missing_data_is_one_line_error(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from seminspect.cli import app
    from seminspect.errors import SeminspectError

    r = CliRunner().invoke(app, ["depth", "train", "--data", str(tmp_path / "nope.npz"), "-o", str(tmp_path / "r")])
    assert isinstance(r.exception, SeminspectError) and "nope.npz" in str(r.exception)


def test_onnx_export_matches_torch(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from seminspect.export import OnnxModule

    torch.manual_seed(0)
    p = DepthPredictor(UNet(4, 1, 2, 4, global_context=True), Normaliser(0.5, 0.2, 100.0, 30.0))
    p.export_onnx(tmp_path / "d.onnx", 66, 45)
    x = torch.rand(3, 4, 66, 45)
    out = OnnxModule(tmp_path / "d.onnx")(x)[0]
    assert out.shape == (3, 66, 45)
    assert np.max(np.abs(out - p.predict(x))) < 1e-3


# ----- the Samsung file ------------------------------------------------------------------------
def test_samsung_split_is_fixed() -> None:
    tr, va = samsung_split(5000, 0.1, 0)
    assert len(tr) == 4500 and len(va) == 500 and not set(tr) & set(va)
    perm = np.random.default_rng(0).permutation(5000)
    assert va.tolist() == sorted(perm[-500:].tolist())


def test_samsung_split_matches_the_adapter(tmp_path: Path) -> None:
    from seminspect.data.adapters.samsung_depth import import_samsung_depth
    from seminspect.data.dataset import SampleDataset

    rng = np.random.default_rng(0)
    depth = rng.integers(0, 100, (10, 6, 5), dtype=np.uint8)[rng.integers(0, 10, 40)]  # 40 sites, twins
    sem = rng.integers(0, 256, (40, 4, 6, 5), dtype=np.uint8)
    np.savez(tmp_path / "train.npz", sem=sem, depth=depth, name=np.array([f"s{i}" for i in range(40)]))
    ds = SampleDataset(import_samsung_depth(tmp_path / "train.npz", tmp_path / "ds", val_fraction=0.2))
    split = ds.metadata_column("split")
    _, val = load_samsung_npz(tmp_path / "train.npz", 0.2)
    assert sorted(ds.sample_ids[i] for i, s in enumerate(split) if s == "val") == sorted(
        f"site{int(v[1:]):05d}" for v in val.ids)
    val_maps = {depth[i].tobytes() for i, s in enumerate(split) if s == "val"}
    assert not any(depth[i].tobytes() in val_maps for i, s in enumerate(split) if s == "train")


@pytest.mark.shared
def test_samsung_loader() -> None:
    path = shared_data("samsung_sem_depth") / "train.npz"
    train, val = load_samsung_npz(path, split="random")  # the old split (it leaks twins; comparison only)
    assert train.x.shape == (4500, 4, 66, 45) and val.x.shape == (500, 4, 66, 45)
    assert train.y.shape == (4500, 66, 45) and train.x.dtype == torch.float32
    assert 0.0 <= float(train.x.min()) and float(train.x.max()) <= 1.0
    assert float(train.y.max()) == 167.0  # depth stays in the file's units
    assert not set(train.ids) & set(val.ids)
    # The mean-map baseline on this split (the notes: about 9.6).
    s = score_depth(np.broadcast_to(mean_map(train.y.numpy()), val.y.shape), val.y.numpy())
    assert s.rmse == pytest.approx(10.12, abs=0.01)


def test_init_from_starts_at_the_saved_model(tmp_path: Path) -> None:
    train, val = _tiny_data(16, 0), _tiny_data(8, 1)
    first = train_depth(_cfg(), tmp_path / "a", data=(train, val), verbose=False)
    cfg = _cfg(optim={"epochs": 1, "lr": 1e-9, "warmup_steps": 0}, init_from=str(tmp_path / "a" / "best.pt"))
    second = train_depth(cfg, tmp_path / "b", data=(train, val), verbose=False)
    # With a negligible learning rate the fine-tuned model scores like its start (BN statistics
    # move a little in train mode, hence the tolerance), far below an untrained net.
    assert second.best_rmse == pytest.approx(first.best_rmse, rel=0.1)
    with pytest.raises(DepthConfigError, match="architecture"):
        train_depth(_cfg(model={"width": 6}, init_from=str(tmp_path / "a" / "best.pt")), tmp_path / "c",
                    data=(train, val), verbose=False)


def test_floor_head_gives_gated_pixels_one_site_wide_depth_and_survives_save_and_load(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = UNet(2, 1, 1, 4, global_context=True, floor_head=True).eval()
    x = torch.rand(2, 2, 12, 9)
    with torch.no_grad():
        net.head.bias[1] = 50.0  # gate fully open: every pixel is floor
        y = net(x)
    # with the gate open everywhere, each site's map is one constant: its floor depth
    assert torch.allclose(y, y[..., :1, :1].expand_as(y), atol=1e-5)
    assert not torch.allclose(y[0], y[1])  # and that depth is per site
    p = DepthPredictor(net, Normaliser(0.5, 0.2, 100.0, 30.0))
    p.save(tmp_path / "m.pt")
    q = DepthPredictor.load(tmp_path / "m.pt")
    assert q.generator.hparams()["floor_head"] and q.generator.hparams() == net.hparams()
    np.testing.assert_allclose(q.predict(x), p.predict(x), atol=1e-5)
    assert not UNet(2, 1, 1, 4).hparams()["floor_head"]

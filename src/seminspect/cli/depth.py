"""``seminspect depth train|predict|evaluate|export``: depth maps from SEM images (U-Net / pix2pix).

Data is either the Samsung ``train.npz`` file (4 acquisitions per site; training cuts it by group of
twin sites, docs/depth.md) or a dataset folder whose samples carry target views and a depth map
(``split`` column train/val). ``predict`` and ``evaluate`` take every site of the data they are
given (``--split`` picks one part).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import typer

from seminspect.cli._common import console

depth_app = typer.Typer(help="Depth maps from SEM images: train, predict, evaluate, export.", no_args_is_help=True)


def _options(data: Path | None, val_split: str | None, epochs: int | None, threads: int | None) -> dict:
    """The config keys the command-line options set (validated with the config's ranges)."""
    changes: dict = {}
    if data is not None:
        changes["data.path"] = str(data)
        changes["data.source"] = "samsung_npz" if data.suffix == ".npz" else "dataset"
    if val_split:
        changes["data.val_split"] = val_split
    if epochs is not None:
        changes["optim.epochs"] = epochs
    if threads is not None:
        changes["threads"] = threads
    return changes


_BACKEND_HELP = ("Where the U-Net runs: onnxruntime (default; its exported graph, cached beside the model), "
                 "openvino (seminspect[openvino]) or torch (eager). Env SEMINSPECT_BACKEND sets the default.")


def _runtime(predictor, model: Path, backend: str | None, precision: str, threads: int | None):  # noqa: ANN001, ANN202
    from seminspect.inference.depth_runtime import DepthRuntime

    return DepthRuntime(predictor, model, backend, precision, threads)


def _load_config(config: Path | None):  # noqa: ANN202
    from seminspect.training.depth import DepthConfig

    return DepthConfig.load(config) if config else DepthConfig()


@depth_app.command("train")
def train(
    config: Path = typer.Option(None, "--config", "-c", help="YAML config (configs/depth_*.yaml)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder: config.yaml, best.pt, last.pt, history.json."),
    data: Path = typer.Option(None, help="train.npz or a dataset folder (overrides the config)."),
    val_split: str = typer.Option(None, help="Validation split name of a dataset folder (val, calib)."),
    epochs: int = typer.Option(None, help="Override optim.epochs."),
    threads: int = typer.Option(None, help="Torch threads (override)."),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Continue from <out>/last.pt if present."),
) -> None:
    """Train a depth U-Net (L1) or pix2pix model; resumes after a kill.

    The config and the options are checked first, then the data; only then is the run folder
    created and its ``config.yaml`` written (a refused run leaves nothing behind).
    """
    from seminspect.training.depth import DepthTrainingError, train_depth

    cfg = _load_config(config)
    changes = _options(data, val_split, epochs, threads)
    if changes:
        cfg = cfg.with_options("command line options", **changes)
    r = train_depth(cfg, out, resume=resume)
    model = out / "best.pt"
    if not model.is_file():  # never name a model that was not written
        raise DepthTrainingError(f"{out}: training ended without writing best.pt ({r.epochs_run} epochs run)")
    where = f"at epoch {r.best_epoch}" if cfg.ensemble == 1 else f"for the average of {cfg.ensemble} members"
    console.print(f"best validation RMSE {r.best_rmse:.3f} {where} ({r.epochs_run} epochs, "
                  f"{r.steps} steps); model: {model}")


def _load_inputs(data: Path, split: str | None, channels: int | None):  # noqa: ANN202
    """``(x (N, C, H, W) in [0, 1], depth or None, ids)`` from a .npz file or a dataset folder.

    Every site as it is, unless ``split`` names one part: a dataset folder's ``split`` value, or for a
    ``.npz`` file ``train`` / ``val`` of its default (group) split.
    """
    from seminspect.training.depth import DepthDataError, dataset_to_tensors, read_npz_sites, split_data

    if data.suffix == ".npz":
        d = read_npz_sites(data, channels)
        if split:
            if split not in ("train", "val"):
                raise DepthDataError(f"{data}: split must be train or val, not {split!r}")
            d = dict(zip(("train", "val"), split_data(d), strict=True))[split]
        return d.x, d.y.numpy(), d.ids
    from seminspect.data.dataset import SampleDataset

    ds = SampleDataset(data, roles=["target"])
    if split:
        ds = ds.split(split)
    has_depth = all(ds.manifest.groupby("sample_id", sort=False)["depth"].first().astype(bool))
    d = dataset_to_tensors(ds, channels, require_depth=False)
    return d.x, (d.y.numpy() if has_depth else None), d.ids


@depth_app.command("predict")
def predict(
    model: Path = typer.Option(..., "--model", "-m", help="best.pt from `seminspect depth train`."),
    data: Path = typer.Option(..., help="Dataset folder (target views) or train.npz."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for <sample_id>.tiff float32 depth maps."),
    split: str = typer.Option(None, help="Only this split (default: all samples; train/val of a .npz's group split)."),
    backend: str | None = typer.Option(None, help=_BACKEND_HELP),
    precision: str = typer.Option("fp32", help="fp32, or bf16 on --backend openvino where the CPU has it."),
    threads: int | None = typer.Option(None, help="Runtime threads (default: all cores)."),
) -> None:
    """Write one float32 TIFF depth map per sample and ``predictions.csv`` (sample_id, path)."""
    import numpy as np
    import pandas as pd
    import tifffile

    from seminspect.training.depth import DepthPredictor
    from seminspect.utils.io import atomic_path

    predictor = DepthPredictor.load(model)
    run = _runtime(predictor, model, backend, precision, threads)
    x, _, ids = _load_inputs(data, split, predictor.generator.in_channels)
    pred = run.predict(x)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for sid, p in zip(ids, pred, strict=True):
        name = re.sub(r"[^A-Za-z0-9._-]", "_", sid) + ".tiff"
        with atomic_path(out / name) as tmp:
            tifffile.imwrite(tmp, np.asarray(p, np.float32))
        rows.append({"sample_id": sid, "depth": name})
    with atomic_path(out / "predictions.csv") as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)
    console.print(f"wrote {len(rows)} depth maps to {out} (U-Net on {run.describe()})")


@depth_app.command("evaluate")
def evaluate(
    model: list[Path] = typer.Option(..., "--model", "-m", help="One or more best.pt files (name = folder)."),
    data: Path = typer.Option(..., help="A .npz file or a dataset folder with depth maps: every site is scored."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for results.md, metrics.json, figures."),
    split: str = typer.Option(None, help="Score only this split of a dataset folder (default: all sites)."),
    train_data: Path = typer.Option(
        None, help="Training data of the mean-map baseline (default: data.path of the first model's config)."
    ),
    backend: str | None = typer.Option(None, help=_BACKEND_HELP),
    precision: str = typer.Option("fp32", help="fp32, or bf16 on --backend openvino where the CPU has it."),
    threads: int | None = typer.Option(None, help="Runtime threads (default: all cores)."),
) -> None:
    """RMSE/MAE per site and overall of each model on every site of DATA, beside the mean-map baseline.

    The baseline's mean depth map is taken from the training sites of the first model's config (its
    data section and split rule), never from the data being evaluated.
    """
    import numpy as np
    import pandas as pd

    from seminspect.training.depth import DepthDataError, DepthPredictor
    from seminspect.training.depth_eval import plot_sites, results_table, score_depth, training_mean_map
    from seminspect.utils.io import atomic_path, atomic_write_json, atomic_write_text

    predictors = [DepthPredictor.load(m) for m in model]
    ch = predictors[0].generator.in_channels
    x, true, ids = _load_inputs(data, split, ch)
    if true is None:
        raise DepthDataError(f"{data}: samples have no depth maps to evaluate against")
    base_map, base_from = training_mean_map(predictors[0].meta.get("config"), model[0], train_data)
    scores = []
    if base_map.shape != true.shape[1:]:
        raise DepthDataError(f"{data}: depth maps {true.shape[1:]} differ from the training data's {base_map.shape} "
                             f"({base_from})")
    scores.append(score_depth(np.broadcast_to(base_map, true.shape), true, "training mean depth map"))
    names = []
    what = f"{data.name} {split}" if split else f"{data.name} (all sites)"
    for path, p in zip(model, predictors, strict=True):
        name = path.parent.name if path.name == "best.pt" else path.stem
        while name in names:
            name += "_"
        names.append(name)
        pred = _runtime(p, path, backend, precision, threads).predict(x)
        s = score_depth(pred, true, name)
        scores.append(s)
        plot_sites(x.numpy(), true, pred, s.site_rmse, out / f"depth_{name}.png", ids=ids,
                   title=f"{what}: {name}, best and worst sites")
    out.mkdir(parents=True, exist_ok=True)
    per_site = pd.DataFrame({"sample_id": ids, **{f"rmse_{s.name}": s.site_rmse for s in scores},
                             **{f"mae_{s.name}": s.site_mae for s in scores}})
    with atomic_path(out / "per_site.csv") as tmp:
        per_site.to_csv(tmp, index=False)
    units = predictors[0].meta.get("units", "")
    atomic_write_json(out / "metrics.json", {"data": str(data), "split": split or "all", "n_sites": len(ids),
                                             "units": units, "baseline_from": base_from,
                                             "scores": [s.row() for s in scores]})
    table = results_table(scores, units)
    atomic_write_text(out / "results.md", table)
    console.print(table)
    console.print(json.dumps({s.name: round(s.rmse, 4) for s in scores}))


@depth_app.command("export")
def export(
    model: Path = typer.Option(..., "--model", "-m", help="best.pt"),
    out: Path = typer.Option(..., "--out", "-o", help="ONNX file to write."),
    height: int = typer.Option(66, help="Input height the file is exported for."),
    width: int = typer.Option(45, help="Input width."),
) -> None:
    """Export the generator (with its normalisation) to ONNX and check parity with torch."""
    import numpy as np
    import torch

    from seminspect.export import OnnxModule
    from seminspect.training.depth import DepthPredictor

    p = DepthPredictor.load(model)
    p.export_onnx(out, height, width)
    x = torch.rand(3, p.generator.in_channels, height, width)
    diff = float(np.max(np.abs(OnnxModule(out)(x)[0] - p.predict(x))))
    console.print(f"wrote {out}; max |onnx - torch| = {diff:.2e} depth units")


def register(app: typer.Typer) -> None:
    app.add_typer(depth_app, name="depth")

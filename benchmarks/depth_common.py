"""Shared steps of the depth benchmarks: train each config in turn, then score all models together.

``benchmarks/depth_samsung.py`` and ``benchmarks/depth_virtual_fab.py`` differ only in their data
and configs: both train the recommended U-Net, the L1-only U-Net and pix2pix one after the other
(each process alone on the machine, with its config's threads and time budget) and evaluate them
with the training mean-map baseline in one table.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from seminspect.utils.io import atomic_write_json, atomic_write_text

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_env  # noqa: E402


def machine() -> str:
    """The CPU model, core count and load: epoch times depend on them."""
    return f"{bench_env.machine()}; load average {bench_env.load()}"


def train_one(config: Path, run: Path, data_path: str | None, split: str | None = None) -> None:
    """Train ``config`` into ``run`` (resuming a killed run); ``timing.json`` records the wall time.

    ``split`` replaces the config's ``data.split`` (``group``, ``acquisition`` or ``random``).
    """
    from seminspect.training.depth import DepthConfig, train_depth

    cfg = DepthConfig.load(config)
    if data_path:
        cfg.data.path = data_path
    if split:
        cfg.data.split = split
    t0 = time.time()
    r = train_depth(cfg, run)
    atomic_write_json(run / "timing.json",
                      {"seconds": time.time() - t0, "best_rmse_validation": r.best_rmse, "best_epoch": r.best_epoch,
                       "epochs_run": r.epochs_run, "steps": r.steps, "machine": machine()})


def train_in_turn(script: str, out: Path, names: list[str], extra: list[str]) -> None:
    """Run ``script --part NAME`` for each name, one process after the other (each gets the machine)."""
    for name in names:
        code = subprocess.call([sys.executable, script, "--out", str(out), "--part", name, *extra], env=os.environ)
        if code:
            sys.exit(f"training {name} failed: exit code {code}")


def timing(run: Path) -> dict:
    """Training time of a run: ``timing.json`` (these scripts) or the epochs of ``history.json``
    (a run started with ``seminspect depth train``)."""
    if (run / "timing.json").is_file():
        return json.loads((run / "timing.json").read_text())
    hist = json.loads((run / "history.json").read_text())
    best = min(hist, key=lambda r: r["val_rmse"])
    return {"seconds": sum(r["seconds"] for r in hist), "best_rmse_validation": best["val_rmse"],
            "best_epoch": best["epoch"], "epochs_run": len(hist)}


def evaluate_runs(out: Path, names: list[str], x, true: np.ndarray, train_depth: np.ndarray,  # noqa: ANN001
                  ids: list[str], units: str, figure_prefix: str, split_name: str) -> None:
    """Score ``out/<name>/best.pt`` for each name and the training mean map on ``(x, true)``.

    Writes ``metrics.json``, ``results.md`` and a best/worst-sites figure per model into ``out``.
    """
    from seminspect.training.depth import DepthPredictor
    from seminspect.training.depth_eval import mean_map, plot_sites, results_table, score_depth

    scores = [score_depth(np.broadcast_to(mean_map(train_depth), true.shape), true, "training mean depth map")]
    for name in names:
        model = out / name / "best.pt"
        if not model.is_file():
            continue
        pred = DepthPredictor.load(model).predict(x)
        s = score_depth(pred, true, name)
        scores.append(s)
        plot_sites(np.asarray(x), true, pred, s.site_rmse, out / f"{figure_prefix}_{name}.png", ids=ids,
                   title=f"{split_name}, {name}: best and worst sites ({units})")
    times = {n: timing(out / n) for n in names if (out / n / "history.json").is_file()}
    table = results_table(scores, units)
    atomic_write_json(out / "metrics.json", {"scores": [s.row() for s in scores], "timing": times,
                                             "n_train": len(train_depth), "n_eval": len(true),
                                             "eval_split": split_name})
    atomic_write_text(out / "results.md", table + "\n" + json.dumps(times, indent=2))
    print(table)
    print(json.dumps(times, indent=2))


def honest_sets(data_path: str, outer: str, val_fraction: float = 0.1, seed: int = 0, inner_seed: int = 1):
    """``(inner_train, inner_val, outer_train, test)`` of a Samsung ``.npz``.

    ``test`` is the reported split, cut from all sites by the rule ``outer`` (``group``, ``acquisition`` or
    ``random``). Every choice (best epoch, which recipe) is made on ``inner_val``: a group split of the outer
    training sites, so no depth map of ``inner_val`` is trained on; ``test`` is never looked at before the end.
    The mean-map baseline uses all of ``outer_train``.
    """
    from seminspect.training.depth import read_npz_sites, split_data

    everything = read_npz_sites(data_path)
    outer_train, test = split_data(everything, outer, val_fraction, seed)
    return (*inner_sets(outer_train, val_fraction, inner_seed), outer_train, test)


def inner_sets(outer_train, val_fraction: float = 0.1, inner_seed: int = 1):
    """``(inner_train, inner_val)``: the group split of the outer training sites that chooses (see honest_sets)."""
    from seminspect.training.depth import split_data

    return split_data(outer_train, "group", val_fraction, inner_seed)


def family_sets(data: Path, holdout: str, channels: int | None = None, crop: int | None = None):
    """``(train, calib, test)`` of a virtual-fab dataset folder with one layout family held out.

    The folder's own ``train`` / ``calib`` splits, less the sites of family ``holdout`` (metadata
    ``product``), train and choose the epoch; the reported ``test`` set is every site of that family (of any
    split), so no layout family, and no generated layout, is on both sides.
    """
    from seminspect.data.dataset import SampleDataset
    from seminspect.training.depth import DepthDataError, dataset_to_tensors

    ds = SampleDataset(data, roles=["target"])
    family = ds.metadata_column("product")
    split = ds.metadata_column("split")
    if holdout not in family:
        raise DepthDataError(f"{ds.manifest_path}: no sites of layout family {holdout!r} (have {sorted(set(family))})")
    ids = {name: [s for s, f, p in zip(ds.sample_ids, family, split, strict=True) if f != holdout and p == name]
           for name in ("train", "calib")}
    ids["test"] = [s for s, f in zip(ds.sample_ids, family, strict=True) if f == holdout]
    return tuple(dataset_to_tensors(ds.subset(ids[k]), channels, crop) for k in ("train", "calib", "test"))

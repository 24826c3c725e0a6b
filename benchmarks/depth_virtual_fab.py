"""Benchmark: depth (height map, nm) from the virtual fab's target views.

Generates a seeded dataset with the virtual fab (460x460 views, 5 angles, no reference views),
trains the recommended U-Net (L1 warm-up, then MSE), the L1-only U-Net and pix2pix on 128x128
centre crops one after the other (each with its config's threads and 15-minute budget), and
evaluates all three with the training mean-map baseline on the ``test`` split (``calib`` is the
validation split that picks the best epoch).

    env PYTHONPATH=src python benchmarks/depth_virtual_fab.py --out runs/depth_virtual_fab

``--holdout-family NAME`` (``line_space``, ``contact_array``, ``turns`` or ``logic``) splits by layout
family instead: the models train on the other families' ``train`` sites, choose their epoch on the other
families' ``calib`` sites, and are scored on every site of family NAME (``--part NAME`` trains one model;
``--epochs`` shortens the configs' schedules, keeping their L1-then-MSE proportion).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from depth_common import evaluate_runs, family_sets, machine, train_in_turn, train_one  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"unet": ROOT / "configs/depth_virtual_fab.yaml", "l1_unet": ROOT / "configs/depth_virtual_fab_l1.yaml",
           "pix2pix": ROOT / "configs/depth_virtual_fab_pix2pix.yaml"}


def generate(data: Path, n: int) -> None:
    from seminspect.data.synth import FabConfig, generate_dataset

    if not (data / "manifest.csv").is_file():
        t0 = time.time()
        generate_dataset(data, n, FabConfig(n_references=0), seed=0, workers=2)
        print(f"generated {n} samples in {time.time() - t0:.0f} s", flush=True)


def evaluate(out: Path, data: Path) -> None:
    import torch

    torch.set_num_threads(2)
    from seminspect.data.dataset import SampleDataset
    from seminspect.training.depth import DepthConfig, dataset_to_tensors

    cfg = DepthConfig.load(CONFIGS["unet"])
    ds = SampleDataset(data, roles=["target"])
    train = dataset_to_tensors(ds.split("train"), cfg.data.channels, cfg.data.crop)
    test = dataset_to_tensors(ds.split("test"), cfg.data.channels, cfg.data.crop)
    evaluate_runs(out, list(CONFIGS), test.x, test.y.numpy(), train.y.numpy(), test.ids, "nm",
                  "depth_virtual_fab", "virtual fab test split")


def train_family(config: Path, run: Path, data: Path, holdout: str, epochs: int | None,
                 max_minutes: float | None = None, threads: int | None = None) -> None:
    """Train ``config`` on the sites of every family but ``holdout`` (epoch chosen on their calib sites)."""
    import json

    from seminspect.training.depth import DepthConfig, train_depth

    cfg = DepthConfig.load(config).with_options("benchmark", **{"data.path": str(data)})
    if epochs is not None:
        mse = round(cfg.loss.mse_epochs * epochs / cfg.optim.epochs)
        cfg = cfg.with_options("--epochs", **{"optim.epochs": epochs, "loss.mse_epochs": mse})
    if max_minutes is not None:
        cfg = cfg.with_options("--max-minutes", **{"optim.max_minutes": max_minutes})
    if threads is not None:
        cfg = cfg.with_options("--threads", threads=threads)
    train, calib, _ = family_sets(data, holdout, cfg.data.channels, cfg.data.crop)
    t0 = time.time()
    r = train_depth(cfg, run, data=(train, calib))
    (run / "timing.json").write_text(json.dumps({"seconds": time.time() - t0, "best_rmse_validation": r.best_rmse,
                                                 "best_epoch": r.best_epoch, "epochs_run": r.epochs_run,
                                                 "steps": r.steps, "machine": machine(), "holdout": holdout,
                                                 "n_train": len(train), "n_calib": len(calib)}))


def evaluate_family(out: Path, data: Path, holdout: str) -> None:
    from seminspect.training.depth import DepthConfig

    cfg = DepthConfig.load(CONFIGS["unet"])
    train, _, test = family_sets(data, holdout, cfg.data.channels, cfg.data.crop)
    evaluate_runs(out, list(CONFIGS), test.x, test.y.numpy(), train.y.numpy(), test.ids, "nm",
                  f"depth_virtual_fab_{holdout}", f"virtual fab, unseen layout family {holdout}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/depth_virtual_fab")
    ap.add_argument("--n", type=int, default=400, help="samples to generate (60/20/20 train/calib/test)")
    ap.add_argument("--part", default="all", choices=["all", "evaluate", *CONFIGS])
    ap.add_argument("--holdout-family", default=None, help="report on this layout family, train on the others")
    ap.add_argument("--epochs", type=int, default=None, help="with --holdout-family: shorter schedules")
    ap.add_argument("--threads", type=int, default=None, help="with --holdout-family: torch threads")
    ap.add_argument("--max-minutes", type=float, default=None, help="with --holdout-family: training budget")
    ap.add_argument("--data", default=None, help="dataset folder (default: <out>/data, generated if missing)")
    args = ap.parse_args()
    out = Path(args.out)
    data = Path(args.data) if args.data else out / "data"
    out.mkdir(parents=True, exist_ok=True)
    if args.holdout_family:
        if args.part in CONFIGS:
            train_family(CONFIGS[args.part], out / args.part, data, args.holdout_family, args.epochs,
                         args.max_minutes, args.threads)
            return
        if args.part == "all":
            generate(data, args.n)
            extra = ["--n", str(args.n), "--data", str(data), "--holdout-family", args.holdout_family,
                     *(["--epochs", str(args.epochs)] if args.epochs else []),
                     *(["--max-minutes", str(args.max_minutes)] if args.max_minutes else []),
                     *(["--threads", str(args.threads)] if args.threads else [])]
            train_in_turn(__file__, out, list(CONFIGS), extra)
        evaluate_family(out, data, args.holdout_family)
        return
    if args.part in CONFIGS:
        train_one(CONFIGS[args.part], out / args.part, str(data))
        return
    t0 = time.time()
    if args.part == "all":
        generate(data, args.n)
        train_in_turn(__file__, out, list(CONFIGS), ["--n", str(args.n), "--data", str(data)])
    evaluate(out, data)
    print(f"total wall time {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()

"""Benchmark: depth (height map, nm) from the virtual fab's target views.

Generates a small seeded dataset with the synth helper's generator (460x460 views, 5 angles,
no reference views), trains the L1 U-Net and pix2pix on 128x128 centre crops side by side
(two processes, 1 thread each), and evaluates both with the training mean-map baseline on the
``test`` split (``calib`` is the validation split used for early stopping / best epoch).

    nice -n 10 env PYTHONPATH=src python benchmarks/depth_virtual_fab.py --out runs/depth_virtual_fab
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"l1_unet": ROOT / "configs/depth_virtual_fab.yaml",
           "pix2pix": ROOT / "configs/depth_virtual_fab_pix2pix.yaml"}


def generate(data: Path, n: int) -> None:
    from seminspect.data.synth import FabConfig, generate_dataset

    if not (data / "manifest.csv").is_file():
        t0 = time.time()
        generate_dataset(data, n, FabConfig(n_references=0), seed=0, workers=1)
        print(f"generated {n} samples in {time.time() - t0:.0f} s", flush=True)


def train_one(name: str, out: Path, data: Path) -> None:
    import torch

    torch.set_num_threads(1)
    from seminspect.training.depth import DepthConfig, train_depth

    cfg = DepthConfig.load(CONFIGS[name])
    cfg.data.path = str(data)
    t0 = time.time()
    r = train_depth(cfg, out / name)
    (out / name / "timing.json").write_text(json.dumps(
        {"seconds": time.time() - t0, "best_rmse_calib": r.best_rmse, "best_epoch": r.best_epoch,
         "epochs_run": r.epochs_run, "steps": r.steps}))


def evaluate(out: Path, data: Path) -> None:
    import numpy as np
    import torch

    torch.set_num_threads(2)
    from seminspect.data.dataset import SampleDataset
    from seminspect.training.depth import DepthConfig, DepthPredictor, dataset_to_tensors
    from seminspect.training.depth_eval import mean_map, plot_sites, results_table, score_depth

    cfg = DepthConfig.load(CONFIGS["l1_unet"])
    ds = SampleDataset(data, roles=["target"])
    train = dataset_to_tensors(ds.split("train"), cfg.data.channels, cfg.data.crop)
    test = dataset_to_tensors(ds.split("test"), cfg.data.channels, cfg.data.crop)
    true = test.y.numpy()
    scores = [score_depth(np.broadcast_to(mean_map(train.y.numpy()), true.shape), true, "training mean depth map")]
    for name in CONFIGS:
        model = out / name / "best.pt"
        if model.is_file():
            pred = DepthPredictor.load(model).predict(test.x)
            s = score_depth(pred, true, name)
            scores.append(s)
            plot_sites(test.x.numpy(), true, pred, s.site_rmse, out / f"depth_virtual_fab_{name}.png", ids=test.ids,
                       title=f"virtual fab test split, {name}: best and worst sites (nm)")
    timing = {n: json.loads((out / n / "timing.json").read_text())
              for n in CONFIGS if (out / n / "timing.json").is_file()}
    (out / "metrics.json").write_text(json.dumps({"scores": [s.row() for s in scores], "timing": timing,
                                                  "n_train": len(train), "n_test": len(test)}, indent=2))
    (out / "results.md").write_text(results_table(scores, "nm") + "\n" + json.dumps(timing, indent=2))
    print(results_table(scores, "nm"))
    print(json.dumps(timing, indent=2), f"n_train={len(train)} n_test={len(test)}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/depth_virtual_fab")
    ap.add_argument("--n", type=int, default=150, help="samples to generate (60/20/20 train/calib/test)")
    ap.add_argument("--part", default="all", choices=["all", "evaluate", *CONFIGS])
    args = ap.parse_args()
    out = Path(args.out)
    data = out / "data"
    out.mkdir(parents=True, exist_ok=True)
    if args.part in CONFIGS:
        train_one(args.part, out, data)
        return
    t0 = time.time()
    if args.part == "all":
        generate(data, args.n)
        procs = [subprocess.Popen([sys.executable, __file__, "--out", str(out), "--part", n], env=os.environ)
                 for n in CONFIGS]
        codes = [p.wait() for p in procs]
        if any(codes):
            sys.exit(f"training failed: exit codes {codes}")
    evaluate(out, data)
    print(f"total wall time {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()

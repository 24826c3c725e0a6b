"""Benchmark: depth from SEM on the Samsung sites (train.npz, fixed 90/10 split).

Trains the recommended U-Net (``unet``: L1 warm-up, then MSE), the L1-only U-Net baseline and
pix2pix, one after the other, each with its config's thread count and 60-minute budget; then
evaluates all three with the training mean-map baseline on the validation split and writes
``<out>/results.md``, ``<out>/metrics.json`` and best/worst-site figures (about 2.5 hours).

    env PYTHONPATH=src python benchmarks/depth_samsung.py --out runs/depth_samsung
    env PYTHONPATH=src python benchmarks/depth_samsung.py --out runs/depth_samsung --part unet   # one model
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
CONFIGS = {"unet": ROOT / "configs/depth_samsung.yaml", "l1_unet": ROOT / "configs/depth_samsung_l1.yaml",
           "pix2pix": ROOT / "configs/depth_samsung_pix2pix.yaml"}


def train_one(name: str, out: Path, data_path: str | None) -> None:
    from seminspect.training.depth import DepthConfig, train_depth

    cfg = DepthConfig.load(CONFIGS[name])
    if data_path:
        cfg.data.path = data_path
    t0 = time.time()
    r = train_depth(cfg, out / name)
    (out / name / "timing.json").write_text(json.dumps(
        {"seconds": time.time() - t0, "best_rmse": r.best_rmse, "best_epoch": r.best_epoch,
         "epochs_run": r.epochs_run, "steps": r.steps}))


def _timing(run: Path) -> dict:
    """Training time of a run: ``timing.json`` (this script) or the epochs of ``history.json``
    (a run started with ``seminspect depth train``)."""
    if (run / "timing.json").is_file():
        return json.loads((run / "timing.json").read_text())
    hist = json.loads((run / "history.json").read_text())
    best = min(hist, key=lambda r: r["val_rmse"])
    return {"seconds": sum(r["seconds"] for r in hist), "best_rmse": best["val_rmse"],
            "best_epoch": best["epoch"], "epochs_run": len(hist)}


def evaluate(out: Path, data_path: str | None) -> None:
    import numpy as np
    import torch

    torch.set_num_threads(2)
    from seminspect.training.depth import DepthConfig, DepthPredictor, load_samsung_npz
    from seminspect.training.depth_eval import mean_map, plot_sites, results_table, score_depth

    cfg = DepthConfig.load(CONFIGS["unet"])
    train, val = load_samsung_npz(data_path or cfg.data.path, cfg.data.val_fraction, cfg.data.split_seed)
    true = val.y.numpy()
    mm = mean_map(train.y.numpy())
    scores = [score_depth(np.broadcast_to(mm, true.shape), true, "training mean depth map")]
    preds = {}
    for name in CONFIGS:
        model = out / name / "best.pt"
        if model.is_file():
            preds[name] = DepthPredictor.load(model).predict(val.x)
            scores.append(score_depth(preds[name], true, name))
    for s in scores[1:]:
        plot_sites(val.x.numpy(), true, preds[s.name], s.site_rmse, out / f"depth_samsung_{s.name}.png",
                   ids=val.ids, title=f"Samsung validation, {s.name}: best and worst sites")
    timing = {n: _timing(out / n) for n in CONFIGS if (out / n / "history.json").is_file()}
    (out / "metrics.json").write_text(json.dumps({"scores": [s.row() for s in scores], "timing": timing,
                                                  "n_train": len(train), "n_val": len(val)}, indent=2))
    (out / "results.md").write_text(results_table(scores, "Samsung depth units") + "\n" + json.dumps(timing, indent=2))
    print(results_table(scores, "Samsung depth units"))
    print(json.dumps(timing, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/depth_samsung")
    ap.add_argument("--data", default=None, help="path of train.npz (default: the config's)")
    ap.add_argument("--part", default="all", choices=["all", "evaluate", *CONFIGS])
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.part in CONFIGS:
        train_one(args.part, out, args.data)
        return
    t0 = time.time()
    if args.part == "all":
        extra = ["--data", args.data] if args.data else []
        for n in CONFIGS:  # sequential: each run gets the whole machine, as its 60-minute budget assumes
            code = subprocess.call([sys.executable, __file__, "--out", str(out), "--part", n, *extra], env=os.environ)
            if code:
                sys.exit(f"training {n} failed: exit code {code}")
    evaluate(out, args.data)
    print(f"total wall time {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()

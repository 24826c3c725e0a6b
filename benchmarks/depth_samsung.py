"""Benchmark: depth from SEM on the Samsung sites (train.npz; the configs' group split by default).

Trains the recommended U-Net (``unet``: L1 warm-up, then MSE), the L1-only U-Net baseline and
pix2pix, one after the other, each with its config's thread count and 60-minute budget; then
evaluates all three with the training mean-map baseline on the validation split and writes
``<out>/results.md``, ``<out>/metrics.json`` and best/worst-site figures (about 3 hours).

    env PYTHONPATH=src python benchmarks/depth_samsung.py --out runs/depth_samsung
    env PYTHONPATH=src python benchmarks/depth_samsung.py --out runs/depth_samsung --part unet   # one model

``--split`` (default ``group``: no depth map on both sides) picks the validation split; ``--split random``
is the old leaking split, for comparison only. The best epoch is chosen on the split that is reported
here: benchmarks/depth_group_split.py keeps the two apart (inner group split chooses, outer reports).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from depth_common import evaluate_runs, train_in_turn, train_one  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"unet": ROOT / "configs/depth_samsung.yaml", "l1_unet": ROOT / "configs/depth_samsung_l1.yaml",
           "pix2pix": ROOT / "configs/depth_samsung_pix2pix.yaml"}


def evaluate(out: Path, data_path: str | None, split: str) -> None:
    import torch

    torch.set_num_threads(2)
    from seminspect.training.depth import DepthConfig, load_samsung_npz

    cfg = DepthConfig.load(CONFIGS["unet"])
    train, val = load_samsung_npz(data_path or cfg.data.path, cfg.data.val_fraction, cfg.data.split_seed,
                                  split=split)
    evaluate_runs(out, list(CONFIGS), val.x, val.y.numpy(), train.y.numpy(), val.ids, "Samsung depth units",
                  "depth_samsung", f"Samsung validation split ({split})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/depth_samsung")
    ap.add_argument("--data", default=None, help="path of train.npz (default: the config's)")
    ap.add_argument("--split", default="group", choices=["group", "acquisition", "random"])
    ap.add_argument("--part", default="all", choices=["all", "evaluate", *CONFIGS])
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.part in CONFIGS:
        train_one(CONFIGS[args.part], out / args.part, args.data, args.split)
        return
    t0 = time.time()
    if args.part == "all":
        extra = ["--split", args.split, *(["--data", args.data] if args.data else [])]
        train_in_turn(__file__, out, list(CONFIGS), extra)
    evaluate(out, args.data, args.split)
    print(f"total wall time {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()

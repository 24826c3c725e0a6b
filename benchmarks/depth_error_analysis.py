"""Where a Samsung depth model's error is: training vs validation sites, and the hole floor.

For each model: RMSE on every 4th training site and on the validation split (the fixed split of
docs/depth.md, read from configs/depth_samsung.yaml), the spread (std) of the per-site hole-floor
offset (a site's mean error over its hole, hole = true depth < ``--hole-below``), and the validation
RMSE an oracle would reach by removing each site's floor offset. A floor offset that spreads far
more on validation than on training sites means the floor depth of the training sites is memorised.

    env PYTHONPATH=src python benchmarks/depth_error_analysis.py runs/depth_samsung7/unet/best.pt [...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from seminspect.training.depth import DepthConfig, DepthPredictor, load_samsung_npz

SPLIT_CONFIG = Path(__file__).resolve().parents[1] / "configs/depth_samsung.yaml"  # data path and split


def floor_analysis(pred: np.ndarray, true: np.ndarray, hole_below: float) -> dict[str, float]:
    """RMSE, per-site hole-floor offset std, and RMSE with each site's floor offset removed."""
    err = pred - true
    hole = true < hole_below
    offset = np.array([e[h].mean() if h.any() else 0.0 for e, h in zip(err, hole, strict=True)])
    corrected = err - offset[:, None, None] * hole
    return {"rmse": float(np.sqrt((err**2).mean())), "floor_offset_std": float(offset.std()),
            "rmse_oracle_floor": float(np.sqrt((corrected**2).mean()))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="depth model files (best.pt)")
    ap.add_argument("--data", default=None, help="path of train.npz (default: the config's)")
    ap.add_argument("--hole-below", type=float, default=160.0, help="true depth below which a pixel is hole")
    args = ap.parse_args()
    torch.set_num_threads(2)
    cfg = DepthConfig.load(SPLIT_CONFIG)
    train, val = load_samsung_npz(args.data or cfg.data.path, cfg.data.val_fraction, cfg.data.split_seed,
                                  split=cfg.data.split)
    train = train.subset(np.arange(0, len(train), 4))
    print("| model | split | sites | RMSE | floor offset std | RMSE with an oracle floor |")
    print("|---|---|---|---|---|---|")
    for path in args.models:
        model = DepthPredictor.load(path)
        for name, data in (("train (every 4th)", train), ("validation", val)):
            r = floor_analysis(model.predict(data.x), data.y.numpy(), args.hole_below)
            print(f"| {path} | {name} | {len(data)} | {r['rmse']:.3f} | {r['floor_offset_std']:.3f} | "
                  f"{r['rmse_oracle_floor']:.3f} |")


if __name__ == "__main__":
    main()

"""Benchmark: depth from SEM on the Samsung sites measured on structures never trained on (group split).

Each row trains one U-Net of the recommended recipe (configs/depth_samsung.yaml, one member, fewer
epochs: ``--epochs``) on the outer training sites minus an inner group-split validation set, which
chooses the best epoch (and, across rows, the recipe); the reported figure is on the outer split
(``group``: no depth map shared with training; ``random``: the old leaking split, for comparison).
Rows run one after the other, each in its own process (``--part ROW``); ``--part report`` writes the
table. Rows:

* ``recipe-group`` / ``recipe-random``: the recipe on the group / random outer split;
* ``aug-group``: + brightness, contrast and noise augmentation of the inputs (``optim.intensity_aug``);
* ``sitenorm-group``: + per-site intensity normalisation over the four acquisitions (``data.site_norm``);
* ``recipe-acquisition``: the recipe on the acquisition split (whole acquisitions held out);
* ``recipe24-group``: the recipe with 24 epochs (twice ``--epochs`` = 12) on the group split;
* ``l1-group`` / ``pix2pix-group``: the recipe's U-Net trained with L1 only / as pix2pix (L1 + 0.01 GAN),
  ``--epochs`` each;
* ``folds3-group``: an ensemble across inner group folds: three U-Nets of the recipe (``--epochs`` each, seeds
  0-2), each choosing its epoch on a different inner group split (inner seeds 1-3), so together they train
  on every outer training group; the reported prediction is their mean;
* ``full-group``: the recommended config exactly as shipped (``configs/depth_samsung.yaml``: two members
  of 90 epochs in a 60-minute budget), only ``--threads`` and the data path replaced.

For a row on the random split the reported sites are also scored in two parts: those whose depth map
occurs among the outer training sites (a twin was trained on) and those whose map does not.

    nice -n 15 env OMP_NUM_THREADS=1 python benchmarks/depth_group_split.py \\
        --data ../shared/data/samsung_sem_depth/train.npz --out runs/depth_group --epochs 12
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from depth_common import honest_sets, inner_sets, machine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ROWS: dict[str, tuple[str, dict]] = {  # row -> (outer split, config changes; "epochs_factor" scales --epochs)
    "recipe-group": ("group", {}),
    "recipe-random": ("random", {}),
    "aug-group": ("group", {"optim.intensity_aug": 1.0}),
    "sitenorm-group": ("group", {"data.site_norm": True}),
    "recipe-acquisition": ("acquisition", {}),
    "recipe24-group": ("group", {"epochs_factor": 2}),
    "l1-group": ("group", {"loss.mse_epochs": 0}),
    "pix2pix-group": ("group", {"loss.mode": "pix2pix", "loss.mse_epochs": 0}),
    "full-group": ("group", {"as_shipped": True}),
    "width8-group": ("group", {"model.width": 8}),  # smaller
    "wd05-group": ("group", {"optim.weight_decay": 0.05}),  # regularised (the recipe's is 0.01)
    "levels3-group": ("group", {"model.levels": 3}),  # one more level: a wider view of the structure
    "width32-group": ("group", {"model.width": 32}),  # larger: twice the recipe's width (about 4x the work)
    "floor-group": ("group", {"model.floor_head": True}),  # an explicit floor-depth head (UNet floor_head)
    "folds3-group": ("group", {"fold_members": 3}),  # an ensemble across inner group folds
}
DEFAULT_ROWS = ["recipe-group", "recipe-random", "aug-group", "sitenorm-group"]


def leak_parts(test_y: np.ndarray, train_y: np.ndarray, pred: np.ndarray) -> dict:
    """RMSE of the reported sites whose depth map occurs among the training sites (twin trained on) and of the rest."""
    from seminspect.training.depth_eval import score_depth

    seen = {y.tobytes() for y in train_y}
    twin = np.array([y.tobytes() in seen for y in test_y])
    parts = {"n_twin_in_training": int(twin.sum()), "n_no_twin": int((~twin).sum())}
    for name, sel in (("twin_in_training", twin), ("no_twin", ~twin)):
        if sel.any():
            parts[f"rmse_{name}"] = score_depth(pred[sel], test_y[sel]).rmse
    return parts


def run_row(row: str, data: str, out: Path, epochs: int, threads: int) -> None:
    import torch

    from seminspect.training.depth import DepthConfig, DepthPredictor, train_depth
    from seminspect.training.depth_eval import mean_map, score_depth

    outer, changes = ROWS[row]
    changes = dict(changes)
    epochs *= changes.pop("epochs_factor", 1)
    folds = changes.pop("fold_members", 1)  # > 1: an ensemble across inner group folds
    shipped = DepthConfig.load(ROOT / "configs/depth_samsung.yaml")
    if changes.pop("as_shipped", False):
        cfg = shipped.with_options("benchmark", **{"data.path": data, "threads": threads})
        epochs = cfg.optim.epochs
    else:
        cfg = shipped.with_options(
            "benchmark", **{"data.path": data, "ensemble": 1, "threads": threads, "optim.epochs": epochs,
                            "loss.mse_epochs": epochs - max(1, round(epochs / 9)), "optim.max_minutes": None,
                            **changes})
    torch.set_num_threads(threads)

    _, _, outer_train, test = honest_sets(data, outer, cfg.data.val_fraction, cfg.data.split_seed)
    load0, t0 = machine(), time.time()
    preds, inner_rmse, runs = [], [], []
    for k in range(folds):  # member k chooses its epoch on inner split 1 + k (one member: the usual inner split)
        inner_train, inner_val = inner_sets(outer_train, cfg.data.val_fraction, 1 + k)
        member = cfg.with_options("fold member", seed=cfg.seed + k) if folds > 1 else cfg
        where = out / row / f"fold{k}" if folds > 1 else out / row
        r = train_depth(member, where, data=(inner_train, inner_val), verbose=True)
        preds.append(DepthPredictor.load(where / "best.pt").predict(test.x))
        inner_rmse.append(r.best_rmse)
        runs.append(r.epochs_run)
    best_epoch = r.best_epoch if folds == 1 else -1  # a fold ensemble: each member's own best epoch
    wall = time.time() - t0
    pred = np.mean(preds, axis=0)
    s = score_depth(pred, test.y.numpy(), row)
    base = score_depth(np.broadcast_to(mean_map(outer_train.y.numpy()), test.y.shape), test.y.numpy(), "mean map")
    result = {"row": row, "config": cfg.model_dump(), "outer_split": outer, "changes": changes, "fold_members": folds,
              "epochs": epochs,
              "n_inner_train": len(inner_train), "n_inner_val": len(inner_val), "n_test": len(test),
              "inner_val_rmse": float(np.mean(inner_rmse)), "members_inner_val_rmse": inner_rmse,
              "best_epoch": best_epoch, "epochs_run": runs if folds > 1 else runs[0],
              "test": s.row(), "mean_map": base.row(),
              "wall_s": wall, "machine_start": load0, "machine_end": machine(), "threads": threads,
              "leak": leak_parts(test.y.numpy(), outer_train.y.numpy(), pred)}
    (out / f"{row}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


def add_leak(data: str, out: Path, rows: list[str]) -> None:
    from seminspect.training.depth import DepthPredictor

    for row in rows:
        f = out / f"{row}.json"
        if not f.is_file():
            continue
        r = json.loads(f.read_text())
        _, _, outer_train, test = honest_sets(data, r["outer_split"])
        pred = DepthPredictor.load(out / row / "best.pt").predict(test.x)
        r["leak"] = leak_parts(test.y.numpy(), outer_train.y.numpy(), pred)
        f.write_text(json.dumps(r, indent=2))


def _part(lk: dict, k: str) -> str:
    return f"{lk[f'rmse_{k}']:.3f} ({lk[f'n_{k}']})" if f"rmse_{k}" in lk else f"- ({lk.get(f'n_{k}', 0)})"


def _epoch(r: dict) -> str:
    """Best epoch of one U-Net; an ensemble's best.pt averages its members (each at its own best epoch)."""
    return f"{r['best_epoch']}/{r['epochs']}" if r["best_epoch"] >= 0 else f"members' best ({r['epochs']} configured)"


def report(out: Path) -> str:
    rows = [json.loads((out / f"{r}.json").read_text()) for r in ROWS if (out / f"{r}.json").is_file()]
    lines = ["| row | reported split | inner group-val RMSE (chooses) | best epoch | reported RMSE | MAE | "
             "site RMSE p95 | mean-map RMSE | twin trained on / not: RMSE (sites) | train wall (s) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        t, lk = r["test"], r.get("leak", {})
        parts = " / ".join(_part(lk, k) for k in ("twin_in_training", "no_twin")) if lk else "-"
        lines.append(f"| {r['row']} | {r['outer_split']} ({r['n_test']} sites) | {r['inner_val_rmse']:.3f} | "
                     f"{_epoch(r)} | {t['rmse']:.3f} | {t['mae']:.3f} | {t['site_rmse_p95']:.3f} | "
                     f"{r['mean_map']['rmse']:.3f} | {parts} | {r['wall_s']:.0f} |")
    group_rows = [r for r in rows if r["outer_split"] == "group"]
    if group_rows:
        chosen = min(group_rows, key=lambda r: r["inner_val_rmse"])
        lines.append(f"\nChosen on the inner group-split validation set: **{chosen['row']}** "
                     f"(reported group-split RMSE {chosen['test']['rmse']:.3f}).")
    text = "\n".join(lines) + "\n"
    (out / "results.md").write_text(text)
    return text


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="path of the Samsung train.npz")
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--part", default="all", choices=["all", "report", "leak", *ROWS])
    ap.add_argument("--rows", nargs="*", default=DEFAULT_ROWS, choices=list(ROWS))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.part in ROWS:
        run_row(args.part, args.data, out, args.epochs, args.threads)
        return
    if args.part == "leak":  # add the twin / no-twin parts to rows measured before they were recorded
        add_leak(args.data, out, args.rows)
    if args.part == "all":
        for row in args.rows:
            code = subprocess.call([sys.executable, __file__, "--data", args.data, "--out", str(out), "--part", row,
                                    "--epochs", str(args.epochs), "--threads", str(args.threads)])
            if code:
                sys.exit(f"row {row} failed: exit code {code}")
    print(report(out))


if __name__ == "__main__":
    main()

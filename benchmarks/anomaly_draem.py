"""DeepPCB: DRAEM and diffusion (plain / reference-aware) vs template-conditioned PatchCore (anomaly_deeppcb.py crops).

Same data and split as ``anomaly_deeppcb.py`` / ``anomaly_deeppcb_postproc.py`` (pairs sorted by
name): fit = box-free crops of pairs 0-39 (20 % held out for the threshold), test = the identical
300 crops of pairs 40-69, validation = pairs 70-99 (own seed). Nothing is chosen on the test crops:

- PatchCore: ``configs/anomaly_deeppcb.yaml`` (its map post-processing was chosen on the same
  validation pairs on 2026-11-23), refitted here so both models run under the same load.
- DRAEM: trained once with raw maps (sigma 0, no window); its map post-processing (local-max window,
  sigma) is chosen on the validation crops with the rule of ``anomaly_deeppcb_postproc.py`` (the
  highest validation pixel AUROC among settings within 0.005 of the best validation image AUROC);
  the threshold is then refitted on the held-out fit normals and the test crops scored once.
  Training settings (width, epochs, lr, pseudo-defect sources) are fixed in advance, not tuned.
- Diffusion (``--runs diffusion_reference,diffusion``): denoiser and one-pass student fitted once;
  each scorer (denoiser, then student) gets its own map post-processing chosen on the validation
  crops by the same rule, its own threshold, one row. Settings fixed in advance (``--diffusion-*``).

    OMP_NUM_THREADS=1 nice -n 15 python benchmarks/anomaly_draem.py --data ../shared/data/deeppcb \\
        --out benchmarks/results/anomaly_draem.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from anomaly_deeppcb import add_normal_draw, balanced_selection, crops, fit_and_test_crops, load_pairs  # noqa: E402
from anomaly_deeppcb_postproc import post  # noqa: E402
from single_view_common import peak_rss_mib  # noqa: E402

from seminspect.evaluation.anomaly_metrics import anomaly_metrics  # noqa: E402
from seminspect.models.anomaly import AnomalyDetector, load_anomaly_config  # noqa: E402
from seminspect.utils.io import atomic_write_json  # noqa: E402

METRICS = ("image_auroc", "image_ap", "pixel_auroc", "aupro", "false_alarm_rate", "recall")


def choose_postproc(det: AnomalyDetector, val: list, windows: list[int], sigmas: list[float]) -> dict:
    """The (window, sigma) with the best validation pixel AUROC among those within 0.005 of the best image AUROC."""
    vres = det.score(val, progress=False)
    raw = vres.maps.astype(np.float32)
    grid = []
    for w in windows:
        for sg in sigmas:
            m = post(raw, w, sg)
            r = anomaly_metrics(m.reshape(len(m), -1).max(1), vres.labels, m, vres.masks)
            grid.append({"map_dilation": w, "sigma": sg, "val_image_auroc": r["image_auroc"],
                         "val_pixel_auroc": r["pixel_auroc"], "val_aupro": r["aupro"]})
    best = max(g["val_image_auroc"] for g in grid)
    chosen = max((g for g in grid if g["val_image_auroc"] >= best - 0.005), key=lambda g: g["val_pixel_auroc"])
    return {"chosen": chosen, "grid": grid}


def use_postproc(det: AnomalyDetector, window: int, sigma: float) -> None:
    """Give a trained detector new map post-processing (its threshold is then stale)."""
    det.config = det.config.model_copy(update={"map_dilation": window, "sigma": sigma})
    det.model.map_dilation, det.model.sigma = window, sigma


def set_postproc(det: AnomalyDetector, train: list, window: int, sigma: float) -> None:
    """Give a trained detector new map post-processing and refit its threshold on its held-out fit normals."""
    use_postproc(det, window, sigma)
    _, cal = det._normal_split(train)
    det.fit_threshold(det.score(cal, progress=False).scores)


def test_row(det: AnomalyDetector, test: list) -> dict:
    t0 = time.perf_counter()
    res = det.score(test, progress=False)
    pred_s = time.perf_counter() - t0
    m = anomaly_metrics(res.scores, res.labels, res.maps, res.masks, det.threshold["threshold"])
    return {**{k: m[k] for k in METRICS}, "predict_img_per_s": len(test) / pred_s}


def save(args: argparse.Namespace, rows: list, load0: tuple) -> None:
    atomic_write_json(args.out, {"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows,
                                 "load_start": load0})


def diffusion_rows(run: str, args: argparse.Namespace, train: list, val: list, test: list, windows: list[int],
                   sigmas: list[float]) -> list[dict]:
    """Fit the denoiser and its student once; one row per scorer, each post-processed on validation."""
    la, t0 = os.getloadavg()[0], time.perf_counter()
    reference = run == "diffusion_reference"
    cfg = dict(model="diffusion", conditioning="reference" if reference else "none", registration="phase",
               max_shift=4, fill_border=True, diffusion_width=args.diffusion_width, epochs=args.diffusion_epochs,
               diffusion_start=args.diffusion_start, diffusion_sample_steps=args.sample_steps,
               diffusion_student_width=args.student_width, diffusion_student_epochs=args.student_epochs,
               lr=1e-3, batch_size=16, draem_sources=args.sources.split(","), sigma=0.0, map_dilation=0,
               calib_fraction=0.2, seed=0)
    det = AnomalyDetector(cfg).fit(train, checkpoint_dir=args.checkpoints / run)
    rows = []
    for scorer in ("denoiser", "student") if args.student_width else ("denoiser",):  # --student-width 0: none
        det.model.use_student = scorer == "student"
        use_postproc(det, 0, 0.0)  # choose on raw maps, not on the previous scorer's post-processing
        sel = choose_postproc(det, val, windows, sigmas)
        set_postproc(det, train, sel["chosen"]["map_dilation"], sel["chosen"]["sigma"])
        what = (f"width {args.diffusion_width}, {args.diffusion_epochs} epochs, start {args.diffusion_start}, "
                f"{args.sample_steps} DDIM steps" if scorer == "denoiser" else
                f"student width {args.student_width}, {args.student_epochs} epochs, one pass")
        row = {"run": f"diffusion {scorer}{', reference-aware' if reference else ''} ({what}, {args.sources})",
               "chosen_on": "validation pairs 70-99", "chosen": sel["chosen"], "grid": sel["grid"],
               "losses": det.history.get("losses" if scorer == "denoiser" else "student_losses"),
               "fit_s": det.history["train_seconds" if scorer == "denoiser" else "student_seconds"]}
        row.update(test_row(det, test), load_at_start=la, load_at_end=os.getloadavg()[0],
                   run_wall_s=time.perf_counter() - t0, peak_rss_mib_so_far=peak_rss_mib())
        print(json.dumps({k: v for k, v in row.items() if k != "grid"}), flush=True)
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True, help="DeepPCB root (trainval.txt, group*/)")
    ap.add_argument("--patchcore-config", type=Path, default=Path("configs/anomaly_deeppcb.yaml"))
    ap.add_argument("--runs", default="patchcore,draem_reference,draem")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--sources", default="perlin,cutpaste")
    ap.add_argument("--windows", default="0,9,17,25,33")
    ap.add_argument("--sigmas", default="0,2,4,8,12")
    ap.add_argument("--diffusion-width", type=int, default=16)
    ap.add_argument("--diffusion-epochs", type=int, default=40)
    ap.add_argument("--diffusion-start", type=float, default=0.3)
    ap.add_argument("--sample-steps", type=int, default=4)
    ap.add_argument("--student-width", type=int, default=8, help="one-pass student width (0 = no student row)")
    ap.add_argument("--student-epochs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--limit", type=int, default=0, help="smoke test: this many crops per set; 0 = all")
    ap.add_argument("--checkpoints", type=Path, default=Path("runs/draem_deeppcb"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/anomaly_draem.json"))
    add_normal_draw(ap)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t_all, load0 = time.perf_counter(), os.getloadavg()
    pairs = load_pairs(args.data)
    rng = np.random.default_rng(0)  # the same call order as anomaly_deeppcb.py: identical crops
    train, test = fit_and_test_crops(pairs, 40, 30, 128, 300, rng, args.normal_draw)
    vrng = np.random.default_rng(5)
    val = balanced_selection(crops(pairs[70:100], 128, vrng, True, "va"), 300, vrng, args.normal_draw)
    if args.limit:
        h = args.limit // 2
        train = train[: args.limit]
        val = [s for s in val if s.is_abnormal][:h] + [s for s in val if not s.is_abnormal][:h]
        test = [s for s in test if s.is_abnormal][:h] + [s for s in test if not s.is_abnormal][:h]
    windows = [int(x) for x in args.windows.split(",")]
    sigmas = [float(x) for x in args.sigmas.split(",")]
    print(f"fit {len(train)} val {len(val)} test {len(test)}; load {load0}", flush=True)
    rows = []
    for run in args.runs.split(","):
        la = os.getloadavg()[0]
        t0 = time.perf_counter()
        if run.startswith("diffusion"):
            rows.extend(diffusion_rows(run, args, train, val, test, windows, sigmas))
            save(args, rows, load0)
            continue
        if run == "patchcore":
            det = AnomalyDetector(load_anomaly_config(args.patchcore_config)).fit(train)
            row = {"run": "patchcore, difference, pool 1 (configs/anomaly_deeppcb.yaml)",
                   "chosen_on": "validation pairs 70-99 (2026-11-23)",
                   "chosen": {"map_dilation": det.config.map_dilation, "sigma": det.config.sigma}}
            fit_s = time.perf_counter() - t0
        else:
            cfg = dict(model="draem", conditioning="reference" if run == "draem_reference" else "none",
                       registration="phase", max_shift=4, fill_border=True, draem_width=args.width,
                       epochs=args.epochs, lr=1e-3, batch_size=16, draem_sources=args.sources.split(","),
                       sigma=0.0, map_dilation=0, calib_fraction=0.2, seed=0)
            det = AnomalyDetector(cfg).fit(train, checkpoint_dir=args.checkpoints / run)
            fit_s = time.perf_counter() - t0
            sel = choose_postproc(det, val, windows, sigmas)
            set_postproc(det, train, sel["chosen"]["map_dilation"], sel["chosen"]["sigma"])
            row = {"run": f"draem{', reference-aware' if run == 'draem_reference' else ''} (width {args.width}, "
                          f"{args.epochs} epochs, {args.sources})", "chosen_on": "validation pairs 70-99",
                   "chosen": sel["chosen"], "grid": sel["grid"], "losses": det.history.get("losses")}
        row.update(test_row(det, test), fit_s=fit_s, load_at_start=la, load_at_end=os.getloadavg()[0],
                   run_wall_s=time.perf_counter() - t0)
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "grid"}), flush=True)
        save(args, rows, load0)
    atomic_write_json(args.out, {"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows,
                                 "load_start": load0, "load_end": os.getloadavg(),
                                 "wall_s": time.perf_counter() - t_all,
                                 "peak_rss_mib": peak_rss_mib(),
                                 "n": {"fit": len(train), "val": len(val), "test": len(test)}})


if __name__ == "__main__":
    main()

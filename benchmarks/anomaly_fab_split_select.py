"""Virtual fab: image score and anomaly map post-processed separately, both chosen on calib.

``anomaly_fab_tuning.py --save-raw DIR`` keeps the raw per-view maps of one fit (calib and test
splits). A wide window spreads a map over a defect's extent (pixel AUROC) but dilutes the peak of
a small defect (image AUROC), so no single post-processing chosen on calib met both targets at
460 px (benchmarks/results/anomaly_fab.md). ``AnomalyConfig.score_sigma`` / ``score_dilation``
take the image score from its own smoothing of the raw maps. Selection, on calib only:

1. the view combination, centre prior, score window and score sigma with the highest calib
   image AUROC (the same rule as ``anomaly_fab_tuning.py``);
2. with that view combination and centre prior, the map window and sigma with the highest calib
   pixel AUROC (every 2nd pixel per axis, as there).

The test split is then scored once with the chosen pair.

    python benchmarks/anomaly_fab_split_select.py --data /tmp/seminspect_bench/fab460 --raw /tmp/anom/raw460 \\
        --size 460 --crop 224 --angles 5 --out benchmarks/results/anomaly_fab460_split.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from anomaly_fab_tuning import combine, post  # noqa: E402

from seminspect.data.dataset import SampleDataset  # noqa: E402
from seminspect.evaluation.anomaly_metrics import anomaly_metrics  # noqa: E402
from seminspect.evaluation.pixel_metrics import pixel_auroc  # noqa: E402
from seminspect.models.anomaly.features import centre_prior  # noqa: E402
from seminspect.utils.io import atomic_write_json  # noqa: E402


def masks_of(samples: list, lo: int, side: int) -> np.ndarray:
    """``(N, side, side)`` union of the target-view masks inside the detector's centre crop."""
    return np.stack([np.any([v.mask for v in s.targets if v.mask is not None], 0)[lo:lo + side, lo:lo + side]
                     if s.is_abnormal else np.zeros((side, side), bool) for s in samples])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True, help="the dataset anomaly_fab_tuning.py generated")
    ap.add_argument("--raw", type=Path, required=True, help="its --save-raw folder")
    ap.add_argument("--fit", default="best", help="which fit's raw maps (file prefix)")
    ap.add_argument("--size", type=int, default=460)
    ap.add_argument("--crop", type=int, default=224)
    ap.add_argument("--angles", type=int, default=5)
    ap.add_argument("--sigmas", default="2,4,8")
    ap.add_argument("--centres", default="0,0.2,0.3")
    ap.add_argument("--dilations", default="0,9,17")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    load0 = os.getloadavg()
    t_all = time.perf_counter()
    ds = SampleDataset(args.data)
    calib, test = list(ds.split("calib")), list(ds.split("test"))
    raw_cal = np.load(args.raw / f"{args.fit}_calib.npy").astype(np.float32)
    raw_te = np.load(args.raw / f"{args.fit}_test.npy").astype(np.float32)
    if raw_cal.shape[0] != len(calib) * args.angles or raw_te.shape[0] != len(test) * args.angles:
        raise SystemExit(f"{args.raw}: {raw_cal.shape[0]} / {raw_te.shape[0]} calib / test view maps, expected "
                         f"{len(calib) * args.angles} / {len(test) * args.angles} for {args.data}")
    side = min(args.crop, args.size) if args.crop else args.size
    lo = (args.size - side) // 2
    y_cal = np.array([int(s.is_abnormal) for s in calib])
    y_te = np.array([int(s.is_abnormal) for s in test])
    m_cal, m_te = masks_of(calib, lo, side), masks_of(test, lo, side)
    sigmas = [float(x) for x in args.sigmas.split(",")]
    centres = [float(x) for x in args.centres.split(",")]
    dilations = [int(x) for x in args.dilations.split(",")]

    def prior(c: float) -> np.ndarray | float:
        return centre_prior((side, side), c).numpy() if c > 0 else 1.0

    grid = []
    for dil, sigma in itertools.product(dilations, sigmas):
        pc = post(raw_cal, sigma, 0.0, dil)
        for centre, how in itertools.product(centres, ("max", "mean", "view0")):
            mc = combine(pc * prior(centre), args.angles, how)
            grid.append({"map_dilation": dil, "sigma": sigma, "centre": centre, "views": how,
                         "calib_image_auroc": anomaly_metrics(mc.reshape(len(mc), -1).max(1), y_cal)["image_auroc"],
                         "calib_pixel_auroc": float(pixel_auroc(m_cal[:, ::2, ::2], mc[:, ::2, ::2]))})
        del pc
        print(f"calib grid: window {dil}, sigma {sigma:g} done", flush=True)
    score_g = max(grid, key=lambda g: g["calib_image_auroc"])
    same = [g for g in grid if (g["views"], g["centre"]) == (score_g["views"], score_g["centre"])]
    map_g = max(same, key=lambda g: g["calib_pixel_auroc"])

    p = prior(score_g["centre"])
    st_maps = combine(post(raw_te, score_g["sigma"], 0.0, score_g["map_dilation"]) * p, args.angles, score_g["views"])
    st = st_maps.reshape(len(st_maps), -1).max(1)
    del st_maps
    mt = combine(post(raw_te, map_g["sigma"], 0.0, map_g["map_dilation"]) * p, args.angles, map_g["views"])
    m = anomaly_metrics(st, y_te, mt, m_te)
    types = [s.defect_type for s in test]
    per_type = {}
    for t in sorted({t for t in types if t}):
        sel = np.array([(tt == t) or (yy == 0) for tt, yy in zip(types, y_te, strict=True)])
        per_type[t] = anomaly_metrics(st[sel], y_te[sel])["image_auroc"]
    doc = {"args": {k: str(v) for k, v in vars(args).items()}, "load_start": load0, "load_end": os.getloadavg(),
           "wall_s": time.perf_counter() - t_all,
           "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "n": {"calib": len(calib), "test": len(test), "test_abnormal": int(y_te.sum())},
           "score_setting": score_g, "map_setting": map_g,
           "test": {k: m[k] for k in ("image_auroc", "image_ap", "pixel_auroc", "aupro")},
           "test_per_type_image_auroc": per_type, "grid": grid}
    atomic_write_json(args.out, doc)
    print(json.dumps({k: v for k, v in doc.items() if k != "grid"}, indent=1))


if __name__ == "__main__":
    main()

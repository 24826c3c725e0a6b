"""How visible is each defect in the registered target-minus-reference difference? (virtual fab)

For ``--per-type`` samples of each chosen defect type, generated with
:func:`seminspect.data.synth.generate_sample` at each ``--sizes`` image size (same seeds), every
target view is registered to its reference exactly as the anomaly detector does it (phase
correlation, uncovered strip filled from the target, Gaussian pre-smoothing ``--denoise`` px), and
the difference ``d = t - r`` is measured (inside the detector's centre crop where a size is given
as ``SIZE:CROP``):

- ``peak_in``: the largest ``|d|`` inside the defect mask (grey levels, 0..1 scale);
- ``peak_out``: the largest ``|d|`` outside the mask, dilated by 6 px (what the defect competes with
  in the same image: noise, charging, residual misalignment, line-width nuisance);
- ``visible``: the fraction of views with ``peak_in > peak_out`` (the defect is the strongest
  difference in its own image) and the same for the 5-view mean difference map.

Pixel-level only (no CNN): it says whether the signal is in the images at all.

    nice -n 10 python benchmarks/anomaly_fab_visibility.py --sizes 128,256,460:160
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
from scipy import ndimage

from seminspect.data.imageio import to_float
from seminspect.data.registration import register_pair


def measure(sample, denoise: float, crop: int = 0) -> dict:
    """Per-view and view-mean peak |t - r| inside / outside the mask of one abnormal sample."""
    diffs, masks = [], []
    for tgt, ref in sample.pairs():
        t = to_float(tgt.image)
        reg = register_pair(t, ref.image, method="phase")
        r = np.where(reg.valid_mask(), reg.warped, t).astype(np.float32)
        if denoise > 0:
            t = ndimage.gaussian_filter(t, denoise)
            r = ndimage.gaussian_filter(r, denoise)
        m = tgt.mask if tgt.mask is not None else np.zeros(t.shape, bool)
        if crop:  # the detector's centre crop, after registration and smoothing
            lo = (t.shape[0] - crop) // 2
            t, r, m = (a[lo:lo + crop, lo:lo + crop] for a in (t, r, m))
        diffs.append(t - r)
        masks.append(m)
    mask = np.any(masks, 0)
    if not mask.any():
        return {}
    far = ~ndimage.binary_dilation(mask, iterations=6)
    rows = []
    for d in diffs:
        a = np.abs(d)
        rows.append((float(a[mask].max()), float(a[far].max())))
    mean_abs = np.abs(np.mean(diffs, 0))  # signed mean over detectors, then magnitude
    return {"area": int(mask.sum()), "views": rows,
            "mean_in": float(mean_abs[mask].max()), "mean_out": float(mean_abs[far].max())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--types", default="pit_void,small_particle,particle_cluster,missing_contact,bridge")
    ap.add_argument("--sizes", default="128,256,460:160", help="image sizes, each optionally :crop (centre crop)")
    ap.add_argument("--per-type", type=int, default=30)
    ap.add_argument("--denoise", type=float, default=1.0)
    ap.add_argument("--out", default="benchmarks/results/anomaly_fab_visibility.json")
    args = ap.parse_args()
    from seminspect.data.synth import FabConfig, generate_sample

    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    out: dict = {"args": vars(args), "load_start": load0, "results": {}}
    for spec in args.sizes.split(","):
        size, crop = (int(x) for x in (spec.split(":") + ["0"])[:2])
        cfg = FabConfig(image_size=size, n_angles=5, n_references=5, difficulty="medium")
        for typ in args.types.split(","):
            recs = []
            for i in range(args.per_type):
                s = generate_sample(cfg, typ, seed=10_000 + i, sample_id=f"{typ}{i}")
                m = measure(s, args.denoise, crop)
                if m:
                    m["strength"] = float(s.metadata.get("strength", "nan"))
                    recs.append(m)
            view_in = np.array([v[0] for r in recs for v in r["views"]])
            view_out = np.array([v[1] for r in recs for v in r["views"]])
            mean_in = np.array([r["mean_in"] for r in recs])
            mean_out = np.array([r["mean_out"] for r in recs])
            summ = {"n": len(recs), "median_area_px": float(np.median([r["area"] for r in recs])),
                    "median_peak_in": float(np.median(view_in)), "median_peak_out": float(np.median(view_out)),
                    "views_visible": float((view_in > view_out).mean()),
                    "mean_map_visible": float((mean_in > mean_out).mean()),
                    "median_ratio_mean_map": float(np.median(mean_in / mean_out))}
            out["results"][f"{spec}/{typ}"] = {"summary": summ, "samples": recs}
            print(spec, typ, json.dumps(summ), flush=True)
    out["wall_s"] = time.perf_counter() - t0
    out["load_end"] = os.getloadavg()[0]
    from seminspect.utils.io import atomic_write_json

    atomic_write_json(out["args"]["out"], out)


if __name__ == "__main__":
    main()

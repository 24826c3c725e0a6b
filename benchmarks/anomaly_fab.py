"""Virtual-fab anomaly benchmark: trained on normal samples only; registration on vs off under misalignment.

Generates a small virtual-fab dataset (one target + one reference view, ``--size`` px; the
generator already misaligns references by up to 3 px), fits PatchCore (unconditioned and
reference-conditioned) on the normal training samples, fits the threshold on the normal
calibration samples, and scores the test split. Injected misalignment: every reference view is
additionally shifted by a random 4-8 px (per axis, random sign) before registration.

    python benchmarks/anomaly_fab.py --data /tmp/fab_anomaly --out /tmp/anomaly_fab.md

The result file carries the command, date, machine and load of the run (``predict_common.header``);
``benchmarks/results/anomaly_fab.md`` collects such files by hand, so the script never writes there itself.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from seminspect.data.dataset import SampleDataset
from seminspect.data.imageio import to_float
from seminspect.data.sample import Role, Sample, View
from seminspect.evaluation.anomaly_metrics import per_type_metrics
from seminspect.models.anomaly import AnomalyDetector
from seminspect.utils.io import atomic_write_text

sys.path.insert(0, str(Path(__file__).parent))
from predict_common import header, load  # noqa: E402


class Misalign:
    """Transform: shift each reference view by a seeded random 4-8 px per axis (reflect borders)."""

    def __init__(self, lo: float = 4.0, hi: float = 8.0, seed: int = 0):
        self.lo, self.hi, self.seed = lo, hi, seed

    def __call__(self, s: Sample) -> Sample:
        rng = np.random.default_rng(abs(hash((s.sample_id, self.seed))) % 2**32)
        views = []
        for v in s.views:
            if v.role == Role.REFERENCE:
                shift = rng.uniform(self.lo, self.hi, 2) * rng.choice([-1, 1], 2)
                img = ndimage.shift(to_float(v.image), shift, order=1, mode="reflect")
                v = View(v.role, v.index, img.astype(np.float32), v.mask, v.source)
            views.append(v)
        return dataclasses.replace(s, views=views)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True, help="where the generated dataset goes")
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--bank", type=int, default=5000)
    ap.add_argument("--stpm-epochs", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True, help="result file (markdown)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    head = header("Anomaly detection on the virtual fab (normal samples only)", sys.argv)
    t_start = time.perf_counter()
    os.environ["PYTHONHASHSEED"] = "0"
    from seminspect.data.synth import FabConfig, generate_dataset

    t0 = time.perf_counter()
    generate_dataset(args.data, args.n, FabConfig(image_size=args.size, n_angles=1, n_references=1),
                     abnormal_fraction=0.5, seed=0, workers=1, splits={"train": 0.4, "calib": 0.2, "test": 0.4})
    gen_s = time.perf_counter() - t0
    ds = SampleDataset(args.data)
    train, calib = ds.split("train"), ds.split("calib")
    test_ids = ds.split("test").sample_ids
    n_train_normal = int((train.is_abnormal == 0).sum())
    n_cal_normal = int((calib.is_abnormal == 0).sum())
    test_lab = ds.split("test").is_abnormal
    print(f"generated in {gen_s:.0f} s; train normals {n_train_normal}, calib normals {n_cal_normal}, "
          f"test {int((test_lab == 1).sum())} abnormal + {int((test_lab == 0).sum())} normal", flush=True)
    base = dict(backbone="mobilenetv2", out_indices=[1, 2, 3], layers=[0, 1], max_bank_patches=args.bank,
                max_pool_patches=60000, coreset_proj_dim=64, sigma=4.0, batch_size=16)
    best = dict(base, conditioning="difference", centre_sigma=0.2)
    runs = [
        ("patchcore unconditioned", dict(base, conditioning="none"), False),
        ("patchcore unconditioned + centre prior", dict(base, conditioning="none", centre_sigma=0.2), False),
        ("patchcore [f_t, f_t - f_r] + centre prior", dict(base, conditioning="reference", centre_sigma=0.2), False),
        ("patchcore difference + centre prior, registration on", best, False),
        ("patchcore difference + centre prior, registration off", dict(best, registration="off"), False),
        ("patchcore difference + centre prior, registration on, +4-8 px injected", best, True),
        ("patchcore difference + centre prior, registration off, +4-8 px injected", dict(best, registration="off"),
         True),
    ]
    if args.stpm_epochs:
        stpm = dict(base, model="stpm", epochs=args.stpm_epochs, layer_weights=[1, 1, 1])
        runs.append(("stpm template-conditioned + centre prior", dict(stpm, stpm_mode="template", centre_sigma=0.2),
                     False))
        runs.append(("stpm classic", dict(stpm, stpm_mode="classic"), False))
    results = []
    per_type_best = None
    for name, cfg, misalign in runs:
        tf = Misalign() if misalign else None
        tr = SampleDataset(args.data, transform=tf).split("train")
        ca = SampleDataset(args.data, transform=tf).split("calib")
        te = SampleDataset(args.data, transform=tf, sample_ids=test_ids)
        t0 = time.perf_counter()
        det = AnomalyDetector(cfg).fit(tr, calib=ca)
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = det.score(te)
        pred_s = time.perf_counter() - t0
        rep = per_type_metrics(res, det.threshold["threshold"])
        a = rep["all"]
        results.append({"run": name, "image_auroc": a["image_auroc"], "image_ap": a["image_ap"],
                        "pixel_auroc": a["pixel_auroc"], "aupro": a["aupro"], "far": a["false_alarm_rate"],
                        "recall": a["recall"], "fit_s": fit_s, "ips": len(te) / pred_s})
        print(json.dumps(results[-1]), flush=True)
        if name == "patchcore difference + centre prior, registration on":
            per_type_best = rep
    lines = head[:-1] + [
        f"- torch 1 thread; wall {time.perf_counter() - t_start:.0f} s; load average at the end {load()}",
        f"- data: `generate_dataset(n={args.n}, FabConfig(image_size={args.size}, n_angles=1, n_references=1), "
        "abnormal_fraction=0.5, seed=0, splits train 0.4 / calib 0.2 / test 0.4)` (generated in "
        f"{gen_s:.0f} s); fitted on the {n_train_normal} normal train samples, threshold "
        f"(NormalQuantileThreshold, 1 % at 95 %) on the {n_cal_normal} normal calib samples, scored on the "
        f"{len(test_ids)} test samples (all 19 defect types).",
        "- backbone: MobileNetV2 ImageNet (maps at reductions 4 and 8), bank <= "
        f"{args.bank} patches, Gaussian sigma 4 px; image score = max of the map.",
        "",
        "| run | image AUROC | image AP | pixel AUROC | AUPRO | false-alarm rate @thr | recall @thr | fit s | "
        "predict img/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(f"| {r['run']} | {r['image_auroc']:.4f} | {r['image_ap']:.4f} | {r['pixel_auroc']:.4f} | "
                     f"{r['aupro']:.4f} | {r['far']:.3f} | {r['recall']:.3f} | {r['fit_s']:.0f} | {r['ips']:.1f} |")
    if per_type_best:
        lines += ["", "Per defect type (difference + centre prior, registration on; each type vs all test normals; "
                  "few samples per type, so single values are noisy):", "",
                  "| type | n | image AUROC | pixel AUROC |", "|---|---|---|---|"]
        for t, m in per_type_best.items():
            if t == "all":
                continue
            pix = m.get("pixel_auroc", float("nan"))
            lines.append(f"| {t} | {m['n_abnormal']} | {m['image_auroc']:.3f} | {pix:.3f} |")
    atomic_write_text(args.out, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""Generate the virtual-fab set of the ADC benchmark (resumable: re-run the same command after a kill).

    nice -n 10 python benchmarks/adc_make_fab.py OUT N_SAMPLES [TRAIN CALIB TEST] [--workers 2]

The product's sample, as in the README's main job: 460 x 460 px at 2 nm/px, 5 target + 5
reference views (detectors) and 2 zooms (2x, 4x), default "medium" difficulty, half of the
sites abnormal with the 19 types of ``sem_default`` cycled, fixed seed 2026. The split fractions
(default 0.46 / 0.18 / 0.36) are stratified by type, so every type is in every split.

The old version of this script generated 192 px images to save CPU; that shrank the whole
layout and every defect by ``feature_scale(192) = 0.42`` while the nuisances (line-width
variation, edge roughness, beam blur, noise) stay in pixels, which made most defects invisible
(see benchmarks/results/adc_virtual_fab.md). Do not shrink ``image_size`` to save time.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from seminspect.data.synth import FabConfig, generate_dataset

SEED = 2026


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("n", type=int)
    ap.add_argument("fractions", nargs="*", type=float, help="train calib test fractions (default 0.46 0.18 0.36)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--zooms", type=int, default=2)
    ap.add_argument("--image-size", type=int, default=460)
    a = ap.parse_args()
    torch.set_num_threads(1)
    fr = a.fractions or [0.46, 0.18, 0.36]
    splits = dict(zip(("train", "calib", "test"), fr, strict=True))
    fab = FabConfig(image_size=a.image_size, n_angles=5, n_zooms=a.zooms, difficulty="medium")
    t0 = time.perf_counter()
    c0 = os.times()
    generate_dataset(a.out, a.n, fab, abnormal_fraction=0.5, seed=SEED, workers=a.workers, splits=splits)
    c1 = os.times()
    cpu = (c1.user - c0.user) + (c1.system - c0.system) + (c1.children_user - c0.children_user) + (
        c1.children_system - c0.children_system)
    load = os.getloadavg()
    print(f"generated {a.n} samples ({fab.image_size} px, 5+5 views + {fab.n_zooms} zooms, seed {SEED}, splits "
          f"{splits}) in {time.perf_counter() - t0:.0f} s wall, {cpu:.0f} s CPU, {a.workers} workers; "
          f"load average now {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f} -> {a.out}")


if __name__ == "__main__":
    main()

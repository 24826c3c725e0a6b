"""Diffusion denoiser vs its one-pass student: model time per image, from a training checkpoint folder (issue 19).

Rebuilds the :class:`~seminspect.models.anomaly.DiffusionModel` of a ``checkpoint_dir`` written by
``AnomalyDetector.fit`` (``checkpoint.*`` = denoiser, ``student.*`` = student; settings from the
checkpoint's own config) and times ``raw_maps`` of both scorers on the same batches, one after the
other, round robin: only the model, without registration or decoding (the benchmark tables'
predict figures include those). Content does not change the cost, so the inputs are seeded noise.

    python benchmarks/diffusion_student_speed.py runs/diffusion_fab460/diffusion --size 224 \\
        --out benchmarks/results/diffusion_student_speed_fab.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from seminspect.models.anomaly import AnomalyConfig
from seminspect.models.anomaly.detector import AnomalyDetector
from seminspect.models.anomaly.train_state import read_checkpoint, read_meta
from seminspect.utils.io import atomic_write_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", type=Path, help="checkpoint_dir of a diffusion fit with a student")
    ap.add_argument("--size", type=int, required=True, help="image side the model scores (px)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = AnomalyConfig(**read_meta(args.checkpoints, "diffusion student", "student")["config"])
    model = AnomalyDetector(cfg).model
    read_checkpoint(args.checkpoints, "model", model.denoiser, None, "diffusion")
    read_checkpoint(args.checkpoints, "student", model.student, None, "diffusion student", stem="student")
    model.eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 1, args.size, args.size, generator=gen)
    ref = torch.rand(args.batch, 1, args.size, args.size, generator=gen) if model.reference else None
    load0 = os.getloadavg()
    times: dict[str, list[float]] = {"denoiser": [], "student": []}
    for scorer in times:  # warm-up
        model.use_student = scorer == "student"
        model.raw_maps(x, ref)
    for _ in range(args.rounds):
        for scorer in times:
            model.use_student = scorer == "student"
            t0 = time.perf_counter()
            for _ in range(args.batches):
                model.raw_maps(x, ref)
            times[scorer].append((time.perf_counter() - t0) / (args.batches * args.batch) * 1000)
    ms = {k: min(v) for k, v in times.items()}
    doc = {"command": "python " + " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "machine": f"{os.cpu_count()} cores, torch {torch.__version__}, {args.threads} threads",
           "load_start": load0, "load_end": os.getloadavg(),
           "settings": {k: v for k, v in cfg.model_dump().items() if k.startswith("diffusion") or k == "conditioning"},
           "ms_per_image_each_round": times, "ms_per_image_best": ms, "speedup": ms["denoiser"] / ms["student"]}
    atomic_write_json(args.out, doc)
    print(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()

"""What PatchCore fitting holds in RAM besides the memory bank: the backbone's per-batch working memory.

Each setting runs in its own process (``ru_maxrss`` is a process-lifetime peak): build a
reference-conditioned MobileNetV2 PatchCore, then embed ONE batch of ``batch`` target+reference
pairs of ``size`` px and report the peak-RSS increase. Random images: the cost depends on shapes,
not content.

    nice -n 10 python benchmarks/anomaly_memory.py --batches 8,32 --size 128
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

import torch


def child(batch: int, size: int) -> dict:
    from seminspect.models.anomaly import AnomalyDetector

    torch.set_num_threads(1)
    det = AnomalyDetector(dict(backbone="mobilenetv2", out_indices=[1, 2, 3], layers=[0, 1],
                               conditioning="reference"))
    gen = torch.Generator().manual_seed(0)
    t = torch.rand(batch, 1, size, size, generator=gen)
    r = torch.rand(batch, 1, size, size, generator=gen)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with torch.no_grad():
        emb = det.model.embed(t, r)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"batch": batch, "size": size, "rss_before_mib": before, "peak_after_embed_mib": after,
            "working_mib": after - before, "embedding_mib": emb.numel() * 4 / 2**20}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", default="8,32")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--child", type=int, default=None)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.size)))
        return
    for b in [int(x) for x in args.batches.split(",")]:
        out = subprocess.run([sys.executable, __file__, "--child", str(b), "--size", str(args.size)],
                             capture_output=True, text=True, check=True)
        print(out.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()

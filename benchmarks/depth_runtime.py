"""Depth U-Net throughput per backend, in one process: torch eager, torch.compile, ONNX Runtime, OpenVINO.

    python benchmarks/depth_runtime.py --model runs/depth_group/recipe-group/best.pt \
        --data ../shared/data/samsung_sem_depth/train.npz --split val --out benchmarks/results/depth_runtime.md

Every row predicts the same sites (the model's group-split validation sites by default) in batches
of ``--batch``, ``--repeats`` times after one warm-up call; sites/s is the median repeat. Each row
gives its largest difference from torch eager and the RMSE against the true depth, so a faster
row that changes the answer shows it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from predict_common import header, load  # noqa: E402

ROWS = [("torch", "fp32"), ("torch.compile", "fp32"), ("onnxruntime", "fp32"), ("openvino", "fp32"),
        ("openvino", "bf16")]


def _timed(fn, x: torch.Tensor, repeats: int) -> tuple[np.ndarray, float]:  # noqa: ANN001
    fn(x[:8])  # warm-up: graph export / compilation / first-call allocations
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn(x)
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True, help="best.pt of `seminspect depth train`")
    ap.add_argument("--data", type=Path, required=True, help=".npz file or dataset folder with depth maps")
    ap.add_argument("--split", default="val", help="train / val of the .npz's group split, or a dataset split")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from seminspect.cli.depth import _load_inputs
    from seminspect.inference.depth_runtime import DepthRuntime
    from seminspect.training.depth import DepthPredictor

    started = time.time()
    lines = header("Depth U-Net throughput per backend", ["benchmarks/depth_runtime.py", *(argv or sys.argv[1:])])
    predictor = DepthPredictor.load(args.model)
    x, true, ids = _load_inputs(args.data, args.split, predictor.generator.in_channels)
    x = torch.as_tensor(x)
    lines += [f"Model `{args.model}` ({sum(p.numel() for p in predictor.generator.parameters()):,} parameters); "
              f"{len(ids)} sites of `{args.data}` (split {args.split}), input {tuple(x.shape[1:])}, batch "
              f"{args.batch}, {args.threads} threads, median of {args.repeats} repeats after a warm-up.", "",
              "| backend | precision | sites/s | x torch eager | max abs diff from torch (depth units) | RMSE | "
              "first call (s) |", "|---|---|---|---|---|---|---|"]
    ref, ref_time = None, None
    for backend, precision in ROWS:
        t0 = time.perf_counter()
        try:
            if backend == "torch.compile":
                compiled = torch.compile(predictor.generator)
                eager = DepthPredictor(compiled, predictor.norm, predictor.meta)
                fn = lambda v, p=eager: p.predict(v, batch_size=args.batch)  # noqa: E731
            else:
                run = DepthRuntime(predictor, args.model, backend, precision, args.threads)
                fn = lambda v, r=run: r.predict(v, batch_size=args.batch)  # noqa: E731
            fn(x[:8])
        except Exception as exc:  # noqa: BLE001 - a backend missing here is a row saying so
            lines.append(f"| {backend} | {precision} | - | - | - | - | not run: {type(exc).__name__}: {exc} |")
            continue
        first = time.perf_counter() - t0
        out, seconds = _timed(fn, x, args.repeats)
        if ref is None:
            ref, ref_time = out, seconds
        rmse = float(np.sqrt(np.mean((out - true) ** 2))) if true is not None else float("nan")
        lines.append(f"| {backend} | {precision} | {len(ids) / seconds:.0f} | {ref_time / seconds:.2f} | "
                     f"{float(np.abs(out - ref).max()):.1e} | {rmse:.4f} | {first:.1f} |")
        print(lines[-1], flush=True)
    lines += ["", f"Load average at the end: {load()}; whole run {time.time() - started:.0f} s.", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

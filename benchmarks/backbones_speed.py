"""CPU throughput of every available backbone: eager vs channels_last vs ONNX Runtime, plus size and memory.

    nice -n 10 env PYTHONPATH=src python benchmarks/backbones_speed.py --threads 2 --batch 8 --sizes 224 448

Each backbone runs in its own fresh process (so peak RSS is its own), with 1-channel input and the
default ``out_indices=(1, 2, 3)`` (what the ADC and anomaly models use). Images/s = batch / median time
of ``--iters`` timed batches after ``--warmup`` untimed ones. Writes ``benchmarks/results/backbones_speed.md``
and a ``.json`` beside it.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_env  # noqa: E402


def _time_fn(fn, warmup: int, iters: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _bench_one(name: str, sizes: list[int], batch: int, threads: int, warmup: int, iters: int) -> dict:
    """Runs in a child process: all modes and sizes for one backbone."""
    import torch

    from seminspect.export import export_backbone, onnx_session
    from seminspect.models.backbones import create_backbone, create_full_model, get_backbone_cfg, weights_available

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    pretrained = weights_available(get_backbone_cfg(name))
    net = create_backbone(name, pretrained=pretrained, in_chans=1).eval()
    res: dict = {
        "name": name,
        "pretrained": pretrained,
        "params_backbone": sum(p.numel() for p in net.parameters()),
        "params_full": sum(p.numel() for p in create_full_model(name).parameters()),
        "feature_info": net.feature_info,
        "speed": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        run = onnx_session(export_backbone(net, Path(tmp) / f"{name}.onnx"), threads=threads)
        for size in sizes:
            x = torch.rand(batch, 1, size, size, generator=torch.Generator().manual_seed(0))
            cl_net = create_backbone(name, pretrained=pretrained, in_chans=1).eval()
            cl_net = cl_net.to(memory_format=torch.channels_last)
            x_cl = x.contiguous(memory_format=torch.channels_last)
            x_np = x.numpy()
            with torch.inference_mode():
                t_eager = _time_fn(lambda x=x: net(x), warmup, iters)
                t_cl = _time_fn(lambda cl_net=cl_net, x_cl=x_cl: cl_net(x_cl), warmup, iters)
            t_ort = _time_fn(lambda x_np=x_np: run(x_np), warmup, iters)
            res["speed"][size] = {
                "eager": batch / t_eager,
                "channels_last": batch / t_cl,
                "onnxruntime": batch / t_ort,
            }
    # Linux reports ru_maxrss in KiB.
    res["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return res


def _child(args_tuple, queue) -> None:
    try:
        queue.put(_bench_one(*args_tuple))
    except Exception as exc:  # noqa: BLE001 - report and keep benchmarking the others
        queue.put({"name": args_tuple[0], "error": f"{type(exc).__name__}: {exc}"})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", nargs="*", default=None, help="default: every backbone available here")
    ap.add_argument("--sizes", nargs="*", type=int, default=[224, 448])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "backbones_speed.md")
    ap.add_argument("--note", default="", help="free text for the result file (e.g. concurrent load)")
    args = ap.parse_args()

    from seminspect.models.backbones import list_backbones
    from seminspect.utils.io import atomic_write_json, atomic_write_text
    from seminspect.utils.progress import track

    names = args.backbones or list_backbones()
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    ctx = mp.get_context("spawn")
    results = []
    for name in track(names, description="backbones"):
        q = ctx.Queue()
        p = ctx.Process(target=_child, args=((name, args.sizes, args.batch, args.threads, args.warmup, args.iters), q))
        p.start()
        results.append(q.get())
        p.join()
        print(json.dumps(results[-1], default=str), flush=True)
    wall = time.perf_counter() - t0
    load_after = os.getloadavg()

    import torch

    lines = [
        "# Backbone CPU speed",
        "",
        f"- Command: `{bench_env.command()}`",
        f"- Date: {bench_env.now()} (end of the run)",
        f"- Machine: {bench_env.machine()}; torch {torch.__version__}, Python {platform.python_version()}",
        f"- Load average (1 min) before/after: {load_before[0]:.1f} / {load_after[0]:.1f} (above 2: the run "
        "shared its 2 cores with other work, so its figures are lower and noisier than on an idle machine).",
        f"- Settings: batch {args.batch}, {args.threads} threads (torch and onnxruntime intra-op), 1-channel input, "
        f"default out_indices (1, 2, 3); median of {args.iters} timed batches after {args.warmup} warm-up.",
        f"- Wall time: {wall:.0f} s",
    ]
    if args.note:
        lines.append(f"- Note: {args.note}")
    lines += [
        "",
        "| backbone | weights | params (backbone / full net) | input | eager img/s | channels_last img/s "
        "| ONNX Runtime img/s | ORT / eager | peak RSS (MiB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['name']} | error: {r['error']} |  |  |  |  |  |  |  |")
            continue
        for size, s in r["speed"].items():
            lines.append(
                f"| {r['name']} | {'ImageNet' if r['pretrained'] else 'random'} | "
                f"{r['params_backbone'] / 1e6:.2f} M / {r['params_full'] / 1e6:.2f} M | {size} | "
                f"{s['eager']:.1f} | {s['channels_last']:.1f} | {s['onnxruntime']:.1f} | "
                f"{s['onnxruntime'] / s['eager']:.1f}x | {r['peak_rss_mib']:.0f} |"
            )
    lines.append("")
    lines.append("Peak RSS is the whole benchmark process for that backbone (Python, torch, onnxruntime, both "
                 "models and the largest batch), not the model alone.")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, "\n".join(lines) + "\n")
    atomic_write_json(args.out.with_suffix(".json"), {"args": vars(args), "wall_s": wall, "results": results})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

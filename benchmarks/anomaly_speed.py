"""PatchCore fit time on 1,000 normal samples, prediction throughput, peak RAM vs bank budget.

Normal samples = 1,000 box-free 128 px DeepPCB crops (tested image + template), as in
``anomaly_deeppcb.py``. Each bank budget runs in its own process so that its peak RSS
(``ru_maxrss``) is its own.

    nice -n 10 python benchmarks/anomaly_speed.py --out benchmarks/results/anomaly_speed.md
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch


def child(data: Path, budget_bytes: int, n: int, pool: int, batch_size: int = 32,
          memory_mib: float | None = None) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from anomaly_deeppcb import crops, load_pairs

    from seminspect.models.anomaly import AnomalyDetector

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    pairs = load_pairs(data)
    samples = []
    i = 0
    while len(samples) < n + 200:
        samples += crops(pairs[i:i + 1], 128, rng, abnormal=False, tag="s")
        i += 1
    fit, test = samples[:n], samples[n:n + 200]
    rss_data = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cfg = dict(backbone="mobilenetv2", out_indices=[1, 2, 3], layers=[0, 1], conditioning="reference",
               max_bank_bytes=budget_bytes, max_bank_patches=10**9, max_pool_patches=pool, coreset_proj_dim=64,
               calib_fraction=0.0, batch_size=batch_size, registration="phase", max_shift=4,
               memory_budget_mib=memory_mib)
    det = AnomalyDetector(cfg)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # data + model built: the fit starts here
    t0 = time.perf_counter()
    det.fit(fit)
    fit_s = time.perf_counter() - t0
    rss_fit = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    _, maps = det.predict(test)
    ips = len(test) / (time.perf_counter() - t0)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"budget_bytes": budget_bytes, "bank_bytes": det.history["bank_bytes"],
                      "bank_patches": det.history["bank_patches"], "pool_patches": det.history["pool_patches"],
                      "fit_s": fit_s, "predict_img_per_s": ips, "rss_before_fit_mib": rss0, "peak_rss_mib": rss,
                      "peak_rss_after_fit_mib": rss_fit, "batch_size": batch_size, "rss_data_mib": rss_data,
                      "memory_budget_mib": memory_mib, "memory_plan": det.history.get("memory_plan"),
                      "query_chunk": det.model.query_chunk, "result_maps_mib": maps.nbytes / 2**20,
                      "n_fit": len(fit), "pairs_used": i}))


def run_child(args: argparse.Namespace, bank_kib: int, memory_mib: float | None = None) -> dict:
    """One measurement in its own process (its ``ru_maxrss`` is its own); the child's JSON line, timed."""
    t0 = time.perf_counter()
    extra = [] if memory_mib is None else ["--memory-mib", str(memory_mib)]
    out = subprocess.run([sys.executable, __file__, "--data", str(args.data), "--child", str(bank_kib * 1024),
                          "--n", str(args.n),
                          "--pool", str(args.pool), "--batch-size", str(args.batch_size), *extra],
                         capture_output=True, text=True, check=True)
    row = json.loads(out.stdout.strip().splitlines()[-1])
    row["wall_s"] = time.perf_counter() - t0
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True, help="DeepPCB root (trainval.txt, group*/)")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--pool", type=int, default=50000)
    ap.add_argument("--budgets-kib", default="256,1024,2048")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--append", action="store_true", help="append a dated section to --out instead of rewriting it")
    ap.add_argument("--date", default=time.strftime("%Y-%m-%d", time.gmtime()),
                    help="date written into the result (default: today, UTC)")
    ap.add_argument("--child", type=int, default=None)
    ap.add_argument("--memory-budgets-mib", default=None,
                    help="comma-separated memory_budget_mib values: one child each (bank budget: the first of "
                         "--budgets-kib); appends a section to --out")
    ap.add_argument("--memory-mib", type=float, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/anomaly_speed.md"))
    args = ap.parse_args()
    if args.child is not None:
        child(args.data, args.child, args.n, args.pool, args.batch_size, args.memory_mib)
        return
    if args.memory_budgets_mib:
        _memory_budgets(args)
        return
    import os

    load0 = os.getloadavg()[0]
    t_all = time.perf_counter()
    rows = []
    for kib in [int(k) for k in args.budgets_kib.split(",")]:
        rows.append(run_child(args, kib))
    if args.append:
        _append(args, rows, load0, time.perf_counter() - t_all)
        return
    lines = [
        "# PatchCore speed and memory (1,000 normal samples)",
        "",
        f"- date: {args.date}; machine: {os.cpu_count()}-core CPU, no GPU, torch 1 thread; load average at start "
        f"{load0:.2f}" + ("; other jobs ran beside it, so times are upper bounds." if load0 > (os.cpu_count() or 1)
                            else "."),
        f"- command: `python benchmarks/anomaly_speed.py --data {args.data} --n {args.n} --pool {args.pool} "
        f"--budgets-kib {args.budgets_kib}`",
        f"- fit data: {args.n} box-free 128x128 DeepPCB crops (tested image + template, phase registration), "
        "MobileNetV2 ImageNet, reference-conditioned PatchCore (112-D patches at 32x32 per crop), pool of "
        f"{args.pool} random patches, greedy coreset (64-D random projection) down to the bank budget; "
        "prediction on 200 further crops, batch 32.",
        "",
        "| bank budget | bank patches | bank bytes | pool patches | fit s (1,000 samples) | predict img/s | "
        "RSS before fit MiB | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['budget_bytes'] // 1024} KiB | {r['bank_patches']} | {r['bank_bytes']} | "
                     f"{r['pool_patches']} | {r['fit_s']:.0f} | {r['predict_img_per_s']:.1f} | "
                     f"{r['rss_before_fit_mib']:.0f} | {r['peak_rss_mib']:.0f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def section(args: argparse.Namespace, title: str, cmd: str, load0: float, wall: float, n_children: int) -> str:
    """``--out``'s text so far plus a new section's title, command and machine lines."""
    import os

    text = args.out.read_text() if args.out.is_file() else ""
    return (text + f"\n## {title}\n\n- command: `{cmd}`\n- machine: 2-core x86_64 CPU, no GPU, torch 1 thread; "
            f"load average {load0:.2f} at start, {os.getloadavg()[0]:.2f} at end; wall {wall:.0f} s for {n_children} "
            "child process(es), one after the other (each child's `ru_maxrss` is its own).\n")


def _append(args: argparse.Namespace, rows: list[dict], load0: float, wall: float) -> None:
    """Append a dated section: whole-process peak RSS of each child against its bank budget."""
    from seminspect.utils.io import atomic_write_text

    cmd = (f"nice -n 10 python benchmarks/anomaly_speed.py --n {args.n} --pool {args.pool} "
           f"--budgets-kib {args.budgets_kib} --batch-size {args.batch_size} --append")
    text = section(args, f"Whole-process peak RSS re-measured ({args.date}, batch {args.batch_size}, pool "
                         f"{args.pool})", cmd, load0, wall, len(rows))
    text += ("\n| bank budget | bank bytes | bank patches | pool patches | batch | fit s | predict img/s | "
             "RSS before fit MiB | peak RSS after fit MiB | peak RSS whole process MiB | peak - before fit MiB | "
             "(peak - before) / budget |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    for r in rows:
        rise = r["peak_rss_mib"] - r["rss_before_fit_mib"]
        text += (f"| {r['budget_bytes'] // 1024} KiB | {r['bank_bytes']} | {r['bank_patches']} | "
                 f"{r['pool_patches']} | {r['batch_size']} | {r['fit_s']:.0f} | {r['predict_img_per_s']:.1f} | "
                 f"{r['rss_before_fit_mib']:.0f} | {r['peak_rss_after_fit_mib']:.0f} | {r['peak_rss_mib']:.0f} | "
                 f"{rise:.0f} | {rise * 2**20 / r['budget_bytes']:.0f}x |\n")
    atomic_write_text(args.out, text)
    print(text)


def _memory_budgets(args: argparse.Namespace) -> None:
    """One child per ``memory_budget_mib``: peak RSS rise over the built detector against that budget."""
    import os

    from seminspect.utils.io import atomic_write_text

    load0 = os.getloadavg()[0]
    t_all = time.perf_counter()
    kib = int(args.budgets_kib.split(",")[0])
    rows = []
    for mib in [float(m) for m in args.memory_budgets_mib.split(",")]:
        rows.append(run_child(args, kib, mib))
    cmd = (f"python benchmarks/anomaly_speed.py --n {args.n} --pool {args.pool} --budgets-kib {kib} "
           f"--batch-size {args.batch_size} --memory-budgets-mib {args.memory_budgets_mib}")
    text = section(args, f"Working-memory budget `memory_budget_mib` ({time.strftime('%Y-%m-%d', time.gmtime())})",
                   cmd, load0, time.perf_counter() - t_all, len(rows))
    text += (f"- config limits the plan may lower: batch {args.batch_size}, pool {args.pool}, bank {kib} KiB "
             f"(`max_bank_bytes`). Fit rise = peak RSS during the fit on the {args.n:,} samples minus RSS once the "
             "data were loaded and the detector built (the backbone's weights: outside the budget). Prediction of 200 "
             "further samples follows in the same process: its rise is the whole-process peak minus the same base, "
             "and it includes the returned maps (200 x 128 x 128 float32: the result, which grows with the number "
             "of samples scored, not working memory), shown apart.\n\n"
             "| memory budget MiB | planned batch | planned pool | bank patches | search block rows | fit s | "
             "predict img/s | RSS data loaded MiB | RSS detector built MiB | fit rise MiB | fit rise / budget | "
             "whole-process peak MiB | returned maps MiB | prediction rise less the maps MiB | that / budget |"
             "\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    for r in rows:
        fit_rise = r["peak_rss_after_fit_mib"] - r["rss_before_fit_mib"]
        pred_rise = r["peak_rss_mib"] - r["rss_before_fit_mib"] - r["result_maps_mib"]
        plan = r["memory_plan"] or {}
        text += (f"| {r['memory_budget_mib']:g} | {plan.get('batch_size')} | {plan.get('max_pool_patches')} | "
                 f"{r['bank_patches']} | {r['query_chunk']} | {r['fit_s']:.0f} | {r['predict_img_per_s']:.1f} | "
                 f"{r['rss_data_mib']:.0f} | {r['rss_before_fit_mib']:.0f} | {fit_rise:.0f} | "
                 f"{fit_rise / r['memory_budget_mib']:.2f} | {r['peak_rss_mib']:.0f} | {r['result_maps_mib']:.1f} | "
                 f"{pred_rise:.0f} | {pred_rise / r['memory_budget_mib']:.2f} |\n")
    atomic_write_text(args.out, text)
    print(text)


if __name__ == "__main__":
    main()

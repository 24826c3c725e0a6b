"""The same scores from ``evaluate``, ``predict`` and ``predict --ray`` (2 workers) on the virtual-fab test split.

    python benchmarks/predict_parity.py ARTEFACT DATASET [--split test --workers 2]

ARTEFACT and DATASET are the main job's (``runs/demo/adc``, ``runs/demo/data``). The split's rows
are written to ``DATASET/manifest_<split>.csv`` so that ``predict`` judges exactly those sites.
Writes ``benchmarks/results/predict_parity.md``: max |difference| of p(abnormal), of every type
probability and of the anomaly score between the three, and whether routes and types agree.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from predict_common import header, load, run_child  # noqa: E402

from seminspect.evaluation.adc_evaluate import evaluate_artefact  # noqa: E402
from seminspect.utils.io import atomic_write_text  # noqa: E402

FLOATS = ("abnormal_prob", "top1_prob", "top2_prob", "top3_prob", "anomaly_score", "reg_residual_max")
STRINGS = ("route", "type", "top1_type", "top2_type", "top3_type", "route_reason")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("artefact", type=Path)
    ap.add_argument("dataset", type=Path)
    ap.add_argument("--split", default="test")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("/tmp/predict_parity"))
    ap.add_argument("--result", type=Path, default=Path(__file__).parent / "results" / "predict_parity.md")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    m = pd.read_csv(a.dataset / "manifest.csv", dtype=str, keep_default_na=False)
    sub = a.dataset / f"manifest_{a.split}.csv"
    m[m["split"] == a.split].to_csv(sub, index=False)
    timings = []
    t0, before = time.perf_counter(), load()
    ev = evaluate_artefact(a.artefact, a.dataset, split=a.split)
    timings.append(("evaluate (in-process)", time.perf_counter() - t0, before))
    frames = {"evaluate": ev.inspection.frame().set_index("sample_id")}
    import torch

    # every run with the same torch threads: a convolution's float sums depend on how many threads share it
    threads = str(torch.get_num_threads())
    for name, extra in (("predict", ["--threads", threads]),
                        (f"predict --ray ({a.workers} workers x {threads} threads)",
                         ["--ray", "local", "--workers", str(a.workers), "--threads", threads])):
        out = a.out / f"{name.split()[0]}{'_ray' if extra else ''}.parquet"
        before = load()
        code, wall, _ = run_child(["predict", str(a.artefact), str(sub), "--out", str(out), "--overwrite", *extra])
        if code != 0:
            raise SystemExit(f"{name} exited {code}")
        timings.append((name, wall, before))
        frames[name] = pd.read_parquet(out).set_index("sample_id").loc[frames["evaluate"].index]
    lines = header("evaluate, predict and predict --ray give the same decisions", sys.argv)
    lines += [f"Artefact `{a.artefact}`, {len(frames['evaluate'])} sites of split `{a.split}` of `{a.dataset}`; "
              f"torch threads {threads} in every run (evaluate, predict, each Ray actor).", "",
              "| compared with `evaluate` | " + " | ".join(f"max abs diff `{c}`" for c in FLOATS) +
              " | " + " / ".join(f"`{c}`" for c in STRINGS) + " equal |",
              "|---|" + "---|" * (len(FLOATS) + 1)]
    ref = frames["evaluate"]
    worst = 0.0
    for name, df in frames.items():
        if name == "evaluate":
            continue
        diffs = []
        for c in FLOATS:
            x, y = ref[c].to_numpy(float), df[c].to_numpy(float)
            both = ~(np.isnan(x) & np.isnan(y))
            d = float(np.nanmax(np.abs(x[both] - y[both]))) if both.any() else 0.0
            worst = max(worst, d)
            diffs.append(f"{d:.1e}" if both.any() else "n/a (null in both)")
        same = all((ref[c].fillna("") == df[c].fillna("")).all() for c in STRINGS)
        lines.append(f"| {name} | " + " | ".join(diffs) + f" | {'yes' if same else 'NO'} |")
    lines += ["", f"Largest difference: {worst:.1e} (target <= 1e-6: {'met' if worst <= 1e-6 else 'not met'}).", "",
              "| run | wall (s, model load included) | load before |", "|---|---|---|",
              *[f"| {n} | {w:.1f} | {b} |" for n, w, b in timings]]
    atomic_write_text(a.result, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

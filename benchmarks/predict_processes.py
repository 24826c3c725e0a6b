"""Worker processes against reader threads: ``seminspect predict --processes N`` end to end, one run.

    python benchmarks/predict_processes.py ARTEFACT --data-root /tmp/fast [--n 400] [--repeats 3]

The same unlabelled sites as ``fast_predict.py`` (5 target + 5 reference views at 460 px, the defect
anywhere in the inner 80 % of the field, seed 11; reused when present under ``--data-root``), then,
in child processes one after the other, every row ``--repeats`` times round robin: ``seminspect
predict`` (PNG on disk -> Parquet) on torch eager and on ONNX Runtime fp32, each with its default
(one process: torch with its threads, ONNX Runtime with two runtime threads and reader threads) and
with ``--processes 2`` (one runtime thread each). Rates by predict's own clock (the workers' start-up
and model loading excluded, as the one-process rows exclude loading the model) and by wall time
(everything). Decisions are compared with the one-process run of the same backend.
Writes ``benchmarks/results/predict_processes.md`` (or ``--result``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from fast_predict import make_sites  # noqa: E402
from predict_common import header, load, predict_child  # noqa: E402

from seminspect.utils.io import atomic_write_text  # noqa: E402

ROWS = [("torch", 1), ("torch", 2), ("onnxruntime", 1), ("onnxruntime", 2)]


def agreement(a: pd.DataFrame, b: pd.DataFrame) -> str:
    """Routes identical on what share of sites, and the largest p(abnormal) difference."""
    a, b = a.set_index("site"), b.set_index("site").loc[a.index]
    same = float((a["route"] == b["route"]).mean())
    return f"{same:.1%} routes, max dp {float(np.abs(a['abnormal_prob'] - b['abnormal_prob']).max()):.1e}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("artefact", type=Path)
    ap.add_argument("--data-root", type=Path, required=True)
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=3, help="runs of each row, round robin; the table gives each")
    ap.add_argument("--result", type=Path, default=Path(__file__).parent / "results" / "predict_processes.md")
    a = ap.parse_args()
    t_start = time.perf_counter()
    data = make_sites(a.data_root / f"offcentre{a.n}", a.n)
    seen: dict[tuple[str, int], list[tuple[float, float, float, str]]] = {r: [] for r in ROWS}
    for _ in range(a.repeats):
        for backend, procs in ROWS:
            out = a.data_root / f"p_{backend}_{procs}.parquet"
            before = load()
            summary, wall, peak = predict_child(a.artefact, data, out, ["--backend", backend, "--processes",
                                                                        str(procs)], f"{backend} x{procs}")
            seen[(backend, procs)].append((wall, summary["sites_per_second"], peak, before))
            print(backend, procs, seen[(backend, procs)][-1], flush=True)
    base = float(np.mean([r[1] for r in seen[("torch", 1)]]))
    base_wall = float(np.mean([a.n / r[0] for r in seen[("torch", 1)]]))
    lines = header("`seminspect predict --processes`: worker processes against reader threads", sys.argv)
    lines += [f"Artefact `{a.artefact}`; {a.n} unlabelled virtual-fab sites, 5 target + 5 reference views of "
              "460x460 px (8-bit PNG), the defect anywhere in the inner 80 % of the field, under "
              f"`{data}`. Each row a child process run alone, every row {a.repeats} times round robin (each run "
              "given; ratios of the means against torch eager with one process, in the same run). predict's clock "
              "excludes start-up (loading the model; with --processes, starting the workers too); wall time is "
              "the whole command.", "",
              "| backend | processes | sites/s (predict's clock) | x torch eager | sites/s (wall) | x torch eager "
              "(wall) | peak RSS of one process (MiB) | decisions vs one process | load before |",
              "|---|---|---|---|---|---|---|---|---|"]
    for backend, procs in ROWS:
        walls, rates, peaks, befores = zip(*seen[(backend, procs)], strict=True)
        same = "-" if procs == 1 else agreement(pd.read_parquet(a.data_root / f"p_{backend}_1.parquet"),
                                                pd.read_parquet(a.data_root / f"p_{backend}_{procs}.parquet"))
        wall_rates = [a.n / w for w in walls]
        lines.append(f"| {backend} | {procs}{' (default)' if procs == 1 else ''} "
                     f"| {' / '.join(f'{r:.1f}' for r in rates)} | {np.mean(rates) / base:.2f} "
                     f"| {' / '.join(f'{r:.1f}' for r in wall_rates)} | {np.mean(wall_rates) / base_wall:.2f} "
                     f"| {max(peaks):.0f} | {same} | {' ; '.join(befores)} |")
    lines += ["", f"Load average at the end: {load()}; whole run {time.perf_counter() - t_start:.0f} s."]
    atomic_write_text(a.result, "\n".join(lines) + "\n")
    print(f"-> {a.result}")


if __name__ == "__main__":
    main()

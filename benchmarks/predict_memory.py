"""Peak memory of ``seminspect predict`` does not grow with the dataset: 1,000 vs 20,000 sites.

    python benchmarks/predict_memory.py ARTEFACT --data-root /tmp/predict_mem [--sizes 1000 20000]

Writes ``benchmarks/results/predict_memory.md``: per dataset size, the peak RSS of the predict
process (``wait4`` rusage of the child), its wall time and sites/s. The sites are synthetic
2-view 128 px PNGs (predict_common.write_sites); the artefact is the one given (the main job's,
``runs/demo/adc``, is the intended one). Target: the 20,000-site peak within 10 % of the 1,000-site peak.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from predict_common import header, load, run_child, write_sites  # noqa: E402

from seminspect.utils.io import atomic_write_text  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("artefact", type=Path)
    ap.add_argument("--data-root", type=Path, required=True)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 20000])
    ap.add_argument("--result", type=Path, default=Path(__file__).parent / "results" / "predict_memory.md")
    a = ap.parse_args()
    lines = header("predict: peak memory against dataset size", sys.argv)
    lines += [f"Artefact `{a.artefact}`; synthetic unlabelled 2-view 128 px sites (target + reference); one "
              "process, torch default threads; peak RSS of the predict process from `wait4`.", "",
              "| sites | peak RSS (MiB) | wall (s) | sites/s | load before |", "|---|---|---|---|---|"]
    peaks = {}
    for n in a.sizes:
        data = write_sites(a.data_root / f"sites{n}", n)
        out = a.data_root / f"decisions{n}.parquet"
        before = load()
        code, wall, peak = run_child(["predict", str(a.artefact), str(data), "--out", str(out), "--overwrite"])
        if code != 0:
            raise SystemExit(f"predict on {n} sites exited {code}")
        peaks[n] = peak
        lines.append(f"| {n:,} | {peak:.0f} | {wall:.1f} | {n / wall:.1f} | {before} |")
        print(lines[-1], flush=True)
    lo, hi = min(a.sizes), max(a.sizes)
    growth = peaks[hi] / peaks[lo] - 1
    lines += ["", f"Peak at {hi:,} sites vs {lo:,}: {growth:+.1%} (target within +-10 %: "
              f"{'met' if abs(growth) <= 0.10 else 'not met'})."]
    atomic_write_text(a.result, "\n".join(lines) + "\n")
    print(f"-> {a.result}")


if __name__ == "__main__":
    main()

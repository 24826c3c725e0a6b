"""Generation speed: 2,000 ten-view (5 target + 5 reference) 460x460 samples with all cores.

    nice -n 10 env PYTHONPATH=src python benchmarks/generate_speed.py --n 2000

Writes the dataset to a scratch folder (deleted afterwards unless --keep), times the whole
``generate_dataset`` call (PNG writing and the manifest included) and records the result in
benchmarks/results/generate_speed.md. Target: under 10 minutes on the 2-core development machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from seminspect.data.synth import FabConfig, generate_dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_env  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "generate_speed.md"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=0, help="0: all cores")
    ap.add_argument("--out", type=Path, default=None, help="scratch folder (default: a new temp dir)")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="seminspect_speed_")) / "ds"
    config = FabConfig(image_size=460, n_angles=5, n_references=5, n_zooms=0, difficulty="medium")
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    c0 = os.times()
    generate_dataset(out, args.n, config, seed=0, workers=args.workers or None)
    wall = time.perf_counter() - t0
    c1 = os.times()
    cpu = (c1.children_user + c1.children_system + c1.user + c1.system) - (
        c0.children_user + c0.children_system + c0.user + c0.system)
    load_after = os.getloadavg()
    size_gb = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e9
    views = args.n * 10
    lines = [
        "# Virtual-fab generation speed",
        "",
        f"Command: `{bench_env.command()}`",
        "",
        f"Date: {bench_env.now()} (end of the run). Machine: {bench_env.machine()}; load average "
        f"{load_before[0]:.1f} before and {load_after[0]:.1f} after the run "
        "(a load above 2 means this run did not have both cores to itself).",
        "",
        f"Task: {args.n} samples x 10 views (5 target + 5 reference, 460x460, 8-bit PNG), half abnormal "
        "(masks written for the 5 target views), depth map per sample (float32 TIFF), manifest; "
        f"workers = {args.workers or os.cpu_count()}.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| wall time | {wall:.0f} s ({wall / 60:.1f} min; target < 10 min) |",
        f"| samples / s | {args.n / wall:.2f} |",
        f"| CPU time (all processes) | {cpu:.0f} s = {1000 * cpu / views:.0f} ms per view incl. PNG writing |",
        f"| output size | {size_gb:.2f} GB |",
    ]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    if not args.keep:
        shutil.rmtree(out.parent if args.out is None else out, ignore_errors=True)


if __name__ == "__main__":
    main()

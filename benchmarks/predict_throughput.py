"""Throughput of ``seminspect predict`` end to end (PNG files on disk -> Parquet): one process and Ray, one run.

    python benchmarks/predict_throughput.py ARTEFACT --data-root /tmp/predict_speed [--n 200 --workers 2]

Generates ``--n`` fresh unlabelled virtual-fab sites of 5 target + 5 reference views at 460 px
(no zooms: "10-view" sites) under ``--data-root`` (reused when present), then runs, one after the
other in child processes, ``seminspect predict`` (one process, torch's default threads) and
``seminspect predict --ray local --workers W`` (W actors, one thread each). Wall time includes
starting Python, loading the model and, for Ray, starting the local Ray. Sites/s is also given
from predict's own clock (the judging loop alone, ``summary.json``). A fp32 GEMM micro-benchmark
in the same run gives the machine's speed. Writes ``benchmarks/results/predict_throughput.md``
(or ``--result``). The main job's artefact (``runs/demo/adc``) is the intended one.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from predict_common import header, load, predict_child  # noqa: E402

from seminspect.utils.io import atomic_write_text  # noqa: E402


def gemm_gflops(n: int = 2048, repeats: int = 5) -> float:
    """fp32 matrix-multiply rate of this process (torch's default threads), best of ``repeats``."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def make_sites(root: Path, n: int, seed: int) -> Path:
    from seminspect.data.synth import FabConfig
    from seminspect.pipeline import unlabelled_batch

    if (root / "manifest.csv").is_file():
        return root
    return unlabelled_batch(root, n, FabConfig(image_size=460, n_angles=5, n_zooms=0), seed=seed, workers=None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("artefact", type=Path)
    ap.add_argument("--data-root", type=Path, required=True)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--result", type=Path, default=Path(__file__).parent / "results" / "predict_throughput.md")
    a = ap.parse_args()
    data = make_sites(a.data_root / f"sites{a.n}", a.n, a.seed)
    lines = header("predict throughput: 10-view 460 px sites, PNG on disk -> Parquet", sys.argv)
    lines += [f"Artefact `{a.artefact}`; {a.n} unlabelled virtual-fab sites, 5 target + 5 reference views of "
              f"460x460 px (8-bit PNG), generated with seed {a.seed} under `{data}`.", ""]
    gflops = gemm_gflops()
    lines += [f"fp32 GEMM 2048x2048 in this process, torch default threads: {gflops:.0f} GFLOP/s.", "",
              "| run | wall (s), start-up included | sites/s (wall) | sites/s (predict's clock) | peak RSS of the "
              "driver (MiB) | load before |", "|---|---|---|---|---|---|"]
    runs = (("predict, one process", []),
            (f"predict --ray local, {a.workers} workers x 1 thread", ["--ray", "local", "--workers", str(a.workers)]))
    for name, extra in runs:
        out = a.data_root / f"decisions{'_ray' if extra else ''}.parquet"
        before = load()
        summary, wall, peak = predict_child(a.artefact, data, out, extra, name)
        lines.append(f"| {name} | {wall:.1f} | {a.n / wall:.2f} | {summary['sites_per_second']:.2f} | {peak:.0f} | "
                     f"{before} |")
        print(lines[-1], flush=True)
    lines += ["", "Ray actors' memory is not in the driver's peak RSS. Predict's clock for Ray covers the Ray stage "
              "(actor start-up, model loads, judging, writing) but not the driver's manifest pass or final join.",
              f"Load average at the end: {load()}."]
    atomic_write_text(a.result, "\n".join(lines) + "\n")
    print(f"-> {a.result}")


if __name__ == "__main__":
    main()

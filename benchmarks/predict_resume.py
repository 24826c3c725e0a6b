"""``seminspect predict`` killed with SIGKILL at random moments, resumed each time: nothing lost or duplicated.

    python benchmarks/predict_resume.py ARTEFACT --data-root /tmp/predict_resume [--n 2000 --kills 10]

One uninterrupted run, then a run killed ``--kills`` times at random moments (uniform between the
model having loaded and the run's expected end, seeded), restarted after each kill, then left to
finish. Writes ``benchmarks/results/predict_resume.md``: sites lost, sites duplicated, and whether
the final decisions file equals the uninterrupted one (``pandas.testing.assert_frame_equal``).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from predict_common import header, run_child, write_sites  # noqa: E402

from seminspect.utils.io import atomic_write_text  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("artefact", type=Path)
    ap.add_argument("--data-root", type=Path, required=True)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--part-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--result", type=Path, default=Path(__file__).parent / "results" / "predict_resume.md")
    a = ap.parse_args()
    data = write_sites(a.data_root / f"sites{a.n}", a.n)
    ref, out = a.data_root / "uninterrupted.parquet", a.data_root / "killed.parquet"
    args = ["--part-size", str(a.part_size), "--overwrite"]
    code, wall, _ = run_child(["predict", str(a.artefact), str(data), "--out", str(ref), *args])
    assert code == 0, f"uninterrupted run exited {code}"
    rng = random.Random(a.seed)
    for p in (out, out.with_name(out.name + ".parts")):
        subprocess.run(["rm", "-rf", str(p)], check=True)
    cmd = [sys.executable, "-c", "from seminspect.cli import main; main()", "predict", str(a.artefact), str(data),
           "--out", str(out), "--part-size", str(a.part_size)]
    env = {**os.environ, "SEMINSPECT_PROGRESS": "0"}
    kill_log = []
    t_start = time.perf_counter()
    for k in range(a.kills):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        delay = rng.uniform(3.0, max(3.5, wall / (a.kills / 2)))
        time.sleep(delay)
        alive = proc.poll() is None
        if alive:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        parts = out.with_name(out.name + ".parts")
        done = len(list(parts.glob("part-*.parquet"))) if parts.exists() else "finished"
        kill_log.append(f"| {k + 1} | {delay:.2f} | {'killed' if alive else 'had finished'} | {done} |")
        print(kill_log[-1], flush=True)
    final = subprocess.run(cmd, env=env, capture_output=True, text=True)
    total = time.perf_counter() - t_start
    assert final.returncode == 0, final.stderr
    x, y = pd.read_parquet(ref), pd.read_parquet(out)
    lost = len(set(x["site"]) - set(y["site"]))
    dup = int(y["site"].duplicated().sum())
    try:
        pd.testing.assert_frame_equal(x, y)
        equal = "yes"
    except AssertionError as exc:
        equal = f"no ({str(exc).splitlines()[0]})"
    lines = header("predict: kill -9 at random moments, then resume", sys.argv)
    lines += [f"Artefact `{a.artefact}`; {a.n:,} synthetic 2-view 128 px sites; parts of {a.part_size} sites. "
              f"Uninterrupted run: {wall:.1f} s. Killed run: {a.kills} SIGKILLs at random moments, a restart "
              f"after each, then run to the end: {total:.1f} s in all.", "",
              "| kill | seconds after start | outcome | parts on disk after |", "|---|---|---|---|", *kill_log, "",
              f"- sites in the uninterrupted output: {len(x):,}; in the resumed output: {len(y):,}",
              f"- lost: {lost}; duplicated: {dup}; final file equal to the uninterrupted run: {equal}"]
    atomic_write_text(a.result, "\n".join(lines) + "\n")
    print(f"-> {a.result}")


if __name__ == "__main__":
    main()

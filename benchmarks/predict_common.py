"""Shared set-up of the ``predict`` benchmarks: machine description, quick synthetic sites, child processes.

Used by predict_memory.py, predict_resume.py and predict_parity.py (one script per result table).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_env import cpu_model, load, machine, now  # noqa: E402,F401  (re-exported for the scripts)


def header(title: str, argv: list[str]) -> list[str]:
    return [f"# {title}", "", f"- command: `python {' '.join(argv)}`", f"- date: {now()}",
            f"- machine: {machine()}", f"- load average at start: {load()}", ""]


def write_sites(root: Path, n: int, size: int = 128, seed: int = 0, taxonomy: str = "sem_default") -> Path:
    """``n`` unlabelled 2-view sites (target + reference of detector 0, ``size`` px, 8-bit PNG).

    A smooth random texture and its copy shifted by up to 3 px, a bright blob on every third target:
    enough for the inspector to do all its work (decode, align, encode, judge); the content is not
    the point of these benchmarks. Reuses a complete folder.
    """
    from PIL import Image
    from scipy import ndimage

    from seminspect.data.manifest import DatasetInfo, write_manifest

    if (root / "manifest.csv").is_file():
        return root
    rng = np.random.default_rng(seed)
    rows = []
    img_dir = root / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    base = ndimage.gaussian_filter(rng.random((size + 8, size + 8)), 2.0)
    base = ((base - base.min()) / (np.ptp(base) + 1e-9) * 160 + 40).astype(np.uint8)
    for i in range(n):
        dy, dx = rng.integers(-3, 4, size=2)
        tgt = np.roll(base, (int(rng.integers(0, 8)), int(rng.integers(0, 8))), axis=(0, 1))[:size, :size].copy()
        ref = np.roll(tgt, (int(dy), int(dx)), axis=(0, 1))
        if i % 3 == 0:
            c = size // 2
            tgt[c - 3:c + 3, c - 3:c + 3] = 250
        sid = f"site{i:06d}"
        for role, img in (("target", tgt), ("reference", ref)):
            rel = f"images/{sid}_{role}0.png"
            Image.fromarray(img).save(root / rel, compress_level=1)
            rows.append({"sample_id": sid, "role": role, "index": 0, "path": rel})
    DatasetInfo(taxonomy=taxonomy, description=f"{n} synthetic 2-view sites for predict benchmarks").write(root)
    write_manifest(root, rows, "csv")
    return root


def run_child(args: list[str], env: dict[str, str] | None = None) -> tuple[int, float, float]:
    """Run ``python -c 'seminspect CLI' *args``; returns ``(exit status, wall s, peak RSS MiB)`` of that child."""
    cmd = [sys.executable, "-c", "from seminspect.cli import main; main()", *args]
    full_env = {**os.environ, "SEMINSPECT_PROGRESS": "0", **(env or {})}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, wall, usage.ru_maxrss / 1024.0


def predict_child(artefact: Path, data: Path, out: Path, extra: list[str], label: str) -> tuple[dict, float, float]:
    """``seminspect predict ARTEFACT DATA --out OUT --overwrite *extra`` in a child process: its summary
    (``OUT``'s ``.summary.json``), wall s and peak RSS MiB; exits naming ``label`` unless every site or some
    (status 0 or 1) were judged."""
    code, wall, peak = run_child(["predict", str(artefact), str(data), "--out", str(out), "--overwrite", *extra])
    if code not in (0, 1):
        raise SystemExit(f"{label} exited {code}")
    return json.loads(out.with_suffix(".summary.json").read_text()), wall, peak


def self_peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

"""Load test of ``seminspect serve`` on loopback: concurrent clients upload 2-view and 10-view 460 px sites.

    python benchmarks/serve_load.py ARTEFACT --data-root /tmp/serve_load [--clients 4 --seconds 120
        --max-requests 2000 --kill-at 30]

Writes ``--n`` sites (alternately 1 and 5 target/reference pairs, 460x460 8-bit PNG) under ``--data-root``
(reused when present), starts the service as a child process on 127.0.0.1 (SQLite file), and lets
``--clients`` threads upload those sites as multipart requests (each request a unique ``sample_id``)
until ``--seconds`` or ``--max-requests``, whichever comes first. ``--kill-at S``: SIGKILL the service
S seconds in and restart it (clients retry; a request cut off is not acknowledged). Afterwards the
database is read directly: every acknowledged site must be there exactly once, and no site may lack
its decision or views. ``seminspect predict`` then runs on the same sites for the throughput ratio.
Results: ``benchmarks/results/serve_load.md`` (or ``--result``). Never leaves loopback.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from predict_common import header, load, run_child  # noqa: E402

from seminspect.utils.io import atomic_write_text  # noqa: E402

SIZE = 460


def write_load_sites(root: Path, n: int, seed: int = 0) -> Path:
    """``n`` unlabelled sites, even ones 2 views, odd ones 10 (5 target/reference pairs)."""
    from PIL import Image
    from scipy import ndimage

    from seminspect.data.manifest import DatasetInfo, write_manifest

    if (root / "manifest.csv").is_file():
        return root
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    base = ndimage.gaussian_filter(rng.random((SIZE + 16, SIZE + 16)), 2.0)
    base = ((base - base.min()) / (np.ptp(base) + 1e-9) * 160 + 40).astype(np.uint8)
    rows = []
    for i in range(n):
        sid = f"site{i:05d}"
        for index in range(1 if i % 2 == 0 else 5):
            tgt = np.roll(base, tuple(int(x) for x in rng.integers(0, 16, 2)), axis=(0, 1))[:SIZE, :SIZE].copy()
            ref = np.roll(tgt, tuple(int(x) for x in rng.integers(-3, 4, 2)), axis=(0, 1))
            if i % 3 == 0:
                tgt[SIZE // 2 - 4:SIZE // 2 + 4, SIZE // 2 - 4:SIZE // 2 + 4] = 250
            for role, img in (("target", tgt), ("reference", ref)):
                rel = f"images/{sid}_{role}{index}.png"
                Image.fromarray(img).save(root / rel, compress_level=1)
                rows.append({"sample_id": sid, "role": role, "index": index, "path": rel})
    DatasetInfo(taxonomy="sem_default", description=f"{n} sites for the serve load test").write(root)
    write_manifest(root, rows, "csv")
    return root


def site_parts(root: Path) -> list[list[tuple[str, tuple[str, bytes, str]]]]:
    import pandas as pd

    m = pd.read_csv(root / "manifest.csv", dtype=str, keep_default_na=False)
    out = []
    for _, rows in m.groupby("sample_id", sort=True):
        out.append([(f"{r.role}_{r['index']}", (Path(r.path).name, (root / r.path).read_bytes(), "image/png"))
                    for _, r in rows.iterrows()])
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Service:
    """``seminspect serve`` in a child process."""

    def __init__(self, artefact: Path, db: str, root: Path, port: int, log: Path) -> None:
        self.cmd = [sys.executable, "-c", "from seminspect.cli import main; main()", "serve", str(artefact),
                    "--db", db, "--data-root", str(root), "--port", str(port), "--max-in-flight", "16"]
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120.0) -> float:
        import httpx

        t0 = time.perf_counter()
        self.proc = subprocess.Popen(self.cmd, stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
                                     env={**os.environ, "SEMINSPECT_PROGRESS": "0"})
        while time.perf_counter() - t0 < timeout:
            if self.proc.poll() is not None:
                raise SystemExit(f"service exited {self.proc.returncode}; see {self.log}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return time.perf_counter() - t0
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"service not ready after {timeout} s; see {self.log}")

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("artefact", type=Path)
    ap.add_argument("--data-root", type=Path, required=True)
    ap.add_argument("--n", type=int, default=40, help="distinct sites, cycled by the clients")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--max-requests", type=int, default=2000)
    ap.add_argument("--kill-at", type=float, default=None)
    ap.add_argument("--result", type=Path, default=Path(__file__).parent / "results" / "serve_load.md")
    a = ap.parse_args()
    import httpx
    from sqlalchemy import func, select

    from seminspect.serve.database import make_engine, sessions
    from seminspect.serve.tables import Decision, Site, SiteView

    data = write_load_sites(a.data_root / f"sites{a.n}", a.n)
    parts = site_parts(data)
    run = a.data_root / f"run{int(time.time())}"
    run.mkdir(parents=True)
    db = f"sqlite:///{run / 'review.db'}"
    svc = Service(a.artefact, db, data, free_port(), run / "service.log")
    startup = svc.start()
    lat: list[tuple[int, float]] = []  # (views, seconds) of acknowledged requests
    acked: dict[str, int] = {}
    fails = {"4xx": 0, "5xx": 0, "cut off": 0}
    lock = threading.Lock()
    counter = iter(range(a.max_requests))
    t_start = time.perf_counter()
    deadline = t_start + a.seconds

    def client() -> None:
        with httpx.Client(timeout=120) as c:
            while time.perf_counter() < deadline:
                with lock:
                    k = next(counter, None)
                if k is None:
                    return
                files = parts[k % len(parts)]
                sid = f"load{k:06d}"
                t0 = time.perf_counter()
                try:
                    r = c.post(f"{svc.url}/v1/sites", files=files, data={"sample_id": sid})
                except httpx.HTTPError:
                    with lock:
                        fails["cut off"] += 1
                    time.sleep(0.5)
                    continue
                dt = time.perf_counter() - t0
                with lock:
                    if r.status_code == 201:
                        acked[sid] = r.json()["site_id"]
                        lat.append((len(files), dt))
                    else:
                        fails["5xx" if r.status_code >= 500 else "4xx"] += 1

    threads = [threading.Thread(target=client) for _ in range(a.clients)]
    for t in threads:
        t.start()
    restart = None
    if a.kill_at is not None:
        time.sleep(max(0.0, a.kill_at - (time.perf_counter() - t_start)))
        svc.kill()
        restart = svc.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t_start
    svc.stop()

    with sessions(make_engine(db))() as s:
        ids = list(s.scalars(select(Site.sample_id)))
        half = s.scalar(select(func.count(Site.id)).where(~Site.id.in_(select(Decision.site_id)))) or 0
        viewless = s.scalar(select(func.count(Site.id)).where(~Site.id.in_(select(SiteView.site_id)))) or 0
    counts = {sid: ids.count(sid) for sid in set(ids)}
    missing = [sid for sid in acked if counts.get(sid, 0) != 1]
    extra = len(set(ids) - set(acked))

    out = run / "predict.parquet"
    code, p_wall, _ = run_child(["predict", str(a.artefact), str(data), "--out", str(out), "--overwrite"])
    p_rate = json.loads(out.with_suffix(".summary.json").read_text())["sites_per_second"] if code in (0, 1) else 0.0

    lines = header(f"serve load test: {a.clients} clients on loopback, 2-view and 10-view {SIZE} px sites", sys.argv)
    n = len(lat)
    lines += [f"Artefact `{a.artefact}`; {a.n} distinct sites under `{data}` (half 2-view, half 10-view), uploaded "
              f"as multipart PNG; SQLite `{db}`. Service start-up {startup:.1f} s"
              + (f"; SIGKILLed at {a.kill_at:.0f} s and restarted in {restart:.1f} s" if restart else "") + ".", ""]
    if n:
        alls = np.array([d for _, d in lat])
        lines += ["| sites | views | throughput (sites/s) | p50 (s) | p95 (s) | p99 (s) |", "|---|---|---|---|---|---|"]
        for views in sorted({v for v, _ in lat}):
            d = np.array([x for v, x in lat if v == views])
            lines.append(f"| {len(d)} | {views} | {len(d) / wall:.2f} | {np.percentile(d, 50):.2f} | "
                         f"{np.percentile(d, 95):.2f} | {np.percentile(d, 99):.2f} |")
        lines.append(f"| {n} | all | {n / wall:.2f} | {np.percentile(alls, 50):.2f} | {np.percentile(alls, 95):.2f} |"
                     f" {np.percentile(alls, 99):.2f} |")
    ratio = (n / wall) / p_rate if p_rate else float("nan")
    lines += ["", f"- wall {wall:.1f} s; errors: {fails['5xx']} server (5xx), {fails['4xx']} client (4xx), "
              f"{fails['cut off']} requests cut off (connection lost)",
              f"- database: {len(acked)} acknowledged, {len(acked) - len(missing)} present exactly once, "
              f"{len(missing)} missing or duplicated; {extra} committed but not acknowledged (in flight at a kill); "
              f"{half} sites without a decision, {viewless} without views",
              f"- `seminspect predict` on the same {a.n} sites: {p_rate:.2f} sites/s (its own clock; wall "
              f"{p_wall:.1f} s with start-up); service / predict = {ratio:.0%}",
              f"- load average at the end: {load()}"]
    atomic_write_text(a.result, "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"-> {a.result}")
    if missing or half or viewless or fails["5xx"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()

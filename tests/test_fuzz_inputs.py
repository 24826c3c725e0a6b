"""Fuzzing the door: random bytes in image, depth and manifest files, against ``validate`` and ``predict``.

A child process (this file run as a script) mutates a small dataset again and again for a fixed
time (random bytes, flipped or truncated files, well-formed headers declaring random sizes,
complete decompression bombs of 4 to 36 megapixels, hostile manifest cells) and runs both
commands through the real entry point after each mutation. It reports every
run that ended in a traceback, wrote more than one ``error:`` line, left an output after refusing,
or exited with an unexpected status, and its own peak memory. The pixel limit is set to 1
megapixel there, so every image that gets through is small and the memory bound holds.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import pytest

FUZZ_SECONDS = 25.0
MEMORY_BOUND_MB = 1000  # peak RSS of the child (python + torch + pandas alone is ~400 MB)
GROWTH_BOUND_MB = 100  # peak RSS above the child's after one clean validate + predict (images <= 1 MP)
ADDRESS_SPACE_GB = 8  # the child cannot grow past this, whatever a file declares
HOSTILE_CELLS = ["", " ", "../outside/secret.png", "/etc/passwd", "images/../../x.png", "a" * 5000, "\x00",
                 "é/ü.png", "nan", "-1", "99999999999999999999", "target", "reference", "zoom", "1e9",
                 "images/x.tif", "C:\\x.png", "images/", ".", "~/x.png"]


# ----- the child: mutate, run, record ----------------------------------------------------------------
def _random_header(rng: random.Random, path: Path) -> bytes:
    """A file whose header is well formed for its format and declares a random (often huge) size."""
    from bad_inputs import jpeg_header_only, npy_header_only, png_header_only, tiff_header_only

    w, h = (int(10 ** rng.uniform(0, 5.2)) for _ in range(2))
    tmp = path.with_name("fuzz_header.tmp")
    kind = rng.choice(["tiff", "png", "jpeg", "npy"])
    if kind == "tiff":
        tiff_header_only(tmp, w, h, bits=rng.choice([1, 8, 16, 32]))
    elif kind == "png":
        png_header_only(tmp, w, h, bits=rng.choice([1, 8, 16]))
    elif kind == "jpeg":
        jpeg_header_only(tmp, min(w, 65535), min(h, 65535))
    else:
        npy_header_only(tmp, (h, w), rng.choice(["<f4", "<f8", "|u1", "|O", "<c8"]))
    data = tmp.read_bytes()
    tmp.unlink()
    return data


def _bombs(work: Path) -> tuple[list[bytes], bytes]:
    """Decompression bombs: valid PNGs of 4 to 36 megapixels, and a 100x100 TIFF whose strip inflates to 200 MB."""
    from bad_inputs import tiff_zlib_bomb
    from seminspect.data.imageio import write_image

    pngs = []
    for shape, dtype in (((2000, 2000), np.uint8), ((6000, 6000), np.uint8), ((3000, 3000), np.uint16)):
        write_image(work / "bomb.png", np.zeros(shape, dtype))
        pngs.append((work / "bomb.png").read_bytes())
    (work / "bomb.png").unlink()
    tiff = tiff_zlib_bomb(work / "bomb.tif", inflated=200_000_000).read_bytes()
    (work / "bomb.tif").unlink()
    return pngs, tiff


def _mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    how = rng.choice(["random", "flip", "truncate", "splice"])
    if how == "random" or not data:
        return rng.randbytes(rng.randint(0, 4096))
    buf = bytearray(data)
    if how == "flip":
        for _ in range(rng.randint(1, 16)):
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        return bytes(buf)
    if how == "truncate":
        return bytes(buf[:rng.randrange(len(buf))])
    at = rng.randrange(len(buf))
    return bytes(buf[:at]) + rng.randbytes(rng.randint(1, 64)) + bytes(buf[at:])


def _mutate_manifest(rng: random.Random, text: str) -> str:
    lines = text.splitlines()
    how = rng.choice(["cell", "cell", "cell", "bytes", "drop_line", "dup_line", "header"])
    if how == "bytes":
        return _mutate_bytes(rng, text.encode()).decode("utf-8", "replace")
    if how == "drop_line" and len(lines) > 1:
        del lines[rng.randrange(1, len(lines))]
    elif how == "dup_line" and len(lines) > 1:
        lines.insert(rng.randrange(1, len(lines)), lines[rng.randrange(1, len(lines))])
    elif how == "header":
        cols = lines[0].split(",")
        cols[rng.randrange(len(cols))] = rng.choice(HOSTILE_CELLS + ["path", "sample_id", ""])
        lines[0] = ",".join(cols)
    else:
        i = rng.randrange(1, len(lines))
        cells = lines[i].split(",")
        cells[rng.randrange(len(cells))] = rng.choice(HOSTILE_CELLS).replace(",", ";")
        lines[i] = ",".join(cells)
    return "\n".join(lines) + "\n"


def _run_cli(args: list[str]) -> tuple[int | None, str, str | None]:
    """``(exit status, stderr, traceback or None)`` of one in-process run of ``seminspect ARGS``."""
    from seminspect.cli import main

    out, err = io.StringIO(), io.StringIO()
    sys.argv = ["seminspect", *args]
    code, tb = None, None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:  # noqa: BLE001 - a traceback is exactly what the fuzz looks for
            tb = traceback.format_exc()
    text = out.getvalue() + err.getvalue()
    if tb is None and "Traceback (most recent call last)" in text:
        tb = text
    return code, err.getvalue(), tb


def _check_run(name: str, args: list[str], finals: list[Path], ok_codes: set[int]) -> str | None:
    code, err, tb = _run_cli(args)
    if tb is not None:
        return f"{name}: traceback\n" + "\n".join(line[:300] for line in tb.splitlines()[-30:])
    if code not in ok_codes:
        return f"{name}: exit status {code}\n{err[-2000:]}"
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    if code == 2 and len(errors) != 1:
        return f"{name}: {len(errors)} 'error:' lines\n{err[-2000:]}"
    if code == 2 and (left := [str(p) for p in finals if p.exists()]):
        return f"{name}: refused but left {left}"
    return None


def fuzz(artefact: Path, template: Path, work: Path, seed: int, seconds: float) -> dict:
    """Mutate a copy of ``template`` for ``seconds``; run validate and predict after each mutation."""
    os.environ["SEMINSPECT_MAX_PIXELS"] = "1000000"
    os.environ["SEMINSPECT_PROGRESS"] = "0"
    import torch

    torch.set_num_threads(1)
    rng = random.Random(seed)
    ds = work / "ds"
    shutil.copytree(template, ds)
    files = sorted(p for p in ds.rglob("*") if p.is_file() and p.suffix in {".png", ".tiff", ".npy", ".tif"})
    originals = {p: p.read_bytes() for p in [*files, ds / "manifest.csv"]}
    bombs, tiff_bomb = _bombs(work)
    crashes: list[str] = []
    kinds: dict[str, int] = {}
    clean = work / "clean"
    clean.mkdir()
    for name, args in (("validate", ["validate", str(ds)]),
                       ("predict", ["predict", str(artefact), str(ds), "--out", str(clean / "d.parquet")])):
        if problem := _check_run(f"clean {name}", args, [], {0}):  # warms up and proves the data is good
            crashes.append(problem)
    baseline_mb = peak_rss_mb()
    t0, n = time.monotonic(), 0
    while time.monotonic() - t0 < seconds and len(crashes) < 5:
        n += 1
        what = []
        if rng.random() < 0.2:  # every view of one site becomes the same bomb: sizes agree, predict would run it
            site = rng.choice(sorted({p.parent for p in files}))
            bomb = rng.choice(bombs)
            for p in site.glob("*.png"):
                p.write_bytes(bomb)
            what.append(f"bomb:{site.relative_to(ds)}")
        else:
            for p in rng.sample(files, rng.randint(1, 3)):
                how = rng.choice(["bytes", "bytes", "header", "bomb"])
                if how == "bomb":
                    p.write_bytes(tiff_bomb if p.suffix in {".tif", ".tiff"} else rng.choice(bombs))
                else:
                    p.write_bytes(_mutate_bytes(rng, originals[p]) if how == "bytes" else _random_header(rng, p))
                what.append(f"{how}:{p.relative_to(ds)}")
        if rng.random() < 0.4:
            manifest = ds / "manifest.csv"
            manifest.write_text(_mutate_manifest(rng, originals[manifest].decode()), encoding="utf-8")
            what.append("manifest")
        kinds[what[0].split(":")[0]] = kinds.get(what[0].split(":")[0], 0) + 1
        out = work / f"run{n}"
        out.mkdir()
        runs = [("validate", ["validate", str(ds), "--max-problems", "5"], [], {0, 1}),
                ("predict", ["predict", str(artefact), str(ds), "--out", str(out / "d.parquet")],
                 [out / "d.parquet"], {0, 1, 2})]
        for name, args, finals, ok in runs:
            problem = _check_run(name, args, finals, ok)
            if problem:
                crashes.append(f"iteration {n} ({', '.join(what)}): {problem}")
        shutil.rmtree(out)
        for p, data in originals.items():
            p.write_bytes(data)
    return {"iterations": n, "seconds": time.monotonic() - t0, "crashes": crashes, "maxrss_mb": peak_rss_mb(),
            "baseline_mb": baseline_mb, "first_mutations": kinds}


def peak_rss_mb() -> float:
    """This process's peak resident memory since it started its program.

    ``VmHWM`` belongs to the process's own address space; ``ru_maxrss`` is not used where VmHWM
    exists because it keeps the parent's size across fork + exec (pytest's, after a long run).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----- the test: one bounded child process -------------------------------------------------------------
@pytest.fixture(scope="module")
def fuzz_world(tmp_path_factory) -> tuple[Path, Path]:
    from seminspect.workflow import train_and_evaluate
    from test_bad_inputs import write_dataset
    from test_inference import tiny_config

    root = tmp_path_factory.mktemp("fuzz")
    cfg = tiny_config(write_dataset(root / "train"), root / "art")
    cfg.train.epochs = 1
    train_and_evaluate(cfg, log=None, report=False)
    template = write_dataset(root / "template", n=6)
    _with_a_mask(template)
    return root / "art", template


def _with_a_mask(ds: Path) -> None:
    import pandas as pd

    from seminspect.data.imageio import write_image

    m = pd.read_csv(ds / "manifest.csv", dtype=str, keep_default_na=False)
    write_image(ds / "images" / "mask.png", np.zeros((64, 64), np.uint8))
    m["mask"] = ""
    m.loc[0, "mask"] = "images/mask.png"
    m.to_csv(ds / "manifest.csv", index=False)


def test_random_bytes_never_crash_validate_or_predict(fuzz_world, tmp_path):
    artefact, template = fuzz_world
    here = Path(__file__).resolve()
    cmd = [sys.executable, str(here), str(artefact), str(template), str(tmp_path), "0", str(FUZZ_SECONDS)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here.parent), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=FUZZ_SECONDS + 90, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not result["crashes"], "\n\n".join(result["crashes"])
    assert result["iterations"] >= 10, result
    assert result["maxrss_mb"] < MEMORY_BOUND_MB, result
    assert result["maxrss_mb"] - result["baseline_mb"] < GROWTH_BOUND_MB, result


def _main() -> None:
    artefact, template, work, seed, seconds = sys.argv[1:6]
    limit = ADDRESS_SPACE_GB << 30
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    result = fuzz(Path(artefact), Path(template), Path(work), int(seed), float(seconds))
    sys.stdout = sys.__stdout__
    print(json.dumps(result))


if __name__ == "__main__":
    _main()

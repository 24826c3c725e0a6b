"""``seminspect predict``: streaming, bad sites recorded, resumable after kill -9, clear errors at the door."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from _procs import alive, children
from seminspect.cli import app
from seminspect.data.stream import iter_sites
from seminspect.inference.inspector import Inspector
from seminspect.inference.predict import PredictError, predict
from test_inference import make_shifted_dataset, tiny_config

runner = CliRunner()


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    from seminspect.workflow import train_and_evaluate

    root = tmp_path_factory.mktemp("predict")
    ds = make_shifted_dataset(root / "ds", n=96)
    train_and_evaluate(tiny_config(ds, root / "art"), log=None, report=False)
    return ds, root / "art"


def _damaged_copy(ds: Path, dest: Path) -> Path:
    """The dataset with four broken sites: corrupt image, missing file, size mismatch, no target."""
    shutil.copytree(ds, dest)
    m = pd.read_csv(dest / "manifest.csv", dtype=str, keep_default_na=False)
    ids = m["sample_id"].unique()
    corrupt = m[(m.sample_id == ids[3]) & (m.role == "target")].path.iloc[0]
    (dest / corrupt).write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    missing = m[(m.sample_id == ids[7]) & (m.role == "reference")].path.iloc[0]
    (dest / missing).unlink()
    small = m[(m.sample_id == ids[11]) & (m.role == "reference")].path.iloc[0]
    from PIL import Image

    Image.fromarray(np.zeros((32, 32), np.uint8)).save(dest / small)
    m = m[~((m.sample_id == ids[15]) & (m.role == "target"))]
    m.to_csv(dest / "manifest.csv", index=False)
    return dest


def test_bad_sites_are_recorded_and_the_run_goes_on(trained, tmp_path):
    ds, art = trained
    bad = _damaged_copy(ds, tmp_path / "bad")
    res = runner.invoke(app, ["predict", str(art), str(bad), "--out", str(tmp_path / "d.parquet")])
    assert res.exit_code == 1, res.output
    assert "4 site(s) could not be judged" in res.output
    err = pd.read_parquet(tmp_path / "d.errors.parquet").set_index("site")
    assert list(err.index) == [3, 7, 11, 15]
    assert "cannot decode image" in err.loc[3, "error"]
    assert "file not found" in err.loc[7, "error"] and err.loc[7, "file"].endswith(".png")
    assert "reference view" in err.loc[11, "error"] and "32x32" in err.loc[11, "error"]
    assert "no target view" in err.loc[15, "error"] and "manifest.csv: row" in err.loc[15, "file"]
    dec = pd.read_parquet(tmp_path / "d.parquet")
    assert len(dec) == 92 and not set(dec["site"]) & {3, 7, 11, 15}
    assert dec["site"].is_monotonic_increasing


def test_streaming_reports_a_site_whose_rows_are_split(trained, tmp_path):
    ds, _ = trained
    shutil.copytree(ds, tmp_path / "ds")
    m = pd.read_csv(tmp_path / "ds" / "manifest.csv", dtype=str, keep_default_na=False)
    first = m[m.sample_id == m.sample_id.iloc[0]]
    m = pd.concat([first.iloc[:1], m[m.sample_id != first.sample_id.iloc[0]].iloc[:8], first.iloc[1:]])
    m.to_csv(tmp_path / "ds" / "manifest.csv", index=False)
    sites = list(iter_sites(tmp_path / "ds"))
    assert sites[-1].sample_id == sites[0].sample_id and "not consecutive" in sites[-1].error
    assert [s.ordinal for s in sites] == list(range(len(sites)))
    assert [s.ordinal for s in iter_sites(tmp_path / "ds", start=2, stop=4)] == [2, 3]


def test_csv_output_maps_and_rerun(trained, tmp_path):
    ds, art = trained
    out = tmp_path / "d.csv"
    s1 = predict(art, ds, out, log=None)
    df = pd.read_csv(out)
    assert len(df) == s1.n_sites == 96 and df.columns[0] == "site" and "route_reason" in df.columns
    again = predict(art, ds, out, log=None)  # complete: nothing recomputed
    assert again.n_decided == 96 and again.seconds == s1.seconds
    with pytest.raises(PredictError, match="--maps .* has no anomaly model"):
        predict(art, ds, tmp_path / "m.parquet", maps=tmp_path / "maps", log=None)


def _run(art: Path, ds: Path, out: Path, processes: int = 1) -> subprocess.Popen:
    env = {**os.environ, "SEMINSPECT_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", "from seminspect.cli import main; main()", "predict", str(art), str(ds),
           "--out", str(out), "--part-size", "6", "--threads", "1", "--processes", str(processes)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.parametrize("processes", [1, 2])
def test_kill_9_at_random_points_loses_and_duplicates_nothing(trained, tmp_path, processes):
    """Three ``kill -9`` while parts are being written; the resumed output equals an uninterrupted run.
    With worker processes, the workers of a killed run end too (none is left running)."""
    ds, art = trained
    ref = predict(art, ds, tmp_path / "ref.parquet", part_size=6, threads=1, log=None)
    out = tmp_path / "killed.parquet"
    parts = out.with_name(out.name + ".parts")
    rng = random.Random(0)
    kills, orphans = 0, set()
    for _ in range(3):
        proc = _run(art, ds, out, processes)
        start = len(list(parts.glob("part-*.parquet"))) if parts.exists() else 0
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None:
            if parts.exists() and len(list(parts.glob("part-*.parquet"))) > start:
                break
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.3))
        if proc.poll() is None:
            orphans |= children(proc.pid)
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 2  # the run takes long enough to be interrupted mid-way
    if processes > 1:
        assert len(orphans) >= processes
        deadline = time.time() + 15
        while time.time() < deadline and any(map(alive, orphans)):
            time.sleep(0.1)
        assert not any(map(alive, orphans)), "worker processes outlived their killed run"
    proc = _run(art, ds, out, processes)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    a, b = pd.read_parquet(tmp_path / "ref.parquet"), pd.read_parquet(out)
    assert len(b) == ref.n_sites and b["site"].is_unique
    pd.testing.assert_frame_equal(a, b)
    assert not parts.exists()


def _main(capsys, monkeypatch, *args: str) -> tuple[int, str]:
    """Run the real console entry point in-process: ``(exit status, stdout + stderr)``."""
    from seminspect.cli import main

    monkeypatch.setattr(sys, "argv", ["seminspect", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    out = capsys.readouterr()
    return int(exc.value.code or 0), out.out + out.err


def test_bad_input_is_one_line_exit_2(trained, tmp_path, capsys, monkeypatch):
    ds, art = trained
    code, text = _main(capsys, monkeypatch, "predict", str(art), str(tmp_path / "nowhere"), "--out",
                       str(tmp_path / "x.parquet"))
    assert code == 2 and "nowhere: not found" in text and "Traceback" not in text
    broken = tmp_path / "art"
    shutil.copytree(art, broken, ignore=shutil.ignore_patterns("cache", "checkpoint.pt"))
    (broken / "weights.safetensors").unlink()
    code, text = _main(capsys, monkeypatch, "predict", str(broken), str(ds), "--out", str(tmp_path / "x.parquet"))
    assert code == 2 and "weights.safetensors: missing" in text and len(text.strip().splitlines()) <= 2
    other = tmp_path / "other"
    shutil.copytree(ds, other)
    (other / "dataset.yaml").write_text("taxonomy: sem_default\n")
    code, text = _main(capsys, monkeypatch, "predict", str(art), str(other), "--out", str(tmp_path / "y.parquet"))
    assert code == 2 and "is not the artefact's" in text


def test_a_run_killed_while_removing_its_parts_is_cleaned_up_by_the_next(trained, tmp_path):
    ds, art = trained
    out = tmp_path / "d.parquet"
    first = predict(art, ds, out, part_size=10, log=None)
    parts = out.with_name(out.name + ".parts")
    parts.mkdir()  # what a kill -9 during the final rmtree leaves: part files, run.json already gone
    (parts / "part-000003.parquet").write_bytes(b"left over")
    again = predict(art, ds, out, part_size=10, log=None)
    assert again.n_decided == first.n_decided and not parts.exists()


def test_reading_ahead_changes_no_decision_and_no_error_row(trained, tmp_path):
    ds, art = trained
    bad = _damaged_copy(ds, tmp_path / "bad")
    runs = {}
    for prefetch in (0, 3):
        out = tmp_path / f"d{prefetch}.parquet"
        summary = predict(art, bad, out, prefetch=prefetch, part_size=10, log=None)
        assert summary.notes[-1] == ("sites read one at a time" if prefetch == 0
                                     else "sites read and aligned ahead by 3 thread(s)")
        runs[prefetch] = (pd.read_parquet(out), pd.read_parquet(tmp_path / f"d{prefetch}.errors.parquet"))
    pd.testing.assert_frame_equal(runs[0][0], runs[3][0])
    pd.testing.assert_frame_equal(runs[0][1], runs[3][1])
    assert len(runs[3][0]) == 92 and list(runs[3][1]["site"]) == [3, 7, 11, 15]
    with pytest.raises(PredictError, match="prefetch must be >= 0"):
        predict(art, ds, tmp_path / "x.parquet", prefetch=-1, log=None)


def test_a_site_can_be_loaded_twice(trained):
    from seminspect.data.stream import iter_site_rows, load_site

    ds, _ = trained
    rows = next(iter_site_rows(ds))
    first, second = load_site(ds, rows), load_site(ds, rows)  # a Ray retry loads the same rows again
    assert first.error is None and second.error is None
    assert [v.index for v in first.sample.views] == [v.index for v in second.sample.views]


def test_worker_processes_change_no_decision_and_no_error_row(trained, tmp_path):
    ds, art = trained
    bad = _damaged_copy(ds, tmp_path / "bad")
    runs = {}
    for processes in (1, 2):  # one runtime thread each way, so the arithmetic is the same
        out = tmp_path / f"d{processes}.parquet"
        summary = predict(art, bad, out, processes=processes, threads=1, part_size=10, log=None)
        if processes > 1:
            assert summary.notes[-1] == "sites judged by 2 worker processes"
            assert "1 thread(s) per process" in summary.notes[-2]
        runs[processes] = (pd.read_parquet(out), pd.read_parquet(tmp_path / f"d{processes}.errors.parquet"))
    pd.testing.assert_frame_equal(runs[1][0], runs[2][0])
    pd.testing.assert_frame_equal(runs[1][1], runs[2][1])
    assert len(runs[2][0]) == 92 and list(runs[2][1]["site"]) == [3, 7, 11, 15]
    with pytest.raises(PredictError, match="processes must be >= 1"):
        predict(art, ds, tmp_path / "x.parquet", processes=0, log=None)
    with pytest.raises(PredictError, match="needs the artefact's folder"):
        predict(Inspector.load(art), ds, tmp_path / "y.parquet", processes=2, log=None)



def test_a_worker_that_dies_ends_the_run_with_a_one_line_error(trained):
    from seminspect.data.stream import iter_site_rows
    from seminspect.inference.pool import InspectorSpec, JudgePool, PoolError

    ds, art = trained
    with JudgePool(InspectorSpec(str(art)), ds, None, 1.0, processes=2) as pool:
        results = pool.judged(iter_site_rows(ds))
        assert next(results)[0] == 0
        os.kill(next(iter(pool._pool._processes)), signal.SIGKILL)
        with pytest.raises(PoolError, match="worker process died .* run the same command again"):
            list(results)

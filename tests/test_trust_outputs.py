"""[trust] strict outputs: standard JSON (null + a note, never NaN/Infinity), the format the suffix names,
and a missing anomaly threshold said plainly."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from trust_fixtures import TINY_ANOMALY, error_lines, run_main, strict_json, write_tiny_dataset, write_yaml


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny dataset whose test split holds normal sites only, a model with a threshold, one without."""
    from typer.testing import CliRunner

    from seminspect.cli import app

    root = tmp_path_factory.mktemp("trust_out")
    ds = write_tiny_dataset(root / "ds", n_normal=8, test_normal=3)
    runner = CliRunner()
    cfg = write_yaml(root / "a.yaml", {**TINY_ANOMALY, "calib_fraction": 0.25})
    res = runner.invoke(app, ["anomaly", "fit", str(ds), "-o", str(root / "with_thr"), "-c", str(cfg)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        app, ["anomaly", "fit", str(ds), "-o", str(root / "no_thr"), "-c", str(cfg), "--set", "calib_fraction=0"]
    )
    assert res.exit_code == 0, res.output
    return {"ds": ds, "with_thr": root / "with_thr", "no_thr": root / "no_thr"}


def test_atomic_write_json_is_strict_with_notes(tmp_path):
    from seminspect.utils.io import atomic_write_json

    path = tmp_path / "m.json"
    atomic_write_json(
        path,
        {
            "auroc": float("nan"),
            "auroc_note": "undefined: only one class",
            "threshold": np.float64(np.inf),
            "curve": np.array([0.5, np.nan]),
            "nested": [{"recall": -np.inf}],
            "ok": 0.25,
        },
    )
    data = strict_json(path)
    assert data["auroc"] is None and data["auroc_note"] == "undefined: only one class"  # a given reason is kept
    assert data["threshold"] is None and "Inf" in data["threshold_note"]
    assert data["curve"] == [0.5, None] and "1 value" in data["curve_note"]
    assert data["nested"][0]["recall"] is None and "recall_note" in data["nested"][0]
    assert data["ok"] == 0.25
    keys = list(data)
    assert keys.index("auroc_note") == keys.index("auroc") + 1  # the note sits beside its value
    assert keys.index("threshold_note") == keys.index("threshold") + 1


def test_anomaly_evaluate_metrics_json_is_standard_with_the_reason(world, tmp_path, capsys, monkeypatch):
    out = tmp_path / "ev"
    code, stdout, stderr = run_main(
        ["anomaly", "evaluate", str(world["with_thr"]), str(world["ds"]), "-o", str(out), "--n-figures", "0"],
        capsys,
        monkeypatch,
    )
    assert code == 0, stdout + stderr
    metrics = strict_json(out / "metrics.json")["metrics"]["all"]  # only normal test sites: AUROC undefined
    assert metrics["image_auroc"] is None
    assert "both classes" in metrics["image_auroc_note"] and "only normal" in metrics["image_auroc_note"]
    assert metrics["recall"] is None and metrics["recall_note"] == "undefined: no abnormal samples"
    assert "image_auroc=n/a" in stdout and "nan" not in stdout.lower()


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".json"])
def test_anomaly_predict_writes_the_format_its_suffix_names(world, tmp_path, suffix, capsys, monkeypatch):
    out = tmp_path / f"scores{suffix}"
    code, stdout, stderr = run_main(
        ["anomaly", "predict", str(world["with_thr"]), str(world["ds"]), "-o", str(out)], capsys, monkeypatch
    )
    assert code == 0, stdout + stderr
    if suffix == ".parquet":
        assert out.read_bytes()[:4] == b"PAR1"
        df = pd.read_parquet(out)
    elif suffix == ".json":
        df = pd.DataFrame(strict_json(out))
    else:
        df = pd.read_csv(out)
    assert list(df.columns) == ["sample_id", "score", "flagged"] and len(df) == 11
    assert df["flagged"].notna().all()


@pytest.mark.parametrize("name", ["scores.txt", "scores"])
def test_anomaly_predict_refuses_an_unknown_suffix_before_any_work(tmp_path, name, capsys, monkeypatch):
    out = tmp_path / name
    code, stdout, stderr = run_main(
        ["anomaly", "predict", str(tmp_path / "no_model"), str(tmp_path / "no_data"), "-o", str(out)],
        capsys,
        monkeypatch,
    )
    assert code == 2 and "Traceback" not in stdout + stderr
    (line,) = error_lines(stderr)
    assert str(out) in line and ".csv, .parquet, .json" in line and "no_model" not in line
    assert not out.exists()


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_anomaly_predict_without_threshold_says_so(world, tmp_path, suffix, capsys, monkeypatch):
    out = tmp_path / f"s{suffix}"
    code, stdout, stderr = run_main(
        ["anomaly", "predict", str(world["no_thr"]), str(world["ds"]), "-o", str(out)], capsys, monkeypatch
    )
    assert code == 0, stdout + stderr
    assert "threshold nan" not in stdout + stderr
    (warning,) = [ln for ln in stderr.splitlines() if ln.startswith("warning:")]
    assert "no fitted threshold" in warning and "flagged" in warning
    df = pd.read_csv(out) if suffix == ".csv" else pd.DataFrame(strict_json(out))
    assert df["flagged"].isna().all() and df["score"].notna().all()  # null, never a silent False
    if suffix == ".json":
        assert all(row["flagged"] is None for row in json.loads(out.read_text()))


def test_fit_without_threshold_warns(world, tmp_path, capsys, monkeypatch):
    cfg = write_yaml(tmp_path / "a.yaml", {**TINY_ANOMALY, "calib_fraction": 0})
    code, stdout, stderr = run_main(
        ["anomaly", "fit", str(world["ds"]), "-o", str(tmp_path / "m"), "-c", str(cfg)], capsys, monkeypatch
    )
    assert code == 0, stdout + stderr
    assert [ln for ln in stderr.splitlines() if ln.startswith("warning:") and "no threshold" in ln], stderr


def test_decision_save_is_strict_json(tmp_path):
    from seminspect.decision import PrecisionThreshold

    rng = np.random.default_rng(0)
    with pytest.warns(UserWarning):  # no threshold meets 99 % on random scores: +inf, saved as a string
        t = PrecisionThreshold(target_precision=0.99).fit(rng.random(40), rng.integers(0, 2, 40))
    strict_json(t.save(tmp_path / "t.json"))

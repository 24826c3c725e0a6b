"""``seminspect depth evaluate`` scores every site of the data it is given, beside the training mean map."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from seminspect.cli import app
from seminspect.errors import SeminspectError
from seminspect.training.depth import DepthConfig, DepthPredictor, load_samsung_npz, train_depth
from seminspect.training.depth_eval import score_depth


def _npz(path: Path, n: int, seed: int, offset: float = 0.0) -> Path:
    rng = np.random.default_rng(seed)
    sem = rng.integers(0, 256, (n, 2, 10, 8), dtype=np.uint8)
    depth = (sem.astype(np.float32).mean(axis=1) / 4 + offset).astype(np.uint8)
    names = np.array([f"2020010{seed}_10000{seed}_LOT{seed}_S01_M{i:04d}" for i in range(n)])
    np.savez(path, sem=sem, depth=depth, name=names)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("depth_eval")
    train_file = _npz(tmp / "train.npz", 30, 0)
    cfg = DepthConfig.model_validate({"data": {"path": str(train_file)}, "model": {"levels": 1, "width": 4},
                                      "optim": {"epochs": 1, "batch_size": 8, "warmup_steps": 1},
                                      "channels_last": False, "threads": 1})
    train_depth(cfg, tmp / "run", verbose=False)
    return train_file, tmp / "run" / "best.pt"


def test_evaluate_scores_the_whole_file_with_the_training_baseline(trained, tmp_path: Path) -> None:
    train_file, model = trained
    other = _npz(tmp_path / "other.npz", 17, 5, offset=20.0)  # other sites, deeper: its own mean would differ
    r = CliRunner().invoke(app, ["depth", "evaluate", "-m", str(model), "--data", str(other), "-o",
                                 str(tmp_path / "ev")])
    assert r.exit_code == 0, r.output
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["n_sites"] == 17 and metrics["split"] == "all"
    assert str(train_file) in metrics["baseline_from"] and "split group" in metrics["baseline_from"]
    with np.load(other) as f:
        true = f["depth"].astype(np.float32)
        x = f["sem"].astype(np.float32) / 255
    train, _ = load_samsung_npz(train_file)  # the group split's training part names the baseline
    base = score_depth(np.broadcast_to(train.y.numpy().mean(axis=0), true.shape), true)
    assert metrics["scores"][0]["rmse"] == pytest.approx(base.rmse, rel=1e-5)
    own_mean = score_depth(np.broadcast_to(true.mean(axis=0), true.shape), true)
    assert metrics["scores"][0]["rmse"] > own_mean.rmse + 5  # not the evaluated file's own mean map
    pred = DepthPredictor.load(model).predict(x)
    assert metrics["scores"][1]["rmse"] == pytest.approx(score_depth(pred, true).rmse, rel=1e-5)


def test_evaluate_npz_split_option_and_train_data_override(trained, tmp_path: Path) -> None:
    train_file, model = trained
    r = CliRunner().invoke(app, ["depth", "evaluate", "-m", str(model), "--data", str(train_file), "-o",
                                 str(tmp_path / "ev"), "--split", "val"])
    assert r.exit_code == 0, r.output
    _, val = load_samsung_npz(train_file)
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["n_sites"] == len(val)
    moved = _npz(tmp_path / "copy.npz", 30, 0)
    r = CliRunner().invoke(app, ["depth", "evaluate", "-m", str(model), "--data", str(train_file), "-o",
                                 str(tmp_path / "ev2"), "--train-data", str(moved)])
    assert r.exit_code == 0, r.output
    assert str(moved) in json.loads((tmp_path / "ev2" / "metrics.json").read_text())["baseline_from"]


def test_evaluate_without_training_data_is_one_line(trained, tmp_path: Path) -> None:
    _, model = trained
    r = CliRunner().invoke(app, ["depth", "evaluate", "-m", str(model), "--data", str(_npz(tmp_path / "o.npz", 5, 1)),
                                 "-o", str(tmp_path / "ev"), "--train-data", str(tmp_path / "gone.npz")])
    assert isinstance(r.exception, SeminspectError)
    text = str(r.exception)
    assert "\n" not in text and "gone.npz" in text and "--train-data" in text

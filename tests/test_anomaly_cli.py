"""`seminspect anomaly fit|predict|evaluate` on a tiny virtual-fab dataset (CliRunner)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner


@pytest.fixture(scope="module")
def fab(tmp_path_factory):
    synth = pytest.importorskip("seminspect.data.synth")
    root = tmp_path_factory.mktemp("fab") / "ds"
    cfg = synth.FabConfig(image_size=64, n_angles=1, n_references=1)
    synth.generate_dataset(root, 24, cfg, abnormal_fraction=0.5, seed=0, workers=1,
                           splits={"train": 0.5, "test": 0.5})
    return root


def test_cli_fit_predict_evaluate(tmp_path, fab) -> None:
    from seminspect.cli import app

    cfg = tmp_path / "anomaly.yaml"
    cfg.write_text(yaml.safe_dump({"model": "patchcore", "backbone": "tiny", "pretrained": False,
                                   "out_indices": [0, 1, 2], "layers": [0, 1], "conditioning": "reference",
                                   "max_bank_patches": 300, "sigma": 2.0}))
    runner = CliRunner()
    res = runner.invoke(app, ["anomaly", "fit", str(fab), "-o", str(tmp_path / "m"), "-c", str(cfg),
                              "--set", "calib_fraction=0.25"])
    assert res.exit_code == 0, res.output
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["config"]["conditioning"] == "reference" and meta["config"]["calib_fraction"] == 0.25
    assert meta["threshold"]["threshold"] > 0
    res = runner.invoke(app, ["anomaly", "predict", str(tmp_path / "m"), str(fab), "-o", str(tmp_path / "s.csv"),
                              "--split", "test", "--maps-out", str(tmp_path / "maps.npy")])
    assert res.exit_code == 0, res.output
    df = pd.read_csv(tmp_path / "s.csv")
    from seminspect.data.dataset import SampleDataset

    assert len(df) == len(SampleDataset(fab).split("test")) and df["score"].notna().all()
    res = runner.invoke(app, ["anomaly", "evaluate", str(tmp_path / "m"), str(fab), "-o", str(tmp_path / "ev"),
                              "--split", "", "--n-figures", "4"])
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())["metrics"]
    assert 0.0 <= metrics["all"]["image_auroc"] <= 1.0
    assert (tmp_path / "ev" / "overlays.png").stat().st_size > 1000


def test_cli_bad_config(tmp_path, fab) -> None:
    from seminspect.cli import app

    res = CliRunner().invoke(app, ["anomaly", "fit", str(fab), "-o", str(tmp_path / "m"), "--set", "model=padim"])
    assert res.exit_code != 0
    assert "invalid anomaly config" in str(res.exception)


def test_cli_diffusion_with_student_and_checkpoints(tmp_path, fab) -> None:
    """The diffusion model and its student through the same CLI; a second fit resumes from the checkpoints."""
    from seminspect.cli import app

    sets = ["model=diffusion", "conditioning=reference", "diffusion_width=4", "diffusion_student_width=4",
            "diffusion_student_epochs=1", "epochs=1", "batch_size=4", "calib_fraction=0.25"]
    args = ["anomaly", "fit", str(fab), "-o", str(tmp_path / "m"), "--checkpoint-dir", str(tmp_path / "ck")]
    args += [x for s in sets for x in ("--set", s)]
    runner = CliRunner()
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "ck" / "checkpoint.json").is_file() and (tmp_path / "ck" / "student.json").is_file()
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["config"]["model"] == "diffusion" and len(meta["history"]["student_losses"]) == 1
    res = runner.invoke(app, ["anomaly", "predict", str(tmp_path / "m"), str(fab), "-o", str(tmp_path / "s.csv"),
                              "--split", "test"])
    assert res.exit_code == 0, res.output
    assert pd.read_csv(tmp_path / "s.csv")["score"].notna().all()
    res = runner.invoke(app, args[:4] + [str(tmp_path / "m2")] + args[5:])  # resumed: nothing left to train
    assert res.exit_code == 0, res.output
    again = json.loads((tmp_path / "m2" / "config.json").read_text())
    assert again["history"]["losses"] == meta["history"]["losses"]
    assert again["history"]["student_losses"] == meta["history"]["student_losses"]

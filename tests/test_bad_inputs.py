"""The bad-input suite: every hostile or broken input, against every command that reads a dataset.

Each case of ``bad_inputs.CASES`` breaks one site (``s0000``, a normal site of the train split)
of a copy of a small dataset; each command is run through the real entry point
(``seminspect.cli.main``). Every run must end with the command's exit status, a one-line message
naming the file (or field) and the problem, no traceback, and no output under a final name.
``predict`` records a bad site in its errors table and goes on (exit 1). A command that never
reads the broken file (``predict``: masks and depth maps; ``depth train``: reference views) runs
as usual (:data:`UNREAD`).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from bad_inputs import CASES, VICTIM, Expect
from test_inference import shifted_sample, tiny_config
from trust_fixtures import run_main

COMMANDS = ("validate", "predict", "train", "evaluate", "anomaly-fit", "anomaly-predict", "depth-train",
            "depth-predict", "drift")
#: What a command never reads, so a case breaking only that leaves the command's run as usual.
UNREAD = {"predict": {"mask", "depth"}, "depth-train": {"reference"}, "depth-predict": {"reference"}}
#: Commands whose refused run must not even leave an (empty) folder or a config file it created.
LEAVES_NOTHING = {"train", "depth-train"}


@dataclass
class World:
    good: Path
    artefact: Path
    train_cfg: dict
    anomaly_cfg: Path
    depth_cfg: Path
    anomaly_model: Path
    depth_model: Path


def write_dataset(root: Path, n: int = 24) -> Path:
    """``n`` shifted sites (target + reference, 64x64) with a float32 depth map each; train/calib/test."""
    from seminspect.data.manifest import DatasetInfo, DatasetWriter
    from seminspect.data.sample import Sample

    rng = np.random.default_rng(0)
    splits = ["train", "train", "calib", "test"]
    with DatasetWriter(root, DatasetInfo(taxonomy="deeppcb", depth_units="nm")) as w:
        for i in range(n):
            s = shifted_sample(i, rng, splits[(i // 2) % 4])
            depth = s.targets[0].image.astype(np.float32) / 5
            w.add(Sample(s.sample_id, s.views, s.is_abnormal, s.defect_type, depth=depth, metadata=s.metadata))
    return root


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    from seminspect.workflow import train_and_evaluate

    root = tmp_path_factory.mktemp("bad_inputs")
    good = write_dataset(root / "good")
    cfg = tiny_config(good, root / "art")
    cfg.train.epochs = 2
    train_and_evaluate(cfg, log=None, report=False)
    anomaly_cfg = root / "anomaly.yaml"
    anomaly_cfg.write_text(yaml.safe_dump({"model": "patchcore", "backbone": "tiny", "pretrained": False,
                                           "out_indices": [0, 1, 2], "layers": [0, 1], "max_bank_patches": 100}))
    depth_cfg = root / "depth.yaml"
    depth_cfg.write_text("model: {levels: 1, width: 4}\noptim: {epochs: 1, batch_size: 4, warmup_steps: 1}\n"
                         "channels_last: false\n")
    from typer.testing import CliRunner

    from seminspect.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["anomaly", "fit", str(good), "-o", str(root / "anomaly"), "-c", str(anomaly_cfg)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["depth", "train", "-c", str(depth_cfg), "--data", str(good), "-o", str(root / "depth"),
                              "--val-split", "calib"])
    assert res.exit_code == 0, res.output
    return World(good, root / "art", cfg.model_dump(mode="json"), anomaly_cfg, depth_cfg, root / "anomaly",
                 root / "depth" / "best.pt")


def argv(command: str, w: World, ds: Path, out: Path) -> tuple[list[str], list[Path]]:
    """The command line of ``command`` on ``ds`` and the final outputs a failed run must not leave."""
    if command == "validate":
        return ["validate", str(ds), "--json", str(out / "v.json")], []
    if command == "predict":
        return ["predict", str(w.artefact), str(ds), "--out", str(out / "d.parquet")], []
    if command == "train":
        cfg = {**w.train_cfg, "data": {**w.train_cfg["data"], "path": str(ds)}, "output": str(out / "art")}
        (out / "train.yaml").write_text(yaml.safe_dump(cfg))
        return ["train", str(out / "train.yaml")], [out / "art"]
    if command == "evaluate":
        return (["evaluate", str(w.artefact), str(ds), "--split", "all", "--report", str(out / "e.html")],
                [out / "e.html", out / "e.json"])
    if command == "anomaly-fit":
        return ["anomaly", "fit", str(ds), "-o", str(out / "m"), "-c", str(w.anomaly_cfg)], [out / "m"]
    if command == "anomaly-predict":
        return (["anomaly", "predict", str(w.anomaly_model), str(ds), "-o", str(out / "s.csv")],
                [out / "s.csv"])
    if command == "depth-predict":
        return (["depth", "predict", "-m", str(w.depth_model), "--data", str(ds), "-o", str(out / "maps")],
                [out / "maps"])
    if command == "depth-train":
        run = out / "run"
        return (["depth", "train", "-c", str(w.depth_cfg), "--data", str(ds), "-o", str(run), "--val-split",
                 "calib"], [run])  # not even config.yaml
    if command == "drift":
        return (["drift", str(ds), str(w.good), "--backbone", "tiny", "--image-size", "32", "--n-permutations",
                 "10", "-o", str(out / "drift.json")], [out / "drift.json"])
    raise AssertionError(command)




def broken_copy(w: World, tmp_path: Path, case: str) -> tuple[Path, Expect]:
    ds = tmp_path / "ds"
    shutil.copytree(w.good, ds)
    return ds, CASES[case](ds, tmp_path / "outside")


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_refused_with_one_line(world, tmp_path, capsys, monkeypatch, case, command):
    ds, expect = broken_copy(world, tmp_path, case)
    out = tmp_path / "out"
    out.mkdir()
    args, finals = argv(command, world, ds, out)
    code, stdout, stderr = run_main(args, capsys, monkeypatch)
    assert "Traceback" not in stdout + stderr, stdout + stderr

    if command == "validate":
        assert code == 1, stdout + stderr
        report = json.loads((out / "v.json").read_text())
        hits = [p for p in report["problems"] if p["kind"] == expect.kind]
        assert hits, report["problems"]
        assert expect.needle in hits[0]["file"] + hits[0]["message"] and expect.reason in hits[0]["message"], hits[0]
        assert hits[0]["sample_id"] == VICTIM and hits[0]["row"] is not None
        assert [ln for ln in stderr.splitlines() if "validation failed" in ln], stderr
        return

    if expect.field in UNREAD.get(command, ()):  # the broken file is never read: a normal run
        assert code == 0, stdout + stderr
        if command == "predict":
            assert VICTIM in set(pd.read_parquet(out / "d.parquet")["sample_id"])
        return

    if command == "predict":
        decisions = pd.read_parquet(out / "d.parquet")
        assert code == 1, stdout + stderr
        errors = pd.read_parquet(out / "d.errors.parquet")
        (row,) = errors[errors["sample_id"] == VICTIM].to_dict("records")
        assert expect.needle in row["file"] + row["error"] and expect.reason in row["error"], row
        assert "\n" not in row["error"]
        assert VICTIM not in set(decisions["sample_id"])
        return

    assert code == 2, stdout + stderr
    lines = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, stderr
    assert expect.needle in lines[0] and expect.reason in lines[0], lines[0]
    if command in LEAVES_NOTHING:  # not even the (empty) folder or the config.yaml the run created
        left = [p for p in finals if p.exists()]
    else:  # an empty folder is no output
        left = [p for p in finals if p.is_file() or (p.is_dir() and any(q.is_file() for q in p.rglob("*")))]
    assert not left, f"{command} left {left} after refusing {case}"


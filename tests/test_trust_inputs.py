"""[trust] evaluate and predict refuse data the model was not trained on: view layout, view size, taxonomy.

Before, ``evaluate`` of a 2-view 64 px model on 5+5-view 128 px data exited 0 with a meaningless
AUROC and no warning, and ``train`` recorded nothing about the views it trained on.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from seminspect.data.manifest import DatasetInfo, DatasetWriter
from seminspect.data.model_inputs import InputMismatchError, check_inputs, format_views
from seminspect.evaluation.adc_evaluate import evaluate_artefact
from seminspect.inference.predict import predict
from seminspect.models.artefact import read_manifest, write_manifest
from seminspect.training.adc_trainer import train
from test_adc import make_sample
from test_inference import make_shifted_dataset, tiny_config
from trust_fixtures import error_lines, run_main


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ADC trained on 64 px sites of target 0-1 and reference 0-1."""
    root = tmp_path_factory.mktemp("inputs")
    cfg = tiny_config(make_shifted_dataset(root / "ds", n=40), root / "art")
    cfg.train.epochs = 2
    train(cfg, log=None)
    return root / "art"


def sites(root: Path, n: int = 6, **kw: int) -> Path:
    """``n`` labelled sites of :func:`test_adc.make_sample` (size, n_angles, n_refs, n_zooms) in split test."""
    rng = np.random.default_rng(3)
    with DatasetWriter(root, DatasetInfo(taxonomy="deeppcb")) as w:
        for i in range(n):
            w.add(make_sample(i, rng, split="test", **kw))
    return root


def test_train_records_the_views_and_sizes_it_trained_on(model: Path) -> None:
    inputs = read_manifest(model)["inputs"]
    assert inputs["views"] == [["target", 0], ["target", 1], ["reference", 0], ["reference", 1]]
    assert inputs["view_size"] == {"min": [64, 64], "max": [64, 64]} and inputs["sites_measured"] > 0


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_views_the_model_never_saw_are_refused_naming_both(model: Path, tmp_path: Path, capsys, monkeypatch,
                                                           command: str) -> None:
    data = sites(tmp_path / "big", size=128, n_angles=5, n_refs=5)  # the case: 5+5 views, 128 px
    out = tmp_path / "d.parquet"
    args = (["evaluate", str(model), str(data), "--split", "all", "--report", str(tmp_path / "e.html")]
            if command == "evaluate" else ["predict", str(model), str(data), "--out", str(out)])
    code, stdout, stderr = run_main(args, capsys, monkeypatch)
    errors = error_lines(stderr)
    assert code == 2 and len(errors) == 1 and "Traceback" not in stdout + stderr
    assert errors[0] == (f"error: {data / 'manifest.csv'}: sites have views target 2-4, reference 2-4 that the "
                         f"model never saw (trained on target 0-1, reference 0-1; {model / 'inspection.json'})")
    assert not (tmp_path / "e.html").exists() and not (tmp_path / "e.json").exists() and not out.exists()


@pytest.mark.parametrize(("size", "how"), [(160, "larger"), (24, "smaller")])
def test_views_over_twice_larger_or_smaller_are_refused_with_the_numbers(model: Path, tmp_path: Path,
                                                                        size: int, how: str) -> None:
    data = sites(tmp_path / "d", size=size)
    want = (f"views are {size}x{size} px (HxW, 6 sites measured), more than 2x {how} than the 64x64 px the model "
            f"was trained on ({model / 'inspection.json'})")
    with pytest.raises(InputMismatchError, match=want.replace("(", r"\(").replace(")", r"\)")):
        evaluate_artefact(model, data, split=None)
    with pytest.raises(InputMismatchError, match="more than 2x"):
        predict(model, data, tmp_path / "p.parquet", log=None)
    assert not (tmp_path / "p.parquet").exists()


def test_fewer_views_and_sizes_within_twice_are_accepted(model: Path, tmp_path: Path) -> None:
    """A missing reference (target only) is a supported case; 128 px is exactly 2x: accepted."""
    data = sites(tmp_path / "few", n=4, size=128, n_angles=1, n_refs=0)
    assert evaluate_artefact(model, data, split=None).metrics["n"] == 4
    assert predict(model, data, tmp_path / "p.parquet", log=None).n_decided == 4


def test_an_artefact_without_inputs_is_accepted_with_a_note(model: Path, tmp_path: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(model, old, ignore=shutil.ignore_patterns("cache", "*.pt"))
    manifest = json.loads((old / "inspection.json").read_text())
    del manifest["inputs"]
    (old / "inspection.json").write_text(json.dumps(manifest))
    data = sites(tmp_path / "d", n=4, n_angles=2)
    lines: list[str] = []
    evaluate_artefact(old, data, split=None, log=lines.append)
    notes = [ln for ln in lines if ln.startswith("note:")]
    assert len(notes) == 1 and "written before seminspect recorded what a model was trained on" in notes[0]
    lines.clear()
    predict(old, data, tmp_path / "p.parquet", log=lines.append)
    assert sum(ln.startswith("note:") for ln in lines) == 1


def test_evaluate_refuses_another_taxonomy(model: Path, tmp_path: Path) -> None:
    data = sites(tmp_path / "d", n=4)
    (data / "dataset.yaml").write_text("taxonomy: sem_default\n")
    with pytest.raises(InputMismatchError, match=r"dataset.yaml: taxonomy 'sem_default' .* is not the artefact's"):
        evaluate_artefact(model, data, split=None)


def test_rewriting_the_manifest_keeps_its_inputs(model: Path, tmp_path: Path) -> None:
    """``seminspect join`` and ``attach_anomaly`` rewrite inspection.json: what the model saw stays."""
    copy = tmp_path / "art"
    shutil.copytree(model, copy, ignore=shutil.ignore_patterns("cache", "*.pt"))
    write_manifest(copy, provenance={"x": 1})
    assert read_manifest(copy)["inputs"] == read_manifest(model)["inputs"]


def test_check_inputs_unit() -> None:
    trained = {"views": [["target", 0], ["reference", 0]], "view_size": {"min": [100, 50], "max": [200, 100]}}
    ok = {"views": [["target", 0]], "view_size": {"min": [60, 30], "max": [390, 190]}, "sites_measured": 3}
    assert check_inputs(trained, ok, "m.csv", "a.json") is None
    wide = {**ok, "view_size": {"min": [100, 50], "max": [200, 201]}}  # one axis is enough
    with pytest.raises(InputMismatchError, match=r"100x50 to 200x201 px .* than the 100x50 to 200x100 px"):
        check_inputs(trained, wide, "m.csv", "a.json")
    zoom = {**ok, "views": [["zoom", 0], ["target", 0]]}
    with pytest.raises(InputMismatchError, match=r"^m.csv: sites have views zoom 0 that the model never saw"):
        check_inputs(trained, zoom, "m.csv", "a.json")
    assert format_views([("reference", 3), ("target", 0), ("target", 2), ("target", 1)]) == "target 0-2, reference 3"


# ----- a corrupt anomaly model file: one line, not a safetensors traceback ([trust] "Tracebacks" row) ---------


@pytest.mark.parametrize("damage", ["garbage", "huge_header", "foreign_tensors"])
def test_anomaly_predict_with_a_corrupt_weights_file_is_one_line(tmp_path: Path, capsys, monkeypatch,
                                                                 damage: str) -> None:
    from safetensors.torch import save_file

    from trust_fixtures import TINY_ANOMALY, write_tiny_dataset, write_yaml

    ds = write_tiny_dataset(tmp_path / "ds", n_normal=6, test_normal=2)
    cfg = write_yaml(tmp_path / "a.yaml", {**TINY_ANOMALY, "calib_fraction": 0.0})
    code, _, err = run_main(["anomaly", "fit", str(ds), "-o", str(tmp_path / "m"), "-c", str(cfg)], capsys,
                            monkeypatch)
    assert code == 0, err
    weights = tmp_path / "m" / "weights.safetensors"
    if damage == "garbage":
        weights.write_bytes(b"not a safetensors file")
    elif damage == "huge_header":
        weights.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    else:
        import torch

        save_file({"x": torch.zeros(2)}, str(weights))
    out = tmp_path / "o.csv"
    code, stdout, stderr = run_main(["anomaly", "predict", str(tmp_path / "m"), str(ds), "-o", str(out)], capsys,
                                    monkeypatch)
    errors = error_lines(stderr)
    assert code == 2 and "Traceback" not in stdout + stderr and not out.exists()
    assert len(errors) == 1 and errors[0].startswith(f"error: {weights}: ")


def test_cli_evaluate_of_normal_sites_only_writes_standard_json(model: Path, tmp_path: Path, capsys,
                                                                monkeypatch) -> None:
    """[trust] "Strict outputs" row, end to end: ``eval_<split>.json`` of a split with one class is standard JSON."""
    from trust_fixtures import strict_json

    rng = np.random.default_rng(5)
    data = tmp_path / "normal"
    with DatasetWriter(data, DatasetInfo(taxonomy="deeppcb")) as w:
        for i in range(0, 8, 2):  # even ids: normal sites only
            w.add(make_sample(i, rng, split="test"))
    report = tmp_path / "eval_test.html"
    code, _, err = run_main(["evaluate", str(model), str(data), "--report", str(report)], capsys, monkeypatch)
    assert code == 0, err
    metrics = strict_json(report.with_suffix(".json"))  # NaN / Infinity would raise here
    assert metrics["n"] == 4 and metrics["n_abnormal"] == 0 and metrics.get("auroc") is None

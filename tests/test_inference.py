"""The inference path: artefact loading, the inspector, evaluate == predict, one alignment per site."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from seminspect.data.manifest import DatasetInfo, DatasetWriter
from seminspect.data.sample import Role, Sample, View
from seminspect.evaluation.adc_evaluate import evaluate_artefact
from seminspect.inference import Inspector, load_artefact
from seminspect.inference.predict import predict
from seminspect.models.artefact import ArtefactError
from seminspect.training.config import ADCConfig
from seminspect.workflow import train_and_evaluate
from test_adc import TAX, make_sample

SHIFT = (2, -1)  # every reference is the target's texture moved by this much


def shifted_sample(i: int, rng: np.random.Generator, split: str) -> Sample:
    """A ``make_sample`` site whose references are displaced, so alignment has work to do."""
    s = make_sample(i, rng, size=64, split=split)
    views = []
    for v in s.views:
        img = np.roll(v.image, (-SHIFT[0], -SHIFT[1]), axis=(0, 1)) if v.role == Role.REFERENCE else v.image
        views.append(View(v.role, v.index, img))
    return Sample(s.sample_id, views, s.is_abnormal, s.defect_type, metadata=s.metadata)


def make_shifted_dataset(root: Path, n: int = 120) -> Path:
    rng = np.random.default_rng(0)
    splits = ["train", "train", "calib", "test"]
    with DatasetWriter(root, DatasetInfo(taxonomy="deeppcb")) as w:
        for i in range(n):
            w.add(shifted_sample(i, rng, splits[(i // 2) % 4]))
    return root


def tiny_config(ds: Path, out: Path) -> ADCConfig:
    return ADCConfig.model_validate({
        "data": {"path": str(ds)}, "image": {"crop": 48, "max_shift": 4},
        "model": {"backbone": "tiny", "grid": 4, "dim": 16},
        "train": {"epochs": 15, "batch_size": 16, "lr": 0.01}, "triage": {"min_train_samples": 5},
        "output": str(out), "threads": 1})


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("inference")
    ds = make_shifted_dataset(root / "ds")
    train_and_evaluate(tiny_config(ds, root / "art"), log=None, report=False)
    return ds, root / "art"


def test_artefact_has_a_versioned_manifest(trained):
    _, art = trained
    manifest = json.loads((art / "inspection.json").read_text())
    assert manifest["format"] == "seminspect-inspection" and manifest["format_version"] == 1
    loaded = load_artefact(art)
    assert loaded.model_version == manifest["model_version"] and len(loaded.model_version) == 12
    assert loaded.taxonomy.leaves == TAX.leaves and loaded.policy is not None
    assert manifest["provenance"]["splits"]["calib"] == 30


def test_metrics_json_is_standard_json(trained):
    _, art = trained

    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    metrics = json.loads((art / "metrics.json").read_text(), parse_constant=refuse)
    assert metrics["test"]["n"] == 30


def test_inspector_aligns_each_reference_and_reports_it(trained):
    ds, art = trained
    from seminspect.data.dataset import SampleDataset

    sites = SampleDataset(ds).split("test")
    chosen = [sites[i] for i in range(6)]
    insp = Inspector.load(art).inspect(chosen)
    for al, s in zip(insp.alignments, chosen, strict=True):
        assert set(al) == {0, 1}
        assert all(a.shift == (float(SHIFT[0]), float(SHIFT[1])) for a in al.values())
        assert all(a.residual < a.residual_before for a in al.values())
        if not s.is_abnormal:  # same texture: aligned exactly
            assert all(a.residual < 1e-6 for a in al.values())
    df = insp.frame()
    assert (df["reg_dy_0"] == SHIFT[0]).all() and (df["reg_dx_1"] == SHIFT[1]).all()
    assert df["reg_dy_2"].isna().all()  # no detector 2 at these sites
    assert df["route_reason"].str.len().gt(20).all()
    assert set(df["top1_path"]) <= {"/".join(TAX.path(leaf)) for leaf in TAX.leaves}


def test_evaluate_and_predict_give_identical_scores(trained, tmp_path):
    ds, art = trained
    ev = evaluate_artefact(art, ds, split="test")
    summary = predict(art, ds, tmp_path / "d.parquet", log=None)
    assert summary.n_sites == 120 and summary.n_failed == 0
    df = pd.read_parquet(tmp_path / "d.parquet").set_index("sample_id").loc[ev.inspection.sample_ids]
    assert np.abs(df["abnormal_prob"].to_numpy() - ev.inspection.abnormal).max() <= 1e-6
    assert list(df["route"]) == list(ev.inspection.route)
    assert ev.metrics["auroc"] > 0.9
    assert ev.metrics["triage"]["routes"] == {r: int((df["route"] == r).sum()) for r in
                                              ("auto_abnormal", "auto_normal", "review")}


def test_evaluate_matches_the_training_run_figures(trained):
    ds, art = trained
    saved = json.loads((art / "metrics.json").read_text())["test"]
    again = evaluate_artefact(art, ds, split="test").metrics
    assert again["auroc"] == pytest.approx(saved["auroc"], abs=1e-9)
    assert again["type_macro_f1"] == pytest.approx(saved["type_macro_f1"], abs=1e-9)


def test_one_alignment_per_site_reused_by_the_anomaly_model(trained, tmp_path, monkeypatch):
    ds, art = trained
    from seminspect.data import prepare, registration
    from seminspect.data.dataset import SampleDataset
    from seminspect.inference.join import join
    from seminspect.models.anomaly import AnomalyConfig, AnomalyDetector

    det = AnomalyDetector(AnomalyConfig(backbone="tiny", pretrained=False, out_indices=[0, 1, 2], layers=[0, 1],
                                        conditioning="reference", sigma=2.0, max_bank_patches=400, batch_size=8))
    det.fit(SampleDataset(ds).split("train"))
    det.save(tmp_path / "anomaly")
    manifest = join(art, tmp_path / "anomaly", out=tmp_path / "joined", normals=ds, split="calib")
    assert manifest["parts"]["anomaly"] == "anomaly" and manifest["anomaly"]["threshold"] > 0
    assert "shared alignment" in manifest["anomaly"]["source"]
    inspector = Inspector.load(tmp_path / "joined")
    assert inspector.artefact.policy.anomaly_threshold == manifest["anomaly"]["threshold"]
    # the auto-normal route was calibrated again on the calib sites the rule lets through: the same policy as
    # fitting the ADC's calibration from scratch with the rule (TriagePolicy.fit with anomaly scores)
    route = manifest["anomaly"]["normal_route"]
    calib = SampleDataset(ds).split("calib")
    assert route["sites"] == len(calib) and route["defects"] == int((calib.is_abnormal == 1).sum())
    scored = Inspector.load(tmp_path / "joined").inspect(calib, progress=None)
    y = calib.is_abnormal == 1
    from seminspect.decision import TriagePolicy

    old = Inspector.load(art, with_anomaly=False).artefact.policy
    fresh = TriagePolicy(**old.get_params()).set_params(anomaly_threshold=manifest["anomaly"]["threshold"])
    fresh.fit(scored.abnormal, y, anomaly_scores=scored.anomaly_scores)
    assert inspector.artefact.policy.normal_threshold_ == fresh.normal_threshold_
    assert route["passed_by_rule"] == int((scored.anomaly_scores <= manifest["anomaly"]["threshold"]).sum())
    assert inspector.artefact.policy.abnormal_threshold_ == old.abnormal_threshold_  # the other route untouched
    calls = {"align": 0, "register": 0}
    real_align = prepare.PrepareSample.align

    def counting_align(self, sample):
        calls["align"] += 1
        return real_align(self, sample)

    def no_register(*a, **k):
        calls["register"] += 1
        raise AssertionError("the anomaly model registered again")

    monkeypatch.setattr(prepare.PrepareSample, "align", counting_align)
    monkeypatch.setattr(registration, "register_pair", no_register)
    sites = SampleDataset(ds).split("test")
    insp = inspector.inspect([sites[i] for i in range(8)], maps=True)
    assert calls == {"align": 8, "register": 0}
    assert insp.anomaly_scores is not None and np.isfinite(insp.anomaly_scores).all()
    assert len(insp.anomaly_maps) == 8 and insp.anomaly_maps[0].shape == (64, 64)
    df = insp.frame()
    assert df["anomaly_flag"].notna().all()
    blocked = df["anomaly_flag"].astype(bool)
    assert not (blocked & (df["route"] == "auto_normal")).any()


def test_cli_join_says_whether_the_route_was_recalibrated(trained, tmp_path):
    from typer.testing import CliRunner

    from seminspect.cli import app
    from seminspect.data.dataset import SampleDataset
    from seminspect.models.anomaly import AnomalyConfig, AnomalyDetector

    ds, art = trained
    det = AnomalyDetector(AnomalyConfig(backbone="tiny", pretrained=False, out_indices=[0, 1, 2], layers=[0, 1],
                                        conditioning="reference", sigma=2.0, max_bank_patches=200, batch_size=8))
    det.fit(SampleDataset(ds).split("train"))
    det.save(tmp_path / "anomaly")
    runner = CliRunner()
    plain = runner.invoke(app, ["join", str(art), str(tmp_path / "anomaly"), "-o", str(tmp_path / "j1")])
    assert plain.exit_code == 0, plain.output
    assert "keeps the bound calibrated without the anomaly rule" in " ".join(plain.output.split())
    fitted = runner.invoke(app, ["join", str(art), str(tmp_path / "anomaly"), "-o", str(tmp_path / "j2"),
                                 "--normals", str(ds)])
    assert fitted.exit_code == 0, fitted.output
    text = " ".join(fitted.output.split())
    assert "auto-normal route re-calibrated with the rule on" in text and "keeps the bound" not in text
    assert json.loads((tmp_path / "j2" / "inspection.json").read_text())["anomaly"]["normal_route"]["sites"] > 0


def test_missing_or_mismatched_parts_are_one_line_errors(trained, tmp_path):
    _, art = trained
    broken = tmp_path / "broken"
    shutil.copytree(art, broken, ignore=shutil.ignore_patterns("cache", "checkpoint.pt"))
    (broken / "weights.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ArtefactError, match=r"weights.safetensors: not a readable safetensors file"):
        load_artefact(broken)
    (broken / "weights.safetensors").unlink()
    with pytest.raises(ArtefactError, match=r"weights.safetensors: missing"):
        load_artefact(broken)
    shutil.copy(art / "weights.safetensors", broken / "weights.safetensors")
    m = json.loads((broken / "inspection.json").read_text())
    (broken / "inspection.json").write_text(json.dumps({**m, "format_version": 99}))
    with pytest.raises(ArtefactError, match=r"format version 99 is not supported"):
        load_artefact(broken)
    (broken / "inspection.json").write_text(json.dumps(m))
    (broken / "taxonomy.yaml").write_text((broken / "taxonomy.yaml").read_text().replace("  - short\n",
                                                                                         "  - short\n  - extra\n"))
    with pytest.raises(ArtefactError, match=r"weights do not match the model .*a different taxonomy.*size mismatch"):
        load_artefact(broken)
    with pytest.raises(ArtefactError, match=r"not found"):
        load_artefact(tmp_path / "nowhere")

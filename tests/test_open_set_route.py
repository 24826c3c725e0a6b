"""[long-tail] The open-set rule in the inspection path: calibrated at training, applied by predict on every backend."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from seminspect.decision import AUTO_ABNORMAL, REVIEW
from seminspect.inference.artefact import load_artefact
from seminspect.inference.inspector import Inspector
from seminspect.training.config import ADCConfig
from test_inference import make_shifted_dataset, tiny_config


def _config(ds: Path, out: Path, open_set: str | None) -> ADCConfig:
    cfg = tiny_config(ds, out).model_dump()
    cfg["triage"].update(open_set=open_set, target_precision=0.7, confidence=0.5)  # some auto calls on 50 sites
    return ADCConfig.model_validate(cfg)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    from seminspect.workflow import train_and_evaluate

    root = tmp_path_factory.mktemp("openset")
    ds = make_shifted_dataset(root / "ds", n=200)
    train_and_evaluate(_config(ds, root / "art", "mahalanobis"), log=None, report=False)
    return ds, root / "art"


def test_training_calibrates_the_rule_and_the_artefact_carries_it(trained):
    _, art = trained
    saved = json.loads((art / "thresholds.json").read_text())
    assert saved["open_set"]["class"] == "OpenSetTypeRule" and "open_set_error" not in saved
    rule = load_artefact(art).open_set
    assert rule.score == "mahalanobis" and rule.means_.shape[1] == 16  # the model's embedding width
    assert rule.known_rejection_rate_ <= 0.05 + 1e-9


def test_predict_applies_it_alike_on_torch_and_onnx_runtime(trained):
    ds, art = trained
    from seminspect.data.dataset import SampleDataset

    test = SampleDataset(ds).split("test")
    runs = {b: Inspector.load(art, threads=1, backend=b).inspect(test) for b in ("torch", "onnxruntime")}
    assert list(runs["torch"].route) == list(runs["onnxruntime"].route)
    unknown = {b: [r.startswith("unknown type") for r in runs[b].route_reason] for b in runs}
    assert unknown["torch"] == unknown["onnxruntime"]  # the scores agree to ~1e-3, not to the last digit
    # a rule that calls every site unknown sends every auto-abnormal site to review, saying why
    insp = Inspector.load(art, threads=1, backend="onnxruntime")
    before = insp.inspect(test)
    assert (before.route == AUTO_ABNORMAL).any()
    insp.artefact.open_set.threshold_ = np.inf
    after = insp.inspect(test)
    was = before.route == AUTO_ABNORMAL
    assert (after.route[was] == REVIEW).all() and (after.route[~was] == before.route[~was]).all()
    assert all(after.route_reason[i].startswith("unknown type: open-set score (mahalanobis)")
               for i in np.flatnonzero(was))
    assert (after.triage.type_decision[was] == -1).all()


def test_too_few_known_type_defects_leave_a_note_not_a_failure(tmp_path):
    from seminspect.workflow import train_and_evaluate

    ds = make_shifted_dataset(tmp_path / "ds", n=48)  # 12 calib sites: fewer than the rule's 20
    train_and_evaluate(_config(ds, tmp_path / "art", "max_softmax"), log=None, report=False)
    saved = json.loads((tmp_path / "art" / "thresholds.json").read_text())
    assert "open_set" not in saved and "too few" in saved["open_set_error"]
    loaded = load_artefact(tmp_path / "art")
    assert loaded.open_set is None and any("no open-set rule for types" in n for n in loaded.notes)

"""ADC options: k-fold split, hard-example weights, TTA, ensembles, cross-validation, head overrides."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from seminspect.data.batch import collate
from seminspect.data.dataset import SampleDataset
from seminspect.training.adc_trainer import predict_features, update_hardness
from seminspect.training.config import ADCConfig
from seminspect.training.feature_cache import PrepareSample, compute_features, dihedral
from seminspect.training.options import (
    average_predictions,
    cross_validate,
    fit_heads,
    predict_ensemble,
    stratified_kfold,
    train_ensemble,
)
from seminspect.training.sampler import class_keys
from test_adc import TAX, make_dataset, tiny_model


@pytest.fixture(scope="module")
def feats(tmp_path_factory):
    root = make_dataset(tmp_path_factory.mktemp("opt") / "ds", n=96)
    ds = SampleDataset(root)
    fs = compute_features(tiny_model().eval(), ds, TAX, PrepareSample(crop=None), ops=(0, 4))
    return root, ds, fs


def _cfg(root: Path, **train) -> ADCConfig:
    return ADCConfig.model_validate({
        "data": {"path": str(root)}, "image": {"crop": None}, "model": {"backbone": "tiny", "grid": 4, "dim": 16},
        "train": {"epochs": 25, "batch_size": 16, "lr": 0.01, "patience": 100, **train}, "threads": 1,
    })


def test_stratified_kfold_spreads_every_class_evenly():
    keys = np.array([0] * 23 + [1] * 7 + [2] * 12)
    fold = stratified_kfold(keys, 5, seed=3)
    assert set(fold.tolist()) == set(range(5))
    sizes = np.bincount(fold, minlength=5)
    assert sizes.max() - sizes.min() <= 1
    for k in (0, 1, 2):
        per = np.bincount(fold[keys == k], minlength=5)
        assert per.max() - per.min() <= 1
    np.testing.assert_array_equal(fold, stratified_kfold(keys, 5, seed=3))
    assert not np.array_equal(fold, stratified_kfold(keys, 5, seed=4))
    with pytest.raises(ValueError):
        stratified_kfold(keys, 1)


def test_hard_example_weights_follow_the_error():
    h = np.ones(4)
    # sample 0: abnormal, p=0.1 (confidently wrong); 1: normal, p=0.0 (right); 3 unlabelled
    update_hardness(h, np.array([0, 1, 3]), np.array([0.1, 0.0, 0.9]), np.array([1, 0, -1]))
    np.testing.assert_allclose(h, [0.5 + 0.5 * (1 + 4 * 0.9), 1.0, 1.0, 1.0])
    for _ in range(30):
        update_hardness(h, np.array([0, 1]), np.array([0.1, 0.0]), np.array([1, 0]))
    assert h[0] == pytest.approx(1 + 4 * 0.9, abs=1e-6) and h[1] == pytest.approx(1.0)


def test_tta_is_the_mean_of_synchronised_dihedral_predictions(feats):
    root, ds, fs = feats
    model = tiny_model().eval()
    idx = list(range(6))
    tta = predict_features(model, fs.subset(idx), ops=[0, 4])
    batch = collate([PrepareSample(crop=None)(ds[i]) for i in idx], TAX)
    with torch.no_grad():
        live = []
        for op in (0, 4):  # the same flip on every view (target and reference stay aligned)
            out = model(dihedral(batch.images, op), batch.roles, batch.indices, batch.view_mask)
            live.append(model.predict_proba(out)["abnormal"].numpy())
    np.testing.assert_allclose(tta["abnormal"], np.mean(live, 0), atol=2e-3)
    single = predict_features(model, fs.subset(idx), ops=[0])["abnormal"]
    assert not np.allclose(single, tta["abnormal"], atol=1e-4)


def test_ensemble_averages_differently_seeded_heads(feats):
    root, ds, fs = feats
    cfg = _cfg(root, epochs=3)
    train_fs, test_fs = fs.subset(range(0, 64)), fs.subset(range(64, 96))
    models, secs = train_ensemble(cfg, TAX, train_fs, None, n=2, base_seed=1)
    assert len(models) == 2 and secs > 0
    p = [predict_features(m, test_fs) for m in models]
    assert not np.allclose(p[0]["abnormal"], p[1]["abnormal"])
    ens = predict_ensemble(models, test_fs)
    np.testing.assert_allclose(ens["abnormal"], (p[0]["abnormal"] + p[1]["abnormal"]) / 2, rtol=1e-6)
    np.testing.assert_allclose(ens["types"].sum(1), 1.0, rtol=1e-5)
    assert set(average_predictions(p)["levels"]) == set(p[0]["levels"])


def test_fit_heads_overrides_and_cross_validation_learns(feats):
    root, ds, fs = feats
    cfg = _cfg(root)
    model, _ = fit_heads(cfg, TAX, fs.subset(range(8)), None, fusion="gru", hard_mining=True, epochs=1)
    assert model.fusion == "gru"
    model, _ = fit_heads(cfg, TAX, fs.subset(range(8)), None, level_features="independent", attention="cbam",
                         epochs=1)
    assert model.level_features == "independent" and model.cbam is not None
    with pytest.raises(ValueError):
        fit_heads(cfg, TAX, fs, None, no_such_option=1)
    cv = cross_validate(cfg, TAX, fs, k=3, seed=0)
    assert len(cv["folds"]) == 3
    assert sum(f["n"] for f in cv["folds"]) == len(fs)  # every sample held out exactly once
    assert cv["mean"]["auroc"] > 0.75  # chance 0.5 (0.83 measured with these settings)
    keys = class_keys(fs.is_abnormal.numpy(), fs.type_index.numpy())
    assert len(np.unique(keys)) == 7


def test_config_ranges_are_refused_before_any_work_naming_file_and_keys(tmp_path):
    import pytest
    import yaml

    from seminspect.training.config import ADCConfig, ConfigError

    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"data": {"path": "x"}, "train": {"batch_size": 0, "epochs": -3, "augment": [9]},
                                    "triage": {"target_precision": 1.5}}))
    with pytest.raises(ConfigError) as exc:
        ADCConfig.from_yaml(path)
    text = str(exc.value)
    assert "\n" not in text and text.startswith(f"{path}: ")
    for key in ("train.batch_size", "train.epochs", "train.augment.0", "triage.target_precision"):
        assert key in text, key

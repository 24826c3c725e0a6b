"""ADC training: learning beats chance, kill-and-resume, feature cache, CLI train/evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from seminspect.data.batch import collate
from seminspect.data.dataset import SampleDataset
from seminspect.evaluation.adc_evaluate import evaluate
from seminspect.training.adc_trainer import _stratified_holdout, predict_features, train_heads
from seminspect.training.config import ADCConfig
from seminspect.training.feature_cache import PrepareSample, compute_features, dihedral, load_features, save_features
from seminspect.training.sampler import ClassBalancedSampler, balanced_weights, class_keys
from seminspect.workflow import train_and_evaluate as train
from test_adc import TAX, make_dataset, make_sample, tiny_model


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("adc") / "ds", n=160)


def _cfg(ds: Path, out: Path, **train) -> ADCConfig:
    t = {"epochs": 40, "batch_size": 16, "lr": 0.01, **train}
    return ADCConfig.model_validate({
        "data": {"path": str(ds)}, "image": {"crop": None}, "model": {"backbone": "tiny", "grid": 4, "dim": 16},
        "train": t, "triage": {"min_train_samples": 5}, "output": str(out), "threads": 1,
    })


def test_feature_cache_equals_live_features(dataset, tmp_path):
    ds = SampleDataset(dataset).split("test")
    model = tiny_model().eval()
    fs = compute_features(model, ds, TAX, PrepareSample(crop=None), ops=(0, 5), batch_size=7)
    save_features(fs, tmp_path / "f.safetensors")
    fs2 = load_features(tmp_path / "f.safetensors")
    assert fs2 is not None and fs2.sample_ids == fs.sample_ids and fs2.ops == [0, 5]
    prep = PrepareSample(crop=None)
    batch = collate([prep(ds[i]) for i in range(5)], TAX)
    with torch.no_grad():
        live = model(batch)
        live5 = model(dihedral(batch.images, 5), batch.roles, batch.indices, batch.view_mask)
        idx = torch.arange(5)
        cached = model.forward_features(fs2.feats[0, idx], fs2.roles[idx], fs2.indices[idx], fs2.view_mask[idx])
        cached5 = model.forward_features(fs2.feats[1, idx], fs2.roles[idx], fs2.indices[idx], fs2.view_mask[idx])
    # float16 storage: agreement to ~1e-3 relative
    torch.testing.assert_close(cached["abnormal_logit"], live["abnormal_logit"], atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(cached5["type_logits"], live5["type_logits"], atol=2e-3, rtol=2e-3)
    assert not torch.allclose(live["type_logits"], live5["type_logits"])


def test_features_do_not_depend_on_batch_neighbours_of_another_size():
    # Mixed-size data (DeepPCB patches): collate pads a batch to its largest view, which would
    # change the pooled features of the smaller samples; encoding groups equal sizes instead.
    rng = np.random.default_rng(0)
    samples = [make_sample(i, rng, size=48 if i % 3 else 64) for i in range(9)]
    model = tiny_model().eval()
    batched = compute_features(model, samples, TAX, None, ops=(0,), batch_size=4)
    alone = compute_features(model, samples, TAX, None, ops=(0,), batch_size=1)
    assert batched.sample_ids == alone.sample_ids == [s.sample_id for s in samples]
    torch.testing.assert_close(batched.feats, alone.feats)
    assert torch.equal(batched.type_index, alone.type_index)


def test_training_beats_chance_and_writes_artefact(dataset, tmp_path):
    result = train(_cfg(dataset, tmp_path / "run"), log=None)
    m = result.metrics["test"]
    assert m["auroc"] > 0.9  # chance is 0.5
    assert m["type_accuracy"] > 0.5  # chance is 1/6
    assert m["level_accuracy"]["family"] >= m["type_accuracy"] - 1e-9
    for name in ("weights.safetensors", "config.yaml", "thresholds.json", "metrics.json", "taxonomy.yaml"):
        assert (tmp_path / "run" / name).is_file()
    th = json.loads((tmp_path / "run" / "thresholds.json").read_text())
    assert "precision_threshold" in th
    # the saved artefact reproduces the in-memory model
    again = evaluate(tmp_path / "run", dataset, split="test")
    assert again["auroc"] == pytest.approx(m["auroc"], abs=1e-6)
    assert again["type_accuracy"] == pytest.approx(m["type_accuracy"], abs=1e-6)


def test_kill_and_resume_equals_uninterrupted(dataset, tmp_path):
    ds = SampleDataset(dataset).split("train")
    cfg = _cfg(dataset, tmp_path, epochs=6, patience=100, hard_mining=True)
    base = tiny_model()
    fs = compute_features(base, ds, TAX, PrepareSample(crop=None), ops=(0, 4))
    keys = class_keys(fs.is_abnormal.numpy(), fs.type_index.numpy())
    tr, va = _stratified_holdout(keys, 0.2, 0)
    train_fs, val_fs = fs.subset(tr), fs.subset(va)

    torch.manual_seed(123)
    a = tiny_model()
    train_heads(a, train_fs, val_fs, cfg, checkpoint=tmp_path / "a.pt")

    torch.manual_seed(123)
    b = tiny_model()
    train_heads(b, train_fs, val_fs, cfg, checkpoint=tmp_path / "b.pt", stop_after=2)  # "killed" after 2 epochs
    torch.manual_seed(999)  # the restarted process has other RNG state
    b2 = tiny_model()
    hist = train_heads(b2, train_fs, val_fs, cfg, checkpoint=tmp_path / "b.pt")
    assert len(hist.epochs) == 6
    for (k, va_), (_, vb) in zip(a.state_dict().items(), b2.state_dict().items(), strict=True):
        torch.testing.assert_close(va_, vb, msg=k)
    pa = predict_features(a, val_fs)
    pb = predict_features(b2, val_fs)
    np.testing.assert_allclose(pa["abnormal"], pb["abnormal"], rtol=1e-6)


def test_checkpoint_is_weights_only_and_restores_every_rng(tmp_path):
    import random

    from seminspect.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

    model = torch.nn.Linear(3, 2)
    torch.manual_seed(5)
    np.random.seed(6)  # noqa: NPY002
    random.seed(7)
    np.random.normal()  # noqa: NPY002  (a cached Gaussian is part of numpy's state)
    save_checkpoint(tmp_path / "c.pt", model, epoch=3, extra={"hardness": torch.ones(4), "note": "x"})
    expected = (torch.rand(3), np.random.rand(3), random.random())  # noqa: NPY002
    torch.manual_seed(0)
    np.random.seed(0)  # noqa: NPY002
    random.seed(0)
    torch.load(tmp_path / "c.pt", weights_only=True)  # no pickled objects in the file
    info = load_checkpoint(tmp_path / "c.pt", torch.nn.Linear(3, 2))
    assert info["epoch"] == 3 and info["extra"]["note"] == "x"
    torch.testing.assert_close(torch.rand(3), expected[0])
    np.testing.assert_array_equal(np.random.rand(3), expected[1])  # noqa: NPY002
    assert random.random() == expected[2]

    torch.save({"model": model.state_dict(), "extra": {"obj": _Pickled()}}, tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match="old.pt: cannot read checkpoint"):
        load_checkpoint(tmp_path / "old.pt", model)


class _Pickled:
    """An arbitrary object: a file holding one is refused by ``weights_only=True`` loading."""


def test_class_balanced_sampler_balances_and_is_deterministic():
    keys = class_keys([0] * 90 + [1] * 10, [-1] * 90 + [0] * 5 + [1] * 5)
    w = balanced_weights(keys, power=1.0, abnormal_share=0.5)
    assert w[keys == 0].sum() == pytest.approx(0.5)
    assert w[keys == 1].sum() == pytest.approx(0.25)
    s = ClassBalancedSampler(keys, num_samples=4000, power=1.0, seed=3)
    draws = np.array(list(s))
    assert abs((keys[draws] == 0).mean() - 0.5) < 0.04
    s.set_epoch(0)
    assert list(s) == list(ClassBalancedSampler(keys, num_samples=4000, power=1.0, seed=3))


def test_cli_train_and_evaluate(dataset, tmp_path):
    import yaml
    from typer.testing import CliRunner

    from seminspect.cli import app

    cfg = _cfg(dataset, tmp_path / "art", epochs=5).model_dump(mode="json")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    runner = CliRunner()
    res = runner.invoke(app, ["train", str(tmp_path / "c.yaml")])
    assert res.exit_code == 0, res.output
    assert "artefact:" in res.output and (tmp_path / "art" / "weights.safetensors").is_file()
    res = runner.invoke(app, ["evaluate", str(tmp_path / "art"), str(dataset), "--drop-role", "reference",
                              "--report", str(tmp_path / "r.html")])
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "r.json").read_text())
    assert m["n"] == 40
    res = runner.invoke(app, ["evaluate", str(tmp_path / "nope"), str(dataset)])
    assert res.exit_code != 0


def test_finetune_updates_only_the_last_backbone_stages(dataset, tmp_path):
    from seminspect.training.adc_trainer import finetune

    ds = SampleDataset(dataset).split("train").subset(SampleDataset(dataset).split("train").sample_ids[:16])
    cfg = _cfg(dataset, tmp_path, finetune_epochs=1, finetune_stages=1, batch_size=64)
    model = tiny_model()
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    seconds = finetune(model, ds, cfg, TAX, PrepareSample(crop=None))
    assert seconds > 0
    after = model.backbone.state_dict()
    assert torch.equal(before["stages.0.0.weight"], after["stages.0.0.weight"])  # frozen stage
    assert not torch.equal(before["stages.2.0.weight"], after["stages.2.0.weight"])  # fine-tuned stage
    assert not any(p.requires_grad for p in model.backbone.parameters())  # frozen again afterwards
    # BatchNorm running statistics stay fixed while fine-tuning (small batches, frozen stages)
    for k in ("stages.0.1.running_mean", "stages.2.1.running_var"):
        assert torch.equal(before[k], after[k]), k


def test_finetune_keeps_the_best_validation_epoch(dataset, tmp_path):
    from seminspect.training.adc_trainer import _val_loss_live, finetune, make_loss

    full = SampleDataset(dataset).split("train")
    tr, va = full.subset(full.sample_ids[:16]), full.subset(full.sample_ids[16:32])
    # a learning rate so large that fine-tuning only makes the validation loss worse
    cfg = _cfg(dataset, tmp_path, finetune_epochs=2, finetune_stages=3, batch_size=64, backbone_lr=50.0, lr=500.0)
    model = tiny_model()
    prep = PrepareSample(crop=None)
    start = _val_loss_live(model, va, cfg, TAX, prep, make_loss(cfg))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    finetune(model, tr, cfg, TAX, prep, val_ds=va)
    end = _val_loss_live(model, va, cfg, TAX, prep, make_loss(cfg))
    assert end <= start + 1e-6
    if end == pytest.approx(start, abs=1e-6):  # no epoch improved: the warm-start weights are back
        for k, v in before.items():
            torch.testing.assert_close(model.state_dict()[k], v, msg=k)


def test_configs_from_before_the_ensemble_field_was_retired_still_load():
    # Artefacts written before `train.ensemble` was removed carry `ensemble: 1` in config.yaml;
    # load_artefact must still read them. A value other than 1 asked for something never applied.
    from pydantic import ValidationError

    new = ADCConfig.model_validate({"data": {"path": "data"}})
    old = new.model_dump()
    old["train"]["ensemble"] = 1
    assert ADCConfig.model_validate(old).train == new.train
    old["train"]["ensemble"] = 3
    with pytest.raises(ValidationError, match="no longer supported"):
        ADCConfig.model_validate(old)

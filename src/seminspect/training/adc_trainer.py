"""ADC training: encode, train the heads, optionally fine-tune, calibrate, write the inspection artefact.

    from seminspect.training.adc_trainer import train
    result = train("configs/adc_demo.yaml")     # -> folder with weights, config, taxonomy, thresholds

Schedule: (1) frozen backbone: view features are encoded once (:mod:`feature_cache`) and the heads
train on them (:mod:`heads`); (2) optional fine-tuning of the last backbone stages on images
(:mod:`finetune`); (3) the decision layer is calibrated on the ``calib`` split (:mod:`calibration`).
Training writes artefacts and never scores a test split: evaluation runs the inference path on the
artefact (:func:`seminspect.evaluation.evaluate`; :func:`seminspect.pipeline.train_and_evaluate`
does both). Seeded; a checkpoint after every epoch lets a killed run resume.

Under ``torchrun`` (``WORLD_SIZE > 1``) the same call runs in every process: it joins the process
group, the model is wrapped in DistributedDataParallel while it trains, each global batch is split
between the processes, and rank 0 alone writes the cache, checkpoints and artefact
(:mod:`seminspect.training.distributed`; docs/distributed.md).
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seminspect.data.dataset import SampleDataset
from seminspect.data.fingerprint import dataset_fingerprint, file_identity
from seminspect.data.model_inputs import describe_dataset
from seminspect.data.prepare import PrepareSample
from seminspect.data.taxonomy import Taxonomy
from seminspect.errors import SeminspectError
from seminspect.models.adc import MultiViewADC
from seminspect.models.adc_features import FeatureSet, compute_features, predict_features
from seminspect.models.adc_spec import build_adc, make_prepare
from seminspect.models.artefact import ArtefactError, write_adc_artefact
from seminspect.training import distributed as dist
from seminspect.training.calibration import calibrate
from seminspect.training.config import ADCConfig, ConfigError
from seminspect.training.feature_cache import cache_key, load_cached_features, save_features
from seminspect.training.finetune import _val_loss_live, finetune
from seminspect.training.heads import (
    History,
    _stratified_holdout,
    freeze_backbone,
    make_loss,
    memberships,
    split_validation,
    train_heads,
    update_hardness,
)
from seminspect.utils.io import atomic_write_json, finite_json
from seminspect.utils.leftovers import remove_leftover_temps
from seminspect.utils.seed import seed_everything

__all__ = ["ArtefactError", "History", "TrainResult", "_stratified_holdout", "_val_loss_live", "build_model",
           "calibrate", "features_for", "finetune", "freeze_backbone", "limit_train", "make_loss", "memberships",
           "open_dataset", "predict_features", "prepare_for", "save_artefact", "split_or_none", "split_validation",
           "train", "train_heads", "update_hardness"]


def build_model(cfg: ADCConfig, taxonomy: Taxonomy, pretrained: bool | None = None) -> MultiViewADC:
    return build_adc(cfg.model, taxonomy, pretrained)


def prepare_for(cfg: ADCConfig) -> PrepareSample:
    return make_prepare(cfg.image)


def limit_train(train_ds: SampleDataset, max_train: int | None, seed: int) -> SampleDataset:
    """At most ``max_train`` samples of ``train_ds``: a seeded random choice, kept in dataset order."""
    if not max_train or len(train_ds) <= max_train:
        return train_ds
    rng = np.random.default_rng(seed)
    chosen = rng.choice(train_ds.sample_ids, max_train, replace=False).tolist()
    return train_ds.subset(sorted(chosen, key=train_ds.sample_ids.index))


def open_dataset(path: str | Path, roles: Sequence[str] | None = None) -> SampleDataset:
    return SampleDataset(path, roles=roles)


def split_or_none(ds: SampleDataset, name: str | None) -> SampleDataset | None:
    if not name or name not in set(ds.metadata_column("split")):
        return None
    return ds.split(name)


def _labels(ds: SampleDataset) -> tuple[torch.Tensor, torch.Tensor]:
    tax = ds.taxonomy
    types = [tax.leaf_index(t) if t else -1 for t in ds.defect_types]  # as collate() does
    return torch.from_numpy(ds.is_abnormal.astype(np.int64)), torch.as_tensor(types, dtype=torch.int64)


def features_for(model: MultiViewADC, ds: SampleDataset, cfg: ADCConfig, ops: Sequence[int],
                 cache_dir: str | Path | None, description: str,
                 log: Callable[[str], None] | None = None, jitter: bool = False) -> FeatureSet:
    """Encode a dataset's views (reusing an on-disk cache when the backbone is the pretrained one).

    ``jitter`` (the training split): with ``train.window_jitter`` > 0, every op is encoded a second time
    from windows moved by the jitter, as slices ``op + 8`` after the unmoved ones.

    The cache is reused only for the same sites and image files (their sizes and modification
    times) it was computed from; otherwise it is re-encoded and ``log`` (default: stderr) gets one
    line saying why. Labels always come from the manifest as it is now, never from the cache: a
    corrected label takes effect without re-encoding.
    """
    parts = {"image": cfg.image.model_dump(), "backbone": cfg.model.backbone, "pretrained": cfg.model.pretrained,
             "weights": cfg.model.weights_path, "out": cfg.model.out_indices, "grid": cfg.model.grid,
             "pool": cfg.model.pool,
             "ops": list(ops), "roles": sorted(r.value for r in ds.roles) if ds.roles else None}
    if cfg.model.weights_path:  # weights replaced in place give other features
        parts["weights_file"] = file_identity(cfg.model.weights_path)
    moved = None
    if jitter and cfg.train.window_jitter:
        parts["jitter"] = [cfg.train.window_jitter, cfg.seed]
        moved = make_prepare(cfg.image, cfg.train.window_jitter, cfg.seed)
    path = fingerprint = None
    if cache_dir is not None and cfg.model.pretrained:
        path = Path(cache_dir) / f"feats_{cache_key(ds.root, ds.sample_ids, parts)}.safetensors"
        fingerprint = dataset_fingerprint(ds)
        fs = load_cached_features(path, ds.sample_ids, fingerprint, log or _stderr)
        if fs is not None:
            fs.is_abnormal, fs.type_index = _labels(ds)
            return fs
    fs = compute_features(model, ds, ds.taxonomy, prepare_for(cfg), ops=ops, batch_size=cfg.train.encode_batch,
                          resize=cfg.image.resize, description=description, moved=moved)
    if path is not None:
        save_features(fs, path, fingerprint)
    return fs


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class TrainResult:
    artefact: Path
    metrics: dict[str, Any]
    model: MultiViewADC
    history: History
    # per split: predictions (abnormal, types, levels, embedding) plus ``is_abnormal`` / ``type_index`` labels;
    # filled by seminspect.pipeline.train_and_evaluate for the test split
    predictions: dict[str, dict[str, Any]] = field(default_factory=dict)


def _ensure_data(cfg: ADCConfig) -> None:
    path = Path(cfg.data.path)
    if path.exists() or cfg.data.generate is None:
        if not path.exists():
            raise ConfigError(f"data.path {path}: dataset folder not found (and no data.generate section)")
        return
    from seminspect.data.synth import FabConfig, generate_dataset

    g = cfg.data.generate
    generate_dataset(path, g.n_samples, FabConfig(**g.fab), abnormal_fraction=g.abnormal_fraction, seed=g.seed,
                     splits=g.splits)


def train(config: ADCConfig | str | Path, output: str | Path | None = None,
          log: Callable[[str], None] | None = print) -> TrainResult:
    """Train, calibrate on the ``calib`` split and write one inspection artefact folder.

    The folder holds ``inspection.json`` (format, version, parts), ``weights.safetensors``,
    ``config.yaml``, ``taxonomy.yaml``, ``thresholds.json`` (precision threshold + triage policy),
    ``metrics.json`` (training figures) and ``history.json``.

    Under torchrun every process calls this; rank 0 writes the folder (the others return the same
    metrics once it is written) and only rank 0 calls ``log``.
    """
    cfg = config if isinstance(config, ADCConfig) else ADCConfig.from_yaml(config)
    distributed = dist.init()
    if not dist.is_main():
        log = None
    out = Path(output or cfg.output)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: the output folder is a file")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _train(cfg, out, log, distributed)
    except SeminspectError:
        # A refused run leaves nothing behind in a folder it created (not even the folder); a folder
        # it found keeps what was there (a feature cache or checkpoint it wrote stays reusable).
        if created and dist.is_main():
            shutil.rmtree(out, ignore_errors=True)
        raise


def _train(cfg: ADCConfig, out: Path, log: Callable[[str], None] | None, distributed: bool) -> TrainResult:
    """The body of :func:`train` in the output folder ``out`` (which exists)."""
    if dist.is_main():  # temporary files of a killed run (a checkpoint or cache half written)
        remove_leftover_temps(out)
        remove_leftover_temps(cfg.train.cache_dir or (out / "cache"))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    elif distributed:
        torch.set_num_threads(dist.default_threads())
    if distributed:
        _check_world(cfg)
        if log:
            log(f"distributed: {dist.world_size()} processes, {torch.get_num_threads()} torch threads each")
    seed_everything(cfg.seed)
    # A missing virtual fab is generated by rank 0, then by local rank 0 of any machine that does not
    # see it (no shared disk); the other processes wait and read it.
    dist.on_main(lambda: _ensure_data(cfg))
    dist.writers_first(lambda: _ensure_data(cfg))
    ds = open_dataset(cfg.data.path, cfg.data.roles)
    taxonomy = ds.taxonomy
    train_ds = limit_train(ds.split(cfg.data.train_split), cfg.data.max_train, cfg.seed)
    val_ds = split_or_none(ds, cfg.data.val_split)
    model = build_model(cfg, taxonomy)
    cache_dir = cfg.train.cache_dir or (out / "cache")
    t0 = time.perf_counter()
    train_fs = _features(model, train_ds, cfg, cfg.train.augment, cache_dir, "encoding train views", log, jitter=True)
    if val_ds is None:
        train_fs, val_fs = split_validation(train_fs, cfg.data.val_fraction, cfg.seed)
    else:
        val_fs = _features(model, val_ds, cfg, [0], cache_dir, "encoding val views", log)
    encode_s = time.perf_counter() - t0
    # the image files the heads train and validate on: a checkpoint from other files is not resumed
    images = [dataset_fingerprint(d)["image files"] for d in (train_ds, val_ds) if d is not None]
    hist = train_heads(model, train_fs, val_fs, cfg, checkpoint=out / "checkpoint.pt", log=log,
                       inputs=":".join(images))
    # Fine-tuning never sees the validation sites (they choose its best epoch instead).
    if val_ds is None:
        held = set(val_fs.sample_ids)
        ft_train = train_ds.subset([i for i in train_ds.sample_ids if i not in held])
        ft_val = train_ds.subset(val_fs.sample_ids)
    else:
        ft_train, ft_val = train_ds, val_ds
    ft_s = finetune(model, ft_train, cfg, taxonomy, prepare_for(cfg), log=log, val_ds=ft_val,
                    checkpoint=out / "finetune.pt")
    if not dist.same_everywhere(model) and log:  # DDP keeps the replicas equal; this would be a bug
        log("warning: the processes ended with different weights; rank 0's are written")
    # what the model trains on (view layout, view sizes): evaluate and predict refuse other data
    metrics = dist.on_main(lambda: _finish(model, cfg, out, ds, train_fs, val_fs, hist, encode_s, ft_s, log,
                                           describe_dataset([train_ds, val_ds])))
    return TrainResult(out, metrics, model, hist)


def _features(model: MultiViewADC, ds: SampleDataset, cfg: ADCConfig, ops: Sequence[int],
              cache_dir: str | Path | None, description: str, log: Callable[[str], None] | None,
              jitter: bool = False) -> FeatureSet:
    """:func:`features_for` in every process: with a cache, its writer encodes first and the others read it."""
    if cache_dir is None or not cfg.model.pretrained or not dist.active():
        return features_for(model, ds, cfg, ops, cache_dir, description, log, jitter)
    return dist.writers_first(lambda: features_for(model, ds, cfg, ops, cache_dir, description, log, jitter))


def _check_world(cfg: ADCConfig) -> None:
    """One line error, before any work, when a batch cannot give each process a sample."""
    dist.check_share(cfg.train.batch_size, "train.batch_size")
    if cfg.train.finetune_epochs > 0:
        dist.check_share(max(2, cfg.train.batch_size // 8), "a fine-tuning batch (train.batch_size // 8, at least 2)")


def _finish(model: MultiViewADC, cfg: ADCConfig, out: Path, ds: SampleDataset, train_fs: FeatureSet,
            val_fs: FeatureSet, hist: History, encode_s: float, ft_s: float,
            log: Callable[[str], None] | None = None, inputs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Calibrate and write the artefact, metrics and history (rank 0 only under torchrun); returns the metrics."""
    taxonomy = ds.taxonomy
    cache_dir = cfg.train.cache_dir or (out / "cache")
    ab, ti = train_fs.is_abnormal.numpy(), train_fs.type_index.numpy()
    type_counts = np.bincount(ti[(ab == 1) & (ti >= 0)], minlength=taxonomy.num_leaves)
    # Calibration features: recomputed when the backbone was fine-tuned.
    feat_cache = cache_dir if cfg.train.finetune_epochs == 0 else None
    calib_ds = split_or_none(ds, cfg.data.calib_split)
    thresholds: dict[str, Any] = {}
    if calib_ds is not None:
        cfs = features_for(model, calib_ds, cfg, cfg.train.tta, feat_cache, "encoding calib views", log)
        cp = predict_features(model, cfs, cfg.train.tta)
        train_emb = None
        if cfg.triage.open_set == "mahalanobis":  # the training defects' embeddings set the type means
            ops = [op for op in cfg.train.tta if op in train_fs.ops] or None
            train_emb = (predict_features(model, train_fs, ops)["embedding"], np.where(ab == 1, ti, -1))
        thresholds = calibrate(cp["abnormal"], cfs.is_abnormal.numpy(), cp["types"], cfs.type_index.numpy(),
                               type_counts, cfg, taxonomy.leaves, embeddings=cp["embedding"],
                               train_embeddings=train_emb)
    thresholds["type_train_counts"] = type_counts.tolist()
    splits = {name: len(s) for name, s in (("train", train_fs), ("val", val_fs)) if s is not None}
    if calib_ds is not None:
        splits["calib"] = len(calib_ds)
    metrics: dict[str, Any] = {"train_samples": len(train_fs), "val_samples": len(val_fs),
                               "calib_samples": splits.get("calib", 0),
                               "encode_seconds": encode_s, "train_seconds": hist.seconds, "finetune_seconds": ft_s,
                               "best_epoch": hist.best_epoch, "epochs_run": len(hist.epochs)}
    if dist.active():
        metrics["world_size"] = dist.world_size()
    save_artefact(model, cfg, out, taxonomy, thresholds, provenance={"dataset": str(cfg.data.path),
                                                                      "splits": splits}, inputs=inputs)
    atomic_write_json(out / "metrics.json", finite_json(metrics))
    atomic_write_json(out / "history.json", hist.epochs)
    return metrics


def save_artefact(model: MultiViewADC, cfg: ADCConfig, out: Path, taxonomy: Taxonomy,
                  thresholds: dict[str, Any] | None = None, provenance: dict[str, Any] | None = None,
                  inputs: dict[str, Any] | None = None) -> None:
    """Write the ADC part of an inspection artefact (see :mod:`seminspect.models.artefact`).

    ``inputs``: what the model was trained on (:func:`seminspect.data.model_inputs.describe_dataset`).
    """
    write_adc_artefact(out, model, cfg.model_dump(mode="json"), taxonomy, thresholds, provenance, inputs)

"""Training options measured against the plain model: ensembles, TTA, k-fold cross-validation.

All work on cached frozen-backbone features (:class:`~seminspect.training.feature_cache.FeatureSet`),
so each variant costs seconds of head training, not an hour of encoding:

* :func:`fit_heads` -- fresh heads (new seed, optional model/train overrides such as
  ``fusion="gru"`` or ``hard_mining=True``) trained on cached features.
* :func:`train_ensemble` / :func:`average_predictions` -- ``n`` independently seeded heads whose
  probabilities are averaged.
* test-time augmentation is :func:`~seminspect.training.adc_trainer.predict_features` with
  several cached dihedral ops (the same flip/rotation applied to every view of a site).
* :func:`stratified_kfold` / :func:`cross_validate` -- k-fold estimates for small datasets,
  stratified by class key (normal / each defect type).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from seminspect.data.taxonomy import Taxonomy
from seminspect.evaluation.adc_metrics import compute_metrics
from seminspect.models.adc import MultiViewADC
from seminspect.training.adc_trainer import build_model, predict_features, split_validation, train_heads
from seminspect.training.config import ADCConfig
from seminspect.training.feature_cache import FeatureSet
from seminspect.training.sampler import class_keys


def fit_heads(cfg: ADCConfig, taxonomy: Taxonomy, train_fs: FeatureSet, val_fs: FeatureSet | None,
              seed: int = 0, **overrides: Any) -> tuple[MultiViewADC, float]:
    """Fresh heads trained on cached features; returns ``(model, head-training seconds)``.

    ``overrides`` set fields of ``cfg.model`` (e.g. ``fusion``) or ``cfg.train`` (e.g.
    ``hard_mining``) by name; an unknown name raises ``ValueError``.
    """
    c = cfg.model_copy(deep=True)
    for k, v in overrides.items():
        if k in type(c.model).model_fields:
            setattr(c.model, k, v)
        elif k in type(c.train).model_fields:
            setattr(c.train, k, v)
        else:
            raise ValueError(f"unknown model/train option {k!r}")
    c.seed = seed
    torch.manual_seed(seed)
    model = build_model(c, taxonomy)
    t0 = time.perf_counter()
    train_heads(model, train_fs, val_fs, c)
    return model, time.perf_counter() - t0


def average_predictions(preds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean of several :func:`predict_features` outputs (probabilities averaged, then re-used as is)."""
    if not preds:
        raise ValueError("no predictions to average")
    out: dict[str, Any] = {k: np.mean([p[k] for p in preds], 0) for k in ("abnormal", "types", "embedding")
                           if k in preds[0]}
    out["levels"] = {k: np.mean([p["levels"][k] for p in preds], 0) for k in preds[0].get("levels", {})}
    return out


def train_ensemble(cfg: ADCConfig, taxonomy: Taxonomy, train_fs: FeatureSet, val_fs: FeatureSet | None,
                   n: int, base_seed: int = 1, **overrides: Any) -> tuple[list[MultiViewADC], float]:
    """``n`` heads with seeds ``base_seed .. base_seed + n - 1``; returns ``(models, total seconds)``."""
    models, secs = [], 0.0
    for k in range(n):
        m, s = fit_heads(cfg, taxonomy, train_fs, val_fs, seed=base_seed + k, **overrides)
        models.append(m)
        secs += s
    return models, secs


def predict_ensemble(models: Sequence[MultiViewADC], fs: FeatureSet, ops: Sequence[int] | None = None
                     ) -> dict[str, Any]:
    """Averaged probabilities of several heads (optionally also averaged over TTA ops)."""
    return average_predictions([predict_features(m, fs, ops) for m in models])


def stratified_kfold(keys: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Fold id ``(N,)`` in ``0..k-1`` per sample; every class key is spread evenly over the folds.

    Within a key the samples are shuffled (seeded) and dealt round-robin, starting at a fold
    that rotates from key to key, so fold sizes differ by at most one overall as well.
    """
    keys = np.asarray(keys)
    if k < 2:
        raise ValueError(f"k-fold needs k >= 2, got {k}")
    if len(keys) < k:
        raise ValueError(f"{len(keys)} samples cannot be split into {k} folds")
    rng = np.random.default_rng(seed)
    fold = np.empty(len(keys), dtype=np.int64)
    offset = 0
    for key in np.unique(keys):
        idx = np.flatnonzero(keys == key)
        rng.shuffle(idx)
        fold[idx] = (np.arange(len(idx)) + offset) % k
        offset += len(idx)
    return fold


def cross_validate(cfg: ADCConfig, taxonomy: Taxonomy, fs: FeatureSet, k: int = 5, seed: int = 0,
                   val_fraction: float = 0.15, metric_keys: Sequence[str] = ("auroc", "type_macro_f1")
                   ) -> dict[str, Any]:
    """k-fold cross-validation of fresh heads on one cached set (e.g. the whole train split).

    Each fold trains on the other ``k - 1`` folds (minus a stratified ``val_fraction`` for early
    stopping) and is scored on its held-out fold with the identity view. Returns
    ``{"folds": [metrics...], "mean": {key: m}, "std": {key: s}, "seconds": t, "models": [k heads],
    "fold": (N,) fold ids}`` (the k fold models can be averaged on new data as an ensemble).
    """
    keys = class_keys(fs.is_abnormal.numpy(), fs.type_index.numpy())
    fold = stratified_kfold(keys, k, seed)
    results, models, t0 = [], [], time.perf_counter()
    for f in range(k):
        trn, hold = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
        fit_fs, val = split_validation(fs.subset(trn), val_fraction, seed + f)
        model, _ = fit_heads(cfg, taxonomy, fit_fs, val, seed=seed + f)
        held = fs.subset(hold)
        pred = predict_features(model, held, held.ops[:1])
        results.append(compute_metrics(pred, (held.is_abnormal.numpy(), held.type_index.numpy()), taxonomy))
        models.append(model)
    mean = {m: float(np.nanmean([r.get(m, np.nan) for r in results])) for m in metric_keys}
    std = {m: float(np.nanstd([r.get(m, np.nan) for r in results])) for m in metric_keys}
    return {"folds": results, "mean": mean, "std": std, "seconds": time.perf_counter() - t0, "models": models,
            "fold": fold}

"""Shared helpers of the ADC benchmarks: train on cached features, head-only variants, result tables."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from seminspect.evaluation.adc_metrics import compute_metrics
from seminspect.training.adc_trainer import (
    build_model,
    features_for,
    open_dataset,
    predict_features,
    split_or_none,
    split_validation,
)
from seminspect.training.config import ADCConfig
from seminspect.training.feature_cache import FeatureSet
from seminspect.training.options import fit_heads  # noqa: F401  (re-exported for the benchmark scripts)

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_env  # noqa: E402


def machine() -> str:
    """The CPU model, core count and the load when called (result files call it at the end)."""
    return f"{bench_env.machine()}; load average at end {bench_env.load()}"


def cached_splits(cfg: ADCConfig, cache_dir: Path) -> dict[str, Any]:
    """Model (fresh heads) and cached features of train (minus val), val, calib and test."""
    ds = open_dataset(cfg.data.path, cfg.data.roles)
    tax = ds.taxonomy
    model = build_model(cfg, tax)
    out: dict[str, Any] = {"taxonomy": tax, "model": model}
    t0 = time.perf_counter()
    tr = features_for(model, ds.split(cfg.data.train_split), cfg, cfg.train.augment, cache_dir, "train")
    out["train_all"] = tr
    out["train"], out["val"] = split_validation(tr, cfg.data.val_fraction, cfg.seed)
    for name, split in (("calib", cfg.data.calib_split), ("test", cfg.data.test_split)):
        sds = split_or_none(ds, split)
        out[name] = None if sds is None else features_for(model, sds, cfg, cfg.train.tta, cache_dir, name)
    out["encode_seconds"] = time.perf_counter() - t0
    return out


def metrics_of(model: Any, fs: FeatureSet, tax: Any, ops: list[int] | None = None,
               preds: dict | None = None) -> dict[str, Any]:
    p = preds if preds is not None else predict_features(model, fs, ops)
    return compute_metrics(p, (fs.is_abnormal.numpy(), fs.type_index.numpy()), tax)


def row(name: str, m: dict[str, Any], seconds: float | None = None, note: str = "") -> str:
    rap = m.get("recall_at_precision", {})
    rb = m.get("recall_at_precision_bound", {})
    lo, hi = rap.get("recall_ci", (float("nan"), float("nan")))
    return (f"| {name} | {m.get('auroc', float('nan')):.4f} | {rap.get('recall', 0):.3f} [{lo:.3f}, {hi:.3f}] | "
            f"{rap.get('precision_lower_bound', float('nan')):.3f} | {rb.get('recall', 0):.3f} | "
            f"{m.get('type_macro_f1', float('nan')):.3f} | {m.get('type_accuracy', float('nan')):.3f} | "
            f"{'' if seconds is None else f'{seconds:.1f}'} | {note} |")


HEADER = ("| variant | AUROC | recall @ precision >= 99 % [95 % CI] | precision lower bound (95 %) at that point | "
          "recall where the precision lower bound >= 99 % | type macro-F1 | type accuracy | head training s | note |\n"
          "|---|---|---|---|---|---|---|---|---|")

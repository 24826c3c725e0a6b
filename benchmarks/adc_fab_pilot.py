"""Pilot of the virtual-fab ADC benchmark: head variants on an already-encoded dataset.

    nice -n 10 python benchmarks/adc_fab_pilot.py CONFIG DATA CACHE_DIR [variant ...]

Encodes (or loads from ``CACHE_DIR``) the frozen-backbone features of the train / test splits of
``DATA`` with ``CONFIG``'s image and model settings, then trains fresh heads per variant and prints
one table row each. Variants: ``all`` (every view), ``nozoom`` (zoom views removed in train and
test), ``noref`` (reference views removed in train and test), ``train<N>`` (a stratified
subsample of N training sites, all views), and combinations joined by ``+`` (``nozoom+train380``).
Used to find out why the old 192 px benchmark was so much worse than the main job (see
benchmarks/results/adc_virtual_fab.md).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from adc_common import fit_heads, metrics_of  # noqa: E402

from seminspect.training.adc_trainer import (  # noqa: E402
    _stratified_holdout,
    build_model,
    features_for,
    open_dataset,
    split_validation,
)
from seminspect.training.config import ADCConfig  # noqa: E402
from seminspect.training.feature_cache import FeatureSet  # noqa: E402
from seminspect.training.sampler import class_keys  # noqa: E402

ROLE_CODE = {"ref": 1, "zoom": 2}


def _keys(fs: FeatureSet) -> np.ndarray:
    return class_keys(fs.is_abnormal.numpy(), fs.type_index.numpy())


def run_variant(cfg: ADCConfig, tax, train_all: FeatureSet, test: FeatureSet, variant: str) -> dict:
    tr, te = train_all, test
    for part in variant.split("+"):
        if part.startswith("no") and part[2:] in ROLE_CODE:
            tr, te = tr.drop_role(ROLE_CODE[part[2:]]), te.drop_role(ROLE_CODE[part[2:]])
        elif part.startswith("train"):
            n = int(part[5:])
            keep, _ = _stratified_holdout(_keys(tr), 1.0 - n / len(tr), cfg.seed + 17)
            tr = tr.subset(keep)
        elif part != "all":
            raise SystemExit(f"unknown variant part {part!r}")
    trn, val = split_validation(tr, cfg.data.val_fraction, cfg.seed)
    model, secs = fit_heads(cfg, tax, trn, val, seed=cfg.seed)
    m = metrics_of(model, te, tax)
    rap = m["recall_at_precision"]
    return {"variant": variant, "train": len(trn), "val": len(val), "test": len(te), "auroc": m["auroc"],
            "recall_p99": rap["recall"], "recall_ci": rap["recall_ci"], "macro_f1": m["type_macro_f1"],
            "levels": m["level_accuracy"], "seconds": secs}


def main(config: str, data: str, cache: str, variants: list[str]) -> None:
    torch.set_num_threads(1)
    cfg = ADCConfig.from_yaml(config)
    cfg.data.path = data
    ds = open_dataset(data, cfg.data.roles)
    tax = ds.taxonomy
    model = build_model(cfg, tax)
    t0 = time.perf_counter()
    tr = features_for(model, ds.split(cfg.data.train_split), cfg, cfg.train.augment, cache, "train")
    te = features_for(model, ds.split(cfg.data.test_split), cfg, cfg.train.tta, cache, "test")
    print(f"features of {len(tr)} train + {len(te)} test sites ready in {time.perf_counter() - t0:.0f} s "
          f"(load {os.getloadavg()[0]:.1f})", flush=True)
    print("| variant | train | val | test | AUROC | recall @ P99 [95 % CI] | type macro-F1 | group / family / type acc "
          "| head s |")
    for v in variants or ["all"]:
        r = run_variant(cfg, tax, tr, te, v)
        lv = r["levels"]
        print(f"| {v} | {r['train']} | {r['val']} | {r['test']} | {r['auroc']:.4f} | {r['recall_p99']:.3f} "
              f"[{r['recall_ci'][0]:.3f}, {r['recall_ci'][1]:.3f}] | {r['macro_f1']:.3f} | "
              f"{lv.get('group', float('nan')):.3f} / {lv.get('family', float('nan')):.3f} / "
              f"{lv.get('type', float('nan')):.3f} | {r['seconds']:.0f} |", flush=True)


if __name__ == "__main__":
    if len(sys.argv) < 4:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:])

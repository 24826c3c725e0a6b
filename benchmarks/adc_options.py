"""Options (issue 3, item 5), each measured against the plain model in one table, on DeepPCB patch pairs.

    python -m seminspect import deeppcb ../shared/data/deeppcb /tmp/adc/deeppcb --mode patches --patch-size 96
    nice -n 10 python benchmarks/adc_options.py configs/adc_deeppcb.yaml /tmp/adc/runs/deeppcb/cache

Same data as benchmarks/results/adc_deeppcb.md: the config's ``max_train`` subset of the train
split (a stratified part of it is validation), the whole test split. Frozen-backbone features are
cached (``cache`` folder), so every head variant costs seconds to minutes; options: test-time
augmentation (synchronised flips), hard-example mining, ensembles, fusion
alternatives, k-fold cross-validation, and a backbone comparison (accuracy, training time, memory,
throughput) including ``simple_cnn`` trained from scratch on images.
The table is rewritten after every row (a killed run keeps what it measured).
Writes benchmarks/results/adc_options.md.
"""
# ruff: noqa: E501  (report templates are long f-strings)

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seminspect.training.adc_trainer import (
    _stratified_holdout,
    build_model,
    compute_metrics,
    features_for,
    finetune,
    open_dataset,
    predict_features,
    prepare_for,
)
from seminspect.training.config import ADCConfig
from seminspect.training.feature_cache import FeatureSet, compute_features
from seminspect.training.options import cross_validate, fit_heads, predict_ensemble, train_ensemble
from seminspect.training.sampler import class_keys

DEST = Path(__file__).parent / "results" / "adc_options.md"
K_FOLDS = int(os.environ.get("K_FOLDS", 3))
# Every row on a seeded subset of the train / test patches when these are smaller than the splits.
ALL_TRAIN, ALL_TEST = int(os.environ.get("ALL_TRAIN", 10**9)), int(os.environ.get("ALL_TEST", 10**9))
# The backbone comparison encodes everything again per backbone: on a seeded subset (CPU budget).
BB_TRAIN, BB_TEST = int(os.environ.get("BB_TRAIN", 500)), int(os.environ.get("BB_TEST", 500))
HEADER = ("| option | AUROC | recall @ P >= 99 % [95 % CI] | recall where the 95 % lower bound of P >= 99 % | "
          "6-type macro-F1 | type accuracy | training s | note |\n|---|---|---|---|---|---|---|---|")


def load() -> str:
    a, b, c = os.getloadavg()
    return f"{a:.2f}/{b:.2f}/{c:.2f}"


def metrics(pred: dict[str, Any], fs: FeatureSet, tax: Any) -> dict[str, Any]:
    return compute_metrics(pred, (fs.is_abnormal.numpy(), fs.type_index.numpy()), tax)


def row(name: str, m: dict[str, Any], seconds: float | str | None, note: str = "") -> str:
    rap, rb = m["recall_at_precision"], m["recall_at_precision_bound"]
    lo, hi = rap["recall_ci"]
    sec = seconds if isinstance(seconds, str) else ("" if seconds is None else f"{seconds:.0f}")
    return (f"| {name} | {m['auroc']:.4f} | {rap['recall']:.3f} [{lo:.3f}, {hi:.3f}] | {rb['recall']:.3f} | "
            f"{m['type_macro_f1']:.3f} | {m['type_accuracy']:.3f} | {sec} | {note} |")


def merge(a: FeatureSet, b: FeatureSet) -> FeatureSet:
    """Two caches of the same samples with different dihedral ops -> one with both slices."""
    assert a.sample_ids == b.sample_ids
    return FeatureSet(torch.cat([a.feats, b.feats]), a.roles, a.indices, a.view_mask, a.is_abnormal, a.type_index,
                      a.sample_ids, a.ops + b.ops)


def peak_rss_mb(backbone: str, size: int, batch: int = 64) -> float:
    """Peak resident memory (MB) of a fresh process that encodes one batch of ``batch`` pairs."""
    code = (
        "import resource, torch; torch.set_num_threads(1)\n"
        "from seminspect.models.backbones import create_backbone\n"
        f"bb = create_backbone({backbone!r}, pretrained={backbone != 'simple_cnn'}, out_indices=(1, 2, 3)).eval()\n"
        f"x = torch.rand({2 * batch}, 1, {size}, {size})\n"
        "with torch.no_grad(): bb(x)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def throughput(model: Any, ds: Any, cfg: ADCConfig, n: int = 256) -> float:
    """Pairs per second of backbone encoding (+ grid pooling, die difference), 1 thread, batch encode_batch."""
    sub = ds.subset(ds.sample_ids[:n])
    t0 = time.perf_counter()
    compute_features(model, sub, sub.taxonomy, prepare_for(cfg), ops=(0,), batch_size=cfg.train.encode_batch,
                     resize=cfg.image.resize, description="throughput")
    return n / (time.perf_counter() - t0)


def main(config: str, cache: str) -> None:
    load_start, t_all = load(), time.perf_counter()
    cfg = ADCConfig.from_yaml(config)
    torch.set_num_threads(1)
    ds = open_dataset(cfg.data.path, cfg.data.roles)
    tax = ds.taxonomy
    train_ds = ds.split(cfg.data.train_split)
    if cfg.data.max_train and len(train_ds) > cfg.data.max_train:  # the same subset as train()
        rng = np.random.default_rng(cfg.seed)
        train_ds = train_ds.subset(sorted(rng.choice(train_ds.sample_ids, cfg.data.max_train, replace=False).tolist(),
                                          key=train_ds.sample_ids.index))
    test_ds = ds.split(cfg.data.test_split)
    base = build_model(cfg, tax)
    tr_all = features_for(base, train_ds, cfg, [0], cache, "encoding train (mobilenetv2)")
    test = features_for(base, test_ds, cfg, [0], cache, "encoding test (mobilenetv2)")
    if ALL_TRAIN < len(tr_all) or ALL_TEST < len(test):  # a seeded subset for every row (CPU budget)
        rng0 = np.random.default_rng(cfg.seed + 1)
        i_tr = np.sort(rng0.choice(len(tr_all), min(ALL_TRAIN, len(tr_all)), replace=False))
        i_te = np.sort(rng0.choice(len(test), min(ALL_TEST, len(test)), replace=False))
        tr_all, test = tr_all.subset(i_tr), test.subset(i_te)
        train_ds, test_ds = train_ds.subset(tr_all.sample_ids), test_ds.subset(test.sample_ids)
    keys = class_keys(tr_all.is_abnormal.numpy(), tr_all.type_index.numpy())
    a, b = _stratified_holdout(keys, cfg.data.val_fraction, cfg.seed)
    trn, val = tr_all.subset(a), tr_all.subset(b)
    rows: list[str] = []
    extra: list[str] = []

    def write() -> None:
        text = f"""# ADC options against the plain model (issue 3, item 5) -- DeepPCB patch pairs

- command: `nice -n 10 python benchmarks/adc_options.py {config} {cache}`
- date: 2026-11-23; machine: x86_64, 2-core CPU, no GPU, torch 1 thread; load average (1/5/15 min) at start
  {load_start}, when this file was written {load()} (the lead's depth training ran concurrently)
- wall time so far: {time.perf_counter() - t_all:.0f} s
- data: {cfg.data.path} (DeepPCB patch pairs: tested patch = target, template = reference; 6 defect types + normal
  patches): {len(tr_all)} train patches (of the {cfg.data.max_train} used in benchmarks/results/adc_deeppcb.md; env
  ALL_TRAIN={ALL_TRAIN if ALL_TRAIN < 10**9 else 'all'}, seeded subset): {len(trn)} train + {len(val)} validation
  (stratified, early stopping); test: {len(test)} patches of the test split (ALL_TEST={ALL_TEST if ALL_TEST < 10**9 else 'all'})
  ({int((test.is_abnormal == 1).sum())} defects), used only for these numbers.
- plain model: frozen MobileNetV2 (packaged ImageNet weights), whole patch, grid {cfg.model.grid} {cfg.model.pool},
  attention fusion, heads trained on cached identity-view features (seed 0). "recall @ P >= 99 %" puts the threshold
  on the test set itself (optimistic, as in the other ADC result files); "recall where the lower bound ..." asks for
  the one-sided 95 % Clopper-Pearson bound of precision >= 99 % on test.
- training s: head training on cached features (plus encoding where the row says so); encodings done in earlier
  runs and reused from the cache are not counted.

{HEADER}
{chr(10).join(rows)}

{chr(10).join(extra)}
"""
        DEST.write_text(text)

    def add(line: str) -> None:
        rows.append(line)
        print(line, flush=True)
        write()

    # 1. plain
    plain, s = fit_heads(cfg, tax, trn, val, seed=cfg.seed)
    add(row("plain model (MobileNetV2 frozen, attention fusion, identity view)", metrics(predict_features(plain, test), test, tax), s))
    # 2. TTA: the same horizontal flip applied to target and template, probabilities averaged
    t0 = time.perf_counter()
    te4 = features_for(base, test_ds, cfg, [4], cache, "encoding test, flipped")
    enc4 = time.perf_counter() - t0
    test_both = merge(test, te4)
    add(row("TTA: mean over identity + horizontal flip (plain heads)", metrics(predict_features(plain, test_both, [0, 4]), test_both, tax), None,
            f"flipped test views encoded in {enc4:.0f} s"))
    # 3. hard-example mining
    hm, s = fit_heads(cfg, tax, trn, val, seed=cfg.seed, hard_mining=True)
    add(row("hard-example mining (sampling x up to 5 for confidently wrong sites)", metrics(predict_features(hm, test), test, tax), s))
    # 4. ensemble
    models, s = train_ensemble(cfg, tax, trn, val, n=3, base_seed=1)
    singles = [metrics(predict_features(m, test), test, tax)["type_macro_f1"] for m in models]
    add(row("ensemble of 3 heads (seeds 1-3, probabilities averaged)", metrics(predict_ensemble(models, test), test, tax), s,
            f"single heads' macro-F1 {', '.join(f'{x:.3f}' for x in singles)}"))
    # 5. fusion alternatives
    for fusion in ("mean", "gru"):
        fm, s = fit_heads(cfg, tax, trn, val, seed=cfg.seed, fusion=fusion)
        add(row(f"fusion = {fusion} (plain: attention)", metrics(predict_features(fm, test), test, tax), s,
                "one target angle per site: fusion only reparametrises the head here"))
    # 6. k-fold cross-validation (on all train patches incl. validation), and its fold models as an ensemble
    cv = cross_validate(cfg, tax, tr_all, k=K_FOLDS, seed=cfg.seed)
    add(row(f"{K_FOLDS}-fold CV: the {K_FOLDS} fold models averaged on test", metrics(predict_ensemble(cv["models"], test), test, tax),
            cv["seconds"], f"CV estimate on held-out folds: AUROC {cv['mean']['auroc']:.4f} +- {cv['std']['auroc']:.4f}, "
                           f"macro-F1 {cv['mean']['type_macro_f1']:.3f} +- {cv['std']['type_macro_f1']:.3f}"))
    # 7. backbones: accuracy, training time, memory, throughput
    extra.append("## Backbones (same data, same heads; frozen pretrained backbones vs simple_cnn trained from scratch)\n")
    extra.append("| backbone | params (M) | peak RSS, one batch of 64 pairs (MB) | encoding throughput (pairs/s, 1 thread) | "
                 "training s | AUROC | recall @ P >= 99 % | 6-type macro-F1 | note |\n|---|---|---|---|---|---|---|---|---|")
    size = 96

    def bb_row(name: str, model: Any, m: dict[str, Any], secs: str, note: str) -> None:
        params = sum(p.numel() for p in model.backbone.parameters()) / 1e6
        rss = peak_rss_mb(name, size)
        thr = throughput(model, test_ds, cfg)
        extra.append(f"| {name} | {params:.2f} | {rss:.0f} | {thr:.1f} | {secs} | {m['auroc']:.4f} | "
                     f"{m['recall_at_precision']['recall']:.3f} | {m['type_macro_f1']:.3f} | {note} |")
        print(extra[-1], flush=True)
        write()

    rng = np.random.default_rng(cfg.seed)
    sub_tr = np.sort(rng.choice(len(tr_all), min(BB_TRAIN, len(tr_all)), replace=False))
    sub_te = np.sort(rng.choice(len(test), min(BB_TEST, len(test)), replace=False))
    bkeys = keys[sub_tr]
    ba, bv = _stratified_holdout(bkeys, cfg.data.val_fraction, cfg.seed)
    btrain_ds = train_ds.subset([tr_all.sample_ids[i] for i in sub_tr])
    btest_ds = test_ds.subset([test.sample_ids[i] for i in sub_te])
    extra.insert(1, f"Subset (seed {cfg.seed}): {len(sub_tr)} of the train patches ({len(ba)} train + {len(bv)} validation) "
                    f"and {len(sub_te)} of the test patches; every backbone row uses exactly these.\n")
    ftr, fte = tr_all.subset(sub_tr), test.subset(sub_te)
    hb, s = fit_heads(cfg, tax, ftr.subset(ba), ftr.subset(bv), seed=cfg.seed)
    bb_row("mobilenetv2", hb, metrics(predict_features(hb, fte), fte, tax), f"{s:.0f} heads (features from the cache)",
           "the plain model's backbone")
    for name in ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"):
        c = cfg.model_copy(deep=True)
        c.model.backbone = name
        try:
            mb = build_model(c, tax)
        except Exception as exc:  # e.g. weights package missing: say so in the table
            extra.append(f"| {name} | - | - | - | - | - | - | - | not available: {exc} |")
            write()
            continue
        t0 = time.perf_counter()
        ftr = features_for(mb, btrain_ds, c, [0], cache, f"encoding train ({name})")
        fte = features_for(mb, btest_ds, c, [0], cache, f"encoding test ({name})")
        enc = time.perf_counter() - t0
        hb, s = fit_heads(c, tax, ftr.subset(ba), ftr.subset(bv), seed=c.seed)
        bb_row(name, hb, metrics(predict_features(hb, fte), fte, tax), f"{s:.0f} heads (+ {enc:.0f} encoding train+test)", "")
    # simple_cnn from scratch: heads warm-up on its random-init features, then the whole network on images
    c = cfg.model_copy(deep=True)
    c.model.backbone, c.model.pretrained = "simple_cnn", False
    c.train.finetune_epochs, c.train.backbone_lr, c.train.finetune_augment = int(os.environ.get("SIMPLE_CNN_EPOCHS", 12)), 1e-3, [0, 4]
    torch.manual_seed(c.seed)
    sc = build_model(c, tax)
    c.train.finetune_stages = len(sc.backbone_stages())
    t0 = time.perf_counter()
    ftr = features_for(sc, btrain_ds, c, [0], None, "encoding train (simple_cnn, random init)")
    ids = ftr.sample_ids
    from seminspect.training.adc_trainer import train_heads

    train_heads(sc, ftr.subset(ba), ftr.subset(bv), c)
    ft_s = finetune(sc, btrain_ds.subset([ids[i] for i in ba]), c, tax, prepare_for(c), log=print,
                    val_ds=btrain_ds.subset([ids[i] for i in bv]))
    secs = time.perf_counter() - t0
    fte = features_for(sc, btest_ds, c, [0], None, "encoding test (simple_cnn)")
    bb_row("simple_cnn", sc, metrics(predict_features(sc, fte), fte, tax),
           f"{secs:.0f} (of which {ft_s:.0f} training all stages on images, {c.train.finetune_epochs} epochs)",
           "from scratch, no pretrained weights; flip augmentation")
    extra.append(f"\nTotal wall time {time.perf_counter() - t_all:.0f} s; load average at end {load()}.")
    write()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "configs/adc_deeppcb.yaml",
         sys.argv[2] if len(sys.argv) > 2 else "/tmp/adc/runs/deeppcb/cache")

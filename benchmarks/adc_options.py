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

The backbone comparison alone, spliced into the existing result file (each backbone in a fresh child
process, so that its peak RSS is its own; env knobs ALL_TRAIN / ALL_TEST, BACKBONES (comma list),
SIMPLE_CNN_EPOCHS)::

    ONLY_BACKBONES=1 ALL_TRAIN=600 ALL_TEST=600 nice -n 10 python benchmarks/adc_options.py configs/adc_deeppcb_options.yaml
"""
# ruff: noqa: E501  (report templates are long f-strings)

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seminspect.evaluation.adc_metrics import compute_metrics
from seminspect.training.adc_trainer import (
    build_model,
    features_for,
    finetune,
    limit_train,
    open_dataset,
    predict_features,
    prepare_for,
    split_validation,
)
from seminspect.training.config import ADCConfig
from seminspect.training.feature_cache import FeatureSet
from seminspect.training.options import cross_validate, fit_heads, predict_ensemble, train_ensemble

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_env import load  # noqa: E402

# ADC_OPTIONS_DEST: write elsewhere (smoke runs on a copy)
DEST = Path(os.environ.get("ADC_OPTIONS_DEST", Path(__file__).parent / "results" / "adc_options.md"))
K_FOLDS = int(os.environ.get("K_FOLDS", 3))
# Every row on a seeded subset of the train / test patches when these are smaller than the splits.
ALL_TRAIN, ALL_TEST = int(os.environ.get("ALL_TRAIN", 10**9)), int(os.environ.get("ALL_TEST", 10**9))
# The backbone comparison (each backbone encodes the ALL_TRAIN / ALL_TEST patches itself, in its own process).
BACKBONES = os.environ.get("BACKBONES", "mobilenetv2,efficientnet_lite0,efficientnet_lite1,efficientnet_lite2,"
                                        "simple_cnn").split(",")
SIMPLE_CNN_EPOCHS = int(os.environ.get("SIMPLE_CNN_EPOCHS", 12))  # image-training epochs of simple_cnn
# ONLY_BACKBONES=1: run the backbone comparison alone and put its section into the existing result file.
ONLY_BACKBONES = os.environ.get("ONLY_BACKBONES") == "1"
BB_START, BB_END = "<!-- backbones: written by adc_options.py -->", "<!-- /backbones -->"
HEADER = ("| option | AUROC | recall @ P >= 99 % [95 % CI] | recall where the 95 % lower bound of P >= 99 % | "
          "6-type macro-F1 | type accuracy | training s | note |\n|---|---|---|---|---|---|---|---|")


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


def base_splits(cfg: ADCConfig, ds: Any) -> tuple[Any, Any]:
    """The train split cut to ``data.max_train`` (the same seeded subset as train()) and the test split."""
    return limit_train(ds.split(cfg.data.train_split), cfg.data.max_train, cfg.seed), ds.split(cfg.data.test_split)


def subset_indices(n_train: int, n_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The seeded ALL_TRAIN / ALL_TEST subsets (sorted positions) used by every row, backbones included."""
    if ALL_TRAIN >= n_train and ALL_TEST >= n_test:
        return np.arange(n_train), np.arange(n_test)
    rng0 = np.random.default_rng(seed + 1)
    i_tr = np.sort(rng0.choice(n_train, min(ALL_TRAIN, n_train), replace=False))
    i_te = np.sort(rng0.choice(n_test, min(ALL_TEST, n_test), replace=False))
    return i_tr, i_te


def one_backbone(config: str, name: str) -> dict[str, Any]:
    """Train and test one backbone from images on disk, in this (fresh) process; returns its figures.

    Pretrained backbones stay frozen: encode the train patches, fit the heads on those features
    (the plain model's recipe). ``simple_cnn`` (random init, no weights) is encoded, its heads
    warmed up on the random features, then the whole network is trained on images for
    SIMPLE_CNN_EPOCHS epochs. Nothing is read from or written to the feature cache, so every
    backbone pays its own encoding. Test: encode the test patches from disk and run the heads.
    """
    import resource

    from seminspect.training.adc_trainer import train_heads

    cfg = ADCConfig.from_yaml(config)
    torch.set_num_threads(1)
    ds = open_dataset(cfg.data.path, cfg.data.roles)
    tax = ds.taxonomy
    train_ds, test_ds = base_splits(cfg, ds)
    i_tr, i_te = subset_indices(len(train_ds), len(test_ds), cfg.seed)
    train_ds = train_ds.subset([train_ds.sample_ids[i] for i in i_tr])
    test_ds = test_ds.subset([test_ds.sample_ids[i] for i in i_te])
    c = cfg.model_copy(deep=True)
    c.model.backbone = name
    scratch = name == "simple_cnn"
    if scratch:
        c.model.pretrained = False
        c.train.finetune_epochs, c.train.backbone_lr, c.train.finetune_augment = SIMPLE_CNN_EPOCHS, 1e-3, [0, 4]
    torch.manual_seed(c.seed)
    model = build_model(c, tax)
    params = sum(p.numel() for p in model.backbone.parameters()) / 1e6
    w0, c0 = time.perf_counter(), time.process_time()
    ftr = features_for(model, train_ds, c, [0], None, f"encoding train ({name})")
    enc_s = time.perf_counter() - w0
    trn, val = split_validation(ftr, cfg.data.val_fraction, cfg.seed)
    ft_s = 0.0
    if scratch:
        c.train.finetune_stages = len(model.backbone_stages())  # every stage trains
        train_heads(model, trn, val, c)
        ft_s = finetune(model, train_ds.subset(trn.sample_ids), c, tax, prepare_for(c), log=print,
                        val_ds=train_ds.subset(val.sample_ids))
    else:
        model, _ = fit_heads(c, tax, trn, val, seed=c.seed)
    train_wall, train_cpu = time.perf_counter() - w0, time.process_time() - c0
    w1, c1 = time.perf_counter(), time.process_time()
    fte = features_for(model, test_ds, c, [0], None, f"encoding test ({name})")
    pred = predict_features(model, fte)
    test_wall, test_cpu = time.perf_counter() - w1, time.process_time() - c1
    m = metrics(pred, fte, tax)
    rap = m["recall_at_precision"]
    return {"backbone": name, "pretrained": c.model.pretrained, "params_m": params, "n_train": len(trn),
            "n_val": len(val), "n_test": len(fte), "train_wall_s": train_wall, "train_cpu_s": train_cpu,
            "encode_train_s": enc_s, "finetune_s": ft_s, "epochs": SIMPLE_CNN_EPOCHS if scratch else c.train.epochs,
            "test_wall_s": test_wall, "test_cpu_s": test_cpu, "auroc": m["auroc"], "recall": rap["recall"],
            "recall_ci": list(rap["recall_ci"]), "recall_bound": m["recall_at_precision_bound"]["recall"],
            "macro_f1": m["type_macro_f1"], "type_accuracy": m["type_accuracy"],
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def bb_line(r: dict[str, Any]) -> str:
    lo, hi = r["recall_ci"]
    train = (f"{r['train_wall_s']:.0f} ({r['train_cpu_s']:.0f} CPU): {r['encode_train_s']:.0f} encoding"
             + (f" + {r['finetune_s']:.0f} training all stages on images, {r['epochs']} epoch{'s' if r['epochs'] != 1 else ''}" if r["finetune_s"]
                else " + heads"))
    name = r["backbone"] + (" = plain model" if r["backbone"] == "mobilenetv2" else "")
    return (f"| {name} | {'ImageNet, frozen' if r['pretrained'] else 'none (from scratch)'} | {r['params_m']:.2f} | "
            f"{r['auroc']:.4f} | {r['recall']:.3f} [{lo:.3f}, {hi:.3f}] | {r['recall_bound']:.3f} | {r['macro_f1']:.3f} | "
            f"{r['type_accuracy']:.3f} | {train} | {r['peak_rss_mib']:.0f} | "
            f"{r['n_test'] / r['test_wall_s']:.1f} ({r['n_test'] / r['test_cpu_s']:.1f} per CPU s) |")


def backbone_comparison(config: str, on_update: Any) -> None:
    """Every backbone of BACKBONES in its own child process, one after the other; the section after each."""
    from seminspect.models.backbones import list_backbones

    t0, load0, start = time.perf_counter(), load(), time.strftime("%H:%M", time.gmtime())
    available = set(list_backbones())
    lines: list[str] = []
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    knobs = " ".join(f"{k}={os.environ[k]}" for k in ("ONLY_BACKBONES", "BACKBONES", "ALL_TRAIN", "ALL_TEST",
                                                        "SIMPLE_CNN_EPOCHS") if k in os.environ)

    def emit(done: bool) -> None:
        end = time.strftime("%H:%M", time.gmtime())
        on_update(f"""{BB_START}
## Backbones: accuracy, training time, memory, throughput

- command: `{knobs + ' ' if knobs else ''}nice -n 10 python benchmarks/adc_options.py {config}`
- date: {time.strftime('%Y-%m-%d', time.gmtime())}, {start}-{end} UTC{'' if done else ' (still running when this was written)'}; machine: x86_64, 2-core CPU,
  no GPU, torch 1 thread; load average (1/5/15 min) at start {load0}, {'at end' if done else 'now'} {load()};
  wall time {time.perf_counter() - t0:.0f} s
- backbones available here (`list_backbones()`): {', '.join(sorted(available))}; rows in the order run.
  The mobilenetv2 row is the plain model of the table above, retrained from images in its own process.
- each backbone ran in its own fresh process, one after the other, on the same patches as the table above
  (the seeded ALL_TRAIN / ALL_TEST subset, the same train / validation split, the same head recipe and
  epochs); nothing came from the feature cache: every row encodes its train and test patches from disk.
  Pretrained backbones are frozen (heads on their features); simple_cnn has no pretrained weights: heads
  warmed up on its random-init features, then the whole network trained on images (flip augmentation,
  backbone lr 1e-3, best validation epoch kept).
- training s: wall seconds (CPU seconds of the process in brackets) from the first train patch read to the trained
  model = encoding the train patches + head training (+ image training for simple_cnn).
- peak RSS: the maximum resident memory of that backbone's whole process (Python, torch, data, features,
  training, testing), MiB.
- inference: test patch pairs per wall second from the files on disk to probabilities (read, register, encode
  target + template, heads), batch {ADCConfig.from_yaml(config).train.encode_batch}, 1 thread, measured on the
  test set of this run; in brackets pairs per CPU second of the process (less sensitive to the concurrent load).

| backbone | weights | backbone params (M) | AUROC | recall @ P >= 99 % [95 % CI] | recall where the 95 % lower bound of P >= 99 % | 6-type macro-F1 | type accuracy | training s | peak RSS (MiB) | inference pairs/s |
|---|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(lines)}
{BB_END}
""")

    for name in BACKBONES:
        if name not in available:
            lines.append(f"| {name} | not available | - | - | - | - | - | - | - | - | - |")
            emit(False)
            continue
        t1 = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--one-backbone", name, config], env=env,
                              stdout=subprocess.PIPE, text=True)
        out = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        print("\n".join(ln for ln in proc.stdout.splitlines() if not ln.startswith("RESULT ")), flush=True)
        if proc.returncode != 0 or not out:
            lines.append(f"| {name} | failed (exit {proc.returncode}) after {time.perf_counter() - t1:.0f} s | "
                         "- | - | - | - | - | - | - | - | - |")
        else:
            lines.append(bb_line(json.loads(out[-1][len("RESULT "):])))
        print(lines[-1], flush=True)
        emit(False)
    emit(True)


def splice(section: str) -> None:
    """Put the backbone section into the existing result file (replacing an earlier one), rest untouched."""
    text = DEST.read_text() if DEST.exists() else ""
    if BB_START in text and BB_END in text:
        head, rest = text.split(BB_START, 1)
        text = head + section.rstrip("\n") + rest.split(BB_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    DEST.write_text(text)


def main(config: str, cache: str) -> None:
    load_start, t_all = load(), time.perf_counter()
    cfg = ADCConfig.from_yaml(config)
    torch.set_num_threads(1)
    ds = open_dataset(cfg.data.path, cfg.data.roles)
    tax = ds.taxonomy
    train_ds, test_ds = base_splits(cfg, ds)
    base = build_model(cfg, tax)
    tr_all = features_for(base, train_ds, cfg, [0], cache, "encoding train (mobilenetv2)")
    test = features_for(base, test_ds, cfg, [0], cache, "encoding test (mobilenetv2)")
    i_tr, i_te = subset_indices(len(tr_all), len(test), cfg.seed)  # a seeded subset for every row (CPU budget)
    tr_all, test = tr_all.subset(i_tr), test.subset(i_te)
    train_ds, test_ds = train_ds.subset(tr_all.sample_ids), test_ds.subset(test.sample_ids)
    trn, val = split_validation(tr_all, cfg.data.val_fraction, cfg.seed)
    rows: list[str] = []
    extra: list[str] = []
    state = {"bb": ""}  # the backbone section, once it has rows

    def write() -> None:
        text = f"""# ADC options against the plain model (issue 3, item 5) -- DeepPCB patch pairs

- command: `nice -n 10 python benchmarks/adc_options.py {config} {cache}`
- date: {time.strftime('%Y-%m-%d', time.gmtime())}; machine: x86_64, 2-core CPU, no GPU, torch 1 thread; load average (1/5/15 min) at start
  {load_start}, when this file was written {load()}
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

{state["bb"]}"""
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
    # 7. backbones: each in its own fresh process (peak RSS per backbone), on the same patches
    def set_bb(text: str) -> None:
        state["bb"] = text
        write()

    backbone_comparison(config, on_update=set_bb)
    extra.append(f"\nTotal wall time {time.perf_counter() - t_all:.0f} s; load average at end {load()}.")
    write()


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--one-backbone":  # child process of backbone_comparison
        print("RESULT " + json.dumps(one_backbone(sys.argv[3], sys.argv[2])), flush=True)
    elif ONLY_BACKBONES:
        backbone_comparison(sys.argv[1] if len(sys.argv) > 1 else "configs/adc_deeppcb_options.yaml", on_update=splice)
    else:
        main(sys.argv[1] if len(sys.argv) > 1 else "configs/adc_deeppcb.yaml",
             sys.argv[2] if len(sys.argv) > 2 else "/tmp/adc/runs/deeppcb/cache")

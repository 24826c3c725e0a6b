"""The user's hierarchical-classification study (issue [long-tail] item 2): flat vs hierarchical type
loss, shared vs independent per-level features, with and without CBAM, on the main job's model
(frozen ``--backbone``, MobileNetV2 by default, cached features).

    python benchmarks/longtail_study.py --data /tmp/longtail_fab --work /tmp/longtail_work \
        --size 460 --zooms 2 --crop-centre difference --seeds 3 --out benchmarks/results/longtail_study.md
    # the balanced fab (generated when absent) and imported DeepPCB patches (whole 96 px patches):
    python benchmarks/longtail_study.py --fab balanced --data /tmp/balanced_fab --work /tmp/balanced_work ...
    python benchmarks/longtail_study.py --data /tmp/adc/deeppcb --work /tmp/deeppcb_work --crop 0 ...
    # other backbones: --backbone efficientnet_lite0 (frozen), or the from-scratch CNN trained on images:
    python benchmarks/longtail_study.py ... --backbone simple_cnn --scratch-epochs 10 --train-limit 1200 --seeds 1

The same fab, split and cached features as ``longtail_triage.py`` (``longtail_common``). Each row
trains the heads from the same initial weights per seed: *hierarchical* = the default loss (leaf
loss + per-level heads ``w_hier`` + leaf/level ``consistency``), *flat* = leaf loss only
(``w_hier 0, consistency 0``); *shared* = every head on one trunk, *independent* = the leaf head
and each level head on their own trunk (``model.level_features``); *CBAM* = channel and spatial
attention on each view's die-compared grid (``model.attention``). Read on the test split's
defects of types seen in training: leaf top-1 to top-5, macro-F1 over those types, accuracy at
each tree level (the level of the leaf argmax), and the abnormal-vs-normal AUROC of all test
sites. Nothing is chosen on the test split (the heads, and with ``--scratch-epochs`` the whole network,
keep the weights of their best epoch on the training split's own held-out part, as in
``seminspect train``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import f1_score, roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from longtail_common import add_args, leaf_counts, make_config, prepare  # noqa: E402
from predict_common import header, load  # noqa: E402

from seminspect.training.adc_trainer import (  # noqa: E402
    _labels,
    _stratified_holdout,
    build_model,
    features_for,
    finetune,
    predict_features,
    prepare_for,
    train_heads,
)
from seminspect.training.sampler import class_keys  # noqa: E402
from seminspect.utils.io import atomic_write_text  # noqa: E402

FLAT = {"w_hier": 0.0, "consistency": 0.0}
INDEPENDENT, CBAM = {"level_features": "independent"}, {"attention": "cbam"}
VARIANTS: dict[str, tuple[dict[str, float], dict[str, str]]] = {  # name: (loss section, model section)
    "flat": (FLAT, {}),
    "hierarchical shared": ({}, {}),
    "hierarchical independent": ({}, INDEPENDENT),
    "flat + CBAM": (FLAT, CBAM),
    "hierarchical shared + CBAM": ({}, CBAM),
    "hierarchical independent + CBAM": ({}, {**INDEPENDENT, **CBAM}),
}


def scores(model, fs, tax, counts: np.ndarray) -> dict[str, float]:  # noqa: ANN001
    """Test-split figures of one trained model (see the module docstring)."""
    p = predict_features(model, fs)
    y, t = fs.is_abnormal.numpy(), fs.type_index.numpy()
    seen = (y == 1) & (t >= 0) & (counts[np.maximum(t, 0)] > 0)
    order = np.argsort(-p["types"][seen], axis=1)
    truth = t[seen]
    out = {f"top-{k}": float(np.mean([tt in row[:k] for tt, row in zip(truth, order, strict=True)]))
           for k in range(1, 6)}
    out["macro-F1 (seen types)"] = float(f1_score(truth, order[:, 0], labels=np.unique(truth), average="macro"))
    for level in tax.levels[:-1]:
        up = tax.leaf_to_level(level)
        out[f"{level} accuracy"] = float(np.mean(up[order[:, 0]] == up[truth]))
    out["AUROC"] = float(roc_auc_score(y, p["abnormal"]))
    return out


def train_scratch(model, cfg, ds, ids: dict[str, list[str]], a, b, epochs: int,  # noqa: ANN001, ANN201
                  batchnorm: bool = False):
    """Train a randomly initialised ``model`` whole on images, as ``benchmarks/adc_options.py`` does for
    ``simple_cnn``: heads warmed up on the random backbone's features of the training sites ``a``
    (stopping on ``b``), then every stage and head trained ``epochs`` epochs on the images (the
    weights of the best epoch on ``b``); returns the test split's features from the trained backbone."""
    c = cfg.model_copy(deep=True)
    c.train.finetune_epochs, c.train.backbone_lr, c.train.finetune_augment = epochs, 1e-3, [0, 4]
    c.train.finetune_stages, c.train.finetune_batchnorm = len(model.backbone_stages()), batchnorm
    train_ds = ds.subset(ids["train"])
    ftr = features_for(model, train_ds, c, [0], None, "encoding train (random backbone)")
    train_heads(model, ftr.subset(a), ftr.subset(b), c)
    part = np.asarray(ids["train"], dtype=object)
    finetune(model, ds.subset(part[a].tolist()), c, ds.taxonomy, prepare_for(c), log=print,
             val_ds=ds.subset(part[b].tolist()))
    return features_for(model, ds.subset(ids["test"]), c, [0], None, "encoding test (trained backbone)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_args(ap)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated rows to train")
    ap.add_argument("--scratch-epochs", type=int, default=0,
                    help="> 0: the backbone starts from random weights and trains on images this many epochs")
    ap.add_argument("--train-limit", type=int, default=1500,
                    help="with --scratch-epochs: training sites drawn at random (seed 0), to bound the time")
    ap.add_argument("--scratch-batchnorm", action="store_true",
                    help="with --scratch-epochs: BatchNorm statistics follow the batches (train.finetune_batchnorm)")
    args = ap.parse_args()
    chosen = [v.strip() for v in args.variants.split(",")]
    if unknown := sorted(set(chosen) - set(VARIANTS)):
        ap.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    lines = header("Hierarchical-classification study: loss, per-level features, CBAM", sys.argv)
    t_all = time.perf_counter()
    setup = prepare(args)
    ds, fs, counts = setup["ds"], setup["fs"], setup["counts"]
    tax = ds.taxonomy
    split = np.array(ds.metadata_column("split"))
    ids = {s: np.array(ds.sample_ids)[split == s].tolist() for s in ("train", "test")}
    if args.scratch_epochs:
        ids["train"] = sorted(np.random.default_rng(0).permutation(ids["train"])[: args.train_limit].tolist())
        y, t = (v.numpy() for v in _labels(ds.subset(ids["train"])))
        keys = class_keys(y, t)
        counts = leaf_counts(t, len(tax.leaves))  # "seen" = in the sites trained on
    else:
        keys = class_keys(fs["train"].is_abnormal.numpy(), fs["train"].type_index.numpy())
    results: dict[str, list[dict[str, float]]] = {v: [] for v in chosen}
    for seed in range(args.seeds):
        for name in chosen:
            loss, model_opts = VARIANTS[name]
            cfg = make_config(args, model_opts, **loss).model_copy(update={"seed": seed})
            a, b = _stratified_holdout(keys, cfg.data.val_fraction, seed)
            torch.manual_seed(seed)
            model = build_model(cfg, tax)
            if args.scratch_epochs:
                test = train_scratch(model, cfg, ds, ids, a, b, args.scratch_epochs, args.scratch_batchnorm)
            else:
                train_heads(model, fs["train"].subset(a), fs["train"].subset(b), cfg)
                test = fs["test"]
            results[name].append(scores(model, test, tax, counts))
            print(name, seed, results[name][-1], flush=True)
    cols = list(results[chosen[0]][0])
    trained = (f"from scratch: random weights, heads warmed up, then every stage trained on images "
               f"{args.scratch_epochs} epochs on {len(ids['train'])} training sites drawn at random, BatchNorm "
               f"statistics {'following the batches' if args.scratch_batchnorm else 'left at initialisation'}"
               if args.scratch_epochs else "frozen, ImageNet weights")
    lines += [f"- backbone: {args.backbone} ({trained})",
              f"- data: `{args.data}`, {len(ds)} sites, {len(tax.leaves)} leaf types, tree levels "
              f"{' / '.join(tax.levels)}; {int((counts > 0).sum())} types seen in training; seeds 0-{args.seeds - 1}",
              f"- whole run {time.perf_counter() - t_all:.0f} s (encoding or reading the feature cache: "
              f"{setup['encode_s']:.0f} s); "
              f"load average at the end {load()}", "",
              "Mean over seeds (min-max in brackets), test defects of seen types:", "",
              "| heads | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for name, runs in results.items():
        cells = [f"{np.mean([r[c] for r in runs]):.3f} [{min(r[c] for r in runs):.3f}-{max(r[c] for r in runs):.3f}]"
                 for c in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "```json", json.dumps(results), "```", ""]
    atomic_write_text(args.out, "\n".join(lines))
    print("\n".join(lines[:-4]))


if __name__ == "__main__":
    main()

"""Shared set-up of the long-tail benchmarks (``longtail_triage.py``, ``longtail_study.py``, ``longtail_unseen.py``,
``anomaly_unseen_types.py``).

The arguments they take, the virtual fab generated once under ``--data`` when absent (seed 0,
splits train 0.45 / calib 0.35 / test 0.2; ``--fab long_tail`` or ``balanced``; any dataset with
``train`` / ``calib`` / ``test`` splits, such as imported DeepPCB patches, works too), the ADC
config of the main job's model settings, and the frozen backbone's features of every split,
cached under ``--work`` by content (a second run reads them); likewise the anomaly model's calib and
test scores (:func:`cached_anomaly_scores`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seminspect.data.dataset import SampleDataset
from seminspect.training.adc_trainer import build_model, features_for
from seminspect.training.config import ADCConfig

MIN_TRAIN = 80


def add_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True, help="feature cache")
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--fab", default="long_tail", choices=["long_tail", "balanced"],
                    help="the virtual fab generated when --data holds no dataset")
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--angles", type=int, default=5, help="detector angles")
    ap.add_argument("--references", type=int, default=None, help="reference views (default: one per angle)")
    ap.add_argument("--zooms", type=int, default=0, help="zoom views per site (the main job has 2)")
    ap.add_argument("--crop-centre", default="image", choices=["image", "difference"])
    ap.add_argument("--crop", type=int, default=128, help="centre crop at native resolution; 0 = whole views")
    ap.add_argument("--holdout", type=int, default=6, help="long-tail fab: leaf types kept out of training")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--backbone", default="mobilenetv2", help="registry name (frozen, ImageNet weights)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True)
    ap.set_defaults(scratch_epochs=0)  # a pretrained, frozen backbone unless a script adds --scratch-epochs


def make_config(args: argparse.Namespace, model: dict[str, Any] | None = None, **loss: float) -> ADCConfig:
    """The main job's model settings on the long-tail fab (``model`` overrides fields of the model
    section that act after the cached features, ``loss`` the loss section)."""
    return ADCConfig(data={"path": str(args.data)},
                     image={"crop": args.crop or None, "max_shift": 8, "registration_method": "joint",
                            "crop_centre": args.crop_centre},
                     model={"backbone": args.backbone, "pretrained": args.scratch_epochs == 0,
                            "out_indices": [1, 2, 3], "grid": 4, "pool": "avgmax", "dim": 128, "fusion": "attention",
                            **(model or {})},
                     loss=loss, train={"epochs": args.epochs, "batch_size": 32, "lr": 0.003, "patience": 10},
                     triage={"min_train_samples": MIN_TRAIN}, seed=0, threads=args.threads, output=str(args.work))


def first_of_each_family(taxonomy) -> list[str]:  # noqa: ANN001
    """A neutral hold-out rule: the first leaf type of every family."""
    out: list[str] = []
    for leaf in taxonomy.leaves:
        if all(taxonomy.path(x)[-2] != taxonomy.path(leaf)[-2] for x in out):
            out.append(leaf)
    return out


def leaf_counts(type_index: np.ndarray, n_leaves: int) -> np.ndarray:
    """Examples per leaf type among sites' leaf indices (``-1`` = no type)."""
    t = np.asarray(type_index)
    return np.bincount(t[t >= 0], minlength=n_leaves).astype(np.int64)


def prepare(args: argparse.Namespace) -> dict[str, Any]:
    """Generate the fab when absent, encode every split; returns ``ds``, ``cfg``, ``fs`` (per split),
    ``counts`` (training examples per leaf) and the generation / encoding seconds. A backbone
    trained from scratch (``args.scratch_epochs``) is encoded by the caller: ``fs`` is empty and
    ``counts`` None."""
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    if not (args.data / "manifest.csv").is_file():
        from seminspect.data.synth import FabConfig, generate_dataset

        tail = {"long_tail": True, "n_holdout": args.holdout} if args.fab == "long_tail" else {}
        fab = FabConfig(image_size=args.size, n_angles=args.angles, n_references=args.references,
                        n_zooms=args.zooms, **tail)
        generate_dataset(args.data, args.n, fab, abnormal_fraction=0.5, seed=0, workers=args.threads,
                         splits={"train": 0.45, "calib": 0.35, "test": 0.2})
    gen_s = time.perf_counter() - t0
    ds = SampleDataset(args.data)
    split = np.array(ds.metadata_column("split"))
    ids = np.array(ds.sample_ids)
    cfg = make_config(args)
    torch.manual_seed(0)
    model = build_model(cfg, ds.taxonomy)
    t0 = time.perf_counter()
    # a backbone trained from scratch is encoded per run (its random features are of no use here)
    names = ("train", "calib", "test") if cfg.model.pretrained else ()
    fs = {s: features_for(model, ds.subset(ids[split == s].tolist()), cfg, [0], args.work / "cache", s)
          for s in names}
    if not cfg.model.pretrained:  # the caller counts the types of the sites it trains on
        return {"ds": ds, "cfg": cfg, "fs": fs, "counts": None, "generate_s": gen_s, "encode_s": 0.0}
    counts = leaf_counts(fs["train"].type_index.numpy(), len(ds.taxonomy.leaves))
    return {"ds": ds, "cfg": cfg, "fs": fs, "counts": counts, "generate_s": gen_s,
            "encode_s": time.perf_counter() - t0}


def cached_anomaly_scores(cfg: Any, ds: SampleDataset, fit_ids: list[str], cal_ids: list[str],
                          test_ids: list[str], data_root: Path, work: Path) -> tuple[np.ndarray, np.ndarray, float,
                                                                                     float]:
    """An anomaly model (``AnomalyConfig`` or its dict) fitted on ``fit_ids``, its calib and test scores, the fit
    and scoring seconds: cached under ``work`` by config, ids and data root (a rerun with other triage settings
    reuses the measured scores)."""
    import hashlib
    import json

    from seminspect.models.anomaly import AnomalyDetector

    key_cfg = cfg if isinstance(cfg, dict) else cfg.model_dump(mode="json")
    key = hashlib.sha256(json.dumps([key_cfg, list(fit_ids), list(cal_ids), list(test_ids),
                                     str(data_root.resolve())]).encode()).hexdigest()[:16]
    cache = work / f"anomaly_scores_{key}.npz"
    if cache.is_file():
        z = np.load(cache)
        score_s = z["score_s"] if "score_s" in z else z["pred_s"]  # older caches named it pred_s
        return z["cal"], z["test"], float(z["fit_s"]), float(score_s)
    t0 = time.perf_counter()
    det = AnomalyDetector(cfg).fit(ds.subset(list(fit_ids)), calib=[])
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    r_cal, r_te = det.score(ds.subset(list(cal_ids))), det.score(ds.subset(list(test_ids)))
    score_s = time.perf_counter() - t0
    assert list(r_cal.sample_ids) == list(cal_ids) and list(r_te.sample_ids) == list(test_ids)
    work.mkdir(parents=True, exist_ok=True)
    np.savez(cache, cal=r_cal.scores, test=r_te.scores, fit_s=fit_s, score_s=score_s)
    return r_cal.scores, r_te.scores, fit_s, score_s

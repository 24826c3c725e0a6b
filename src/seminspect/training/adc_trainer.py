"""Training, calibration and evaluation of the multi-view ADC model: the Python API behind the CLI.

    from seminspect.training.adc_trainer import train, evaluate
    artefact = train("configs/adc_demo.yaml")          # -> folder with weights, config, thresholds, metrics
    metrics = evaluate(artefact, "data/fab", split="test", report="report.html")

Schedule: (1) frozen backbone: view features are encoded once (:mod:`feature_cache`) and the
heads train on them with AdamW + cosine decay, class-balanced sampling, random cached dihedral
views as synchronised augmentation, early stopping on validation loss; (2) optional fine-tuning:
the last backbone stages are unfrozen and the whole model trains on images (live path) at a
lower learning rate. Seeded; a checkpoint after every epoch lets a killed run resume.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seminspect.data.dataset import SampleDataset
from seminspect.data.taxonomy import Taxonomy
from seminspect.errors import SeminspectError
from seminspect.models.adc import MultiViewADC
from seminspect.training.checkpoint import CheckpointError, read_checkpoint, restore_checkpoint, save_checkpoint
from seminspect.training.config import ADCConfig, ConfigError
from seminspect.training.feature_cache import (
    FeatureSet,
    PrepareSample,
    cache_key,
    compute_features,
    dihedral,
    load_features,
    resize_batch,
    save_features,
)
from seminspect.training.losses import ADCLoss
from seminspect.training.sampler import balanced_weights, class_keys
from seminspect.utils.io import atomic_write_json, atomic_write_text
from seminspect.utils.progress import make_progress
from seminspect.utils.seed import seed_everything


class ArtefactError(SeminspectError):
    """A trained-model folder is missing a file or is inconsistent."""


# ----- building blocks ---------------------------------------------------------------------------
def build_model(cfg: ADCConfig, taxonomy: Taxonomy, pretrained: bool | None = None) -> MultiViewADC:
    m = cfg.model
    return MultiViewADC(
        backbone_name=m.backbone, pretrained=m.pretrained if pretrained is None else pretrained, taxonomy=taxonomy,
        out_indices=m.out_indices, grid=m.grid, dim=m.dim, fusion=m.fusion, weights_path=m.weights_path,
        dropout=m.dropout, pool=m.pool,
    )


def memberships(model: MultiViewADC) -> dict[str, torch.Tensor]:
    return {name: model.membership(name) for name in model.level_names}


def make_loss(cfg: ADCConfig) -> ADCLoss:
    return ADCLoss(**cfg.loss.model_dump())


def freeze_backbone(model: MultiViewADC, trainable_last: int = 0) -> None:
    """Freeze the backbone, leaving the last ``trainable_last`` stages trainable."""
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    if trainable_last > 0:
        for stage in model.backbone_stages()[-trainable_last:]:
            for p in stage.parameters():
                p.requires_grad_(True)


def _cosine(optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    warm = max(1, total_steps // 20)

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total_steps - warm))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, f)


@dataclass
class History:
    epochs: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    best_val: float = float("inf")
    seconds: float = 0.0


def limit_train(train_ds: SampleDataset, max_train: int | None, seed: int) -> SampleDataset:
    """At most ``max_train`` samples of ``train_ds``: a seeded random choice, kept in dataset order."""
    if not max_train or len(train_ds) <= max_train:
        return train_ds
    rng = np.random.default_rng(seed)
    chosen = rng.choice(train_ds.sample_ids, max_train, replace=False).tolist()
    return train_ds.subset(sorted(chosen, key=train_ds.sample_ids.index))


def split_validation(fs: FeatureSet, fraction: float, seed: int) -> tuple[FeatureSet, FeatureSet]:
    """``(train, val)``: a stratified ``fraction`` of every class key (normal, each type) held out.

    The validation part keeps only the identity view (the first cached op): augmented copies of
    the same site would make early stopping score one site several times.
    """
    keys = class_keys(fs.is_abnormal.numpy(), fs.type_index.numpy())
    tr_idx, va_idx = _stratified_holdout(keys, fraction, seed)
    val = fs.subset(va_idx)
    val.feats, val.ops = val.feats[:1], val.ops[:1]
    return fs.subset(tr_idx), val


def _stratified_holdout(keys: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (train, val) with ``fraction`` of every class key in val (at least 1 if > 1)."""
    rng = np.random.default_rng(seed)
    val = []
    for k in np.unique(keys):
        idx = np.flatnonzero(keys == k)
        rng.shuffle(idx)
        n = int(round(len(idx) * fraction))
        if len(idx) > 1:
            n = max(1, n)
        val.extend(idx[:n].tolist())
    val_arr = np.array(sorted(val), dtype=np.int64)
    train_arr = np.setdiff1d(np.arange(len(keys)), val_arr)
    return train_arr, val_arr


# ----- head training on cached features ----------------------------------------------------------
@torch.no_grad()
def predict_features(model: MultiViewADC, fs: FeatureSet, ops: Sequence[int] | None = None,
                     batch_size: int = 256) -> dict[str, np.ndarray]:
    """Probabilities on cached features, averaged over the dihedral slices ``ops`` (TTA).

    Returns ``abnormal (N,)``, ``types (N, L)``, ``levels {level: (N, n)}``, ``embedding (N, D)``.
    """
    model.eval()
    slots = [fs.ops.index(op) for op in (ops if ops is not None else fs.ops[:1])]
    ab, ty, emb = [], [], []
    lv: dict[str, list] = {n: [] for n in model.level_names}
    for start in range(0, len(fs), batch_size):
        idx = torch.arange(start, min(len(fs), start + batch_size))
        acc_ab, acc_ty, acc_emb = 0.0, 0.0, 0.0
        acc_lv = dict.fromkeys(model.level_names, 0.0)
        for s in slots:
            out = model.forward_features(fs.feats[s, idx].float(), fs.roles[idx], fs.indices[idx], fs.view_mask[idx])
            pr = model.predict_proba(out)
            acc_ab = acc_ab + pr["abnormal"]
            acc_ty = acc_ty + pr["types"]
            acc_emb = acc_emb + out["embedding"]
            for n in model.level_names:
                acc_lv[n] = acc_lv[n] + pr["levels"][n]
        ab.append(acc_ab / len(slots))
        ty.append(acc_ty / len(slots))
        emb.append(acc_emb / len(slots))
        for n in model.level_names:
            lv[n].append(acc_lv[n] / len(slots))
    return {"abnormal": torch.cat(ab).numpy(), "types": torch.cat(ty).numpy(),
            "levels": {n: torch.cat(v).numpy() for n, v in lv.items()}, "embedding": torch.cat(emb).numpy()}


@torch.no_grad()
def _val_loss(model: MultiViewADC, fs: FeatureSet, loss_fn: ADCLoss, batch_size: int = 256) -> float:
    model.eval()
    total, n = 0.0, 0
    for start in range(0, len(fs), batch_size):
        idx = torch.arange(start, min(len(fs), start + batch_size))
        out = model.forward_features(fs.feats[0, idx].float(), fs.roles[idx], fs.indices[idx], fs.view_mask[idx])
        loss, _ = loss_fn(out, fs.is_abnormal[idx], fs.type_index[idx], memberships(model))
        total += float(loss) * len(idx)
        n += len(idx)
    return total / max(1, n)


def train_heads(
    model: MultiViewADC,
    train_fs: FeatureSet,
    val_fs: FeatureSet | None,
    cfg: ADCConfig,
    checkpoint: str | Path | None = None,
    stop_after: int | None = None,
    log: Callable[[str], None] | None = None,
) -> History:
    """Train everything but the backbone on cached features.

    Args:
        checkpoint: file written after every epoch; if it exists, training resumes from it.
        stop_after: stop (as if killed) after this many epochs in this call -- for tests.
    Returns the :class:`History`; the model ends with its best-validation weights.
    """
    t0 = time.perf_counter()
    tc = cfg.train
    freeze_backbone(model)
    params = [p for p in model.head_parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay)
    n = len(train_fs)
    steps = max(1, math.ceil(n / tc.batch_size))
    sched = _cosine(opt, steps * tc.epochs)
    loss_fn = make_loss(cfg)
    keys = class_keys(train_fs.is_abnormal.numpy(), train_fs.type_index.numpy())
    base_w = balanced_weights(keys, tc.balance_power) if tc.balanced_sampling else np.full(n, 1.0 / n)
    hardness = np.ones(n)
    hist = History()
    best_state = {k: v.clone() for k, v in model.state_dict().items()}
    start_epoch = 0
    fingerprint = _fingerprint(cfg, train_fs)
    saved = _matching_checkpoint(checkpoint, fingerprint, log) if checkpoint is not None else None
    if saved is not None:
        info = restore_checkpoint(saved, model, opt, sched)
        start_epoch = info["epoch"] + 1
        ex = info["extra"]
        hist = History(**ex["history"])
        best_state = ex["best_state"]
        hardness = ex["hardness"].numpy()
    mem = memberships(model)
    done_here = 0
    for epoch in range(start_epoch, tc.epochs):
        model.train()
        model.backbone.eval()  # frozen: keep BatchNorm statistics fixed
        g = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        w = base_w * hardness if tc.hard_mining else base_w
        order = torch.multinomial(torch.as_tensor(w / w.sum()), steps * tc.batch_size, replacement=True, generator=g)
        op_slot = torch.randint(0, len(train_fs.ops), (len(order),), generator=g)
        parts: dict[str, float] = {}
        for s in range(steps):
            idx = order[s * tc.batch_size:(s + 1) * tc.batch_size]
            osl = op_slot[s * tc.batch_size:(s + 1) * tc.batch_size]
            feats = train_fs.feats[osl, idx].float()
            out = model.forward_features(feats, train_fs.roles[idx], train_fs.indices[idx], train_fs.view_mask[idx])
            loss, p = loss_fn(out, train_fs.is_abnormal[idx], train_fs.type_index[idx], mem)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            sched.step()
            if tc.hard_mining:
                with torch.no_grad():
                    update_hardness(hardness, idx.numpy(), torch.sigmoid(out["abnormal_logit"]).numpy(),
                                    train_fs.is_abnormal[idx].numpy())
            for k, v in p.items():
                parts[k] = parts.get(k, 0.0) + v / steps
        val = _val_loss(model, val_fs, loss_fn) if val_fs is not None and len(val_fs) else parts["loss"]
        parts["val_loss"] = val
        parts["epoch"] = epoch
        hist.epochs.append(parts)
        if val < hist.best_val - 1e-5:
            hist.best_val, hist.best_epoch = val, epoch
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        if log:
            log(f"epoch {epoch + 1}/{tc.epochs} loss {parts['loss']:.4f} val {val:.4f}")
        stop = epoch - hist.best_epoch >= tc.patience
        if checkpoint is not None:
            save_checkpoint(checkpoint, model, opt, sched, epoch,
                            extra={"history": asdict(hist), "best_state": best_state,
                                   "hardness": torch.from_numpy(hardness),
                                   "fingerprint": fingerprint})
        done_here += 1
        if stop or (stop_after is not None and done_here >= stop_after):
            break
    model.load_state_dict(best_state)
    hist.seconds += time.perf_counter() - t0
    return hist


def update_hardness(hardness: np.ndarray, idx: np.ndarray, prob: np.ndarray, y: np.ndarray,
                    momentum: float = 0.5, gain: float = 4.0) -> None:
    """Online hard-example mining: update per-sample sampling multipliers in place.

    ``hardness (N,)`` starts at 1; each time sample ``i`` is drawn its multiplier moves towards
    ``1 + gain * |p_i - y_i|`` (``p`` the abnormal probability at that step, ``y`` 1/0) by an
    exponential moving average, so a confidently wrong sample is drawn up to ``1 + gain`` times
    as often as an easy one. Unlabelled samples (``y < 0``) keep their multiplier.
    """
    idx, prob, y = np.asarray(idx), np.asarray(prob, dtype=np.float64), np.asarray(y)
    lab = y >= 0
    target = 1.0 + gain * np.abs(prob - (y == 1))
    i = idx[lab]
    hardness[i] = momentum * hardness[i] + (1 - momentum) * target[lab]


def _fingerprint(cfg: ADCConfig, fs: FeatureSet) -> str:
    """What must match for a checkpoint to be resumed: the config (minus output paths) and the data."""
    import hashlib

    d = cfg.model_dump(mode="json")
    d.pop("output", None)
    d["train"].pop("cache_dir", None)
    d.pop("threads", None)
    h = hashlib.sha256(json.dumps(d, sort_keys=True).encode())
    h.update("\n".join(fs.sample_ids).encode())
    return h.hexdigest()[:16]


def _matching_checkpoint(path: str | Path, fingerprint: str,
                         log: Callable[[str], None] | None) -> dict[str, Any] | None:
    """The checkpoint at ``path`` if it is from this configuration and data, else None (start afresh)."""
    if not Path(path).is_file():
        return None
    try:
        state = read_checkpoint(path)
    except CheckpointError as exc:  # unreadable, or written by an older version that pickled objects
        if log:
            log(f"{exc}; starting afresh")
        return None
    if state.get("extra", {}).get("fingerprint") == fingerprint:
        return state
    if log:
        log(f"{path}: checkpoint is from another configuration or data; starting afresh")
    return None


# ----- fine-tuning on images (live path) ---------------------------------------------------------
def finetune(model: MultiViewADC, train_ds: SampleDataset, cfg: ADCConfig, taxonomy: Taxonomy,
             prepare: PrepareSample, log: Callable[[str], None] | None = None,
             val_ds: SampleDataset | None = None) -> float:
    """Unfreeze the last ``finetune_stages`` backbone stages and train on images; returns seconds.

    Each step draws a class-balanced batch of ``batch_size // 8`` sites and applies one dihedral
    op from ``train.finetune_augment`` (default ``train.augment``) to all views of the batch.
    With ``val_ds``, the validation loss is measured after every epoch and the model ends with
    the weights of the best epoch (the warm-started heads count as epoch 0).
    """
    from seminspect.data.batch import collate

    tc = cfg.train
    if tc.finetune_epochs <= 0:
        return 0.0
    t0 = time.perf_counter()
    ops = list(tc.finetune_augment if tc.finetune_augment is not None else tc.augment)
    freeze_backbone(model, tc.finetune_stages)
    bb = [p for p in model.backbone.parameters() if p.requires_grad]
    opt = torch.optim.AdamW([{"params": model.head_parameters(), "lr": tc.lr * 0.1},
                             {"params": bb, "lr": tc.backbone_lr}], weight_decay=tc.weight_decay)
    n = len(train_ds)
    bs = max(2, tc.batch_size // 8)
    steps = max(1, math.ceil(n / bs))
    sched = _cosine(opt, steps * tc.finetune_epochs)
    loss_fn = make_loss(cfg)
    keys = class_keys(train_ds.is_abnormal, [taxonomy.leaf_index(t) if t else -1 for t in train_ds.defect_types])
    w = balanced_weights(keys, tc.balance_power) if tc.balanced_sampling else np.full(n, 1.0 / n)
    mem = memberships(model)
    best_val, best_state = float("inf"), None
    if val_ds is not None and len(val_ds):
        best_val = _val_loss_live(model, val_ds, cfg, taxonomy, prepare, loss_fn)
        best_state = {k: v.clone() for k, v in model.state_dict().items()}
        if log:
            log(f"fine-tune start: val {best_val:.4f}")
    for epoch in range(tc.finetune_epochs):
        model.train()
        # BatchNorm statistics stay fixed (batches of ~8 views would make them noisy, and frozen
        # stages must not drift); the trainable stages still learn their BN scale and shift.
        model.backbone.eval()
        g = torch.Generator().manual_seed(cfg.seed * 1000 + 500 + epoch)
        order = torch.multinomial(torch.as_tensor(w), steps * bs, replacement=True, generator=g).tolist()
        total = 0.0
        with make_progress() as progress:
            task = progress.add_task(f"fine-tune epoch {epoch + 1}", total=steps)
            for s in range(steps):
                batch = collate([prepare(train_ds[i]) for i in order[s * bs:(s + 1) * bs]], taxonomy)
                # one of the configured dihedral ops, the same for every view of the batch
                op = ops[int(torch.randint(0, len(ops), (1,), generator=g))]
                images = dihedral(resize_batch(batch.images, cfg.image.resize), op)
                out = model(images, batch.roles, batch.indices, batch.view_mask)
                loss, _ = loss_fn(out, batch.is_abnormal, batch.type_index, mem)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += float(loss.detach()) / steps
                progress.advance(task)
        msg = f"fine-tune epoch {epoch + 1}/{tc.finetune_epochs} loss {total:.4f}"
        if best_state is not None:
            val = _val_loss_live(model, val_ds, cfg, taxonomy, prepare, loss_fn)
            msg += f" val {val:.4f}"
            if val < best_val - 1e-5:
                best_val, best_state = val, {k: v.clone() for k, v in model.state_dict().items()}
        if log:
            log(msg)
    if best_state is not None:
        model.load_state_dict(best_state)
    freeze_backbone(model)
    model.eval()
    return time.perf_counter() - t0


@torch.no_grad()
def _val_loss_live(model: MultiViewADC, ds: SampleDataset, cfg: ADCConfig, taxonomy: Taxonomy,
                   prepare: PrepareSample, loss_fn: ADCLoss) -> float:
    """Mean loss on images (identity view), model in eval mode."""
    from seminspect.data.batch import collate

    model.eval()
    total, n, bs = 0.0, 0, cfg.train.encode_batch
    for start in range(0, len(ds), bs):
        batch = collate([prepare(ds[i]) for i in range(start, min(len(ds), start + bs))], taxonomy)
        out = model(resize_batch(batch.images, cfg.image.resize), batch.roles, batch.indices, batch.view_mask)
        loss, _ = loss_fn(out, batch.is_abnormal, batch.type_index, memberships(model))
        total += float(loss) * len(batch.sample_ids)
        n += len(batch.sample_ids)
    return total / max(1, n)


# ----- datasets and features ---------------------------------------------------------------------
def prepare_for(cfg: ADCConfig) -> PrepareSample:
    im = cfg.image
    return PrepareSample(crop=im.crop, register=im.registration, method=im.registration_method, max_shift=im.max_shift)


def open_dataset(path: str | Path, roles: Sequence[str] | None = None) -> SampleDataset:
    return SampleDataset(path, roles=roles)


def split_or_none(ds: SampleDataset, name: str | None) -> SampleDataset | None:
    if not name or name not in set(ds.metadata_column("split")):
        return None
    return ds.split(name)


def features_for(model: MultiViewADC, ds: SampleDataset, cfg: ADCConfig, ops: Sequence[int],
                 cache_dir: str | Path | None, description: str) -> FeatureSet:
    """Encode a dataset's views (reusing an on-disk cache when the backbone is the pretrained one)."""
    parts = {"image": cfg.image.model_dump(), "backbone": cfg.model.backbone, "pretrained": cfg.model.pretrained,
             "weights": cfg.model.weights_path, "out": cfg.model.out_indices, "grid": cfg.model.grid,
             "pool": cfg.model.pool,
             "ops": list(ops), "roles": sorted(r.value for r in ds.roles) if ds.roles else None}
    path = None
    if cache_dir is not None and cfg.model.pretrained:
        path = Path(cache_dir) / f"feats_{cache_key(ds.root, ds.sample_ids, parts)}.safetensors"
        fs = load_features(path)
        if fs is not None:
            return fs
    fs = compute_features(model, ds, ds.taxonomy, prepare_for(cfg), ops=ops, batch_size=cfg.train.encode_batch,
                          resize=cfg.image.resize, description=description)
    if path is not None:
        save_features(fs, path)
    return fs


# ----- calibration and metrics -------------------------------------------------------------------
def calibrate(abnormal: np.ndarray, is_abnormal: np.ndarray, type_probs: np.ndarray | None, type_labels: np.ndarray |
              None, type_train_counts: np.ndarray | None, cfg: ADCConfig,
              cfg_type_names: Sequence[str] | None = None) -> dict[str, Any]:
    """Fit the precision threshold (and the triage policy when available) on calibration scores.

    Returns JSON-ready dicts: ``{"precision_threshold": ..., "triage": ... or None}``.
    """
    from seminspect.decision import PrecisionThreshold

    tri = cfg.triage
    labelled = is_abnormal >= 0
    pt = PrecisionThreshold(target_precision=tri.target_precision, confidence=tri.confidence)
    pt.fit(abnormal[labelled], is_abnormal[labelled])
    result: dict[str, Any] = {"precision_threshold": pt.to_dict(), "triage": None}
    try:
        from seminspect.decision import TriagePolicy  # type: ignore[attr-defined]
    except ImportError:
        return result
    try:
        policy = _make_policy(TriagePolicy, tri)
        policy.fit(abnormal[labelled], is_abnormal[labelled],
                   type_probs=None if type_probs is None else type_probs[labelled],
                   type_labels=None if type_labels is None else type_labels[labelled],
                   type_train_counts=type_train_counts, type_names=list(cfg_type_names or []) or None)
        result["triage"] = policy.to_dict()
    except SeminspectError as exc:
        result["triage_error"] = str(exc)
    return result


def _make_policy(cls: Any, tri: Any) -> Any:
    import inspect

    params = inspect.signature(cls).parameters
    wanted = {"abnormal_precision": tri.target_precision, "confidence": tri.confidence,
              "min_train_samples": tri.min_train_samples, "normal_miss_rate": tri.normal_error}
    return cls(**{k: v for k, v in wanted.items() if k in params})


def compute_metrics(pred: dict[str, np.ndarray], fs_labels: tuple[np.ndarray, np.ndarray], taxonomy: Taxonomy,
                    thresholds: dict[str, Any] | None = None, target_precision: float = 0.99) -> dict[str, Any]:
    """Headline metrics of predictions against labels ``(is_abnormal (N,), type_index (N,))``."""
    from sklearn.metrics import f1_score, roc_auc_score

    from seminspect.decision import clopper_pearson_lower

    ab_true, ti = fs_labels
    lab = ab_true >= 0
    scores, y = pred["abnormal"][lab], ab_true[lab]
    m: dict[str, Any] = {"n": int(lab.sum()), "n_abnormal": int((y == 1).sum())}
    if len(np.unique(y)) == 2:
        m["auroc"] = float(roc_auc_score(y, scores))
        from seminspect.evaluation.metrics import recall_at_precision

        # Threshold chosen on this set (optimistic); the calibrated figure is under "calibrated".
        m["recall_at_precision"] = recall_at_precision(y, scores, target_precision).as_dict()
        m["recall_at_precision_bound"] = recall_at_precision(y, scores, target_precision,
                                                             criterion="bound").as_dict()
    if thresholds is not None:
        from seminspect.decision import PrecisionThreshold

        thr = float(PrecisionThreshold.from_dict(thresholds["precision_threshold"]).threshold_)
        flag = scores >= thr
        tp, fp = int((flag & (y == 1)).sum()), int((flag & (y == 0)).sum())
        m["calibrated"] = {"threshold": thr, "tp": tp, "fp": fp, "recall": tp / max(1, int((y == 1).sum())),
                           "precision": tp / max(1, tp + fp),
                           "precision_lower_95": float(clopper_pearson_lower(tp, tp + fp, 0.95)) if tp + fp else 0.0}
    typed = (ab_true == 1) & (ti >= 0)
    if typed.any():
        probs = pred["types"][typed]
        t = ti[typed]
        yhat = probs.argmax(1)
        present = np.unique(t)
        m["type_accuracy"] = float((yhat == t).mean())
        m["type_macro_f1"] = float(f1_score(t, yhat, labels=present, average="macro", zero_division=0))
        m["type_top3"] = float((np.argsort(-probs, 1)[:, :3] == t[:, None]).any(1).mean())
        per_f1 = f1_score(t, yhat, labels=present, average=None, zero_division=0)
        m["type_f1"] = {taxonomy.leaves[k]: float(v) for k, v in zip(present, per_f1, strict=True)}
        m["level_accuracy"] = {}
        for name, pl in pred["levels"].items():
            anc = taxonomy.leaf_to_level(name)
            m["level_accuracy"][name] = float((pl[typed].argmax(1) == anc[t]).mean())
        m["level_accuracy"][taxonomy.levels[-1]] = m["type_accuracy"]
        cm = np.zeros((taxonomy.num_leaves, taxonomy.num_leaves), dtype=np.int64)
        np.add.at(cm, (t, yhat), 1)
        m["confusion"] = cm.tolist()
    return m


# ----- the whole job -----------------------------------------------------------------------------
@dataclass
class TrainResult:
    artefact: Path
    metrics: dict[str, Any]
    model: MultiViewADC
    history: History
    # per split: the predictions of :func:`predict_features` plus ``is_abnormal`` / ``type_index`` labels
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
    """Train, calibrate on the ``calib`` split, evaluate on ``test`` and write one artefact folder.

    The folder holds ``weights.safetensors``, ``config.yaml``, ``thresholds.json`` (precision
    threshold + triage policy), ``metrics.json``, ``report.html`` and ``history.json``.
    """
    cfg = config if isinstance(config, ADCConfig) else ADCConfig.from_yaml(config)
    out = Path(output or cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    _ensure_data(cfg)
    ds = open_dataset(cfg.data.path, cfg.data.roles)
    taxonomy = ds.taxonomy
    train_ds = limit_train(ds.split(cfg.data.train_split), cfg.data.max_train, cfg.seed)
    val_ds = split_or_none(ds, cfg.data.val_split)
    model = build_model(cfg, taxonomy)
    cache_dir = cfg.train.cache_dir or (out / "cache")
    t0 = time.perf_counter()
    train_fs = features_for(model, train_ds, cfg, cfg.train.augment, cache_dir, "encoding train views")
    if val_ds is None:
        train_fs, val_fs = split_validation(train_fs, cfg.data.val_fraction, cfg.seed)
    else:
        val_fs = features_for(model, val_ds, cfg, [0], cache_dir, "encoding val views")
    encode_s = time.perf_counter() - t0
    hist = train_heads(model, train_fs, val_fs, cfg, checkpoint=out / "checkpoint.pt", log=log)
    # Fine-tuning never sees the validation sites (they choose its best epoch instead).
    if val_ds is None:
        held = set(val_fs.sample_ids)
        ft_train = train_ds.subset([i for i in train_ds.sample_ids if i not in held])
        ft_val = train_ds.subset(val_fs.sample_ids)
    else:
        ft_train, ft_val = train_ds, val_ds
    ft_s = finetune(model, ft_train, cfg, taxonomy, prepare_for(cfg), log=log, val_ds=ft_val)
    type_counts = np.bincount(train_fs.type_index.numpy()[(train_fs.is_abnormal.numpy() == 1)
                                                          & (train_fs.type_index.numpy() >= 0)],
                              minlength=taxonomy.num_leaves)
    # Calibration and test features: recomputed when the backbone was fine-tuned.
    feat_cache = cache_dir if cfg.train.finetune_epochs == 0 else None
    calib_ds = split_or_none(ds, cfg.data.calib_split)
    thresholds: dict[str, Any] = {}
    if calib_ds is not None:
        cfs = features_for(model, calib_ds, cfg, cfg.train.tta, feat_cache, "encoding calib views")
        cp = predict_features(model, cfs, cfg.train.tta)
        thresholds = calibrate(cp["abnormal"], cfs.is_abnormal.numpy(), cp["types"], cfs.type_index.numpy(),
                               type_counts, cfg, taxonomy.leaves)
    thresholds["type_train_counts"] = type_counts.tolist()
    atomic_write_json(out / "thresholds.json", thresholds)
    save_artefact(model, cfg, out, taxonomy)
    metrics: dict[str, Any] = {"train_samples": len(train_fs), "val_samples": len(val_fs),
                               "encode_seconds": encode_s, "train_seconds": hist.seconds, "finetune_seconds": ft_s,
                               "best_epoch": hist.best_epoch, "epochs_run": len(hist.epochs)}
    test_ds = split_or_none(ds, cfg.data.test_split)
    preds: dict[str, dict[str, Any]] = {}
    if test_ds is not None:
        tfs = features_for(model, test_ds, cfg, cfg.train.tta, feat_cache, "encoding test views")
        tp = predict_features(model, tfs, cfg.train.tta)
        metrics["test"] = compute_metrics(tp, (tfs.is_abnormal.numpy(), tfs.type_index.numpy()), taxonomy,
                                          thresholds if calib_ds is not None else None,
                                          cfg.triage.target_precision)
        _triage_metrics(metrics["test"], thresholds, tp, tfs)
        preds["test"] = {**tp, "is_abnormal": tfs.is_abnormal.numpy(), "type_index": tfs.type_index.numpy()}
        _write_report(out / "report.html", metrics["test"], tp, tfs, test_ds, taxonomy, cfg, thresholds)
    atomic_write_json(out / "metrics.json", metrics)
    atomic_write_json(out / "history.json", hist.epochs)
    return TrainResult(out, metrics, model, hist, preds)


def _triage_metrics(m: dict[str, Any], thresholds: dict[str, Any], pred: dict[str, np.ndarray],
                    fs: FeatureSet) -> None:
    """Automation rate and the error among automated decisions, from the fitted triage policy."""
    if not thresholds.get("triage"):
        return
    try:
        from seminspect.decision import TriagePolicy  # type: ignore[attr-defined]

        policy = TriagePolicy.from_dict(thresholds["triage"])
        res = policy.predict(pred["abnormal"], type_probs=pred["types"])
        m["triage"] = _summarise_triage(res, fs.is_abnormal.numpy(), fs.type_index.numpy())
    except Exception as exc:  # the policy API is another helper's; report instead of failing the run
        m["triage_error"] = f"{type(exc).__name__}: {exc}"


def _summarise_triage(res: Any, y: np.ndarray, ti: np.ndarray) -> dict[str, Any]:
    route = np.asarray(getattr(res, "route", getattr(res, "routes", None)))
    out: dict[str, Any] = {}
    if route.dtype.kind in "US" or route.dtype == object:
        route = route.astype(str)
        auto_ab, auto_no = route == "auto_abnormal", route == "auto_normal"
        auto = auto_ab | auto_no
        out["automation_rate"] = float(auto.mean())
        errors = (auto_ab & (y == 0)) | (auto_no & (y == 1))
        out["error_rate_automated"] = float(errors[auto].mean()) if auto.any() else 0.0
        out["routes"] = {r: int((route == r).sum()) for r in np.unique(route)}
        td = np.asarray(getattr(res, "type_decision", np.full(len(route), -1)))
        typed = auto_ab & (td >= 0) & (y == 1) & (ti >= 0)
        out["type_automation_rate"] = float(((td >= 0) & auto_ab).sum() / max(1, int(auto_ab.sum())))
        out["type_error_rate_automated"] = float((td[typed] != ti[typed]).mean()) if typed.any() else 0.0
    return out


# ----- artefacts ---------------------------------------------------------------------------------
def save_artefact(model: MultiViewADC, cfg: ADCConfig, out: Path, taxonomy: Taxonomy) -> None:
    from safetensors.torch import save_model

    from seminspect.utils.io import atomic_path

    with atomic_path(out / "weights.safetensors") as tmp:
        save_model(model, str(tmp))
    atomic_write_text(out / "config.yaml", cfg.to_yaml())
    import yaml

    atomic_write_text(out / "taxonomy.yaml", yaml.safe_dump(taxonomy.to_dict(), sort_keys=False))


def load_artefact(path: str | Path) -> tuple[MultiViewADC, ADCConfig, dict[str, Any], Taxonomy]:
    """``(model, config, thresholds, taxonomy)`` from an artefact folder (no pickle involved)."""
    import json

    from safetensors.torch import load_model

    path = Path(path)
    for name in ("weights.safetensors", "config.yaml", "taxonomy.yaml"):
        if not (path / name).is_file():
            raise ArtefactError(f"{path / name}: missing from the artefact folder")
    cfg = ADCConfig.from_yaml(path / "config.yaml")
    taxonomy = Taxonomy.from_yaml(path / "taxonomy.yaml")
    model = build_model(cfg, taxonomy, pretrained=False)
    load_model(model, str(path / "weights.safetensors"))
    model.eval()
    th_path = path / "thresholds.json"
    thresholds = json.loads(th_path.read_text()) if th_path.is_file() else {}
    return model, cfg, thresholds, taxonomy


def evaluate(artefact: str | Path, dataset: str | Path, split: str | None = "test",
             report: str | Path | None = None, drop_roles: Sequence[str] = ()) -> dict[str, Any]:
    """Metrics of a trained artefact on a dataset (one split, or all samples if ``split`` is None)."""
    model, cfg, thresholds, taxonomy = load_artefact(artefact)
    ds = open_dataset(dataset)
    if split and split in set(ds.metadata_column("split")):
        ds = ds.split(split)
    elif split:
        raise ConfigError(f"{dataset}: no samples with split == {split!r}")
    fs = features_for(model, ds, cfg, cfg.train.tta, None, "encoding views")
    for role in drop_roles:
        from seminspect.data.sample import Role

        fs = fs.drop_role(Role.parse(role).code)
    pred = predict_features(model, fs, cfg.train.tta)
    m = compute_metrics(pred, (fs.is_abnormal.numpy(), fs.type_index.numpy()), taxonomy,
                        thresholds if thresholds.get("precision_threshold") else None, cfg.triage.target_precision)
    _triage_metrics(m, thresholds, pred, fs)
    if report is not None:
        _write_report(Path(report), m, pred, fs, ds, taxonomy, cfg, thresholds)
    return m


def _write_report(path: Path, m: dict[str, Any], pred: dict[str, np.ndarray], fs: FeatureSet, ds: SampleDataset,
                  taxonomy: Taxonomy, cfg: ADCConfig, thresholds: dict[str, Any]) -> None:
    try:
        from seminspect.evaluation.report import HtmlReport
    except ImportError:
        return  # the report module is another helper's; metrics.json still holds everything
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rep = HtmlReport("Multi-view ADC evaluation")
    rep.add_heading("Headline")
    rows = [["samples", m.get("n")], ["AUROC", _fmt(m.get("auroc"))]]
    rapb = m.get("recall_at_precision_bound", {})
    rows.append(["recall where the 95 % lower bound of precision >= target (this set)", _fmt(rapb.get("recall"))])
    rap = m.get("recall_at_precision", {})
    rows.append([f"recall at precision >= {cfg.triage.target_precision:.0%} (threshold on this set)",
                 f"{_fmt(rap.get('recall'))} CI95 {rap.get('recall_ci')}, precision lower bound "
                 f"{_fmt(rap.get('precision_lower_bound'))}"])
    cal = m.get("calibrated")
    if cal:
        rows.append(["calibrated threshold: recall / precision / precision lower 95 %",
                     f"{_fmt(cal['recall'])} / {_fmt(cal['precision'])} / {_fmt(cal['precision_lower_95'])}"])
    for k in ("type_macro_f1", "type_accuracy", "type_top3"):
        rows.append([k, _fmt(m.get(k))])
    for k, v in m.get("level_accuracy", {}).items():
        rows.append([f"accuracy at level {k}", _fmt(v)])
    if "triage" in m:
        rows.append(["automation rate", _fmt(m["triage"].get("automation_rate"))])
        rows.append(["error among automated", _fmt(m["triage"].get("error_rate_automated"))])
    rep.add_table([{"metric": r[0], "value": r[1]} for r in rows])
    y = fs.is_abnormal.numpy()
    lab = y >= 0
    from seminspect.evaluation.displays import ConfusionMatrixDisplay, PRCurveDisplay, ROCCurveDisplay

    if len(np.unique(y[lab])) == 2:
        thr = m.get("recall_at_precision", {}).get("threshold")
        point = thr if thr is not None and np.isfinite(thr) else None
        fig, ax = plt.subplots(1, 2, figsize=(9, 4))
        PRCurveDisplay.from_predictions(y[lab], pred["abnormal"][lab], operating_point=point,
                                        target_precision=cfg.triage.target_precision).plot(ax[0])
        ROCCurveDisplay.from_predictions(y[lab], pred["abnormal"][lab], operating_point=point).plot(ax[1])
        fig.tight_layout()
        rep.add_figure(fig)
        plt.close(fig)
    if "confusion" in m:
        fig, ax = plt.subplots(figsize=(7, 6))
        ConfusionMatrixDisplay(np.array(m["confusion"], dtype=np.int64), list(taxonomy.leaves)).plot(ax)
        ax.set_title("type confusion (defect samples), row-normalised")
        fig.tight_layout()
        rep.add_figure(fig)
        plt.close(fig)
    # Worst errors: highest-confidence mistakes on the binary decision, all views side by side.
    err = np.where(y == 1, 1 - pred["abnormal"], pred["abnormal"])
    err[~lab] = -1
    rep.add_heading("Worst errors (all views side by side)")
    for i in np.argsort(-err)[:5]:
        if err[i] < 0.5:
            break
        s = ds[int(i)]
        cap = [f"{v.role.value}{v.index}" for v in s.views]
        rep.add_image_strip([v.image for v in s.views], cap,
                            title=f"{s.sample_id}: true {s.defect_type or 'normal'}, p(abnormal) = "
                                  f"{pred['abnormal'][i]:.3f}")
    rep.save(path)


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)

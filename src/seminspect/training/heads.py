"""Head training on cached frozen-backbone features: the fast CPU phase of ADC training.

    hist = train_heads(model, train_fs, val_fs, cfg, checkpoint="out/checkpoint.pt")

AdamW + cosine decay with warm-up, class-balanced sampling (optionally with online hard-example
mining), a random cached dihedral view per sample as synchronised augmentation, early stopping on
validation loss, and a checkpoint after every epoch so that a killed run resumes where it stopped.
Under ``torchrun`` (:mod:`seminspect.training.distributed`) each global batch is split between the
processes and the model is wrapped in DistributedDataParallel (see :func:`train_heads`).
Also the helpers shared with fine-tuning (:mod:`seminspect.training.finetune`): freezing, the
schedule, the loss factory and the stratified validation carve-out.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seminspect.models.adc import MultiViewADC
from seminspect.models.adc_features import FeatureSet
from seminspect.training import distributed as dist
from seminspect.training.checkpoint import CheckpointError, read_checkpoint, restore_checkpoint, save_checkpoint
from seminspect.training.config import ADCConfig
from seminspect.training.losses import ADCLoss
from seminspect.training.sampler import balanced_weights, class_keys


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


@torch.no_grad()
def _val_loss(model: MultiViewADC, fs: FeatureSet, loss_fn: ADCLoss, batch_size: int = 256) -> float:
    """Mean loss over ``fs`` (identity view); under torchrun each rank scores a share of the chunks."""
    model.eval()
    total, n = 0.0, 0
    for start in dist.share(range(0, len(fs), batch_size)):
        idx = torch.arange(start, min(len(fs), start + batch_size))
        out = model.forward_features(fs.feats[0, idx].float(), fs.roles[idx], fs.indices[idx], fs.view_mask[idx])
        loss, _ = loss_fn(out, fs.is_abnormal[idx], fs.type_index[idx], memberships(model))
        total += float(loss) * len(idx)
        n += len(idx)
    if dist.active():
        total, n = dist.all_reduce_sum([total, n])
    return total / max(1, n)


class FeatureForward(torch.nn.Module):
    """``model.forward_features`` as a module's ``forward``, so that DistributedDataParallel can wrap it."""

    def __init__(self, model: MultiViewADC) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args: torch.Tensor) -> dict[str, Any]:
        return self.model.forward_features(*args)


def train_heads(
    model: MultiViewADC,
    train_fs: FeatureSet,
    val_fs: FeatureSet | None,
    cfg: ADCConfig,
    checkpoint: str | Path | None = None,
    stop_after: int | None = None,
    log: Callable[[str], None] | None = None,
    inputs: str | None = None,
) -> History:
    """Train everything but the backbone on cached features.

    Args:
        checkpoint: file written after every epoch; if it exists, training resumes from it when
            it was written for the same config, sites, labels and ``inputs`` (else training starts
            afresh and ``log`` says what changed).
        stop_after: stop (as if killed) after this many epochs in this call -- for tests.
        inputs: a digest of the image files the features come from
            (:func:`seminspect.data.fingerprint.dataset_fingerprint`), kept in the checkpoint.
    Returns the :class:`History`; the model ends with its best-validation weights.

    Under torchrun every rank draws the same epoch order; each global batch of ``batch_size``
    samples is split between the ranks (rank ``r`` takes every ``world_size``-th sample from ``r``)
    and DDP averages the gradients, so a step sees the same global batch as on one process. Losses
    and the validation loss are averaged over the ranks, so all take the same early-stopping and
    best-epoch decisions; rank 0 alone writes the checkpoint and every rank resumes from it.
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
    val_ids = [] if val_fs is None else val_fs.sample_ids
    fingerprint = _fingerprint(cfg, [*train_fs.sample_ids, "val", *val_ids],
                               _labels_digest(train_fs, val_fs), inputs)
    dist.check_share(tc.batch_size, "train.batch_size")
    saved = None
    if checkpoint is not None:
        saved = dist.on_main(lambda: _matching_checkpoint(checkpoint, fingerprint, log))
    if saved is not None:
        info = restore_checkpoint(saved, model, opt, sched)
        ex = info["extra"]
        # an early-stopped run is finished: resuming it must not train one more epoch
        start_epoch = tc.epochs if ex.get("stopped") else info["epoch"] + 1
        hist = History(**ex["history"])
        best_state = ex["best_state"]
        hardness = ex["hardness"].numpy()
        if log:
            log(f"{checkpoint}: resuming head training after epoch {info['epoch'] + 1}")
    mem = memberships(model)
    net = dist.wrap(FeatureForward(model)) if dist.active() else model.forward_features
    done_here = 0
    for epoch in range(start_epoch, tc.epochs):
        model.train()
        model.backbone.eval()  # frozen: keep BatchNorm statistics fixed
        dist.reseed(cfg.seed * 1000 + epoch)
        g = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        w = base_w * hardness if tc.hard_mining else base_w
        order = torch.multinomial(torch.as_tensor(w / w.sum()), steps * tc.batch_size, replacement=True, generator=g)
        op_slot = torch.randint(0, len(train_fs.ops), (len(order),), generator=g)
        parts: dict[str, float] = {}
        for s in range(steps):
            batch_idx = order[s * tc.batch_size:(s + 1) * tc.batch_size]
            idx = dist.share(batch_idx)  # this rank's part of the global batch (all of it on one process)
            osl = dist.share(op_slot[s * tc.batch_size:(s + 1) * tc.batch_size])
            feats = train_fs.feats[osl, idx].float()
            out = net(feats, train_fs.roles[idx], train_fs.indices[idx], train_fs.view_mask[idx])
            loss, p = loss_fn(out, train_fs.is_abnormal[idx], train_fs.type_index[idx], mem)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            sched.step()
            if tc.hard_mining:
                with torch.no_grad():
                    # every rank applies the whole global batch's update: the sampling weights stay equal
                    prob = dist.gather_shares(torch.sigmoid(out["abnormal_logit"]).numpy(), len(batch_idx))
                    update_hardness(hardness, batch_idx.numpy(), prob, train_fs.is_abnormal[batch_idx].numpy())
            for k, v in p.items():
                parts[k] = parts.get(k, 0.0) + v / steps
        parts = dist.mean_parts(parts)
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
        if checkpoint is not None and dist.writes():
            save_checkpoint(checkpoint, model, opt, sched, epoch,
                            extra={"history": asdict(hist), "best_state": best_state,
                                   "hardness": torch.from_numpy(hardness),
                                   "fingerprint": fingerprint, "stopped": bool(stop)})
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


def _digest(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else part.encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


def _labels_digest(*sets: FeatureSet | None) -> str:
    """A digest of the labels (abnormal flag, type index per site) of the feature sets given."""
    return _digest(*(t.numpy().astype(np.int64).tobytes() for fs in sets if fs is not None
                     for t in (fs.is_abnormal, fs.type_index)))


def _fingerprint(cfg: ADCConfig, sample_ids: Sequence[str], labels: str, inputs: str | None) -> dict[str, str]:
    """What must match for a checkpoint to be resumed: the config (minus output paths), sites, labels, image files.

    ``labels`` and ``inputs`` are digests (``inputs`` of the image files; "not given" when the
    caller has none); each part is compared on its own, so a notice can name what changed.
    """
    d = cfg.model_dump(mode="json")
    d.pop("output", None)
    d["train"].pop("cache_dir", None)
    d.pop("threads", None)
    return {"config": _digest(json.dumps(d, sort_keys=True)), "sites": _digest(*sample_ids), "labels": labels,
            "image files": inputs or "not given"}


def _matching_checkpoint(path: str | Path, fingerprint: dict[str, str],
                         log: Callable[[str], None] | None) -> dict[str, Any] | None:
    """The checkpoint at ``path`` if it is from this configuration and data, else None (start afresh).

    Whatever does not match -- an unreadable or foreign file, one written before checkpoints held
    a content fingerprint, another config, other sites, corrected labels, changed image files --
    is said in one line to ``log``, naming what changed, and training starts afresh (the file is
    replaced after the first epoch).
    """
    if not Path(path).is_file():
        return None
    try:
        state = read_checkpoint(path)
    except CheckpointError as exc:  # unreadable, or written by an older version that pickled objects
        if log:
            log(f"{exc}; training afresh")
        return None
    extra = state.get("extra") if isinstance(state, dict) else None
    saved = extra.get("fingerprint") if isinstance(extra, dict) else None
    if not isinstance(saved, dict):
        if log:
            what = "a checkpoint of an older seminspect (no content fingerprint)" if isinstance(saved, str) \
                else "not a training checkpoint"
            log(f"{path}: {what}; training afresh")
        return None
    diff = [k for k in fingerprint if saved.get(k) != fingerprint[k]]
    if not diff:
        return state
    if log:
        log(f"{path}: the {' and the '.join(diff)} changed since this checkpoint was written; training afresh")
    return None


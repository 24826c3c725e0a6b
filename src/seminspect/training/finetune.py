"""Fine-tuning on images (the live path): the last backbone stages unfrozen, trained with the heads.

    seconds = finetune(model, train_ds, cfg, taxonomy, prepare, val_ds=val_ds, checkpoint="out/finetune.pt")

Runs after head training (:mod:`seminspect.training.heads`) when ``train.finetune_epochs > 0``;
with a validation set the model ends with the weights of its best epoch. A checkpoint after every
epoch lets a killed run resume. Under ``torchrun`` the model is wrapped in DistributedDataParallel
and each batch split between the processes (:mod:`seminspect.training.distributed`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seminspect.data.dataset import SampleDataset
from seminspect.data.fingerprint import dataset_fingerprint
from seminspect.data.prepare import PrepareSample
from seminspect.data.taxonomy import Taxonomy
from seminspect.models.adc import MultiViewADC
from seminspect.models.adc_features import dihedral, resize_batch
from seminspect.training import distributed as dist
from seminspect.training.checkpoint import restore_checkpoint, save_checkpoint
from seminspect.training.config import ADCConfig
from seminspect.training.heads import (
    _cosine,
    _digest,
    _fingerprint,
    _matching_checkpoint,
    freeze_backbone,
    make_loss,
    memberships,
)
from seminspect.training.losses import ADCLoss
from seminspect.training.sampler import balanced_weights, class_keys
from seminspect.utils.progress import make_progress


def trainable_batchnorm(backbone: torch.nn.Module) -> None:
    """Put the BatchNorm layers whose scale or shift trains into training mode (their running
    statistics then follow the batches); frozen ones stay in eval mode."""
    for m in backbone.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and any(p.requires_grad for p in m.parameters()):
            m.train()


def finetune(model: MultiViewADC, train_ds: SampleDataset, cfg: ADCConfig, taxonomy: Taxonomy,
             prepare: PrepareSample, log: Callable[[str], None] | None = None,
             val_ds: SampleDataset | None = None, checkpoint: str | Path | None = None) -> float:
    """Unfreeze the last ``finetune_stages`` backbone stages and train on images; returns seconds.

    Each step draws a class-balanced batch of ``batch_size // 8`` sites and applies one dihedral
    op from ``train.finetune_augment`` (default ``train.augment``) to all views of the batch.
    With ``val_ds``, the validation loss is measured after every epoch and the model ends with
    the weights of the best epoch (the warm-started heads count as epoch 0). With ``checkpoint``,
    the state is saved after every epoch and a run finding a matching file resumes from it.

    Under torchrun every rank draws the same order and op; rank ``r`` encodes every
    ``world_size``-th site of each batch from ``r`` and DDP averages the gradients (the same global
    batch as on one process); the losses are averaged over the ranks, so all keep the same best
    epoch. Rank 0 alone writes the checkpoint.
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
    dist.check_share(bs, "a fine-tuning batch (train.batch_size // 8, at least 2)")
    best_val, best_state = float("inf"), None
    start_epoch = 0
    val_ids = list(val_ds.sample_ids) if val_ds else []
    labels = [f"{a}:{t}" for d in (train_ds, val_ds) if d is not None for a, t in zip(d.is_abnormal, d.defect_types,
                                                                                        strict=True)]
    images = [dataset_fingerprint(d)["image files"] for d in (train_ds, val_ds) if d is not None]
    fingerprint = _fingerprint(cfg, ["finetune", *train_ds.sample_ids, "val", *val_ids], _digest(*labels),
                               ":".join(images))
    saved = None
    if checkpoint is not None:
        saved = dist.on_main(lambda: _matching_checkpoint(checkpoint, fingerprint, log))
    if saved is not None:
        info = restore_checkpoint(saved, model, opt, sched)
        start_epoch = info["epoch"] + 1
        best_val = info["extra"]["best_val"]
        best_state = info["extra"]["best_state"] or None
        if log:
            log(f"{checkpoint}: resuming fine-tuning after epoch {start_epoch}")
    elif val_ds is not None and len(val_ds):
        best_val = _val_loss_live(model, val_ds, cfg, taxonomy, prepare, loss_fn)
        best_state = {k: v.clone() for k, v in model.state_dict().items()}
        if log:
            log(f"fine-tune start: val {best_val:.4f}")
    net = dist.wrap(model)
    for epoch in range(start_epoch, tc.finetune_epochs):
        model.train()
        # BatchNorm statistics stay fixed by default (batches of ~8 sites would make them noisy, and
        # frozen stages must not drift); the trainable stages still learn their BN scale and shift.
        model.backbone.eval()
        if tc.finetune_batchnorm:
            trainable_batchnorm(model.backbone)
        dist.reseed(cfg.seed * 1000 + 500 + epoch)
        g = torch.Generator().manual_seed(cfg.seed * 1000 + 500 + epoch)
        order = torch.multinomial(torch.as_tensor(w), steps * bs, replacement=True, generator=g).tolist()
        total = 0.0
        with make_progress() as progress:
            task = progress.add_task(f"fine-tune epoch {epoch + 1}", total=steps)
            for s in range(steps):
                # this rank's part of the global batch (all of it on one process)
                batch = collate([prepare(train_ds[i]) for i in dist.share(order[s * bs:(s + 1) * bs])], taxonomy)
                # one of the configured dihedral ops, the same for every view of the batch
                op = ops[int(torch.randint(0, len(ops), (1,), generator=g))]
                images = dihedral(resize_batch(batch.images, cfg.image.resize), op)
                out = net(images, batch.roles, batch.indices, batch.view_mask)
                loss, _ = loss_fn(out, batch.is_abnormal, batch.type_index, mem)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                if tc.finetune_batchnorm:
                    dist.average_batchnorm_statistics(model.backbone)
                total += float(loss.detach()) / steps
                progress.advance(task)
        total = dist.mean_parts({"loss": total})["loss"]
        msg = f"fine-tune epoch {epoch + 1}/{tc.finetune_epochs} loss {total:.4f}"
        if best_state is not None:
            val = _val_loss_live(model, val_ds, cfg, taxonomy, prepare, loss_fn)
            msg += f" val {val:.4f}"
            if val < best_val - 1e-5:
                best_val, best_state = val, {k: v.clone() for k, v in model.state_dict().items()}
        if log:
            log(msg)
        if checkpoint is not None and dist.writes():
            extra: dict[str, Any] = {"best_val": best_val, "best_state": best_state or {}, "fingerprint": fingerprint}
            save_checkpoint(checkpoint, model, opt, sched, epoch, extra=extra)
    del net
    if best_state is not None:
        model.load_state_dict(best_state)
    freeze_backbone(model)
    model.eval()
    return time.perf_counter() - t0


@torch.no_grad()
def _val_loss_live(model: MultiViewADC, ds: SampleDataset, cfg: ADCConfig, taxonomy: Taxonomy,
                   prepare: PrepareSample, loss_fn: ADCLoss) -> float:
    """Mean loss on images (identity view), model in eval mode.

    Under torchrun each rank scores every ``world_size``-th chunk of ``encode_batch`` sites and the
    sums are added up: the same chunks, so the same value as on one process up to rounding.
    """
    from seminspect.data.batch import collate

    model.eval()
    total, n, bs = 0.0, 0, cfg.train.encode_batch
    for start in dist.share(range(0, len(ds), bs)):
        batch = collate([prepare(ds[i]) for i in range(start, min(len(ds), start + bs))], taxonomy)
        out = model(resize_batch(batch.images, cfg.image.resize), batch.roles, batch.indices, batch.view_mask)
        loss, _ = loss_fn(out, batch.is_abnormal, batch.type_index, memberships(model))
        total += float(loss) * len(batch.sample_ids)
        n += len(batch.sample_ids)
    if dist.active():
        total, n = dist.all_reduce_sum([total, n])
    return total / max(1, n)


"""STPM teacher fine-tuning on the product's own images (``teacher_finetune_epochs``), before the student learns.

The user's STPM study found that fine-tuning the teacher on the product's images helped the deep
layers, with layer 1 frozen. A fab has normal images only, so the objective here is
self-supervised: pseudo-defects (:mod:`seminspect.data.pseudo_defects`, the generator DRAEM
trains on, ``draem_sources``) are painted into half of each batch, and a 1x1 convolution per
unfrozen map learns to find them (class-balanced BCE on the mask max-pooled to the map's grid).
The teacher's deep weights move with the heads, so its features learn to respond to what a
defect on this product looks like; the heads are then dropped and the teacher is frozen again.

- :func:`map_parameters`: the names of the parameters that compute the first ``n`` maps (found by
  back-propagating from them, so it works for any registry or custom backbone); they stay frozen.
- BatchNorm statistics stay the pretrained ones (the teacher runs in eval mode): only weights move.
- Resumable: with a checkpoint folder the tuned teacher is written to ``teacher.safetensors`` +
  ``teacher.json`` there and reused (after a settings check) when the fit is resumed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from seminspect.models.anomaly.config import AnomalyConfig
from seminspect.models.anomaly.draem_fit import _NOT_TRAINING, generator_of, pseudo_batch
from seminspect.models.anomaly.features import AnomalyConfigError
from seminspect.models.anomaly.stpm import STPMModel
from seminspect.models.anomaly.stpm_fit import stpm_batches
from seminspect.models.anomaly.train_state import (
    checked_step,
    read_checkpoint,
    read_meta,
    require_same_settings,
    write_checkpoint,
)
from seminspect.utils.progress import track

# settings that do not change the tuned teacher (the student's and the map's)
_NOT_TEACHER = (*_NOT_TRAINING, "lr", "loss", "stpm_padding", "padding_value", "student_backbone", "layer_weights",
                "calib_fraction")


def map_parameters(backbone: nn.Module, probe: torch.Tensor, n: int) -> set[str]:
    """Names of ``backbone``'s parameters that the first ``n`` of its returned maps depend on."""
    if n <= 0:
        return set()
    was = {name: p.requires_grad for name, p in backbone.named_parameters()}
    for p in backbone.parameters():
        p.grad = None
        p.requires_grad_(True)
    try:
        maps = backbone(probe)
        sum(m.float().sum() for m in maps[:n]).backward()
        return {name for name, p in backbone.named_parameters() if p.grad is not None}
    finally:
        for name, p in backbone.named_parameters():
            p.grad = None
            p.requires_grad_(was[name])


def _balanced_bce(logit: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE averaged over defect cells and over clean cells separately, then the two means averaged."""
    per = F.binary_cross_entropy_with_logits(logit, target, reduction="none")
    pos = target > 0.5
    neg_mean = per[~pos].mean() if (~pos).any() else per.new_zeros(())
    return 0.5 * (per[pos].mean() + neg_mean) if pos.any() else neg_mean


def tune_teacher(model: STPMModel, images: torch.Tensor, cfg: AnomalyConfig,
                 checkpoint_dir: str | Path | None = None) -> dict[str, object]:
    """Fine-tune ``model.teacher`` on normal ``(N, 1, H, W)`` ``images`` for ``cfg.teacher_finetune_epochs``."""
    teacher = model.teacher
    n_maps = len(teacher.feature_info)
    keep = cfg.teacher_frozen_layers
    if keep >= n_maps:
        raise AnomalyConfigError(f"teacher_frozen_layers {keep} leaves none of the teacher's {n_maps} maps to tune; "
                                 f"use at most {n_maps - 1}")
    ckpt = Path(checkpoint_dir) if checkpoint_dir else None
    if ckpt is not None and (ckpt / "teacher.json").is_file():
        return _load_tuned(ckpt, teacher, cfg)
    frozen = map_parameters(teacher, images[:2], keep)
    params = [p for name, p in teacher.named_parameters() if name not in frozen]
    for p in params:
        p.requires_grad_(True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed + 2000)
        heads = nn.ModuleList(nn.Conv2d(int(f["num_chs"]), 1, 1) for f in teacher.feature_info[keep:])
    opt = torch.optim.Adam([*params, *heads.parameters()], lr=cfg.teacher_lr)
    gen = generator_of(cfg)
    clean_all = images[:, 0].clamp(0, 1).numpy()  # resampling after registration may overshoot [0, 1] a little
    losses: list[float] = []
    teacher.eval()  # pretrained BatchNorm statistics: only the weights move
    try:
        for epoch in range(cfg.teacher_finetune_epochs):
            order = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(cfg.seed * 1000 + epoch))
            rng = np.random.default_rng([cfg.seed, epoch, 17])
            total, count = 0.0, 0
            for idx in track(stpm_batches(order, cfg.batch_size),
                             f"teacher fine-tuning {epoch + 1}/{cfg.teacher_finetune_epochs}"):
                aug, mask = pseudo_batch(clean_all[idx.numpy()], gen, 0.5, rng)
                target = torch.from_numpy(mask)[:, None].float()
                feats = teacher(torch.from_numpy(aug)[:, None])[keep:]
                loss = sum(_balanced_bce(h(f), F.adaptive_max_pool2d(target, f.shape[-2:]))
                           for h, f in zip(heads, feats, strict=True)) / len(heads)
                total += checked_step(opt, loss, "STPM teacher fine-tuning", epoch + 1, "lower teacher_lr") * len(idx)
                count += len(idx)
            losses.append(total / max(count, 1))
    finally:
        for p in teacher.parameters():
            p.requires_grad_(False)
        teacher.eval()
    hist = {"teacher_finetune_losses": losses, "teacher_tuned_parameters": len(params),
            "teacher_frozen_parameters": len(frozen)}
    if ckpt is not None:
        _save_tuned(ckpt, teacher, cfg, hist)
    return hist


def _save_tuned(directory: Path, teacher: nn.Module, cfg: AnomalyConfig, hist: dict[str, object]) -> None:
    write_checkpoint(directory, "teacher", teacher, None, {"config": cfg.model_dump(), "history": hist}, stem="teacher")


def _load_tuned(directory: Path, teacher: nn.Module, cfg: AnomalyConfig) -> dict[str, object]:
    meta = read_meta(directory, "STPM teacher", stem="teacher")
    require_same_settings(directory, dict(meta.get("config", {})), cfg, _NOT_TEACHER, what="tuned teacher")
    read_checkpoint(directory, "teacher", teacher, None, "STPM teacher", stem="teacher")
    return dict(meta.get("history", {}))

"""Diffusion training and distillation: the denoiser's epoch loop, the one-pass student, resumable checkpoints.

:func:`train_diffusion` trains a :class:`~seminspect.models.anomaly.diffusion.DiffusionModel`'s
denoiser on ``(N, 1, H, W)`` normal images (and their registered references): each batch image
gets, with probability ``draem_anomaly_prob``, a pseudo-defect (DRAEM's generator, texture from
another image of the batch), is noised to a level drawn uniformly from ``1..t_start`` (the
levels inference uses), and the denoiser learns to return the *clean* image. The pseudo-defects,
levels and noise of epoch e come from streams seeded by ``(seed, e)``: a run resumed from its
checkpoint (``checkpoint.*``, written after each epoch) continues exactly as the uninterrupted run.

:func:`distill_student` then labels every fit image and one pseudo-defect copy of it with the
denoiser's multi-step restoration and trains the student to output that restoration in one pass
(checkpoint ``student.*``).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from seminspect.models.anomaly.config import AnomalyConfig
from seminspect.models.anomaly.diffusion import DiffusionModel
from seminspect.models.anomaly.draem_fit import generator_of, pseudo_batch
from seminspect.models.anomaly.features import AnomalyConfigError
from seminspect.models.anomaly.stpm_fit import stpm_batches
from seminspect.models.anomaly.train_state import POSTPROCESSING, checked_step, resume_state, write_checkpoint
from seminspect.utils.progress import track

# settings the denoiser's training does not depend on (the student's do: its labels are restorations)
_NOT_TRAINING = ("epochs", *POSTPROCESSING, "diffusion_sample_steps", "diffusion_student_width",
                 "diffusion_student_epochs")
_NOT_STUDENT = (*POSTPROCESSING, "diffusion_student_epochs")


def _check_inputs(model: DiffusionModel, targets: torch.Tensor, refs: torch.Tensor | None) -> None:
    if targets.ndim != 4 or targets.shape[1] != 1 or min(targets.shape[-2:]) < 2 ** model.depth:
        raise AnomalyConfigError(f"diffusion training needs (N, 1, H, W) images of at least {2 ** model.depth} "
                                 f"px, got {tuple(targets.shape)}")
    if not torch.isfinite(targets).all() or (refs is not None and not torch.isfinite(refs).all()):
        raise AnomalyConfigError("diffusion training images hold NaN or inf values")


def train_diffusion(model: DiffusionModel, targets: torch.Tensor, refs: torch.Tensor | None, cfg: AnomalyConfig,
                    checkpoint_dir: str | Path | None = None) -> dict[str, object]:
    """Train the denoiser for ``cfg.epochs`` (resuming from ``checkpoint_dir``); returns the history to keep."""
    _check_inputs(model, targets, refs)
    began = time.perf_counter()
    gen = generator_of(cfg)
    opt = torch.optim.Adam(model.denoiser.parameters(), lr=cfg.lr)
    start_epoch, losses = 0, []
    ckpt = Path(checkpoint_dir) if checkpoint_dir else None
    if ckpt is not None and (ckpt / "checkpoint.json").is_file():
        start_epoch, losses = _resume(ckpt, "checkpoint", model.denoiser, opt, cfg, _NOT_TRAINING)
    clean_all = targets[:, 0].numpy()
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        tgen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        order = torch.randperm(targets.shape[0], generator=tgen)
        rng = np.random.default_rng([cfg.seed, epoch])
        total, count = 0.0, 0
        for idx in track(stpm_batches(order, cfg.batch_size), f"diffusion epoch {epoch + 1}/{cfg.epochs}"):
            clean = clean_all[idx.numpy()]
            aug, _ = pseudo_batch(clean, gen, cfg.draem_anomaly_prob, rng)
            x_aug = model.pad(torch.from_numpy(aug)[:, None]) * 2 - 1
            x_clean = model.pad(torch.from_numpy(clean)[:, None]) * 2 - 1
            ref = None if refs is None else model.pad(refs[idx])
            t = torch.randint(1, model.t_start + 1, (len(idx),), generator=tgen)
            noise = torch.randn(x_aug.shape, generator=tgen)
            pred = model.predict_clean(model.noised(x_aug, t, noise), t, ref)
            loss = F.mse_loss(pred, x_clean)
            total += checked_step(opt, loss, "diffusion training", epoch + 1) * len(idx)
            count += len(idx)
        losses.append(total / max(count, 1))
        if ckpt is not None:
            write_checkpoint(ckpt, "model", model.denoiser, opt, {"model": "diffusion", "epoch": epoch + 1,
                                                                  "losses": losses, "config": cfg.model_dump()})
    model.eval()
    return {"losses": losses, "train_seconds": time.perf_counter() - began}


def teacher_labels(model: DiffusionModel, targets: torch.Tensor, refs: torch.Tensor | None,
                   cfg: AnomalyConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(inputs, restorations, refs)``: each fit image and one pseudo-defect copy, restored by the denoiser."""
    clean = targets[:, 0].numpy()
    aug, _ = pseudo_batch(clean, generator_of(cfg), 1.0, np.random.default_rng([cfg.seed, 10_000]))
    inputs = torch.cat([targets, torch.from_numpy(aug)[:, None]])
    both = None if refs is None else torch.cat([refs, refs])
    model.eval()
    out = []
    bs = cfg.batch_size
    for s in track(range(0, len(inputs), bs), "diffusion labels for the student"):
        out.append(model.restore_with_denoiser(inputs[s:s + bs], None if both is None else both[s:s + bs]))
    return inputs, torch.cat(out), both


def distill_student(model: DiffusionModel, targets: torch.Tensor, refs: torch.Tensor | None, cfg: AnomalyConfig,
                    checkpoint_dir: str | Path | None = None) -> dict[str, object]:
    """Train the student on the denoiser's restorations for ``cfg.diffusion_student_epochs``; sets ``use_student``."""
    if model.student is None:
        raise AnomalyConfigError("diffusion_student_width is 0: there is no student to distil")
    _check_inputs(model, targets, refs)
    began = time.perf_counter()
    opt = torch.optim.Adam(model.student.parameters(), lr=cfg.lr)
    epochs = cfg.diffusion_student_epochs
    start_epoch, losses = 0, []
    ckpt = Path(checkpoint_dir) if checkpoint_dir else None
    if ckpt is not None and (ckpt / "student.json").is_file():
        start_epoch, losses = _resume(ckpt, "student", model.student, opt, cfg, _NOT_STUDENT)
    if start_epoch < epochs:  # labels only when there is training left
        inputs, labels, both = teacher_labels(model, targets, refs, cfg)
    for epoch in range(start_epoch, epochs):
        model.train()
        order = torch.randperm(len(inputs), generator=torch.Generator().manual_seed(cfg.seed * 1000 + 500 + epoch))
        total, count = 0.0, 0
        for idx in track(stpm_batches(order, cfg.batch_size), f"student epoch {epoch + 1}/{epochs}"):
            pred = model.student_restore(inputs[idx], None if both is None else both[idx])
            loss = F.mse_loss(pred, labels[idx])
            total += checked_step(opt, loss, "diffusion student training", epoch + 1) * len(idx)
            count += len(idx)
        losses.append(total / max(count, 1))
        if ckpt is not None:
            write_checkpoint(ckpt, "student", model.student, opt,
                             {"model": "diffusion-student", "epoch": epoch + 1, "losses": losses,
                              "config": cfg.model_dump()}, stem="student")
    model.eval()
    model.use_student = True
    return {"student_losses": losses, "student_seconds": time.perf_counter() - began}


def _resume(directory: Path, stem: str, module: torch.nn.Module, opt: torch.optim.Optimizer, cfg: AnomalyConfig,
            ignore: tuple[str, ...]) -> tuple[int, list[float]]:
    """Restore a checkpoint written with the same training settings; returns (epochs done, losses)."""
    prefix, what, tag = ("student", "diffusion student", "diffusion-student") if stem == "student" else (
        "model", "diffusion", "diffusion")
    meta = resume_state(directory, stem, prefix, module, opt, cfg, ignore, what, tag=tag)
    return int(meta["epoch"]), list(meta.get("losses", []))

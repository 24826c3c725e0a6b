"""STPM training: the epoch loop with its guards, the batch split and resumable checkpoints.

:func:`train_student` trains an :class:`~seminspect.models.anomaly.stpm.STPMModel`'s student on
``(N, 1, H, W)`` tensors, refusing a non-finite loss or gradient with one line (epoch and cause),
skipping batches of one flat grey (:func:`stpm_batches` explains why), and checkpointing each
epoch as safetensors + JSON (no pickle) so a killed run resumes where it stopped.
"""

from __future__ import annotations

from pathlib import Path

import torch

from seminspect.models.anomaly.config import AnomalyConfig, migrate_padding
from seminspect.models.anomaly.features import AnomalyConfigError
from seminspect.models.anomaly.stpm import STPMModel
from seminspect.models.anomaly.train_state import read_checkpoint, read_meta, require_same_settings, write_checkpoint
from seminspect.utils.progress import track

FEATURELESS_STD = 1e-3  # pixel std (images in [0, 1]; < 1/4 grey level of 8 bits): the batch is one flat grey


def stpm_batches(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Split an epoch's sample order into training batches; no batch is smaller than ``batch_size // 2``.

    A short remainder joins the previous batch instead of forming its own (unless the whole epoch
    is shorter). Why: the student's BatchNorm layers normalise by the *batch* statistics. A batch
    of one or two images -- in DeepPCB often flat all-black or all-white crops of the binarised
    board (35 % of them) -- can be one flat grey whose per-channel variance is at rounding-noise
    level; each BatchNorm then multiplies the backward gradient by up to ``1 / sqrt(eps) = 316``
    (measured: 10-30x per layer), which overflows float32 to inf through MobileNetV2's dozens of
    BatchNorm layers; Adam writes NaN into every weight and every later score is NaN. Batches of
    several images carry between-image variance and stay well-conditioned.
    """
    n = int(order.shape[0])
    if n == 0:
        return []
    bounds = list(range(0, n, batch_size)) + [n]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < max(2, batch_size // 2):
        del bounds[-2]  # merge the short remainder into the previous batch
    return [order[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def train_student(model: STPMModel, targets: torch.Tensor, refs: torch.Tensor | None, cfg: AnomalyConfig,
                  checkpoint_dir: str | Path | None = None) -> dict[str, object]:
    """Train the student for ``cfg.epochs`` (resuming from ``checkpoint_dir``); the history to keep."""
    opt = torch.optim.Adam([p for p in model.student.parameters() if p.requires_grad], lr=cfg.lr)
    start_epoch = 0
    losses: list[float] = []
    ckpt = Path(checkpoint_dir) if checkpoint_dir else None
    if ckpt is not None and (ckpt / "checkpoint.json").is_file():
        start_epoch, losses = load_checkpoint(ckpt, model, opt, cfg)
    n = targets.shape[0]
    skipped = 0
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)  # order fixed per epoch: resumable
        order = torch.randperm(n, generator=gen)
        total, count = 0.0, 0
        for idx in track(stpm_batches(order, cfg.batch_size), f"stpm epoch {epoch + 1}/{cfg.epochs}"):
            batch_t = targets[idx]
            if float(batch_t.std()) < FEATURELESS_STD:
                # Every image of the batch is the same flat grey: train-mode BatchNorm would divide
                # rounding noise by sqrt(eps) at every layer (see stpm_batches). Nothing to learn.
                skipped += 1
                continue
            loss = model.loss(batch_t, None if refs is None else refs[idx])
            if not torch.isfinite(loss):
                raise AnomalyConfigError(f"STPM training diverged (non-finite loss) in epoch {epoch + 1}; "
                                         "lower lr or use loss: huber")
            opt.zero_grad()
            loss.backward()
            bad = [name for name, p in model.student.named_parameters()
                   if p.grad is not None and not torch.isfinite(p.grad).all()]
            if bad:  # refuse the step: one non-finite gradient makes every weight NaN for good
                raise AnomalyConfigError(
                    f"STPM training: non-finite gradients in {len(bad)} student parameters (first: {bad[0]}) "
                    f"in epoch {epoch + 1}; lower lr or use loss: huber")
            opt.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        losses.append(total / max(count, 1))
        if ckpt is not None:
            save_checkpoint(ckpt, model, opt, cfg, epoch + 1, losses)
    model.eval()
    # every step's loss and gradients were checked finite (a non-finite one raises above), so the
    # history can say so: benchmarks report "NaN seen: no" from this key, not from silence
    return {"losses": losses, "skipped_featureless_batches": skipped, "non_finite_steps": 0}


def save_checkpoint(directory: Path, model: STPMModel, opt: torch.optim.Optimizer, cfg: AnomalyConfig,
                    epoch: int, losses: list[float]) -> None:
    write_checkpoint(directory, "student", model.student, opt,
                     {"epoch": epoch, "losses": losses, "config": cfg.model_dump()})


def load_checkpoint(directory: Path, model: STPMModel, opt: torch.optim.Optimizer,
                    cfg: AnomalyConfig) -> tuple[int, list[float]]:
    meta = read_meta(directory, "STPM")
    saved = migrate_padding(dict(meta.get("config", {})))
    saved.setdefault("padding_value", 0.0)  # checkpoints from before stpm_padding: zeros or reflect, no value
    # map post-processing does not change training; a checkpoint from before map_dilation existed stays valid
    require_same_settings(directory, saved, cfg, ("epochs", "map_dilation", "score_sigma", "score_dilation"))
    read_checkpoint(directory, "student", model.student, opt, "STPM")
    return int(meta["epoch"]), list(meta.get("losses", []))

"""DRAEM training: pseudo-defects painted into normal images each batch, the epoch loop, resumable checkpoints.

:func:`train_draem` trains a :class:`~seminspect.models.anomaly.draem.DRAEMModel` on ``(N, 1, H, W)``
normal images (and their registered references): each image of a batch gets, with probability
``draem_anomaly_prob``, one anomaly of :class:`~seminspect.data.pseudo_defects.PseudoDefectGenerator`
(texture from another image of the batch); the reference stays clean. The anomalies of epoch e
are drawn from a stream seeded by ``(seed, e)``, so a run resumed from its checkpoint (safetensors
+ JSON, written after each epoch, no pickle) continues exactly as the uninterrupted run would.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from seminspect.data.pseudo_defects import PseudoDefectGenerator
from seminspect.models.anomaly.config import AnomalyConfig
from seminspect.models.anomaly.draem import DRAEMModel, draem_loss
from seminspect.models.anomaly.features import AnomalyConfigError
from seminspect.models.anomaly.stpm_fit import stpm_batches
from seminspect.models.anomaly.train_state import POSTPROCESSING, checked_step, resume_state, write_checkpoint
from seminspect.utils.progress import track

# settings that change only the map post-processing / threshold, not what is learnt
_NOT_TRAINING = ("epochs", *POSTPROCESSING)


def generator_of(cfg: AnomalyConfig) -> PseudoDefectGenerator:
    """The pseudo-defect generator ``cfg`` describes."""
    return PseudoDefectGenerator(sources=cfg.draem_sources, seed=cfg.seed, min_area=cfg.draem_min_area,
                                 max_area=cfg.draem_max_area, fab_types=cfg.draem_fab_types)


def pseudo_batch(clean: np.ndarray, gen: PseudoDefectGenerator, prob: float,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(augmented, mask)`` ``(B, H, W)`` of clean ``(B, H, W)`` images; texture from another image of the batch."""
    out = clean.copy()
    mask = np.zeros(clean.shape, bool)
    b = len(clean)
    for i in range(b):
        if rng.random() >= prob:
            continue
        tex = clean[(i + 1 + int(rng.integers(b - 1))) % b] if b > 1 else None
        out[i], mask[i] = gen.apply(clean[i], rng, texture=tex)
    return out, mask


def train_draem(model: DRAEMModel, targets: torch.Tensor, refs: torch.Tensor | None, cfg: AnomalyConfig,
                checkpoint_dir: str | Path | None = None) -> dict[str, object]:
    """Train for ``cfg.epochs`` (resuming from ``checkpoint_dir``); returns the history to keep."""
    if targets.ndim != 4 or targets.shape[1] != 1 or min(targets.shape[-2:]) < 2 ** model.depth:
        raise AnomalyConfigError(f"DRAEM training needs (N, 1, H, W) images of at least {2 ** model.depth} px, "
                                 f"got {tuple(targets.shape)}")
    if not torch.isfinite(targets).all() or (refs is not None and not torch.isfinite(refs).all()):
        raise AnomalyConfigError("DRAEM training images hold NaN or inf values")
    gen = generator_of(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    start_epoch, losses = 0, []
    ckpt = Path(checkpoint_dir) if checkpoint_dir else None
    if ckpt is not None and (ckpt / "checkpoint.json").is_file():
        start_epoch, losses = load_checkpoint(ckpt, model, opt, cfg)
    clean_all = targets[:, 0].numpy()
    parts: dict[str, float] = {}
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        order = torch.randperm(targets.shape[0], generator=torch.Generator().manual_seed(cfg.seed * 1000 + epoch))
        rng = np.random.default_rng([cfg.seed, epoch])
        total, count = 0.0, 0
        parts = {"l2": 0.0, "ssim": 0.0, "focal": 0.0}
        for idx in track(stpm_batches(order, cfg.batch_size), f"draem epoch {epoch + 1}/{cfg.epochs}"):
            clean = clean_all[idx.numpy()]
            aug, mask = pseudo_batch(clean, gen, cfg.draem_anomaly_prob, rng)
            loss, p = draem_loss(model, torch.from_numpy(aug)[:, None], torch.from_numpy(clean)[:, None],
                                 torch.from_numpy(mask)[:, None].float(), None if refs is None else refs[idx])
            total += checked_step(opt, loss, "DRAEM training", epoch + 1) * len(idx)
            count += len(idx)
            for k, v in p.items():
                parts[k] += v * len(idx)
        losses.append(total / max(count, 1))
        parts = {k: v / max(count, 1) for k, v in parts.items()}
        if ckpt is not None:
            save_checkpoint(ckpt, model, opt, cfg, epoch + 1, losses)
    model.eval()
    return {"losses": losses, "last_epoch_loss_parts": parts}


def save_checkpoint(directory: Path, model: DRAEMModel, opt: torch.optim.Optimizer, cfg: AnomalyConfig,
                    epoch: int, losses: list[float]) -> None:
    """Weights and optimiser state of the finished epoch, atomically (safetensors + JSON)."""
    write_checkpoint(directory, "model", model, opt,
                     {"model": "draem", "epoch": epoch, "losses": losses, "config": cfg.model_dump()})


def load_checkpoint(directory: Path, model: DRAEMModel, opt: torch.optim.Optimizer,
                    cfg: AnomalyConfig) -> tuple[int, list[float]]:
    """Restore a checkpoint written with the same training settings; returns (epochs done, losses)."""
    meta = resume_state(directory, "checkpoint", "model", model, opt, cfg, _NOT_TRAINING, "DRAEM", tag="draem")
    return int(meta["epoch"]), list(meta.get("losses", []))

"""A working-memory budget for PatchCore: the batch, patch pool, bank and search block it allows.

``AnomalyConfig.memory_budget_mib`` bounds what fitting and scoring *add* to the process: the
backbone's activations for one batch, the pool of candidate patches, the coreset's projection of
it, the memory bank, and the nearest-bank distance block at scoring. The process's own footprint
(Python, torch, the backbone's weights, the caller's data) is outside the budget and reported
beside it by ``benchmarks/anomaly_speed.py``.

Without a plan the peak was set by ``batch_size`` and ``max_pool_patches`` alone: a 2 MiB bank
budget came with +304 MiB of working memory for 1,000 samples (benchmarks/results/anomaly_speed.md).
:func:`plan_memory` turns one number into the settings that bound each phase:

- embedding: ``batch * per_item`` activations + the pool so far;
- coreset: the pool (one preallocated matrix), its projection once (held transposed), one chunk
  of projection temporaries and three ``(N,)`` vectors;
- scoring: ``batch * per_item`` + the bank and its transposed search blocks (models/anomaly/search.py)
  + a ``query_chunk x bank_rows`` distance allowance (x3; the search's blocks are smaller).

Each phase is planned to use at most ``USABLE`` of the budget: the allocator and small buffers
take the rest. ``per_item`` comes from :func:`activation_bytes`, the sum of every leaf module's
output for one probe image (an upper bound: inference frees most intermediates as it goes).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from seminspect.models.anomaly.features import AnomalyConfigError
from seminspect.models.anomaly.search import QUERY_BLOCK

USABLE = 0.75  # share of the budget each phase may plan for; the rest is allocator slack and small buffers
ACTIVATION_SHARE = 0.35  # share of the budget for one batch of backbone activations
BANK_SHARE = 0.15  # share of the budget the memory bank may take at most
WORKSPACE = 1.5  # convolution-internal buffers on top of the live activations hooks see
PROBE = 64  # probe image side (px) for measuring the backbone's activations per pixel
MAX_QUERY_CHUNK = QUERY_BLOCK  # larger blocks leave the cache: slower (models/anomaly/search.py)


@dataclass(frozen=True)
class MemoryPlan:
    """Settings derived from a working-memory budget, with the bytes each phase is planned to use."""

    budget_bytes: int
    batch_size: int
    max_pool_patches: int
    max_bank_patches: int
    query_chunk: int
    coreset_chunk: int
    per_item_bytes: int
    embed_phase_bytes: int
    coreset_phase_bytes: int
    score_phase_bytes: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@torch.no_grad()
def activation_bytes(backbone: nn.Module, height: int, width: int, in_chans: int = 1) -> int:
    """Peak bytes of live activations while the backbone encodes one ``(1, in_chans, height, width)`` image.

    Measured on a ``PROBE``-px image: every leaf module's output is tracked through a weak reference,
    and after each module the bytes of the outputs still alive (the current one, a residual branch's
    input held for the addition, the feature maps kept for return) are summed; the largest sum,
    scaled by the pixel count (convolutional activations scale with area), times ``WORKSPACE`` for
    the buffers a convolution allocates internally, which hooks cannot see.
    """
    import weakref

    live: list[tuple[weakref.ref, int]] = []
    peak = 0

    def hook(_module: nn.Module, _inputs: object, output: object) -> None:
        nonlocal peak, live
        outs = output if isinstance(output, (list, tuple)) else [output]
        for o in outs:
            if isinstance(o, torch.Tensor):
                live.append((weakref.ref(o), o.numel() * o.element_size()))
        live = [(r, b) for r, b in live if r() is not None]
        peak = max(peak, sum({id(r()): b for r, b in live}.values()))

    handles = [m.register_forward_hook(hook) for m in backbone.modules() if not list(m.children())]
    was_training = backbone.training
    try:
        backbone.eval()
        x = torch.zeros(1, in_chans, PROBE, PROBE)
        backbone(x)
    finally:
        for h in handles:
            h.remove()
        backbone.train(was_training)
    scale = (height * width) / (PROBE * PROBE)
    return int(WORKSPACE * peak * scale) + in_chans * height * width * 4


def item_bytes(backbone: nn.Module, height: int, width: int, *, images_per_item: int, raw_dim: int,
               reduction: int) -> int:
    """Working memory of one item (a target, with its reference when conditioned) in a batch.

    Backbone activations per image, the patch embedding's temporaries (per-layer resized and
    normalised copies, the concatenation, the difference, the projection: ~4 ``raw_dim`` maps per
    image at the finest chosen grid) and the upsampled, smoothed anomaly maps (~6 float32 images).
    """
    cells = -(-height // reduction) * -(-width // reduction)
    return images_per_item * (activation_bytes(backbone, height, width) + 4 * 4 * raw_dim * cells) \
        + 6 * 4 * height * width


def plan_memory(budget_bytes: int, *, per_item_bytes: int, dim: int, proj_dim: int, max_batch: int,
                max_pool: int, max_bank: int, bank_rows: int | None = None) -> MemoryPlan:
    """The largest batch, pool, bank and search block that keep each phase within the budget.

    Args:
        budget_bytes: working memory fitting and scoring may add to the process.
        per_item_bytes: :func:`item_bytes` at the size scored.
        dim: patch embedding dimension (bank and pool rows).
        proj_dim: coreset projection dimension (0 = none).
        max_batch / max_pool / max_bank: the config's own limits, which the plan never exceeds.
        bank_rows: the bank's size when it is already fixed (scoring a fitted model).
    """
    usable = USABLE * budget_bytes
    batch = min(max_batch, int(ACTIVATION_SHARE * budget_bytes // per_item_bytes))
    if batch < 1:
        need = per_item_bytes / ACTIVATION_SHARE / 2**20
        raise AnomalyConfigError(
            f"memory_budget_mib={budget_bytes / 2**20:g} is too small for one item at this image size: one item "
            f"needs ~{per_item_bytes / 2**20:.1f} MiB of activations; raise the budget to >= {need:.0f} MiB, "
            "or crop/resize the images")
    embed_fixed = batch * per_item_bytes
    bank = min(max_bank, int(BANK_SHARE * budget_bytes // (4 * dim)))
    coreset_chunk = max(1024, int(0.02 * budget_bytes // (4 * max(proj_dim, 1))))
    per_patch_pool = 4 * dim + 4 * proj_dim + 12
    pool = min(max_pool, int((usable - 4 * dim * bank - 4 * proj_dim * coreset_chunk) // per_patch_pool),
               int((usable - embed_fixed) // (4 * dim)))
    if pool < 1:
        raise AnomalyConfigError(f"memory_budget_mib={budget_bytes / 2**20:g} leaves no room for a patch pool after "
                                 f"one batch ({embed_fixed / 2**20:.1f} MiB): raise the budget")
    bank = max(1, min(bank, pool))
    rows = bank if bank_rows is None else max(1, bank_rows)
    chunk = int((usable - embed_fixed - 2 * 4 * dim * rows) // (3 * 4 * rows + 4 * dim))  # bank + its search blocks
    chunk = max(1, min(MAX_QUERY_CHUNK, chunk))
    return MemoryPlan(
        budget_bytes=int(budget_bytes), batch_size=batch, max_pool_patches=pool, max_bank_patches=bank,
        query_chunk=chunk, coreset_chunk=coreset_chunk, per_item_bytes=int(per_item_bytes),
        embed_phase_bytes=int(embed_fixed + 4 * dim * pool),
        coreset_phase_bytes=int(per_patch_pool * pool + 4 * dim * bank + 4 * proj_dim * coreset_chunk),
        score_phase_bytes=int(embed_fixed + 2 * 4 * dim * rows + chunk * (3 * 4 * rows + 4 * dim)),
    )


class PlanCache:
    """The detector's plan for one (item shape, bank rows), made once and reused while they stay the same."""

    def __init__(self) -> None:
        self.key: tuple[Any, ...] | None = None
        self.plan: MemoryPlan | None = None

    def get(self, model: Any, config: Any, shape: tuple[int, int], images_per_item: int,
            bank_rows: int | None = None) -> MemoryPlan:
        """``model``: a PatchCore model (``backbone``, ``layers``, ``raw_dim``, ``dim``); ``config``: its
        ``AnomalyConfig`` (``memory_budget_mib`` set)."""
        key = (tuple(shape), images_per_item, bank_rows)
        if self.plan is None or self.key != key:
            reduction = model.backbone.feature_info[model.layers[0]]["reduction"]
            per_item = item_bytes(model.backbone, shape[0], shape[1], images_per_item=images_per_item,
                                  raw_dim=model.raw_dim, reduction=reduction)
            self.plan = plan_memory(int(config.memory_budget_mib * 2**20), per_item_bytes=per_item, dim=model.dim,
                                    proj_dim=min(config.coreset_proj_dim, model.dim), max_batch=config.batch_size,
                                    max_pool=config.max_pool_patches, max_bank=config.max_bank_patches,
                                    bank_rows=bank_rows)
            self.key = key
        return self.plan

    def planned(self, items: Iterator[Any], model: Any, config: Any, images_per_item: int,
                bank_rows: int | None = None) -> tuple[Iterator[Any], MemoryPlan | None]:
        """Peek at the first item (``.target``) to size the plan and set ``model.query_chunk``; the items come
        back whole."""
        first = next(items, None)
        if first is None:
            return iter(()), None
        plan = self.get(model, config, first.target.shape, images_per_item, bank_rows)
        model.query_chunk = plan.query_chunk
        return itertools.chain([first], items), plan

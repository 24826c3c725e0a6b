"""Filling PatchCore's memory bank from normal images: a bounded patch pool, then a greedy coreset.

:func:`fill_bank` takes batches of ``(targets, references)`` and returns the bank rows; it touches
nothing but the model's :meth:`~seminspect.models.anomaly.patchcore.PatchCoreModel.patch_features`.
With ``bank_per_group`` the detector calls it once per group (``score_groups`` names the metadata
column) and :class:`BankGroups` records which rows of the concatenated bank belong to which group.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from seminspect.models.anomaly.features import AnomalyConfigError
from seminspect.models.anomaly.patchcore import PatchCoreModel, greedy_coreset
from seminspect.models.anomaly.score_groups import group_of


def fill_bank(model: PatchCoreModel, batches: Iterable[tuple[Any, torch.Tensor, torch.Tensor | None]], n_items: int,
              per_image: int, limit: int, proj_dim: int, seed: int, chunk: int = 65536, precision: str = "fp32"
              ) -> tuple[torch.Tensor, int]:
    """``(bank rows, pool size)``: at most ``per_image`` random patches of each of the ``n_items`` images, then a
    greedy coreset of at most ``limit`` of them (its distances in ``precision``: fp32 or int8)."""
    gen = torch.Generator().manual_seed(seed)
    # One preallocated pool, filled in place: thousands of small per-batch tensors kept alive between the
    # batches' large temporaries fragmented the C heap (glibc's adaptive mmap threshold), so the process
    # grew ~0.1 MiB per batch beyond what it held (benchmarks/results/anomaly_speed.md, 2026-11-23).
    pool = torch.empty(0)
    filled = 0
    for _, t, r in batches:
        emb = model.patch_features(t, r)
        n, d, h, w = emb.shape
        flat = emb.permute(0, 2, 3, 1).reshape(n, h * w, d)
        if h * w > per_image:  # bound the pool before the coreset: random patches per image
            idx = torch.stack([torch.randperm(h * w, generator=gen)[:per_image] for _ in range(n)])
            flat = torch.gather(flat, 1, idx[:, :, None].expand(-1, -1, d))
        rows = flat.reshape(-1, d)
        if filled + rows.shape[0] > pool.shape[0]:  # first batch, or items larger than the first
            grown = torch.empty(max(filled + rows.shape[0], n_items * min(per_image, h * w)), d)
            if filled:
                grown[:filled] = pool[:filled]
            pool = grown
        pool[filled:filled + rows.shape[0]] = rows
        filled += rows.shape[0]
    feats = pool[:filled]
    idx = greedy_coreset(feats, min(limit, feats.shape[0]), proj_dim=proj_dim, seed=seed, progress=True, chunk=chunk,
                         precision=precision)
    return feats[idx], int(feats.shape[0])


@dataclass
class BankGroups:
    """Which rows of the concatenated bank each group owns: ``names[i]`` owns ``bank[bounds[i][0]:bounds[i][1]]``."""

    key: str
    names: list[str]
    bounds: list[tuple[int, int]]

    def index(self, metadata: Mapping[str, Any], sample_id: str = "") -> int:
        """The bank of one sample (refused in one line when its group has none)."""
        name = group_of(metadata, self.key, sample_id)
        if name not in self.names:
            raise AnomalyConfigError(f"sample {sample_id!r}: {self.key}={name!r} has no memory bank (fitted: "
                                     f"{', '.join(self.names)})")
        return self.names.index(name)

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "names": self.names, "bounds": [list(b) for b in self.bounds]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BankGroups:
        return cls(str(data["key"]), [str(n) for n in data["names"]], [(int(a), int(b)) for a, b in data["bounds"]])


def split_by_group(samples: Sequence[Any], key: str) -> dict[str, list[Any]]:
    """The fit samples of each group, groups in sorted order (a sample without ``key`` refused in one line)."""
    out: dict[str, list[Any]] = {}
    for s in samples:
        out.setdefault(group_of(s.metadata, key, s.sample_id), []).append(s)
    return dict(sorted(out.items()))

"""Stacking samples into tensors: :class:`Batch` and :func:`collate`.

Views are laid out compactly in canonical order (targets, references, zooms; each by index),
padded to the largest view count in the batch, with ``view_mask`` marking real views.
Images of different sizes are zero-padded (bottom/right) to the largest size in the batch; use
:func:`seminspect.data.augment.resize_sample` or a crop beforehand to avoid that.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from seminspect.data.imageio import to_float
from seminspect.data.sample import PAD_ROLE, Role, Sample
from seminspect.data.taxonomy import Taxonomy


@dataclass
class Batch:
    """A batch of samples as tensors.

    Attributes:
        images: ``(B, V, 1, H, W)`` float32 in [0, 1]; padded views are zeros.
        roles: ``(B, V)`` int64 role codes (0 target, 1 reference, 2 zoom, -1 padding).
        indices: ``(B, V)`` int64 detector index (-1 padding).
        view_mask: ``(B, V)`` bool, True for real views.
        masks: ``(B, V, 1, H, W)`` float32 defect masks (zeros where none), or None if no view had one.
        is_abnormal: ``(B,)`` int64, 1/0, -1 unlabelled.
        type_index: ``(B,)`` int64 leaf index in the taxonomy, -1 for none/unknown.
        depth: ``(B, 1, H, W)`` float32 depth maps, or None if no sample had one.
        sample_ids: list of ids.
    """

    images: torch.Tensor
    roles: torch.Tensor
    indices: torch.Tensor
    view_mask: torch.Tensor
    is_abnormal: torch.Tensor
    type_index: torch.Tensor
    sample_ids: list[str]
    masks: torch.Tensor | None = None
    depth: torch.Tensor | None = None
    metadata: list[dict[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return self.images.shape[0]

    def to(self, device: torch.device | str) -> Batch:
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)

        return Batch(
            images=self.images.to(device), roles=self.roles.to(device), indices=self.indices.to(device),
            view_mask=self.view_mask.to(device), is_abnormal=self.is_abnormal.to(device),
            type_index=self.type_index.to(device), sample_ids=self.sample_ids, masks=move(self.masks),
            depth=move(self.depth), metadata=self.metadata,
        )

    def role_mask(self, role: Role | str) -> torch.Tensor:
        """``(B, V)`` bool: slots holding a view of ``role``."""
        return self.roles == Role.parse(role).code

    def reference_slot(self) -> torch.Tensor:
        """``(B, V)`` int64: for each target slot, the slot of the reference with the same index, else -1."""
        return reference_slots(self.roles, self.indices)


def reference_slots(roles: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """``(B, V)`` int64: for each target slot the slot of the same-index reference view, else -1.

    ``roles`` holds role codes (:data:`~seminspect.data.sample.ROLE_CODES`, -1 padding) and
    ``indices`` detector indices, both ``(B, V)``. The one pairing rule of target and reference.
    """
    is_t = roles == Role.TARGET.code
    is_r = roles == Role.REFERENCE.code
    same = (indices[:, :, None] == indices[:, None, :]) & is_t[:, :, None] & is_r[:, None, :]
    has = same.any(-1)
    slot = same.float().argmax(-1)
    return torch.where(has, slot, torch.full_like(slot, -1))


def collate(samples: Sequence[Sample], taxonomy: Taxonomy | None = None) -> Batch:
    """Stack samples into a :class:`Batch` (usable as a DataLoader ``collate_fn`` via partial)."""
    if not samples:
        raise ValueError("collate needs at least one sample")
    bsz = len(samples)
    nviews = max(len(s.views) for s in samples)
    height = max(v.image.shape[0] for s in samples for v in s.views)
    width = max(v.image.shape[1] for s in samples for v in s.views)
    images = np.zeros((bsz, nviews, 1, height, width), dtype=np.float32)
    roles = np.full((bsz, nviews), PAD_ROLE, dtype=np.int64)
    indices = np.full((bsz, nviews), -1, dtype=np.int64)
    any_mask = any(v.mask is not None for s in samples for v in s.views)
    masks = np.zeros_like(images) if any_mask else None
    any_depth = any(s.depth is not None for s in samples)
    depth = np.zeros((bsz, 1, height, width), dtype=np.float32) if any_depth else None
    is_abnormal = np.full(bsz, -1, dtype=np.int64)
    type_index = np.full(bsz, -1, dtype=np.int64)
    for b, s in enumerate(samples):
        for v_i, view in enumerate(s.views):
            h, w = view.image.shape
            images[b, v_i, 0, :h, :w] = to_float(view.image)
            roles[b, v_i] = view.role.code
            indices[b, v_i] = view.index
            if masks is not None and view.mask is not None:
                masks[b, v_i, 0, :h, :w] = view.mask
        if s.is_abnormal is not None:
            is_abnormal[b] = int(s.is_abnormal)
        if taxonomy is not None and s.defect_type:
            type_index[b] = taxonomy.leaf_index(s.defect_type)
        if depth is not None and s.depth is not None:
            h, w = s.depth.shape
            depth[b, 0, :h, :w] = s.depth
    return Batch(
        images=torch.from_numpy(images),
        roles=torch.from_numpy(roles),
        indices=torch.from_numpy(indices),
        view_mask=torch.from_numpy(roles != PAD_ROLE),
        is_abnormal=torch.from_numpy(is_abnormal),
        type_index=torch.from_numpy(type_index),
        sample_ids=[s.sample_id for s in samples],
        masks=None if masks is None else torch.from_numpy(masks),
        depth=None if depth is None else torch.from_numpy(depth),
        metadata=[dict(s.metadata) for s in samples],
    )

"""The fast CPU path: frozen-backbone view features computed once and reused.

With the backbone frozen, a view's pooled multi-scale feature grid (``MultiViewADC.encode``,
``(C, g, g)``) never changes, so it is computed once per view and per dihedral transform and
kept as float16 (in memory and, optionally, on disk). The heads then train on these tensors at
thousands of samples per second instead of a few.

Also here: sample preparation shared by the live and cached paths (register each reference to
its target once, centre-crop at native resolution) and the synchronised dihedral transforms.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from seminspect.data.batch import Batch, collate
from seminspect.data.sample import Role, Sample, View
from seminspect.data.taxonomy import Taxonomy
from seminspect.utils.io import atomic_path, atomic_write_json
from seminspect.utils.modules import eval_mode
from seminspect.utils.progress import make_progress


# ----- sample preparation ------------------------------------------------------------------------
def _centre_crop(image: np.ndarray, size: int) -> np.ndarray:
    h, w = image.shape
    if h <= size and w <= size:
        return image
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return image[top:top + size, left:left + size]


def integer_shift(target: np.ndarray, reference: np.ndarray, max_shift: int) -> tuple[int, int]:
    """Integer ``(dy, dx)`` that best aligns ``reference`` onto ``target`` (phase correlation).

    ``target[y, x] ~= reference[y - dy, x - dx]``. Hann-windowed, zero-mean; a peak beyond
    ``max_shift`` (e.g. a false peak on a periodic layout) gives (0, 0). ~1 ms at 150 px, against
    ~100 ms for sub-pixel registration: the fast path for caching thousands of sites.
    """
    t = np.asarray(target, dtype=np.float32)
    r = np.asarray(reference, dtype=np.float32)
    win = np.outer(np.hanning(t.shape[0]), np.hanning(t.shape[1])).astype(np.float32)
    ft = np.fft.rfft2((t - t.mean()) * win)
    fr = np.fft.rfft2((r - r.mean()) * win)
    cross = ft * np.conj(fr)
    cross /= np.abs(cross) + 1e-6
    corr = np.fft.irfft2(cross, s=t.shape)
    dy, dx = np.unravel_index(int(np.argmax(corr)), corr.shape)
    dy = dy - t.shape[0] if dy > t.shape[0] // 2 else dy
    dx = dx - t.shape[1] if dx > t.shape[1] // 2 else dx
    if max(abs(dy), abs(dx)) > max_shift:
        return 0, 0
    return int(dy), int(dx)


def _crop_at(image: np.ndarray, size: int, dy: int = 0, dx: int = 0) -> np.ndarray:
    """``size`` x ``size`` window centred on the image centre moved by ``(-dy, -dx)`` (clamped)."""
    h, w = image.shape
    top = min(max(0, (h - size) // 2 - dy), max(0, h - size))
    left = min(max(0, (w - size) // 2 - dx), max(0, w - size))
    return image[top:top + size, left:left + size]


class PrepareSample:
    """Register references to targets (once), then centre-crop every view.

    ``method="integer"`` (default; fast): integer phase correlation on the central crop, and the
    shift is applied by moving the reference's crop window -- no resampling at all.
    ``"phase"``/``"ecc"``: sub-pixel :func:`seminspect.data.registration.register_pair` (slower).
    """

    def __init__(self, crop: int | None = 224, register: bool = True, method: str = "integer",
                 max_shift: float = 24.0) -> None:
        self.crop, self.register, self.method, self.max_shift = crop, register, method, max_shift

    def __call__(self, sample: Sample) -> Sample:
        margin = int(np.ceil(self.max_shift))
        views: list[View] = []
        for v in sample.views:
            img = v.image
            t = sample.view(Role.TARGET, v.index) if v.role == Role.REFERENCE else None
            aligned = False
            if self.register and t is not None and t.image.shape == img.shape:
                big = None if self.crop is None else self.crop + 2 * margin
                tc = t.image if big is None else _centre_crop(t.image, big)
                rc = img if big is None else _centre_crop(img, big)
                if self.method == "integer" and self.crop is not None:
                    dy, dx = integer_shift(tc, rc, margin)
                    img = _crop_at(img, self.crop, dy, dx)
                    aligned = True
                else:
                    from seminspect.data.registration import register_pair

                    method = "phase" if self.method == "integer" else self.method
                    img = register_pair(tc, rc, method=method, upsample=4, max_shift=self.max_shift).warped
            if self.crop is not None and not aligned:
                img = _centre_crop(img, self.crop)
            mask = None if v.mask is None or self.crop is None else _centre_crop(v.mask, self.crop)
            views.append(View(role=v.role, index=v.index, image=np.ascontiguousarray(img), mask=mask,
                              source=v.source))
        return Sample(sample_id=sample.sample_id, views=views, is_abnormal=sample.is_abnormal,
                      defect_type=sample.defect_type, depth=None, metadata=sample.metadata)


def dihedral(images: torch.Tensor, op: int) -> torch.Tensor:
    """Apply dihedral op ``0..7`` (``op % 4`` quarter turns, then a horizontal flip if ``op >= 4``)
    to the last two dims of ``images`` -- the same op on every view keeps the views in step."""
    out = torch.rot90(images, op % 4, dims=(-2, -1)) if op % 4 else images
    return torch.flip(out, dims=(-1,)) if op >= 4 else out


def resize_batch(images: torch.Tensor, size: int | None) -> torch.Tensor:
    """``(B, V, 1, H, W)`` -> ``(B, V, 1, size, size)`` (bilinear, antialiased)."""
    if size is None or images.shape[-1] == size:
        return images
    b, v = images.shape[:2]
    flat = F.interpolate(images.flatten(0, 1), size=(size, size), mode="bilinear", antialias=True,
                         align_corners=False)
    return flat.reshape(b, v, *flat.shape[1:])


# ----- cached features ---------------------------------------------------------------------------
@dataclass
class FeatureSet:
    """Cached view features of ``N`` samples.

    Attributes:
        feats: ``(T, N, V, C, g, g)`` float16, one slice per dihedral op in ``ops``.
        roles, indices: ``(N, V)`` int64 (-1 padding). view_mask: ``(N, V)`` bool.
        is_abnormal, type_index: ``(N,)`` int64.
        sample_ids: list of ids. ops: dihedral ops of the slices.
    """

    feats: torch.Tensor
    roles: torch.Tensor
    indices: torch.Tensor
    view_mask: torch.Tensor
    is_abnormal: torch.Tensor
    type_index: torch.Tensor
    sample_ids: list[str]
    ops: list[int]

    def __len__(self) -> int:
        return len(self.sample_ids)

    def subset(self, idx: Sequence[int] | np.ndarray) -> FeatureSet:
        ix = torch.as_tensor(np.asarray(idx, dtype=np.int64))
        return FeatureSet(self.feats[:, ix], self.roles[ix], self.indices[ix], self.view_mask[ix],
                          self.is_abnormal[ix], self.type_index[ix], [self.sample_ids[i] for i in ix.tolist()],
                          list(self.ops))

    def drop_role(self, role_code: int) -> FeatureSet:
        """The same samples with every view of a role removed (e.g. references, code 1)."""
        keep = self.view_mask & (self.roles != role_code)
        return FeatureSet(self.feats, torch.where(keep, self.roles, torch.full_like(self.roles, -1)),
                          torch.where(keep, self.indices, torch.full_like(self.indices, -1)), keep,
                          self.is_abnormal, self.type_index, self.sample_ids, list(self.ops))


# Bump when the features of the same inputs change, so that older caches are not reused.
# 2: samples are encoded in groups of equal size (no padding to a batch neighbour's size).
FEATURES_VERSION = 2


def cache_key(dataset_root: str | Path, sample_ids: Sequence[str], parts: dict) -> str:
    h = hashlib.sha256()
    h.update(f"features v{FEATURES_VERSION}\n".encode())
    h.update(str(Path(dataset_root).resolve()).encode())
    h.update("\n".join(sample_ids).encode())
    h.update(json.dumps(parts, sort_keys=True).encode())
    return h.hexdigest()[:16]


@torch.no_grad()
def compute_features(
    model: torch.nn.Module,
    dataset: Sequence[Sample],
    taxonomy: Taxonomy | None,
    prepare: PrepareSample | None = None,
    ops: Sequence[int] = (0,),
    batch_size: int = 16,
    resize: int | None = None,
    description: str = "encoding views",
) -> FeatureSet:
    """Encode every real view of every sample once per dihedral op (backbone in eval mode)."""
    n = len(dataset)
    chunks: list[list[torch.Tensor]] = [[] for _ in ops]
    roles, indices, masks, ab, ti, ids = [], [], [], [], [], []
    encoded_at: list[int] = []  # dataset position of each encoded sample, in encoding order
    vmax = 0
    with eval_mode(model), make_progress() as progress:
        task = progress.add_task(description, total=n)
        for start in range(0, n, batch_size):
            samples = [dataset[i] for i in range(start, min(n, start + batch_size))]
            if prepare is not None:
                samples = [prepare(s) for s in samples]
            # collate pads every view to the largest view of the batch, and padding changes pooled
            # features: encode samples of equal size together so that a sample's features never
            # depend on its batch neighbours (mixed-size data such as DeepPCB patches).
            for group in _same_size_groups(samples):
                encoded_at.extend(start + i for i in group)
                batch = collate([samples[i] for i in group], taxonomy)
                images = resize_batch(batch.images, resize)
                for k, op in enumerate(ops):
                    chunks[k].append(model.encode_views(dihedral(images, op), batch.view_mask, batch.roles,
                                                         batch.indices).to(torch.float16))
                vmax = max(vmax, batch.roles.shape[1])
                roles.append(batch.roles)
                indices.append(batch.indices)
                masks.append(batch.view_mask)
                ab.append(batch.is_abnormal)
                ti.append(batch.type_index)
                ids.extend(batch.sample_ids)
            progress.advance(task, len(samples))

    def pad(t: torch.Tensor, value: float) -> torch.Tensor:
        extra = vmax - t.shape[1]
        if extra == 0:
            return t
        shape = (t.shape[0], extra, *t.shape[2:])
        return torch.cat([t, torch.full(shape, value, dtype=t.dtype)], dim=1)

    feats = torch.stack([torch.cat([pad(c, 0) for c in ch]) for ch in chunks])
    fs = FeatureSet(feats, torch.cat([pad(r, -1) for r in roles]), torch.cat([pad(r, -1) for r in indices]),
                    torch.cat([pad(m, 0) for m in masks]).bool(), torch.cat(ab), torch.cat(ti), ids, list(ops))
    if encoded_at != sorted(encoded_at):  # groups reordered samples inside a batch: back to the dataset's order
        fs = fs.subset(np.argsort(np.asarray(encoded_at), kind="stable"))
    return fs


def _same_size_groups(samples: list[Sample]) -> list[list[int]]:
    """Positions in ``samples`` grouped by the largest view size (the size collate pads a batch to)."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, s in enumerate(samples):
        key = (max(v.image.shape[0] for v in s.views), max(v.image.shape[1] for v in s.views))
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def save_features(fs: FeatureSet, path: str | Path) -> None:
    """Write a :class:`FeatureSet` atomically (safetensors-free: a plain tensor file of our own)."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {"feats": fs.feats.contiguous(), "roles": fs.roles, "indices": fs.indices,
               "view_mask": fs.view_mask, "is_abnormal": fs.is_abnormal, "type_index": fs.type_index}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))
    atomic_write_json(path.with_suffix(".json"), {"sample_ids": fs.sample_ids, "ops": fs.ops})


def load_features(path: str | Path) -> FeatureSet | None:
    from safetensors.torch import load_file

    path = Path(path)
    meta = path.with_suffix(".json")
    if not path.is_file() or not meta.is_file():
        return None
    t = load_file(str(path))
    m = json.loads(meta.read_text())
    return FeatureSet(t["feats"], t["roles"], t["indices"], t["view_mask"], t["is_abnormal"], t["type_index"],
                      m["sample_ids"], m["ops"])


def batch_from_features(fs: FeatureSet, idx: torch.Tensor, op_slot: torch.Tensor | None = None) -> tuple:
    """Tensors for ``forward_features``: ``(feats (b, V, C, g, g) float32, roles, indices, view_mask)``.

    ``op_slot (b,)`` picks a cached dihedral slice per sample (augmentation); default slice 0.
    """
    if op_slot is None:
        feats = fs.feats[0, idx]
    else:
        feats = fs.feats[op_slot, idx]
    return feats.float(), fs.roles[idx], fs.indices[idx], fs.view_mask[idx]


def as_batch_labels(fs: FeatureSet, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return fs.is_abnormal[idx], fs.type_index[idx]


__all__ = ["Batch", "FeatureSet", "PrepareSample", "compute_features", "dihedral", "load_features",
           "save_features", "batch_from_features", "cache_key"]

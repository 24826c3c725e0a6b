"""On-disk cache of frozen-backbone view features (training's fast CPU path).

The features themselves (:class:`FeatureSet`, :func:`compute_features`) live in
:mod:`seminspect.models.adc_features` and site preparation in :mod:`seminspect.data.prepare`;
this module keys, writes and reads cached copies, so that head training on thousands of sites
never re-encodes a view. Names of both modules are re-exported here for existing callers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import torch

from seminspect.data.batch import Batch
from seminspect.data.prepare import PrepareSample, integer_shift
from seminspect.data.prepare import centre_crop as _centre_crop
from seminspect.data.prepare import crop_at as _crop_at
from seminspect.models.adc_features import FeatureSet, compute_features, dihedral, predict_features, resize_batch
from seminspect.utils.io import atomic_path, atomic_write_json

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


__all__ = ["Batch", "FeatureSet", "PrepareSample", "_centre_crop", "_crop_at", "as_batch_labels",
           "batch_from_features", "cache_key", "compute_features", "dihedral", "integer_shift", "load_features",
           "predict_features", "resize_batch", "save_features"]

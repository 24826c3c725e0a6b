"""On-disk cache of frozen-backbone view features (training's fast CPU path).

The features themselves (:class:`FeatureSet`, :func:`compute_features`) live in
:mod:`seminspect.models.adc_features` and site preparation in :mod:`seminspect.data.prepare`;
this module keys, writes and reads cached copies, so that head training on thousands of sites
never re-encodes a view. Names of both modules are re-exported here for existing callers.

A cache file's name is keyed by the dataset folder, the sample ids and the code-relevant config
(:func:`cache_key`); beside the tensors it keeps the data's content fingerprint
(:func:`seminspect.data.fingerprint.dataset_fingerprint`: sites, labels, image file identities).
:func:`load_cached_features` reuses a file only when the sites and image files are those it was
computed from; otherwise, or when the file cannot be read, it says why in one line and the
caller re-encodes (and overwrites it). Changed labels alone keep the features (they do not
depend on labels): the caller takes the labels from the manifest as it is now.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from seminspect.data.batch import Batch
from seminspect.data.fingerprint import changed
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


def save_features(fs: FeatureSet, path: str | Path, fingerprint: dict[str, str] | None = None) -> None:
    """Write a :class:`FeatureSet` atomically (a safetensors file, and a JSON file of its ids, ops and
    the data's ``fingerprint``). The JSON file is written first and the tensors last, so a run killed
    in between leaves tensors that do not match it: the next run's checks re-encode."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {"feats": fs.feats.contiguous(), "roles": fs.roles, "indices": fs.indices,
               "view_mask": fs.view_mask, "is_abnormal": fs.is_abnormal, "type_index": fs.type_index}
    meta: dict[str, Any] = {"sample_ids": fs.sample_ids, "ops": fs.ops}
    if fingerprint is not None:
        meta["fingerprint"] = fingerprint
    path.unlink(missing_ok=True)  # the old tensors never pair with the new metadata
    atomic_write_json(path.with_suffix(".json"), meta)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))


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


def load_cached_features(path: str | Path, sample_ids: Sequence[str], fingerprint: dict[str, str],
                         log: Callable[[str], None]) -> FeatureSet | None:
    """The cached features at ``path`` if they were computed from these sites and image files, else None.

    None without a word when there is no cache; with one line to ``log`` saying why when there is
    one that cannot be used (unreadable or inconsistent, written without a fingerprint, other
    sites or changed image files). Changed labels alone are said too, and the features returned.
    """
    path = Path(path)
    if not path.is_file() and not path.with_suffix(".json").is_file():
        return None
    try:
        fs = load_features(path)
        if fs is None:
            raise ValueError("tensors or their .json file missing (a run killed while writing it?)")
        meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        n = len(fs.sample_ids)
        if fs.feats.ndim < 2 or fs.feats.shape[1] != n or len(fs.ops) != fs.feats.shape[0] \
                or any(len(t) != n for t in (fs.roles, fs.indices, fs.view_mask, fs.is_abnormal, fs.type_index)):
            raise ValueError(f"tensors of shape {tuple(fs.feats.shape)} do not match {n} sites and {len(fs.ops)} ops")
    except Exception as exc:  # safetensors, json and torch raise many types for a damaged file
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        log(f"{path}: feature cache unreadable ({reason}); re-encoding")
        return None
    saved = meta.get("fingerprint")
    if saved is None:
        log(f"{path}: feature cache written without a content fingerprint (older seminspect); re-encoding")
        return None
    stale = [k for k in changed(saved, fingerprint) if k != "labels"]
    if stale or fs.sample_ids != list(sample_ids):
        what = " and ".join(stale or ["sites"])
        log(f"{path}: {what} changed since the feature cache was written; re-encoding")
        return None
    if "labels" in changed(saved, fingerprint):
        log(f"{path}: labels changed since the feature cache was written; features reused (they do not depend "
            "on labels), labels read from the manifest")
        atomic_write_json(path.with_suffix(".json"), {**meta, "fingerprint": fingerprint})  # said once
    return fs


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
           "batch_from_features", "cache_key", "compute_features", "dihedral", "integer_shift", "load_cached_features",
           "load_features", "predict_features", "resize_batch", "save_features"]

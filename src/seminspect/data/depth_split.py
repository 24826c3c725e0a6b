"""Validation splits of depth sites that do not leak: by group of twins, or by acquisition.

The Samsung ``train.npz`` holds 5,000 sites but only 3,521 distinct depth maps: the same structure
occurs two to four times under different site names of one acquisition, with SEM stacks about one
grey level apart. A random split puts one twin in training and the other in validation, so about
half of a random validation set measures recall of a memorised twin rather than prediction.

* :func:`site_groups` joins sites with a byte-identical depth map, and sites whose SEM stacks are
  near-identical (mean absolute difference of the acquisition-mean images below ``sem_tol`` grey
  levels), into one group (union-find); cheap: one hash per depth map and a blocked distance
  between 3x3-pooled SEM images (about 2 s for 5,000 sites).
* :func:`acquisition_keys` reads the acquisition (``date_time_lot``, the first three ``_`` fields
  of a Samsung site name, e.g. ``20201001_202940_NE142400C``); names without that pattern are their
  own acquisition.
* :func:`split_indices` cuts the sites into ``(train_idx, val_idx)`` by the rule ``split``:
  ``"group"`` (default; no depth map or near-identical stack on both sides), ``"acquisition"``
  (whole acquisitions, and groups, on one side) or ``"random"`` (the old leaking split, kept only to
  compare against: :func:`~seminspect.training.depth_data.samsung_split`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Literal

import numpy as np

SplitRule = Literal["group", "acquisition", "random"]
SPLIT_RULES: tuple[str, ...] = ("group", "acquisition", "random")
_ACQUISITION = re.compile(r"^(\d{8}_\d{6}_[^_]+)_")


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = np.arange(n)

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = int(self.parent[root])
        while self.parent[i] != root:  # path compression
            self.parent[i], i = root, int(self.parent[i])
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def labels(self) -> np.ndarray:
        roots = np.array([self.find(i) for i in range(len(self.parent))])
        return np.unique(roots, return_inverse=True)[1]


def _pooled(sem: np.ndarray) -> np.ndarray:
    """``(N, C, H, W)`` or ``(N, H, W)`` -> ``(N, H, W)`` acquisition-mean images in grey levels (float32)."""
    a = np.asarray(sem, np.float32)
    if a.ndim == 4:
        a = a.mean(axis=1)
    if a.dtype.kind == "f" and a.size and float(a.max()) <= 1.0:
        a = a * 255.0  # float images in [0, 1]: the tolerance is in 8-bit grey levels
    return a


def near_identical_pairs(sem: np.ndarray, sem_tol: float = 2.0, block: int = 1024) -> list[tuple[int, int]]:
    """Pairs ``(i, j)``, ``i < j``, whose acquisition-mean SEM images differ by less than ``sem_tol`` grey levels
    (mean absolute difference). Candidates come from 3x3-pooled images (RMS distance below ``sem_tol``), checked
    at full resolution."""
    m = _pooled(sem)
    n, h, w = m.shape
    hh, ww = max(1, h // 3), max(1, w // 3)
    desc = m[:, : hh * 3, : ww * 3].reshape(n, hh, 3, ww, 3).mean(axis=(2, 4)).reshape(n, -1) if h >= 3 and w >= 3 \
        else m.reshape(n, -1)
    desc = desc.astype(np.float64)
    sq = (desc**2).sum(axis=1)
    pairs = []
    for start in range(0, n, block):
        d2 = sq[start : start + block, None] + sq[None, :] - 2.0 * desc[start : start + block] @ desc.T
        rms = np.sqrt(np.maximum(d2, 0.0) / desc.shape[1])
        for a, b in zip(*np.nonzero(rms < sem_tol), strict=True):
            i, j = start + int(a), int(b)
            if i < j and float(np.abs(m[i] - m[j]).mean()) < sem_tol:
                pairs.append((i, j))
    return pairs


def site_groups(sem: np.ndarray, depth: np.ndarray, sem_tol: float | None = 2.0) -> np.ndarray:
    """Group label ``(N,)`` (0..G-1): sites with the same depth map bytes or near-identical SEM stacks share one.

    ``sem_tol=None`` groups by depth map alone.
    """
    depth = np.ascontiguousarray(depth)
    uf = _UnionFind(len(depth))
    first: dict[str, int] = {}
    for i, d in enumerate(depth):
        key = hashlib.sha1(d.tobytes()).hexdigest()
        uf.union(first.setdefault(key, i), i)
    if sem_tol is not None:
        for i, j in near_identical_pairs(sem, sem_tol):
            uf.union(i, j)
    return uf.labels()


def acquisition_keys(names: Sequence[str]) -> list[str]:
    """The acquisition of each site: ``date_time_lot`` of a Samsung name, else the name itself."""
    out = []
    for name in names:
        m = _ACQUISITION.match(str(name))
        out.append(m.group(1) if m else str(name))
    return out


def group_cut(groups: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Whole groups to validation, in an order drawn with ``default_rng(seed)``, until they hold at least
    ``round(N * val_fraction)`` sites (at least one site stays in training); ``(train_idx, val_idx)`` sorted."""
    groups = np.asarray(groups)
    n = len(groups)
    n_val = max(1, int(round(n * val_fraction)))
    labels, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    order = np.random.default_rng(seed).permutation(len(labels))
    is_val = np.zeros(len(labels), bool)
    taken = 0
    for g in order[::-1]:
        if taken >= n_val or taken + counts[g] >= n:
            break
        is_val[g] = True
        taken += int(counts[g])
    val = is_val[inverse]
    return np.flatnonzero(~val), np.flatnonzero(val)


def split_indices(
    sem: np.ndarray,
    depth: np.ndarray,
    names: Sequence[str],
    split: str = "group",
    val_fraction: float = 0.1,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """``(train_idx, val_idx)`` of the sites by the rule ``split`` (see the module docstring)."""
    if split == "random":
        perm = np.random.default_rng(seed).permutation(len(depth))
        n_val = max(1, int(round(len(depth) * val_fraction)))
        return np.sort(perm[:-n_val]), np.sort(perm[-n_val:])
    groups = site_groups(sem, depth)
    if split == "acquisition":
        acq = np.unique(acquisition_keys(names), return_inverse=True)[1]
        uf = _UnionFind(len(groups))
        for labels in (groups, acq):
            first: dict[int, int] = {}
            for i, g in enumerate(labels.tolist()):
                uf.union(first.setdefault(g, i), i)
        groups = uf.labels()
    elif split != "group":
        raise ValueError(f"unknown split rule {split!r}; use one of {', '.join(SPLIT_RULES)}")
    return group_cut(groups, val_fraction, seed)


def shared_depth_maps(depth: np.ndarray, a: np.ndarray, b: np.ndarray) -> int:
    """How many sites of ``b`` have a depth map byte-identical to one of ``a``'s (0 for an honest split)."""
    seen = {hashlib.sha1(np.ascontiguousarray(depth[i]).tobytes()).digest() for i in a}
    return sum(hashlib.sha1(np.ascontiguousarray(depth[i]).tobytes()).digest() in seen for i in b)

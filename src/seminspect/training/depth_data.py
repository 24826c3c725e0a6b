"""Depth training data in memory: :class:`DepthData` and its two loaders.

* :func:`load_samsung_npz` reads ``samsung_sem_depth/train.npz`` straight into tensors (5,000
  sites of 66x45: reading them through 25,000 PNG files every epoch would dominate the run);
* :func:`load_depth_dataset` reads a project dataset folder (target views -> channels,
  ``Sample.depth`` -> target), e.g. the virtual fab's output or ``seminspect import samsung-depth``.

The validation split of the npz file is fixed and documented (docs/depth.md): by default whole
groups of twin sites (same depth map, or near-identical SEM stacks) go to one side
(:mod:`seminspect.data.depth_split`), about 10 % of the sites to validation; ``split="random"``
is the old leaking permutation (:func:`samsung_split`), kept for comparison. Dataset folders use
their ``split`` column when they have one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seminspect.data.depth_split import split_indices
from seminspect.training.depth_config import DataSection, DepthDataError
from seminspect.training.depth_npz import read_samsung_npz

__all__ = [
    "DepthData",
    "DepthDataError",
    "dataset_to_tensors",
    "load_data",
    "load_depth_dataset",
    "load_samsung_npz",
    "read_npz_sites",
    "samsung_split",
    "split_data",
]


@dataclass
class DepthData:
    """Sites in memory: ``x (N, C, H, W)`` float32 in [0, 1], ``y (N, H, W)`` float32 depth units."""

    x: torch.Tensor
    y: torch.Tensor
    ids: list[str]
    units: str = ""
    source: str = ""  # the file or manifest the sites come from (named in errors)

    def __post_init__(self) -> None:
        if (
            self.x.ndim != 4
            or self.y.ndim != 3
            or self.x.shape[0] != self.y.shape[0]
            or self.x.shape[-2:] != self.y.shape[-2:]
        ):
            raise DepthDataError(f"inputs {tuple(self.x.shape)} and depth {tuple(self.y.shape)} do not match")
        if len(self.ids) != self.x.shape[0]:
            raise DepthDataError(f"{len(self.ids)} ids for {self.x.shape[0]} sites")

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def channels(self) -> int:
        return self.x.shape[1]

    def subset(self, index: np.ndarray | list[int]) -> DepthData:
        idx = torch.as_tensor(np.asarray(index, dtype=np.int64))
        return DepthData(self.x[idx], self.y[idx], [self.ids[i] for i in idx.tolist()], self.units, self.source)


def samsung_split(n: int, val_fraction: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The fixed split of the Samsung file: ``(train_idx, val_idx)``, both sorted.

    ``perm = numpy.random.default_rng(seed).permutation(n)``; the last ``round(n * val_fraction)``
    entries of ``perm`` are validation (500 of 5,000 for the defaults).
    """
    perm = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(n * val_fraction)))
    return np.sort(perm[:-n_val]), np.sort(perm[-n_val:])


def read_npz_sites(path: str | Path, channels: int | None = None) -> DepthData:
    """Every site of a Samsung-style ``.npz`` as it is (no split); depth in the file's units."""
    path = Path(path)
    sem, depth, names = read_samsung_npz(path)
    if channels is not None:
        sem = sem[:, :channels]
    scale = 255.0 if sem.dtype == np.uint8 else (65535.0 if sem.dtype == np.uint16 else 1.0)
    return DepthData(
        torch.from_numpy(sem.astype(np.float32) / scale),
        torch.from_numpy(depth.astype(np.float32)),
        names,
        units="Samsung depth units",
        source=str(path),
    )


def split_data(data: DepthData, split: str = "group", val_fraction: float = 0.1, seed: int = 0
               ) -> tuple[DepthData, DepthData]:
    """``(train, val)`` of ``data`` by the rule ``split`` (:func:`seminspect.data.depth_split.split_indices`)."""
    tr, va = split_indices(data.x.numpy(), data.y.numpy(), data.ids, split, val_fraction, seed)
    return data.subset(tr), data.subset(va)


def load_samsung_npz(
    path: str | Path, val_fraction: float = 0.1, split_seed: int = 0, channels: int | None = None,
    split: str = "group",
) -> tuple[DepthData, DepthData]:
    """Read ``train.npz`` (``sem`` uint8 (N, 4, H, W), ``depth`` uint8 (N, H, W), ``name``).

    Returns ``(train, val)`` by the rule ``split`` (default ``"group"``: no depth map on both sides;
    ``"random"``: :func:`samsung_split`); depth stays in the file's units. The file's
    headers, types, shapes and values are checked first (:mod:`seminspect.training.depth_npz`):
    any problem is a one-line :class:`DepthDataError` naming the file.
    """
    return split_data(read_npz_sites(path, channels), split, val_fraction, split_seed)


def _centre_crop(a: np.ndarray, crop: int | None) -> np.ndarray:
    if crop is None:
        return a
    h, w = a.shape[-2:]
    top, left = max(0, (h - crop) // 2), max(0, (w - crop) // 2)
    return a[..., top : top + crop, left : left + crop]


def dataset_to_tensors(
    dataset: Any, channels: int | None = None, crop: int | None = None, require_depth: bool = True
) -> DepthData:
    """Target views of each sample of a :class:`~seminspect.data.dataset.SampleDataset` -> tensors.

    The target views, ordered by index, become the channels; ``Sample.depth`` the target
    (zeros with ``require_depth=False``, for prediction).
    """
    from seminspect.data.imageio import to_float
    from seminspect.utils.progress import track

    xs, ys, ids = [], [], []
    n_ch = None
    where = getattr(dataset, "manifest_path", "dataset")
    for sample in track(dataset, "loading sites"):
        views = sample.targets or sample.views
        if channels is not None:
            views = views[:channels]
        if n_ch is None:
            n_ch = len(views)
        if len(views) != n_ch:
            raise DepthDataError(
                f"{where}: sample {sample.sample_id!r} has {len(views)} target views, "
                f"the first sample has {n_ch}; use data.channels to pick a common number"
            )
        x = np.stack([to_float(v.image) for v in views])
        if sample.depth is None:
            if require_depth:
                raise DepthDataError(f"{where}: sample {sample.sample_id!r} has no depth map")
            y = np.zeros(x.shape[-2:], np.float32)
        else:
            y = np.asarray(sample.depth, np.float32)
        if y.shape != x.shape[-2:]:
            raise DepthDataError(f"{where}: sample {sample.sample_id!r}: depth {y.shape} vs image {x.shape[-2:]}")
        xs.append(_centre_crop(x, crop))
        ys.append(_centre_crop(y, crop))
        ids.append(sample.sample_id)
    if not xs:
        raise DepthDataError(f"{where}: no samples")
    shapes = {a.shape for a in xs}
    if len(shapes) > 1:
        raise DepthDataError(f"{where}: sites have different sizes {sorted(shapes)[:3]}; use data.crop")
    units = getattr(getattr(dataset, "info", None), "depth_units", "") or ""
    return DepthData(torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys)), ids, units, str(where))


def load_depth_dataset(
    root: str | Path,
    train_split: str = "train",
    val_split: str = "val",
    val_fraction: float = 0.1,
    split_seed: int = 0,
    channels: int | None = None,
    crop: int | None = None,
    split: str = "group",
) -> tuple[DepthData, DepthData]:
    """A dataset folder as ``(train, val)``; without a ``split`` column, cut by the rule ``split``."""
    from seminspect.data.dataset import SampleDataset

    ds = SampleDataset(root, roles=["target"])
    splits = ds.metadata_column("split")
    if any(splits):
        if val_split not in splits:
            raise DepthDataError(
                f"{ds.manifest_path}: no samples with split == {val_split!r} "
                f"(have {sorted(set(splits))}); set data.val_split"
            )
        return (
            dataset_to_tensors(ds.split(train_split), channels, crop),
            dataset_to_tensors(ds.split(val_split), channels, crop),
        )
    return split_data(dataset_to_tensors(ds, channels, crop), split, val_fraction, split_seed)


def load_data(cfg: DataSection) -> tuple[DepthData, DepthData]:
    if cfg.source == "samsung_npz":
        train, val = load_samsung_npz(cfg.path, cfg.val_fraction, cfg.split_seed, cfg.channels, cfg.split)
    else:
        train, val = load_depth_dataset(
            cfg.path, cfg.train_split, cfg.val_split, cfg.val_fraction, cfg.split_seed, cfg.channels, cfg.crop,
            cfg.split,
        )
    if cfg.max_sites is not None:
        train = train.subset(np.arange(min(cfg.max_sites, len(train))))
    return train, val

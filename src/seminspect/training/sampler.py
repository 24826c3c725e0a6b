"""Class-balanced sampling: every class (normal + each defect type) drawn about equally often."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler


def class_keys(is_abnormal: Sequence[int], type_index: Sequence[int]) -> np.ndarray:
    """``(N,)`` int64 class key: 0 normal (or unlabelled), 1 + type for defects (1 for unknown type)."""
    ab = np.asarray(is_abnormal)
    ti = np.asarray(type_index)
    return np.where(ab == 1, 1 + np.maximum(ti, 0), 0).astype(np.int64)


def balanced_weights(keys: np.ndarray, power: float = 0.5, abnormal_share: float | None = 0.5) -> np.ndarray:
    """Per-sample weights ``count(class) ** -power`` (power 1 = fully balanced, 0 = natural).

    With ``abnormal_share``, normal (key 0) and abnormal samples are rescaled to that total share.
    """
    keys = np.asarray(keys)
    counts = np.bincount(keys)
    w = counts[keys].astype(np.float64) ** (-power)
    if abnormal_share is not None and (keys == 0).any() and (keys > 0).any():
        w[keys == 0] *= (1 - abnormal_share) / w[keys == 0].sum()
        w[keys > 0] *= abnormal_share / w[keys > 0].sum()
    return w / w.sum()


class ClassBalancedSampler(Sampler[int]):
    """Draws ``num_samples`` indices with replacement, weighted by :func:`balanced_weights`.

    Deterministic: epoch ``e`` uses seed ``seed + e`` (call :meth:`set_epoch`), so a resumed run
    draws the same indices as an uninterrupted one.
    """

    def __init__(self, keys: np.ndarray, num_samples: int | None = None, power: float = 0.5,
                 abnormal_share: float | None = 0.5, seed: int = 0) -> None:
        self.weights = torch.as_tensor(balanced_weights(keys, power, abnormal_share), dtype=torch.float64)
        self.num_samples = int(num_samples or len(keys))
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        yield from torch.multinomial(self.weights, self.num_samples, replacement=True, generator=g).tolist()

    def __len__(self) -> int:
        return self.num_samples

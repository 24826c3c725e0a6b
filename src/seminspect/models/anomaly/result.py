"""What scoring returns (:class:`AnomalyResult`) and how per-view maps become per-sample results.

:class:`MapCollector` receives one post-processed map per scored view, in any order of samples,
and keeps only what the result needs: each sample's combined map (pixel-wise max, or mean, over its
target views) written in place, its image score once its last view arrived, its mask and,
on request, its image. Array work only (numpy); the models and the detector are outside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from seminspect.data.sample import Sample
from seminspect.models.anomaly.features import AnomalyConfigError


@dataclass
class AnomalyResult:
    """Scores with the ground truth of the scored samples (for evaluation).

    ``maps`` ``(N, H, W)`` float32; ``masks`` ``(N, H, W)`` bool or None; ``labels`` ``(N,)`` 1/0/-1.
    """

    sample_ids: list[str]
    scores: np.ndarray
    maps: np.ndarray | list[np.ndarray]  # a list when images of several native sizes were scored (keep_aspect)
    labels: np.ndarray
    defect_types: list[str | None]
    masks: np.ndarray | list[np.ndarray] | None = None
    images: np.ndarray | list[np.ndarray] | None = None
    metadata: list[dict[str, str]] = field(default_factory=list)
    raw_scores: np.ndarray | None = None  # with score_groups: the scores before per-group normalisation


class MapCollector:
    """Combine view maps into sample maps and scores as the views come.

    Args:
        samples: ``{index: Sample}`` of every sample to be scored.
        mean: average the views' maps (``view_combine="mean"``) instead of their pixel-wise max.
        top_k: image score = mean of the top-k pixels of the (score) map.
        ragged: sizes may differ between samples: one array per sample instead of one ``(N, H, W)``.
        separate: image scores come from their own post-processed maps (``score_maps``).
    """

    def __init__(self, samples: dict[int, Sample], *, mean: bool, top_k: int, ragged: bool, separate: bool):
        self.samples = samples
        self.n_views = {i: len(s.targets) for i, s in samples.items()}
        self.mean, self.top_k, self.ragged, self.separate = mean, top_k, ragged, separate
        # Maps are written into one preallocated (N, H, W) array as the views come (no per-sample copies
        # stacked at the end: that held the result twice); score maps live only until their sample is complete.
        self.map_arr = np.zeros((0, 0, 0), np.float32)
        self.per_sample: dict[int, np.ndarray] = {}
        self.scores = np.zeros(len(samples))
        self.counts: dict[int, int] = {}
        self.masks: dict[int, np.ndarray] = {}
        self.images: dict[int, np.ndarray] = {}
        self.score_maps: dict[int, np.ndarray] = {}
        self.order_index = {k: i for i, k in enumerate(sorted(samples))}  # sample index -> row of the result

    def _combine(self, current: np.ndarray | None, mi: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        if current is None:
            if out is None:
                return mi.copy()
            out[...] = mi
            return out
        if self.mean:
            current += mi
        else:
            np.maximum(current, mi, out=current)
        return current

    def _slot(self, k: int, shape: tuple[int, ...], first: bool) -> np.ndarray:
        if self.ragged:
            if first:
                self.per_sample[k] = np.empty(shape, np.float32)
            return self.per_sample[k]
        if self.map_arr.shape[0] == 0:
            self.map_arr = np.zeros((len(self.samples), *shape), np.float32)
        return self.map_arr[self.order_index[k]]

    def has_image(self, k: int) -> bool:
        """Whether sample ``k``'s image is already kept (only its first view's is)."""
        return k in self.images

    def add(self, k: int, amap: np.ndarray, score_map: np.ndarray | None = None, mask: np.ndarray | None = None,
            image: np.ndarray | None = None) -> None:
        """One view's map (and score map, mask, image) for sample ``k``."""
        first = k not in self.counts
        slot = self._slot(k, amap.shape, first)
        if amap.shape != slot.shape:
            raise AnomalyConfigError(
                f"sample {self.samples[k].sample_id!r}: map size {amap.shape} differs from {slot.shape}: "
                "set crop, or image_size with resize: keep_aspect, to score images of different sizes")
        self._combine(None if first else slot, amap, out=slot)
        if self.separate:
            self.score_maps[k] = self._combine(self.score_maps.get(k), amap if score_map is None else score_map)
        self.counts[k] = self.counts.get(k, 0) + 1
        if self.counts[k] == self.n_views[k]:  # the sample is complete: finish its map and score
            if self.mean:
                slot /= self.counts[k]
            smap = self.score_maps.pop(k) / (self.counts[k] if self.mean else 1) if self.separate else slot
            self.scores[self.order_index[k]] = scores_from_maps(smap[None], self.top_k)[0]
        if mask is not None:
            self.masks[k] = mask if k not in self.masks else (self.masks[k] | mask)
        if image is not None and k not in self.images:
            self.images[k] = image

    def result(self) -> AnomalyResult:
        """The collected samples, in index order."""
        order = sorted(self.samples)
        map_arr: np.ndarray | list[np.ndarray] = self.map_arr
        if self.ragged:
            shapes = {self.per_sample[k].shape for k in order}
            map_arr = np.stack([self.per_sample.pop(k) for k in order]) if len(shapes) == 1 else \
                [self.per_sample[k] for k in order]
        mask_arr = None
        if self.masks:
            mask_list = [self.masks.get(k, np.zeros(map_arr[i].shape, bool)) for i, k in enumerate(order)]
            mask_arr = np.stack(mask_list) if isinstance(map_arr, np.ndarray) else mask_list
        meta = self.samples
        labels = np.array([-1 if meta[k].is_abnormal is None else int(meta[k].is_abnormal) for k in order],
                          dtype=np.int64)
        return AnomalyResult(
            sample_ids=[meta[k].sample_id for k in order], scores=self.scores, maps=map_arr, labels=labels,
            defect_types=[meta[k].defect_type for k in order], masks=mask_arr,
            images=stack_or_list([self.images[k] for k in order]) if self.images and order else None,
            metadata=[dict(meta[k].metadata) for k in order],
        )


def stack_or_list(arrays: list[np.ndarray]) -> np.ndarray | list[np.ndarray]:
    """One ``(N, H, W)`` array when every array has one size, else the list (images of several sizes)."""
    return np.stack(arrays) if len({a.shape for a in arrays}) == 1 else arrays


def scores_from_maps(maps: np.ndarray, top_k: int) -> np.ndarray:
    """``(N,)`` image scores: the max (``top_k`` 1) or the mean of the top-k pixels of each map."""
    if maps.size == 0:
        return np.zeros(0)
    flat = maps.reshape(maps.shape[0], -1)
    if top_k <= 1:
        return flat.max(1).astype(np.float64)
    k = min(top_k, flat.shape[1])
    return np.sort(flat, axis=1)[:, -k:].mean(1).astype(np.float64)

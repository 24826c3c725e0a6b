"""Distribution drift between two sets of sample embeddings: sliced Wasserstein + permutation p-value.

A model degrades silently when the product, tool or lot changes. :func:`drift_test` measures
the shift between two sets of embeddings (pooled backbone features of the target views, see
:func:`dataset_embeddings`) as the sliced Wasserstein distance (POT,
``ot.sliced_wasserstein_distance`` with a fixed projection seed) and gives a permutation-test
p-value: the two sets are pooled and re-split at random ``n_permutations`` times (seeded), and
``p = (1 + #{permuted SWD >= observed}) / (1 + n_permutations)`` -- exact-size under the null.

The cross-product transfer matrix that puts this distance beside each transfer is in
:mod:`seminspect.transfer`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from seminspect.errors import SeminspectError


class DriftError(SeminspectError, ValueError):
    """Embeddings or datasets unsuitable for a drift test."""


@dataclass
class DriftResult:
    """Outcome of :func:`drift_test`: distance (in standardised-feature units), p-value, sizes."""

    distance: float
    p_value: float
    n_a: int
    n_b: int
    n_permutations: int
    null_mean: float
    null_q95: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise DriftError(f"{name}: embeddings must be (N >= 2, D), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise DriftError(f"{name}: embeddings contain NaN/inf")
    return x


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, n_projections: int = 128, seed: int = 0) -> float:
    """Sliced Wasserstein-2 distance between ``(Na, D)`` and ``(Nb, D)`` point sets (fixed projections)."""
    import ot

    return float(ot.sliced_wasserstein_distance(np.asarray(a, np.float64), np.asarray(b, np.float64),
                                                n_projections=n_projections, seed=seed))


def drift_test(a: np.ndarray, b: np.ndarray, n_permutations: int = 200, n_projections: int = 64,
               seed: int = 0, standardize: bool = True) -> DriftResult:
    """Sliced Wasserstein distance between two embedding sets and its permutation p-value.

    Args:
        a, b: ``(Na, D)``, ``(Nb, D)`` embeddings.
        standardize: z-score every feature with the pooled mean/std first (invariant to
            permutations, so the test stays exact) so that no feature dominates by scale.
        seed: seeds both the projections (the same for every permutation) and the permutations.
    """
    a = _check(a, "set A")
    b = _check(b, "set B")
    if a.shape[1] != b.shape[1]:
        raise DriftError(f"embedding sizes differ: {a.shape[1]} vs {b.shape[1]}")
    pooled = np.concatenate([a, b])
    if standardize:
        pooled = (pooled - pooled.mean(0)) / (pooled.std(0) + 1e-12)
    na = a.shape[0]
    observed = sliced_wasserstein(pooled[:na], pooled[na:], n_projections, seed)
    rng = np.random.default_rng(seed)
    null = np.empty(n_permutations)
    for i in range(n_permutations):
        perm = rng.permutation(pooled.shape[0])
        null[i] = sliced_wasserstein(pooled[perm[:na]], pooled[perm[na:]], n_projections, seed)
    p = (1.0 + np.sum(null >= observed)) / (1.0 + n_permutations)
    return DriftResult(distance=observed, p_value=float(p), n_a=na, n_b=b.shape[0], n_permutations=n_permutations,
                       null_mean=float(null.mean()) if n_permutations else float("nan"),
                       null_q95=float(np.quantile(null, 0.95)) if n_permutations else float("nan"))


def dataset_embeddings(data: Any, backbone: str = "mobilenetv2", pretrained: bool = True,
                       out_indices: Sequence[int] = (1, 2, 3), crop: int | None = None,
                       image_size: int | None = 128, batch_size: int = 32, max_samples: int | None = None,
                       seed: int = 0, backbone_module: Any = None) -> np.ndarray:
    """``(N, D)`` embeddings: global-average-pooled backbone maps of each sample's target views (view mean).

    ``data``: a dataset folder, a :class:`~seminspect.data.dataset.SampleDataset` or a list of
    Samples. ``max_samples``: a seeded random subset (speed).
    """
    import torch
    import torch.nn.functional as F

    from seminspect.data.dataset import SampleDataset
    from seminspect.data.imageio import to_float
    from seminspect.models.anomaly.features import build_backbone, freeze, pooled_embedding
    from seminspect.utils.progress import track

    if isinstance(data, str | Path):
        data = SampleDataset(data)
    idx = np.arange(len(data))
    if max_samples is not None and len(idx) > max_samples:
        idx = np.sort(np.random.default_rng(seed).choice(idx, max_samples, replace=False))
    model = backbone_module if backbone_module is not None else build_backbone(
        backbone, pretrained=pretrained, out_indices=out_indices, seed=seed)
    model = freeze(model)
    out = []
    for i in track(idx.tolist(), "embeddings"):
        views = []
        for v in data[i].targets:
            img = to_float(v.image)
            if crop is not None:
                h, w = img.shape
                c = min(crop, h, w)
                img = img[(h - c) // 2:(h - c) // 2 + c, (w - c) // 2:(w - c) // 2 + c]
            t = torch.from_numpy(np.ascontiguousarray(img))[None, None]
            if image_size is not None:
                t = F.interpolate(t, size=(image_size, image_size), mode="area")
            views.append(t)
        if not views:
            raise DriftError(f"sample {data[i].sample_id!r} has no target view")
        if len({tuple(t.shape) for t in views}) != 1:
            raise DriftError(f"sample {data[i].sample_id!r}: target views differ in size; set image_size")
        emb = pooled_embedding(model, torch.cat(views), batch_size=batch_size)
        out.append(emb.mean(0).numpy())
    return np.stack(out)

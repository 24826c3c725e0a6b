"""Distribution drift between two sets of sample embeddings: sliced Wasserstein + permutation p-value.

A model degrades silently when the product, tool or lot changes. :func:`drift_test` measures
the shift between two sets of embeddings (pooled backbone features of the target views, see
:func:`dataset_embeddings`) as the sliced Wasserstein distance (POT,
``ot.sliced_wasserstein_distance`` with a fixed projection seed) and gives a permutation-test
p-value: the two sets are pooled and re-split at random ``n_permutations`` times (seeded), and
``p = (1 + #{permuted SWD >= observed}) / (1 + n_permutations)`` -- exact-size under the null.

:func:`transfer_matrix` fits an anomaly model on each product / lot and tests it on every other,
with the embedding distance beside each cell.
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


def transfer_matrix(data: Any, group_by: str = "product", config: dict[str, Any] | None = None,
                    train_split: str = "train", test_split: str = "test", n_permutations: int = 100,
                    embedding_kwargs: dict[str, Any] | None = None, seed: int = 0) -> dict[str, Any]:
    """Fit an anomaly model on each group (product / lot / tool) and test it on every group.

    Returns ``{"groups", "image_auroc" (G, G) [fit row, test column], "swd" (G, G), "p_value" (G, G)}``:
    embedding distance and drift p-value between the groups' test sets beside each transfer AUROC.
    """
    from seminspect.data.dataset import SampleDataset
    from seminspect.evaluation.anomaly_metrics import anomaly_metrics
    from seminspect.models.anomaly import AnomalyDetector

    if isinstance(data, str | Path):
        data = SampleDataset(data)
    keys = data.metadata_column(group_by)
    splits = data.metadata_column("split")
    groups = sorted({k for k in keys if k})
    if len(groups) < 2:
        raise DriftError(f"{getattr(data, 'root', 'dataset')}: column {group_by!r} has fewer than 2 groups")

    def ids(group: str, split: str) -> list[str]:
        return [sid for sid, k, s in zip(data.sample_ids, keys, splits, strict=True) if k == group and s == split]

    tests = {g: data.subset(ids(g, test_split)) for g in groups}
    emb = {g: dataset_embeddings(tests[g], seed=seed, **(embedding_kwargs or {})) for g in groups}
    n = len(groups)
    auc = np.full((n, n), np.nan)
    swd = np.zeros((n, n))
    pval = np.ones((n, n))
    for i, g in enumerate(groups):
        train_ids = ids(g, train_split)
        if not train_ids:
            raise DriftError(f"group {g!r} has no {train_split!r} samples")
        det = AnomalyDetector(config or {}).fit(data.subset(train_ids))
        for j, h in enumerate(groups):
            res = det.score(tests[h])
            auc[i, j] = anomaly_metrics(res.scores, res.labels)["image_auroc"]
            if j > i:
                r = drift_test(emb[g], emb[h], n_permutations=n_permutations, seed=seed)
                swd[i, j] = swd[j, i] = r.distance
                pval[i, j] = pval[j, i] = r.p_value
    return {"groups": groups, "group_by": group_by, "image_auroc": auc.tolist(), "swd": swd.tolist(),
            "p_value": pval.tolist()}


def transfer_markdown(matrix: dict[str, Any]) -> str:
    """The transfer matrix as a markdown table: ``AUROC (SWD, p)`` per (fit row, test column)."""
    groups = matrix["groups"]
    lines = [f"| fit \\ test ({matrix['group_by']}) | " + " | ".join(groups) + " |",
             "|---|" + "---|" * len(groups)]
    for i, g in enumerate(groups):
        cells = []
        for j in range(len(groups)):
            a = matrix["image_auroc"][i][j]
            cells.append(f"{a:.3f}" if i == j else f"{a:.3f} (SWD {matrix['swd'][i][j]:.3f}, "
                                                  f"p={matrix['p_value'][i][j]:.3g})")
        lines.append(f"| {g} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"

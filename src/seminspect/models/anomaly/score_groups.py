"""Image scores made comparable across groups of samples (products, cell types, layers) from normal scores alone.

    groups = fit_groups(calib_scores, calib_metadata, key="cell_type")   # held-out NORMAL samples only
    z = normalise(scores, metadata, groups)                               # (s - median_g) / IQR_g

A detector fitted on several products at once learns one normal population per product, but their
image scores live on different scales: a textured product's normal images score higher than a
smooth one's, so one threshold (and one ranking) serves neither (measured on ELPV: mono and poly
cells; docs/anomaly.md). With ``score_groups: <metadata key>`` the detector keeps, per value of that
key, the median and interquartile range of the held-out normal scores it already computes for its
threshold, and reports every score as ``(score - median) / IQR`` of its group; the threshold is then
fitted on those. No labelled anomaly is used. A sample without the key, or of a group that had no
held-out normals, is refused in one line (its scale is unknown). Pure numpy; nothing else touched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from seminspect.models.anomaly.features import AnomalyConfigError

__all__ = ["MIN_NORMALS", "check_groups", "check_held_out", "fit_groups", "group_of", "normalise"]

MIN_NORMALS = 10  # held-out normal scores a group needs for its median and interquartile range


def group_of(metadata: Mapping[str, Any], key: str, sample_id: str = "") -> str:
    """The group of one sample: its metadata value under ``key`` (refused when absent or empty)."""
    value = metadata.get(key)
    if value is None or str(value) == "":
        raise AnomalyConfigError(f"sample {sample_id!r} has no metadata {key!r} (score_groups: {key})")
    return str(value)


def check_groups(metadata: Sequence[Mapping[str, Any]], key: str, sample_ids: Sequence[str] | None = None,
                 min_normals: int = MIN_NORMALS) -> np.ndarray:
    """The group of each held-out normal sample; refused (one line) when one lacks ``key`` or a group is too small.

    Called before fitting too, so that a fit of an hour is not lost to a missing column.
    """
    ids = list(sample_ids) if sample_ids is not None else [""] * len(metadata)
    labels = np.array([group_of(m, key, i) for m, i in zip(metadata, ids, strict=True)])
    for g in sorted(set(labels.tolist())):
        n = int((labels == g).sum())
        if n < min_normals:
            raise AnomalyConfigError(
                f"score_groups: group {key}={g!r} has {n} held-out normal samples, at least {min_normals} "
                "are needed for its scale (raise calib_fraction, give more normals of it, or drop score_groups)")
    return labels


def check_held_out(key: str, samples: Sequence[Any]) -> None:
    """Refuse, before any fitting, held-out normal ``samples`` that cannot give every group a scale."""
    if not samples:
        raise AnomalyConfigError("score_groups needs held-out normal samples: set calib_fraction > 0 or pass calib")
    check_groups([s.metadata for s in samples], key, [s.sample_id for s in samples])


def fit_groups(scores: np.ndarray, metadata: Sequence[Mapping[str, Any]], key: str,
               sample_ids: Sequence[str] | None = None, min_normals: int = MIN_NORMALS) -> dict[str, Any]:
    """Per-group median and interquartile range of held-out normal ``scores`` (JSON-ready)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = check_groups(metadata, key, sample_ids, min_normals)
    groups: dict[str, dict[str, float]] = {}
    for g in sorted(set(labels.tolist())):
        s = scores[labels == g]
        q25, median, q75 = np.percentile(s, [25, 50, 75])
        spread = float(q75 - q25)
        if not spread > 0:  # all alike: fall back to the standard deviation, then to 1
            spread = float(s.std()) or 1.0
        groups[g] = {"median": float(median), "iqr": spread, "n": int(len(s))}
    return {"key": key, "groups": groups}


def normalise(scores: np.ndarray, metadata: Sequence[Mapping[str, Any]], fitted: Mapping[str, Any],
              sample_ids: Sequence[str] | None = None) -> np.ndarray:
    """``(score - median_g) / IQR_g`` for each sample's group ``g`` (see :func:`fit_groups`)."""
    key, groups = fitted["key"], fitted["groups"]
    ids = list(sample_ids) if sample_ids is not None else [""] * len(scores)
    out = np.asarray(scores, dtype=np.float64).copy()
    for n, (m, sid) in enumerate(zip(metadata, ids, strict=True)):
        g = group_of(m, key, sid)
        if g not in groups:
            raise AnomalyConfigError(f"sample {sid!r}: {key}={g!r} was not among the groups fitted "
                                     f"({', '.join(sorted(groups))}); fit with normal samples of it")
        out[n] = (out[n] - groups[g]["median"]) / groups[g]["iqr"]
    return out

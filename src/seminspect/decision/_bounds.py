"""Exact (Clopper-Pearson) binomial confidence bounds, vectorised over counts.

These are the statistical core of every threshold in :mod:`seminspect.decision`: a threshold is
accepted only when the *bound* on its error rate meets the target, never the point estimate,
so that the target holds on new data with the stated confidence.
"""

from __future__ import annotations

import numpy as np
from scipy import stats


def _counts(k: np.ndarray | int, n: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
    k_arr = np.asarray(k, dtype=np.float64)
    n_arr = np.asarray(n, dtype=np.float64)
    if np.any(k_arr < 0) or np.any(k_arr > n_arr):
        raise ValueError("binomial bounds need 0 <= k <= n")
    return k_arr, n_arr


def clopper_pearson_lower(k: np.ndarray | int, n: np.ndarray | int, confidence: float = 0.95) -> np.ndarray | float:
    """One-sided lower confidence bound of a proportion from ``k`` successes in ``n`` trials.

    ``P(p >= bound) >= confidence`` over repeated sampling. Shapes broadcast; ``n == 0`` gives 0
    (no data: nothing can be claimed). Equals the lower end of the two-sided exact interval at
    level ``2 * confidence - 1``.
    """
    k_arr, n_arr = _counts(k, n)
    alpha = 1.0 - confidence
    with np.errstate(invalid="ignore", divide="ignore"):
        out = stats.beta.ppf(alpha, k_arr, n_arr - k_arr + 1.0)
    out = np.where(k_arr <= 0, 0.0, out)
    return out if out.ndim else float(out)


def clopper_pearson_upper(k: np.ndarray | int, n: np.ndarray | int, confidence: float = 0.95) -> np.ndarray | float:
    """One-sided upper confidence bound of a proportion (``k`` of ``n``); ``n == 0`` gives 1."""
    k_arr, n_arr = _counts(k, n)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = stats.beta.ppf(confidence, k_arr + 1.0, n_arr - k_arr)
    out = np.where(k_arr >= n_arr, 1.0, out)
    return out if out.ndim else float(out)


def clopper_pearson_interval(
    k: np.ndarray | int, n: np.ndarray | int, confidence: float = 0.95
) -> tuple[np.ndarray | float, np.ndarray | float]:
    """Two-sided exact interval at ``confidence`` (each tail holds ``(1 - confidence) / 2``)."""
    tail_conf = 1.0 - (1.0 - confidence) / 2.0
    return clopper_pearson_lower(k, n, tail_conf), clopper_pearson_upper(k, n, tail_conf)


def min_samples_for_zero_errors(rate: float, confidence: float) -> int:
    """Smallest ``n`` whose upper bound with zero errors is <= ``rate``: ``(1 - rate)^n <= 1 - confidence``.

    The floor on calibration data for any error target (e.g. 299 for 1 % at 95 %).
    """
    return int(np.ceil(np.log(1.0 - confidence) / np.log1p(-rate) - 1e-12))

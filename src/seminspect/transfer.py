"""Cross-product transfer: fit an anomaly model per group (product / lot / tool) and on all groups, test on each.

    m = transfer_matrix("fab", group_by="product", config={...})
    print(transfer_markdown(m))

Per cell (fit row, test column): image AUROC and AP on the test group's ``test_split``, and the
false-alarm rate on its normal test samples at the fitting model's normal-quantile threshold,
set on the fitting group's held-out normals (``calib_split``; no labelled anomaly is used).
Beside each pair of groups, the sliced-Wasserstein distance between their test embeddings and
its permutation p-value (:mod:`seminspect.drift`). :func:`distance_vs_loss`: does the distance
predict the transfer loss (the test group's own-model AUROC minus the cell's), as a Spearman
correlation with a permutation p-value over the off-diagonal cells? The ``all`` row is one model
fitted on every group's training normals with one threshold: :func:`threshold_stability` sets
its false alarms per group beside each group's own threshold, with one-sided 95 % Clopper-Pearson
upper bounds. Reads the dataset; writes nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from seminspect.drift import DriftError, dataset_embeddings, drift_test

ALL = "all"


def _false_alarms(scores: np.ndarray, labels: np.ndarray, threshold: float | None) -> tuple[int, int]:
    normal = scores[labels == 0]
    return (int((normal > threshold).sum()) if threshold is not None else -1), int(normal.size)


def transfer_matrix(data: Any, group_by: str = "product", config: dict[str, Any] | None = None,
                    train_split: str = "train", calib_split: str | None = "calib", test_split: str = "test",
                    n_permutations: int = 100, embedding_kwargs: dict[str, Any] | None = None, seed: int = 0,
                    with_all: bool = True) -> dict[str, Any]:
    """The matrices above; rows are the fitted groups (then ``all``), columns the tested groups.

    Returns ``{"groups", "fits", "image_auroc", "ap", "false_alarms" [k, n] per cell, "threshold"
    per fit, "swd", "p_value" (G, G)}``. ``calib_split`` None: no threshold, no false alarms.
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

    def ids(group: str, split: str | None) -> list[str]:
        return [sid for sid, k, s in zip(data.sample_ids, keys, splits, strict=True)
                if (group == ALL or k == group) and s == split]

    tests = {g: data.subset(ids(g, test_split)) for g in groups}
    emb = {g: dataset_embeddings(tests[g], seed=seed, **(embedding_kwargs or {})) for g in groups}
    fits = [*groups, *([ALL] if with_all else [])]
    n, m = len(fits), len(groups)
    auc, ap = np.full((n, m), np.nan), np.full((n, m), np.nan)
    alarms = np.zeros((n, m, 2), dtype=int)
    thresholds: list[float | None] = []
    for i, g in enumerate(fits):
        train_ids = ids(g, train_split)
        if not train_ids:
            raise DriftError(f"group {g!r} has no {train_split!r} samples")
        calib = data.subset(ids(g, calib_split)) if calib_split else None
        det = AnomalyDetector({**(config or {}), "calib_fraction": 0.0}).fit(data.subset(train_ids), calib)
        thr = det.threshold["threshold"] if det.threshold else None
        thresholds.append(thr)
        for j, h in enumerate(groups):
            res = det.score(tests[h], progress=False)
            met = anomaly_metrics(res.scores, res.labels)
            auc[i, j], ap[i, j] = met["image_auroc"], met.get("image_ap", np.nan)
            alarms[i, j] = _false_alarms(res.scores, res.labels, thr)
    swd, pval = np.zeros((m, m)), np.ones((m, m))
    for i in range(m):
        for j in range(i + 1, m):
            r = drift_test(emb[groups[i]], emb[groups[j]], n_permutations=n_permutations, seed=seed)
            swd[i, j] = swd[j, i] = r.distance
            pval[i, j] = pval[j, i] = r.p_value
    return {"groups": groups, "fits": fits, "group_by": group_by, "image_auroc": auc.tolist(), "ap": ap.tolist(),
            "false_alarms": alarms.tolist(), "threshold": thresholds, "swd": swd.tolist(), "p_value": pval.tolist()}


def distance_vs_loss(matrix: dict[str, Any], loss: str = "auroc", n_resamples: int = 9999,
                     seed: int = 0) -> dict[str, Any]:
    """Spearman correlation of SWD with transfer loss over the off-diagonal cells, permutation p-value (one-sided:
    a larger distance goes with a larger loss). The cells share groups, so the p-value is optimistic.

    ``loss="auroc"``: the test group's own-model AUROC minus the cell's; ``"false_alarms"``: the
    cell's false-alarm rate on the test group's normals minus that of the test group's own model.
    """
    from scipy import stats

    swd = np.asarray(matrix["swd"])
    m = len(matrix["groups"])
    if loss == "auroc":
        value = np.asarray(matrix["image_auroc"])[:m]
        value = -value  # a lower AUROC is a larger loss
    elif loss == "false_alarms":
        k_n = np.asarray(matrix["false_alarms"])[:m]
        if (k_n[..., 0] < 0).any():
            raise DriftError("no false alarms in this matrix (fitted without a calib split)")
        value = k_n[..., 0] / np.maximum(k_n[..., 1], 1)
    else:
        raise DriftError(f"loss must be 'auroc' or 'false_alarms', not {loss!r}")
    cells = [(i, j) for i in range(m) for j in range(m) if i != j]
    dist = np.array([swd[i, j] for i, j in cells])
    lost = np.array([value[i, j] - value[j, j] for i, j in cells])

    def rho(x: np.ndarray, y: np.ndarray) -> float:
        return float(stats.spearmanr(x, y).statistic)

    res = stats.permutation_test((dist, lost), rho, permutation_type="pairings", n_resamples=n_resamples,
                                 alternative="greater", random_state=seed)
    return {"loss": loss, "spearman": float(res.statistic), "p_value": float(res.pvalue), "n_cells": len(cells),
            "distances": dist.tolist(), "losses": lost.tolist()}


def threshold_stability(matrix: dict[str, Any], confidence: float = 0.95) -> list[dict[str, Any]]:
    """Per tested group: false alarms at its own model's threshold and at the ``all`` model's, with upper bounds."""
    from seminspect.decision._bounds import clopper_pearson_upper

    fits, groups = matrix["fits"], matrix["groups"]
    alarms = np.asarray(matrix["false_alarms"])
    if ALL not in fits:
        raise DriftError("threshold stability needs the all-groups model (with_all=True)")
    a = fits.index(ALL)
    rows = []
    for j, g in enumerate(groups):
        row: dict[str, Any] = {"group": g}
        for name, i in (("own", fits.index(g)), ("all", a)):
            k, n = (int(v) for v in alarms[i, j])
            row[name] = {"threshold": matrix["threshold"][i], "false_alarms": k, "normals": n,
                         "rate": k / n if n and k >= 0 else None,
                         "upper": float(clopper_pearson_upper(k, n, confidence)) if n and k >= 0 else None}
        rows.append(row)
    return rows


def transfer_markdown(matrix: dict[str, Any]) -> str:
    """The matrices as markdown: AUROC / AP / false-alarm rate per cell; SWD and p per pair of groups."""
    groups, fits = matrix["groups"], matrix["fits"]
    auc, ap, alarms = (np.asarray(matrix[k]) for k in ("image_auroc", "ap", "false_alarms"))
    head = f"| fit \\ test ({matrix['group_by']}) | " + " | ".join(groups) + " |"
    lines = ["Image AUROC / AP / false-alarm rate on the test group's normals at the fitting model's threshold:", "",
             head, "|---|" + "---|" * len(groups)]
    for i, g in enumerate(fits):
        cells = []
        for j in range(len(groups)):
            k, n = alarms[i, j]
            far = f"{k / n:.3f}" if n > 0 and k >= 0 else "-"
            cells.append(f"{auc[i, j]:.3f} / {ap[i, j]:.3f} / {far}")
        lines.append(f"| {g} | " + " | ".join(cells) + " |")
    lines += ["", "Sliced-Wasserstein distance between the groups' test embeddings (permutation p):", "",
              f"| {matrix['group_by']} | " + " | ".join(groups) + " |", "|---|" + "---|" * len(groups)]
    for i, g in enumerate(groups):
        lines.append(f"| {g} | " + " | ".join("-" if i == j else f"{matrix['swd'][i][j]:.3f} "
                                                   f"(p={matrix['p_value'][i][j]:.3g})" for j in range(len(groups)))
                     + " |")
    return "\n".join(lines) + "\n"


__all__ = ["ALL", "distance_vs_loss", "threshold_stability", "transfer_markdown", "transfer_matrix"]

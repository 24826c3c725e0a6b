"""Evaluate depth predictions: RMSE and MAE per site and overall, baselines, best/worst figures.

All errors are in the data's depth units. Overall RMSE is over all pixels of all sites
(``sqrt(mean((pred - true)**2))``), which is not the mean of the per-site RMSEs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seminspect.utils.io import atomic_path


@dataclass
class DepthScores:
    """Errors of one model on ``N`` sites: ``site_rmse``/``site_mae`` are ``(N,)``."""

    name: str
    rmse: float
    mae: float
    site_rmse: np.ndarray
    site_mae: np.ndarray

    def row(self) -> dict[str, float | str]:
        return {"model": self.name, "rmse": self.rmse, "mae": self.mae,
                "site_rmse_median": float(np.median(self.site_rmse)),
                "site_rmse_p95": float(np.percentile(self.site_rmse, 95))}


def score_depth(pred: np.ndarray, true: np.ndarray, name: str = "model") -> DepthScores:
    """``pred``, ``true``: ``(N, H, W)`` depth maps -> overall and per-site RMSE/MAE."""
    pred = np.asarray(pred, np.float64)
    true = np.asarray(true, np.float64)
    if pred.shape != true.shape or pred.ndim != 3:
        raise ValueError(f"pred {pred.shape} and true {true.shape} must both be (N, H, W)")
    d = (pred - true).reshape(len(pred), -1)
    return DepthScores(name, float(np.sqrt(np.mean(d**2))), float(np.mean(np.abs(d))),
                       np.sqrt(np.mean(d**2, axis=1)), np.mean(np.abs(d), axis=1))


def mean_map(train_depth: np.ndarray) -> np.ndarray:
    """The mean-depth-map baseline: ``(N, H, W)`` training depths -> ``(H, W)`` float32."""
    return np.asarray(train_depth, np.float64).mean(axis=0).astype(np.float32)


def plot_sites(sem: np.ndarray, true: np.ndarray, pred: np.ndarray, site_rmse: np.ndarray, path: str | Path,
               ids: list[str] | None = None, k: int = 3, title: str = "") -> Path:
    """Figure of the ``k`` best and ``k`` worst sites: SEM (mean of acquisitions) / true / predicted / error.

    ``sem (N, C, H, W)`` in [0, 1]; ``true``, ``pred`` ``(N, H, W)`` depth units; saved as PNG.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = np.argsort(site_rmse)
    k = min(k, len(order) // 2 or 1)
    picks = [("best", i) for i in order[:k]] + [("worst", i) for i in order[::-1][:k]]
    lo, hi = float(np.min(true)), float(np.max(true))
    emax = float(np.max(np.abs(pred[[i for _, i in picks]] - true[[i for _, i in picks]]))) or 1.0
    fig, axes = plt.subplots(len(picks), 4, figsize=(8.5, 2.3 * len(picks)), squeeze=False)
    for r, (tag, i) in enumerate(picks):
        name = ids[i] if ids else str(i)
        panels = [(sem[i].mean(axis=0), "gray", 0, 1, "SEM (mean of acquisitions)"),
                  (true[i], "viridis", lo, hi, "true depth"),
                  (pred[i], "viridis", lo, hi, "predicted depth"),
                  (pred[i] - true[i], "coolwarm", -emax, emax, f"error (RMSE {site_rmse[i]:.2f})")]
        for c, (img, cmap, vmin, vmax, label) in enumerate(panels):
            ax = axes[r, c]
            im = ax.imshow(img, cmap=cmap, vmin=vmin, vmax=vmax)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0 or c == 3:
                ax.set_title(label, fontsize=8)
            if c == 0:
                ax.set_ylabel(f"{tag}\n{name[-18:]}", fontsize=7)
            if c >= 2:
                fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return path


def results_table(scores: list[DepthScores], units: str = "") -> str:
    """Markdown table of overall and per-site errors."""
    u = f" ({units})" if units else ""
    lines = [f"| model | RMSE{u} | MAE{u} | per-site RMSE median | per-site RMSE p95 |", "|---|---|---|---|---|"]
    for s in scores:
        r = s.row()
        lines.append(f"| {r['model']} | {r['rmse']:.3f} | {r['mae']:.3f} | {r['site_rmse_median']:.3f} | "
                     f"{r['site_rmse_p95']:.3f} |")
    return "\n".join(lines) + "\n"


def training_mean_map(config: dict | None, model: str | Path, train_data: str | Path | None = None
                      ) -> tuple[np.ndarray, str]:
    """The mean depth map of the training sites named by a model's config: ``(map (H, W), description)``.

    ``config`` is the ``DepthConfig`` dump stored in the model (``meta["config"]``); its data section
    (path, split rule, seed) picks the training sites; ``train_data`` replaces its path. A model without
    a config, or training data that cannot be read, is a one-line error naming the file.
    """
    from seminspect.training.depth_config import DepthConfig, DepthDataError
    from seminspect.training.depth_data import load_data

    if not config and train_data is None:
        raise DepthDataError(f"{model}: the model names no training data (no config); give --train-data")
    if config and "split" not in config.get("data", {}):  # written before data.split: the random split trained it
        config = {**config, "data": {**config["data"], "split": "random"}}
    cfg = DepthConfig.model_validate(config) if config else DepthConfig()
    if train_data is not None:
        source = "samsung_npz" if Path(train_data).suffix == ".npz" else "dataset"
        cfg = cfg.with_options("--train-data", **{"data.path": str(train_data), "data.source": source})
    if not Path(cfg.data.path).exists():
        raise DepthDataError(f"{cfg.data.path}: training data of {model} not found (the mean-map baseline needs "
                             "it); give --train-data")
    train, _ = load_data(cfg.data)
    desc = f"{cfg.data.path} ({cfg.data.source}, split {cfg.data.split}, seed {cfg.data.split_seed}: {len(train)} " \
           "training sites)"
    return mean_map(train.y.numpy()), desc

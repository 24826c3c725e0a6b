"""``seminspect anomaly fit|predict|evaluate``: reference-based unsupervised anomaly detection."""

from __future__ import annotations

from pathlib import Path

import typer

from seminspect.cli._common import console

anomaly_app = typer.Typer(help="Anomaly detection trained on normal samples only (PatchCore, STPM).",
                          no_args_is_help=True)


def _load_config(path: Path | None, overrides: list[str]) -> dict:
    import yaml

    from seminspect.models.anomaly.features import AnomalyConfigError
    from seminspect.utils.io import read_yaml_mapping

    cfg: dict = {}
    if path is not None:
        cfg = read_yaml_mapping(path, AnomalyConfigError)
    for item in overrides:
        if "=" not in item:
            raise AnomalyConfigError(f"--set {item!r}: use key=value")
        key, value = item.split("=", 1)
        cfg[key.strip()] = yaml.safe_load(value)
    return cfg


def _dataset(root: Path, split: str | None):
    from seminspect.data.dataset import SampleDataset

    ds = SampleDataset(root)
    return ds.split(split) if split else ds


@anomaly_app.command("fit")
def fit(
    data: Path = typer.Argument(..., help="Dataset folder; abnormal samples are skipped."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the fitted model."),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML config (configs/anomaly*.yaml)."),
    split: str | None = typer.Option("train", help="Split to fit on ('' for all samples)."),
    calib_split: str | None = typer.Option(None, help="Held-out normal split for the threshold (default: a "
                                                      "calib_fraction of the fit split)."),
    checkpoint_dir: Path | None = typer.Option(None, help="STPM: checkpoint each epoch here and resume."),
    set_: list[str] = typer.Option([], "--set", help="Override a config key, e.g. --set conditioning=none."),
) -> None:
    """Fit an anomaly model on the normal samples of a dataset and save it."""
    from seminspect.models.anomaly import AnomalyDetector

    det = AnomalyDetector(_load_config(config, set_))
    train = _dataset(data, split or None)
    calib = _dataset(data, calib_split) if calib_split else None
    det.fit(train, calib=calib, checkpoint_dir=checkpoint_dir)
    det.save(out)
    thr = det.threshold
    console.print(f"fitted {det.config.model} on {det.history.get('n_fit_samples')} normal samples in "
                  f"{det.history.get('fit_seconds', 0):.1f} s -> {out}")
    if thr:
        console.print(f"threshold {thr['threshold']:.4g} (false-alarm upper bound "
                      f"{thr['false_alarm_upper_bound']:.3g} at {thr['confidence']:.0%} confidence)")
        if "warning" in thr:
            console.print(f"[yellow]warning:[/] {thr['warning']}")


@anomaly_app.command("predict")
def predict(
    model: Path = typer.Argument(..., help="Folder written by `anomaly fit`."),
    data: Path = typer.Argument(..., help="Dataset folder to score."),
    out: Path = typer.Option(..., "--out", "-o", help="CSV of sample_id, score, flagged."),
    split: str | None = typer.Option(None, help="Only this split."),
    maps_out: Path | None = typer.Option(None, help="Also save the anomaly maps (N, H, W) as .npy."),
) -> None:
    """Score samples: one row per sample (image score, flagged above the threshold)."""
    import numpy as np
    import pandas as pd

    from seminspect.models.anomaly import AnomalyDetector
    from seminspect.utils.io import atomic_path

    det = AnomalyDetector.load(model)
    res = det.score(_dataset(data, split))
    thr = det.threshold["threshold"] if det.threshold else float("nan")
    df = pd.DataFrame({"sample_id": res.sample_ids, "score": res.scores, "flagged": res.scores > thr})
    with atomic_path(out) as tmp:
        df.to_csv(tmp, index=False)
    if maps_out is not None:
        with atomic_path(maps_out) as tmp, open(tmp, "wb") as fh:
            np.save(fh, res.maps.astype(np.float32))
    console.print(f"scored {len(df)} samples, {int(df.flagged.sum())} above threshold {thr:.4g} -> {out}")


@anomaly_app.command("evaluate")
def evaluate(
    model: Path = typer.Argument(..., help="Folder written by `anomaly fit`."),
    data: Path = typer.Argument(..., help="Labelled dataset folder."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for metrics.json and the report."),
    split: str | None = typer.Option("test", help="Split to evaluate ('' for all)."),
    n_figures: int = typer.Option(12, help="Overlays in the report (highest-scoring normal and abnormal)."),
) -> None:
    """Image AUROC/AP, pixel AUROC, AUPRO and false-alarm rate per defect type; overlays on one scale."""
    from seminspect.evaluation.anomaly_report import write_anomaly_report
    from seminspect.models.anomaly import AnomalyDetector

    det = AnomalyDetector.load(model)
    res = det.score(_dataset(data, split or None), keep_images=True)
    report = write_anomaly_report(det, res, out, n_figures=n_figures)
    allm = report["all"]
    console.print(" ".join(f"{k}={allm[k]:.4f}" for k in ("image_auroc", "image_ap", "pixel_auroc", "aupro",
                                                            "false_alarm_rate") if k in allm))
    console.print(f"report -> {out}")


def register(app: typer.Typer) -> None:
    app.add_typer(anomaly_app, name="anomaly")

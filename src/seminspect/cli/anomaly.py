"""``seminspect anomaly fit|predict|evaluate``: reference-based unsupervised anomaly detection."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

from seminspect.cli._common import console, err_console

anomaly_app = typer.Typer(help="Anomaly detection trained on normal samples only "
                               "(PatchCore, STPM, DRAEM, diffusion + student).",
                          no_args_is_help=True)


@contextmanager
def _one_line_warnings() -> Iterator[None]:
    """Warnings raised by the detector (e.g. a crop that discards most of an image) as one stderr line each."""
    import warnings

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None,
             line: str | None = None) -> None:
        err_console.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)

    old = warnings.showwarning
    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = old


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
    checkpoint_dir: Path | None = typer.Option(None, help="STPM, DRAEM, diffusion: checkpoint each epoch here and "
                                               "resume."),
    set_: list[str] = typer.Option([], "--set", help="Override a config key, e.g. --set conditioning=none; "
                                   "--set preset=auto chooses the settings you did not give from the data "
                                   "(single view or with a reference die; configs/anomaly_single_view.yaml)."),
) -> None:
    """Fit an anomaly model on the normal samples of a dataset and save it."""
    from seminspect.models.anomaly import AnomalyDetector, load_anomaly_config

    det = AnomalyDetector(load_anomaly_config(config, set_))  # every config problem refused here, before any work
    train = _dataset(data, split or None)
    calib = _dataset(data, calib_split) if calib_split else None
    with _one_line_warnings():
        det.fit(train, calib=calib, checkpoint_dir=checkpoint_dir)
    det.save(out)
    chosen = det.history.get("preset")
    if chosen:
        kept = f"; yours kept: {', '.join(chosen['kept_yours'])}" if chosen["kept_yours"] else ""
        console.print(f"preset {chosen['preset']} (reference views: {chosen['seen']['reference']}): "
                      f"{', '.join(f'{k}={v}' for k, v in chosen['applied'].items()) or 'nothing to change'}{kept}",
                      highlight=False, soft_wrap=True)
    thr = det.threshold
    console.print(f"fitted {det.config.model} on {det.history.get('n_fit_samples')} normal samples in "
                  f"{det.history.get('fit_seconds', 0):.1f} s -> {out}")
    if det.bank_groups is not None:
        console.print(f"one memory bank per {det.bank_groups.key}: " + ", ".join(
            f"{n} ({hi - lo} patches)" for n, (lo, hi) in zip(det.bank_groups.names, det.bank_groups.bounds,
                                                               strict=True)), highlight=False, soft_wrap=True)
    if thr:
        console.print(f"threshold {thr['threshold']:.4g} (false-alarm upper bound "
                      f"{thr['false_alarm_upper_bound']:.3g} at {thr['confidence']:.0%} confidence)")
        if "warning" in thr:
            console.print(f"[yellow]warning:[/] {thr['warning']}")
        if det.score_groups:
            console.print(f"scores scaled per {det.score_groups['key']}: " + ", ".join(
                f"{g} (median {v['median']:.4g}, IQR {v['iqr']:.3g}, {v['n']} normals)"
                for g, v in det.score_groups["groups"].items()), highlight=False, soft_wrap=True)
    else:
        err_console.print("[yellow]warning:[/] no threshold fitted (no held-out normal samples: calib_fraction 0 "
                          "and no --calib-split); `anomaly predict` will give scores but flag nothing",
                          highlight=False, soft_wrap=True)


_BACKEND_HELP = ("Where PatchCore's patch embedding runs: onnxruntime (default; its exported graph, cached in the "
                 "model folder), openvino (seminspect[openvino]) or torch. STPM, DRAEM and diffusion run in torch.")
_PRECISION_HELP = ("fp32 (exact nearest-bank search), bf16 (nearest row found in bf16, its distance measured in "
                   "fp32: faster where the CPU has native bf16; OpenVINO's embedding runs bf16 too) or int8 "
                   "(candidate rows found in int8, measured in fp32: faster where the CPU has VNNI).")


def _load_detector(model: Path, backend: str | None, precision: str, threads: int | None):  # noqa: ANN202
    """The saved detector, set to predict on the chosen runtime (refusals are one line, before any work)."""
    from seminspect.inference.anomaly_runtime import use_runtime
    from seminspect.models.anomaly import AnomalyDetector

    det = AnomalyDetector.load(model)
    where = use_runtime(det, model, backend, precision, threads)
    return det, where


@anomaly_app.command("predict")
def predict(
    model: Path = typer.Argument(..., help="Folder written by `anomaly fit`."),
    data: Path = typer.Argument(..., help="Dataset folder to score."),
    out: Path = typer.Option(..., "--out", "-o", help="Scores, one row per sample: sample_id, score, flagged; "
                                                      "the format follows the suffix: .csv, .parquet or .json."),
    split: str | None = typer.Option(None, help="Only this split."),
    maps_out: Path | None = typer.Option(None, help="Also save the anomaly maps: .npy (N, H, W), or .npz "
                                                     "(one array per sample id; images of several sizes)."),
    backend: str | None = typer.Option(None, help=_BACKEND_HELP),
    precision: str = typer.Option("fp32", help=_PRECISION_HELP),
    threads: int | None = typer.Option(None, help="Runtime threads (default: all cores)."),
) -> None:
    """Score samples: one row per sample (image score; flagged: above the model's threshold).

    A model fitted without held-out normals has no threshold: ``flagged`` is then empty (null) in
    every row and a warning says so; the scores are still written.
    """
    import numpy as np
    import pandas as pd

    from seminspect.utils.tables import OutputFormatError, check_table_path, write_table

    check_table_path(out, "--out")  # an unknown suffix is refused before any work
    if maps_out is not None and maps_out.suffix.lower() not in (".npy", ".npz"):
        raise OutputFormatError(f"{maps_out}: --maps-out is written as NumPy; give it the suffix .npy or .npz")
    det, where = _load_detector(model, backend, precision, threads)
    with _one_line_warnings():
        res = det.score(_dataset(data, split))
    thr = det.threshold["threshold"] if det.threshold else None
    # No threshold: 'flagged' is null (not False) in every row -- "not decided", not "normal".
    flagged = pd.array(res.scores > thr if thr is not None else [None] * len(res.scores), dtype="boolean")
    df = pd.DataFrame({"sample_id": res.sample_ids, "score": res.scores, "flagged": flagged})
    if res.raw_scores is not None:  # score_groups: the score before its group's scaling
        df.insert(2, "raw_score", res.raw_scores)
    write_table(df, out, "--out")
    if maps_out is not None:
        from seminspect.utils.io import atomic_path

        if maps_out.suffix.lower() == ".npz":
            with atomic_path(maps_out) as tmp, open(tmp, "wb") as fh:
                np.savez_compressed(fh, **{sid: np.asarray(m, np.float32)
                                           for sid, m in zip(res.sample_ids, res.maps, strict=True)})
        elif isinstance(res.maps, list):
            raise OutputFormatError(f"{maps_out}: the maps have several sizes (images of several native sizes); "
                                    "give --maps-out the suffix .npz (one array per sample id)")
        else:
            with atomic_path(maps_out) as tmp, open(tmp, "wb") as fh:
                np.save(fh, res.maps.astype(np.float32))
    if thr is None:
        err_console.print(f"[yellow]warning:[/] {model}: the model has no fitted threshold (fitted without held-out "
                          "normal samples); column 'flagged' is empty, nothing is flagged",
                          highlight=False, soft_wrap=True)
        console.print(f"scored {len(df)} samples (no threshold) -> {out} (embedding on {where})")
    else:
        console.print(f"scored {len(df)} samples, {int(df['flagged'].sum())} above threshold {thr:.4g} -> {out} "
                      f"(embedding on {where})")


@anomaly_app.command("evaluate")
def evaluate(
    model: Path = typer.Argument(..., help="Folder written by `anomaly fit`."),
    data: Path = typer.Argument(..., help="Labelled dataset folder."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for metrics.json and the report."),
    split: str | None = typer.Option("test", help="Split to evaluate ('' for all)."),
    n_figures: int = typer.Option(12, help="Overlays in the report (highest-scoring normal and abnormal)."),
    backend: str | None = typer.Option(None, help=_BACKEND_HELP),
    precision: str = typer.Option("fp32", help=_PRECISION_HELP),
    threads: int | None = typer.Option(None, help="Runtime threads (default: all cores)."),
) -> None:
    """Image AUROC/AP, pixel AUROC, AUPRO and false-alarm rate per defect type; overlays on one scale."""
    from seminspect.evaluation.anomaly_report import write_anomaly_report

    det, where = _load_detector(model, backend, precision, threads)
    ds = _dataset(data, split or None)
    with _one_line_warnings():
        res = det.score(ds, keep_images=True)
    extra = {} if res.masks is None else {"mask_rule": ds.mask_rule}  # which mask pixels counted as defect
    report = write_anomaly_report(det, res, out, n_figures=n_figures, extra=extra)
    allm = report["all"]
    keys = [k for k in ("image_auroc", "image_ap", "pixel_auroc", "aupro", "false_alarm_rate") if k in allm]
    console.print(" ".join(f"{k}={allm[k]:.4f}" if allm[k] == allm[k] else f"{k}=n/a" for k in keys))
    if extra:
        console.print(f"masks: {extra['mask_rule']}", highlight=False)
    for k in keys:
        if f"{k}_note" in allm:
            err_console.print(f"[yellow]note:[/] {k}: {allm[f'{k}_note']}", highlight=False, soft_wrap=True)
    console.print(f"report -> {out} (embedding on {where})")


def register(app: typer.Typer) -> None:
    app.add_typer(anomaly_app, name="anomaly")

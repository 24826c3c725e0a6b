"""``seminspect join``: one inspection artefact from an ADC artefact and a saved anomaly model.

    join("runs/demo/adc", "runs/anomaly", out="runs/inspect", normals="fab", split="calib")

The anomaly model becomes ``<out>/anomaly`` and its score feeds the triage's anomaly rule (a site
above the rule is never auto-normal). The inspector aligns each site once, with the ADC's
registration, and the anomaly model scores with that alignment; with ``normals`` the rule's
threshold is re-fitted on those sites' normal scores *through that path* (bounded false-alarm
rate, ``NormalQuantileThreshold``), and the triage's auto-normal route is calibrated again on every
labelled site of that split the rule lets through (``TriagePolicy.refit_normal_route``): the rule
takes sites out of that route, so its certified miss-rate bound is computed on what remains
(``manifest["anomaly"]["normal_route"]``). Without ``normals`` the anomaly model's own threshold is
kept, which was fitted with the model's own registration, and the route keeps the bound computed
without the rule; the manifest records which.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from seminspect.models.artefact import ADC_FILES, ArtefactError, attach_anomaly, read_manifest, write_manifest


def _copy_adc(src: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name in (*ADC_FILES.values(), "metrics.json", "history.json", "report.html"):
        if (src / name).is_file():
            shutil.copy2(src / name, out / name)
    old = read_manifest(src)
    write_manifest(out, provenance=old.get("provenance"), inputs=old.get("inputs"))


def join(adc: str | Path, anomaly: str | Path, out: str | Path | None = None, normals: str | Path | None = None,
         split: str | None = "calib", log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Write the joined artefact into ``out`` (default: into ``adc`` itself); returns its manifest."""
    from seminspect.models.anomaly.detector import AnomalyDetector

    adc, anomaly = Path(adc), Path(anomaly)
    read_manifest(adc)
    try:
        det = AnomalyDetector.load(anomaly)
    except Exception as exc:
        raise ArtefactError(f"{anomaly}: {exc}") from None
    target = Path(out) if out is not None else adc
    if target.resolve() != adc.resolve():
        _copy_adc(adc, target)
    own = det.threshold or {}
    rule: dict[str, Any] = {"threshold": own.get("threshold"), "source": "the anomaly model's own calibration "
                            "(its own registration)", "false_alarm_rate": det.config.false_alarm_rate,
                            "confidence": det.config.confidence}
    attach_anomaly(target, anomaly, rule)
    if normals is not None:
        rule = _fit_rule(target, det, normals, split, log)
    return write_manifest(target, anomaly=rule, provenance=read_manifest(target).get("provenance"))


def _fit_rule(target: Path, det: Any, normals: str | Path, split: str | None,
              log: Callable[[str], None] | None) -> dict[str, Any]:
    """Score the labelled sites of ``normals`` (``split``) through the joined inspector; fit the anomaly rule on the
    normal ones, then calibrate the triage's auto-normal route again on every labelled site the rule lets through
    (the rule takes sites out of that route, so its certified bound must be computed on what remains)."""
    from seminspect.data.dataset import select_split
    from seminspect.inference.inspector import Inspector
    from seminspect.models.anomaly.threshold import fit_normal_threshold
    from seminspect.utils.io import atomic_write_json

    ds = select_split(normals, split)
    labels = ds.is_abnormal
    keep = [sid for sid, y in zip(ds.sample_ids, labels, strict=True) if y >= 0]
    if not any(y == 0 for y in labels):
        raise ArtefactError(f"{normals}: no normal sites in split {split!r} to fit the anomaly rule on")
    y = np.array([int(v) for v in labels if v >= 0])
    inspector = Inspector.load(target)
    insp = inspector.inspect(ds.subset(keep), progress="anomaly rule: scoring labelled sites")
    scores = np.asarray(insp.anomaly_scores)
    cfg = det.config
    thr = fit_normal_threshold(scores[y == 0], cfg.false_alarm_rate, cfg.confidence)
    n_normal = int((y == 0).sum())
    rule: dict[str, Any] = {
        "threshold": thr["threshold"], "source": f"{n_normal} normal sites of {normals} (split {split!r}) scored "
        "through the inspector's shared alignment", "false_alarm_rate": cfg.false_alarm_rate,
        "confidence": cfg.confidence, "false_alarm_upper_bound": thr["false_alarm_upper_bound"],
        **({"warning": thr["warning"]} if "warning" in thr else {})}
    if log:
        log(f"anomaly rule: {thr['threshold']:.4g} from {n_normal} normal sites (false-alarm upper bound "
            f"{thr['false_alarm_upper_bound']:.3g} at {cfg.confidence:.0%})")
    policy = inspector.artefact.policy  # loaded with the model's own rule; refit_normal_route replaces it
    if policy is None:  # no calibrated triage: every site goes to review, nothing to re-calibrate
        return rule
    before = float(policy.normal_threshold_)
    policy.refit_normal_route(insp.abnormal, y, thr["threshold"], scores)
    npv = policy.normal_thresholder_
    th_path = target / ADC_FILES["thresholds"]
    thresholds = json.loads(th_path.read_text())
    atomic_write_json(th_path, {**thresholds, "triage": policy.to_dict()})
    rule["normal_route"] = {
        "sites": len(y), "defects": int(y.sum()), "passed_by_rule": int((scores <= thr["threshold"]).sum()),
        "threshold_before": _finite(before), "threshold": _finite(policy.normal_threshold_),
        "feasible": bool(npv.feasible_), "miss_rate_upper_bound": _finite(npv.miss_rate_upper_bound_),
        "source": "re-calibrated on these sites with the rule applied"}
    if log:
        log(f"auto-normal route re-calibrated with the rule on {len(y)} sites: threshold {before:.4g} -> "
            f"{policy.normal_threshold_:.4g}")
    return rule


def _finite(x: float) -> float | None:
    """JSON has no infinities: an infeasible route's -inf threshold (or a missing bound) is written as null."""
    return float(x) if np.isfinite(x) else None

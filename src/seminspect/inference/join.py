"""``seminspect join``: one inspection artefact from an ADC artefact and a saved anomaly model.

    join("runs/demo/adc", "runs/anomaly", out="runs/inspect", normals="fab", split="calib")

The anomaly model becomes ``<out>/anomaly`` and its score feeds the triage's anomaly rule (a site
above the rule is never auto-normal). The inspector aligns each site once, with the ADC's
registration, and the anomaly model scores with that alignment; with ``normals`` the rule's
threshold is re-fitted on those sites' normal scores *through that path* (bounded false-alarm
rate, ``NormalQuantileThreshold``). Without it the anomaly model's own threshold is kept, which was
fitted with the model's own registration; the manifest records which.
"""

from __future__ import annotations

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
    from seminspect.models.anomaly.threshold import fit_normal_threshold

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
        from seminspect.data.dataset import select_split
        from seminspect.inference.inspector import Inspector

        ds = select_split(normals, split)
        keep = [sid for sid, y in zip(ds.sample_ids, ds.is_abnormal, strict=True) if y == 0]
        if not keep:
            raise ArtefactError(f"{normals}: no normal sites in split {split!r} to fit the anomaly rule on")
        insp = Inspector.load(target).inspect(ds.subset(keep), progress="anomaly rule: scoring normals")
        thr = fit_normal_threshold(np.asarray(insp.anomaly_scores), det.config.false_alarm_rate,
                                   det.config.confidence)
        rule = {"threshold": thr["threshold"], "source": f"{len(keep)} normal sites of {normals} (split "
                f"{split!r}) scored through the inspector's shared alignment",
                "false_alarm_rate": det.config.false_alarm_rate, "confidence": det.config.confidence,
                "false_alarm_upper_bound": thr["false_alarm_upper_bound"], **({"warning": thr["warning"]}
                                                                              if "warning" in thr else {})}
        if log:
            log(f"anomaly rule: {thr['threshold']:.4g} from {len(keep)} normal sites (false-alarm upper bound "
                f"{thr['false_alarm_upper_bound']:.3g} at {det.config.confidence:.0%})")
    return write_manifest(target, anomaly=rule, provenance=read_manifest(target).get("provenance"))

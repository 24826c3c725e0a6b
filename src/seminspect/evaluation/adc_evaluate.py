"""``seminspect evaluate``: the inference path on labelled sites, scored, with an HTML report.

    result = evaluate_artefact("runs/demo/adc", "runs/demo/data", split="test", report="eval.html")
    result.metrics["auroc"], result.metrics["triage"]["automation_rate"], result.inspection.frame()

The sites are judged by :class:`seminspect.inference.Inspector` exactly as ``predict`` judges them;
only then are the labels of the manifest read and compared. ``evaluate`` and ``predict`` therefore
give the same scores on the same sites.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from seminspect.data.dataset import SampleDataset, select_split
from seminspect.data.model_inputs import check_inputs, check_taxonomy, describe_dataset
from seminspect.data.taxonomy import Taxonomy
from seminspect.evaluation.adc_metrics import compute_metrics, triage_metrics
from seminspect.inference import Inspection, Inspector
from seminspect.models.artefact import MANIFEST


@dataclass
class EvaluationResult:
    metrics: dict[str, Any]
    inspection: Inspection
    is_abnormal: np.ndarray  # (N,) 1/0/-1 from the manifest
    type_index: np.ndarray  # (N,) leaf index in the artefact's taxonomy, -1 = none
    dataset: SampleDataset

    @property
    def predictions(self) -> dict[str, Any]:
        """The arrays of the old trainer API: abnormal, types, levels, is_abnormal, type_index."""
        i = self.inspection
        return {"abnormal": i.abnormal, "types": i.types, "levels": i.levels, "is_abnormal": self.is_abnormal,
                "type_index": self.type_index}


def label_arrays(ds: SampleDataset, taxonomy: Taxonomy) -> tuple[np.ndarray, np.ndarray]:
    y = ds.is_abnormal.astype(np.int64)
    ti = np.array([taxonomy.leaf_index(t) if t and t in taxonomy else -1 for t in ds.defect_types], dtype=np.int64)
    return y, ti


def evaluate_artefact(artefact: str | Path | Inspector, dataset: str | Path, split: str | None = "test",
                      report: str | Path | None = None, drop_roles: Sequence[str] = (),
                      log: Callable[[str], None] | None = None) -> EvaluationResult:
    """Judge the sites of ``split`` with the artefact, score against the labels, optionally write the report."""
    inspector = artefact if isinstance(artefact, Inspector) else Inspector.load(artefact)
    art = inspector.artefact
    ds = select_split(dataset, split, drop_roles)
    # the model's own kind of data only: its taxonomy, view layout and view sizes (one line naming both)
    check_taxonomy(art.taxonomy.leaves, art.path / art.manifest["parts"]["taxonomy"], ds.root)
    note = check_inputs(art.manifest.get("inputs"), describe_dataset([ds]), ds.manifest_path, art.path / MANIFEST)
    if note is not None and log:
        log(f"note: {note}")
    y, ti = label_arrays(ds, art.taxonomy)
    if log:
        log(f"evaluating split {split or 'all'!r}: {len(ds)} sites ({int((y == 1).sum())} abnormal, "
            f"{int((y == 0).sum())} normal, {int((y < 0).sum())} unlabelled) of {ds.root}")
    insp = inspector.inspect(ds, progress="inspecting")
    pol = art.policy
    target = pol.abnormal_precision if pol is not None else (
        art.precision_threshold.target_precision if art.precision_threshold is not None else 0.99)
    pred = {"abnormal": insp.abnormal, "types": insp.types, "levels": insp.levels}
    m = compute_metrics(pred, (y, ti), art.taxonomy, art.thresholds or None, target)
    m["split"] = split or "all"
    m["triage"] = triage_metrics(insp.route, insp.triage.type_decision, y, ti,
                                 confidence=pol.confidence if pol is not None else 0.95)
    if insp.anomaly_scores is not None and len(np.unique(y[y >= 0])) == 2:
        from seminspect.evaluation.metrics import auroc

        m["anomaly_auroc"] = float(auroc(y[y >= 0], insp.anomaly_scores[y >= 0]))
    result = EvaluationResult(m, insp, y, ti, ds)
    if report is not None:
        from seminspect.evaluation.adc_report import write_report

        write_report(Path(report), result, inspector)
    return result


def evaluate(artefact: str | Path, dataset: str | Path, split: str | None = "test",
             report: str | Path | None = None, drop_roles: Sequence[str] = (),
             log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Metrics of an artefact on a dataset split (see :func:`evaluate_artefact`)."""
    return evaluate_artefact(artefact, dataset, split, report, drop_roles, log).metrics

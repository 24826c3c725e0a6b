"""The inspection artefact: one folder that holds everything needed to judge new sites.

::

    artefact/
        inspection.json      format name + version, the parts below, model version, provenance,
                             inputs (view layout and view sizes trained on: seminspect.data.model_inputs)
        weights.safetensors  ADC weights (no pickle)
        config.yaml          the training config (its ``image`` and ``model`` sections rebuild the model)
        taxonomy.yaml        the defect tree the heads were trained on
        thresholds.json      calibrated precision threshold and triage policy
        anomaly/             optional: a saved AnomalyDetector (config.json + weights.safetensors)

Training writes it (:func:`write_adc_artefact`), ``seminspect join`` adds an anomaly model
(:func:`attach_anomaly`), inference reads it (:mod:`seminspect.inference.artefact`). This module
knows the layout and the manifest; it builds no model and imports neither training nor inference.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import torch
import yaml

from seminspect.data.taxonomy import Taxonomy
from seminspect.errors import SeminspectError
from seminspect.utils.digest import sha256_file
from seminspect.utils.io import atomic_path, atomic_write_json, atomic_write_text
from seminspect.utils.provenance import code_provenance, utc_now

FORMAT = "seminspect-inspection"
FORMAT_VERSION = 1
MANIFEST = "inspection.json"
ADC_FILES = {"weights": "weights.safetensors", "config": "config.yaml", "taxonomy": "taxonomy.yaml",
             "thresholds": "thresholds.json"}
ANOMALY_DIR = "anomaly"


class ArtefactError(SeminspectError):
    """An artefact folder is missing a part, has an unknown format, or its parts do not fit together."""


def model_version(folder: Path, parts: dict[str, str]) -> str:
    """A short id of the judging parts' content: weights, thresholds and anomaly model files."""
    h = hashlib.sha256()
    for key in sorted(parts):
        p = folder / parts[key]
        files = sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p]
        for f in files:
            if f.is_file():
                h.update(f"{key}:{f.relative_to(folder)}:{sha256_file(f)}\n".encode())
    return h.hexdigest()[:12]


def write_manifest(folder: Path, anomaly: dict[str, Any] | None = None,
                   provenance: dict[str, Any] | None = None, inputs: dict[str, Any] | None = None) -> dict[str, Any]:
    """(Re)write ``inspection.json`` for the parts present in ``folder``; written last (the commit point).

    ``inputs``: what the model was trained on (:func:`seminspect.data.model_inputs.describe`); None
    keeps the old manifest's.
    """
    parts = dict(ADC_FILES)
    if anomaly is not None:
        parts["anomaly"] = ANOMALY_DIR
    old = read_manifest(folder) if (folder / MANIFEST).is_file() else {}
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "created": utc_now(),
        "parts": parts, "anomaly": anomaly, "model_version": model_version(folder, {
            k: v for k, v in parts.items() if k in ("weights", "thresholds", "anomaly")}),
        "provenance": {**old.get("provenance", {}), **(provenance or {}), "code": code_provenance()},
    }
    if inputs is not None or old.get("inputs") is not None:
        manifest["inputs"] = inputs if inputs is not None else old["inputs"]
    atomic_write_json(folder / MANIFEST, manifest)
    return manifest


def read_manifest(folder: Path) -> dict[str, Any]:
    """``inspection.json`` of ``folder``, checked for format and version (one-line errors)."""
    path = folder / MANIFEST
    if not folder.is_dir():
        raise ArtefactError(f"{folder}: artefact folder not found")
    if not path.is_file():
        if (folder / ADC_FILES["weights"]).is_file():  # written before the manifest existed (format 0)
            return {"format": FORMAT, "format_version": 0, "parts": dict(ADC_FILES), "anomaly": None,
                    "model_version": model_version(folder, {"weights": ADC_FILES["weights"]}), "provenance": {}}
        raise ArtefactError(f"{path}: not found; {folder} is not an inspection artefact "
                            "(written by `seminspect train`)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtefactError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise ArtefactError(f"{path}: format {got!r} is not {FORMAT!r}")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION or version < 0:
        raise ArtefactError(f"{path}: format version {version!r} is not supported by this seminspect "
                            f"(reads versions 0..{FORMAT_VERSION}); upgrade seminspect or re-train")
    return manifest


def write_adc_artefact(folder: Path, model: torch.nn.Module, config: dict[str, Any], taxonomy: Taxonomy,
                       thresholds: dict[str, Any] | None = None,
                       provenance: dict[str, Any] | None = None,
                       inputs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the ADC parts of an artefact atomically, then the manifest (a killed write leaves no manifest)."""
    from safetensors.torch import save_model

    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST).unlink(missing_ok=True)  # the parts change: the old manifest no longer describes them
    with atomic_path(folder / ADC_FILES["weights"]) as tmp:
        save_model(model, str(tmp))
    atomic_write_text(folder / ADC_FILES["config"], yaml.safe_dump(config, sort_keys=False))
    atomic_write_text(folder / ADC_FILES["taxonomy"], yaml.safe_dump(taxonomy.to_dict(), sort_keys=False))
    if thresholds is not None:
        atomic_write_json(folder / ADC_FILES["thresholds"], thresholds)
    return write_manifest(folder, provenance=provenance, inputs=inputs)


def attach_anomaly(folder: Path, anomaly_dir: Path, rule: dict[str, Any]) -> dict[str, Any]:
    """Copy a saved anomaly model into ``folder/anomaly`` and record its triage rule in the manifest.

    ``rule``: ``{"threshold": float, "source": str, ...}`` -- the anomaly score above which a site
    is never auto-normal.
    """
    manifest = read_manifest(folder)
    target = folder / ANOMALY_DIR
    if anomaly_dir.resolve() != target.resolve():
        tmp = folder / f".{ANOMALY_DIR}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(anomaly_dir, tmp)
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    return write_manifest(folder, anomaly=rule, provenance=manifest.get("provenance"))

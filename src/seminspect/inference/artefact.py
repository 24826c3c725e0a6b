"""Loading an inspection artefact for inference: the ADC model, its triage policy, an optional anomaly model.

    art = load_artefact("runs/demo/adc")      # one-line ArtefactError on a missing or mismatched part
    art.model, art.prepare, art.policy, art.anomaly, art.model_version

Only the ``image`` and ``model`` sections (and ``train.tta``) of the artefact's ``config.yaml`` are
read: they are defined with the model (:mod:`seminspect.models.adc_spec`), so nothing from
:mod:`seminspect.training` is imported. Weights load from safetensors (no pickle).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from seminspect.data.prepare import PrepareSample
from seminspect.data.taxonomy import Taxonomy
from seminspect.decision import DecisionError, OpenSetTypeRule, PrecisionThreshold, TriagePolicy
from seminspect.errors import SeminspectError
from seminspect.models.adc import MultiViewADC
from seminspect.models.adc_spec import ImageConfig, ModelConfig, build_adc, make_prepare
from seminspect.models.artefact import ANOMALY_DIR, ArtefactError, read_manifest
from seminspect.utils.io import read_yaml_mapping


@dataclass
class LoadedArtefact:
    """Everything the inspector needs, read from one artefact folder."""

    path: Path
    manifest: dict[str, Any]
    model: MultiViewADC
    image: ImageConfig
    model_config: ModelConfig
    tta: list[int]
    taxonomy: Taxonomy
    thresholds: dict[str, Any]
    policy: TriagePolicy | None
    precision_threshold: PrecisionThreshold | None
    anomaly: Any = None  # AnomalyDetector (imported only when the artefact has one)
    anomaly_path: Path | None = None  # its folder (where its runtime graph is cached)
    anomaly_rule: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    open_set: OpenSetTypeRule | None = None  # "none of the known types" -> review (triage.open_set)

    @property
    def model_version(self) -> str:
        return str(self.manifest.get("model_version", ""))

    @property
    def prepare(self) -> PrepareSample:
        return make_prepare(self.image)

    @property
    def training_config(self) -> dict[str, Any]:
        """The whole ``config.yaml`` as a mapping (for provenance; not validated here)."""
        return read_yaml_mapping(self.path / self.manifest["parts"]["config"], ArtefactError, what="artefact config")


def _section(cfg: dict[str, Any], name: str, cls: type, path: Path) -> Any:
    try:
        return cls.model_validate(cfg.get(name) or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in (name, *first["loc"]))
        raise ArtefactError(f"{path}: {where}: {first['msg']}") from None


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtefactError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ArtefactError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _load_weights(model: MultiViewADC, path: Path) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    if not path.is_file():
        raise ArtefactError(f"{path}: missing from the artefact folder")
    try:
        load_model(model, str(path))
    except SafetensorError as exc:
        raise ArtefactError(f"{path}: not a readable safetensors file ({exc})") from None
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
        first = next((ln for ln in lines if "mismatch" in ln or "key" in ln.lower()), lines[0])[:200]
        raise ArtefactError(f"{path}: weights do not match the model of config.yaml and taxonomy.yaml "
                            f"(a different taxonomy or architecture? {first})") from None
    model.eval()


def load_artefact(path: str | Path, with_anomaly: bool = True) -> LoadedArtefact:
    """Read and check an artefact folder; every problem is one :class:`ArtefactError` line naming the file."""
    folder = Path(path)
    manifest = read_manifest(folder)
    parts = manifest["parts"]
    cfg_path = folder / parts["config"]
    cfg = read_yaml_mapping(cfg_path, ArtefactError, what="artefact config")
    image = _section(cfg, "image", ImageConfig, cfg_path)
    model_cfg = _section(cfg, "model", ModelConfig, cfg_path)
    train = cfg.get("train") or {}
    tta = [int(op) for op in train.get("tta", [0])] if isinstance(train, dict) else [0]
    if not tta or any(op < 0 or op > 7 for op in tta):
        raise ArtefactError(f"{cfg_path}: train.tta must list dihedral ops 0..7, got {tta}")
    tax_path = folder / parts["taxonomy"]
    if not tax_path.is_file():
        raise ArtefactError(f"{tax_path}: missing from the artefact folder")
    try:
        taxonomy = Taxonomy.from_yaml(tax_path)
    except SeminspectError as exc:
        raise ArtefactError(f"{tax_path}: {exc}") from None
    try:
        model = build_adc(model_cfg, taxonomy, pretrained=False)
    except (SeminspectError, ValueError, KeyError) as exc:
        raise ArtefactError(f"{cfg_path}: cannot build the model ({exc})") from None
    _load_weights(model, folder / parts["weights"])
    th_path = folder / parts["thresholds"]
    thresholds = _read_json(th_path)
    notes: list[str] = []
    policy = precision = None
    try:
        if thresholds.get("triage"):
            policy = TriagePolicy.from_dict(thresholds["triage"])
        else:
            notes.append(f"{th_path}: no calibrated triage policy ({thresholds.get('triage_error', 'none saved')}); "
                         "every site goes to review")
        if thresholds.get("precision_threshold"):
            precision = PrecisionThreshold.from_dict(thresholds["precision_threshold"])
        open_set = OpenSetTypeRule.from_dict(thresholds["open_set"]) if thresholds.get("open_set") else None
        if thresholds.get("open_set_error"):
            notes.append(f"{th_path}: no open-set rule for types ({thresholds['open_set_error']})")
    except DecisionError as exc:
        raise ArtefactError(f"{th_path}: {exc}") from None
    if policy is not None and policy.n_types_ not in (0, taxonomy.num_leaves):
        raise ArtefactError(f"{th_path}: the triage policy knows {policy.n_types_} types, taxonomy.yaml has "
                            f"{taxonomy.num_leaves}")
    art = LoadedArtefact(folder, manifest, model, image, model_cfg, tta, taxonomy, thresholds, policy, precision,
                         notes=notes, open_set=open_set)
    if with_anomaly and parts.get("anomaly"):
        _attach_anomaly(art, folder / parts["anomaly"], manifest.get("anomaly") or {})
    return art


def _attach_anomaly(art: LoadedArtefact, folder: Path, rule: dict[str, Any]) -> None:
    from seminspect.models.anomaly.detector import AnomalyDetector

    if not folder.is_dir():
        raise ArtefactError(f"{folder}: the manifest names an anomaly model ({ANOMALY_DIR}/) that is missing")
    try:
        art.anomaly = AnomalyDetector.load(folder)
        art.anomaly_path = folder
    except SeminspectError as exc:
        raise ArtefactError(f"{folder}: {exc}") from None
    thr = rule.get("threshold")
    if thr is None and art.anomaly.threshold is not None:
        thr = art.anomaly.threshold.get("threshold")
    art.anomaly_rule = {**rule, "threshold": None if thr is None else float(thr)}
    if art.policy is not None and thr is not None:
        art.policy.anomaly_threshold = float(thr)

"""The anomaly detector's settings: every field with its range, read strictly from YAML and ``--set``.

:func:`load_anomaly_config` is what ``seminspect anomaly fit`` (and ``drift-matrix --config``) call
before any work: it reads the YAML file with the YAML 1.2 core schema (``registration: off`` stays
the string ``'off'``), applies ``--set key=value`` overrides, and refuses an unknown key, a value out
of its range or of the wrong type with ONE line naming the file and every problem with its key::

    configs/a.yaml: crop: Input should be greater than or equal to 16 (got 0); pool: Input should be
    greater than or equal to 1 (got -2); regstration: Extra inputs are not permitted; did you mean
    'registration' for 'regstration'?

(one line in reality; the ``--set`` items are named beside the file when there are any). The
problems are formatted by the shared :mod:`seminspect.utils.config_errors`.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from seminspect.data.pseudo_defects import FAB_TYPES
from seminspect.models.anomaly.features import AnomalyConfigError
from seminspect.utils.config_errors import format_validation_error

NonNegInt = Annotated[int, Field(ge=0)]
NonNegFloat = Annotated[float, Field(ge=0)]


class AnomalyConfig(BaseModel):
    """Every setting of an anomaly detector (saved with the model; YAML configs map onto it)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    model: Literal["patchcore", "stpm", "draem", "diffusion"] = "patchcore"
    backbone: str = Field("mobilenetv2", min_length=1)
    pretrained: bool = True
    weights_path: str | None = None
    out_indices: list[NonNegInt] = Field(default_factory=lambda: [1, 2, 3], min_length=1)
    # preprocessing (applied after registration, to images and masks alike)
    crop: int | None = Field(None, ge=16, description="centre crop to this square size (px)")
    image_size: int | None = Field(None, ge=16, description="resize to this size (px, square side or, with "
                                   "resize: keep_aspect, the long side) after cropping")
    resize: Literal["square", "keep_aspect"] = Field(
        "square",
        description="how image_size is reached: 'square' stretches every image to image_size x image_size; "
        "'keep_aspect' scales the long side to image_size and pads the short side (pad) to a square, and maps "
        "come back at each image's native size (a tall narrow image keeps all of its content)",
    )
    pad: Literal["reflect", "constant"] = Field(
        "reflect", description="padding of resize: keep_aspect (reflect: no false edge at the image border)")
    preset: Literal["none", "auto"] = Field(
        "none",
        description="'auto': at fit, settings not given explicitly are chosen from the data (reference views "
        "present or not, image size and aspect; seminspect.models.anomaly.presets); the user's keys always win",
    )
    registration: Literal["phase", "ecc", "off"] = "phase"
    max_shift: float | None = Field(None, ge=0)
    match_intensity: bool = Field(False, description="give the reference the target's mean and std (gain drift)")
    denoise_sigma: float = Field(
        0.0,
        ge=0,
        description="Gaussian smoothing (px, after cropping/resizing) of target and reference before the "
        "model: at review-SEM doses shot noise is pixel-level and otherwise dominates the features; 0 = off",
    )
    fill_border: bool = Field(
        True,
        description="where the registered reference has no data (the strip its shift uncovered, filled by "
        "reflection), use the target's own pixels: no comparison there instead of a false difference",
    )
    # PatchCore
    layers: list[NonNegInt] = Field(
        default_factory=lambda: [0, 1], min_length=1, description="indices into the backbone outputs"
    )
    pool: int = Field(3, ge=1)
    embed_dim: int | None = Field(None, ge=1)
    conditioning: Literal["none", "reference", "difference"] = Field(
        "none", description="PatchCore: reference features beside / instead of the target's; DRAEM, diffusion: "
        "'reference' makes the registered reference an extra input channel of their networks ('difference' is refused)")
    reference_weight: float = Field(1.0, ge=0)
    match_radius: int = Field(
        0,
        ge=0,
        description="search radius (feature cells) for the reference match; 0 after "
        "registration: a wider window lets a small defect match a neighbouring reference patch",
    )
    position_weight: float = Field(
        0.0,
        ge=0,
        description="PatchCore: append the patch's (y, x) position, each in [-1, 1] times this weight, to its "
        "feature, so a patch is compared mainly with patches from the same place of the normal images (for "
        "aligned images whose normal content depends on the place, such as solar cells' busbars); 0 = off",
    )
    max_bank_patches: int = Field(16384, ge=1)
    max_bank_bytes: int | None = Field(None, ge=1)
    max_pool_patches: int = Field(200_000, ge=1)
    coreset_proj_dim: int = Field(128, ge=1)
    coreset_precision: Literal["fp32", "int8"] = Field(
        "fp32",
        description="PatchCore: arithmetic of the greedy coreset's distances (on the projected pool). int8 holds the "
        "pool as int8 and is several times faster per step where the CPU has VNNI; the bank rows are real features "
        "either way, but a different set of them may be chosen",
    )
    memory_budget_mib: float | None = Field(
        None,
        gt=0,
        description="PatchCore: working memory (MiB) fitting and scoring may add to the process -- one "
        "batch of backbone activations, the patch pool and its coreset projection, the bank, the nearest-bank "
        "distance block. Lowers batch_size, max_pool_patches, max_bank_patches and the search block to fit "
        "(seminspect.models.anomaly.memory); the process's own footprint (Python, torch, weights, your data) is "
        "outside it. None = those settings as given",
    )
    # STPM
    stpm_mode: Literal["classic", "template", "template_student"] = Field(
        "template",
        description="STPM inputs: classic = the target to both; template = the registered reference to the teacher, "
        "the target to the student; template_student = the reverse (target -> teacher, reference -> student)",
    )
    student_backbone: str | None = Field(
        None,
        min_length=1,
        description="STPM: the student's backbone (from scratch, same out_indices); None = the teacher's (backbone). "
        "Another architecture ('mixed pair') must have the teacher's reductions at out_indices; where its channels "
        "differ, a trainable 1x1 convolution per layer maps them onto the teacher's (seminspect.models.anomaly.stpm)",
    )
    layer_weights: list[NonNegFloat] = Field(default_factory=lambda: [1.0, 1.0, 1.0], min_length=1)
    loss: Literal["l2", "huber", "cosine"] = Field(
        "l2",
        description="STPM loss per layer: l2 = 0.5 ||s - t||^2 of channel-normalised features per location "
        "(= 1 - cosine per location); huber = smooth L1 of the same (robust to outliers); cosine = 1 - cosine "
        "similarity of the whole flattened layer per image (global, ReContrast-style)",
    )
    stpm_padding: Literal["reflect", "zeros", "constant"] = Field(
        "reflect",
        description="padding of the STPM student's convolutions; constant pads with padding_value "
        "(old configs' reflect_padding: true/false read as reflect/zeros)",
    )
    padding_value: float = Field(0.0, ge=-10, le=10, description="the student's padding value for stpm_padding: "
                                 "constant, in the convolution's input units (0 = zeros)")
    epochs: int = Field(20, ge=1)
    lr: float = Field(1e-3, gt=0)
    teacher_finetune_epochs: int = Field(
        0, ge=0, le=100,
        description="STPM: epochs of fine-tuning the teacher on the fit images before the student learns (0 = the "
        "pretrained teacher as is): a 1x1 head per unfrozen map learns to find pseudo-defects (draem_sources) "
        "painted into the fit images; the heads are dropped (seminspect.models.anomaly.teacher_tune)")
    teacher_frozen_layers: int = Field(
        1, ge=0, description="STPM teacher fine-tuning: the first N used maps stay as pretrained (every weight "
        "that computes them is frozen; the study froze layer 1)")
    teacher_lr: float = Field(1e-4, gt=0, description="STPM teacher fine-tuning learning rate (Adam)")
    # DRAEM (epochs, lr and batch_size shared with STPM)
    draem_width: int = Field(16, ge=4, le=128, description="DRAEM channels at full resolution, doubling per "
                             "level (the paper: 128 / 64; 16 trains on a 2-core CPU)")
    draem_sources: list[Literal["perlin", "cutpaste", "cutpaste_scar", "fab"]] = Field(
        default_factory=lambda: ["perlin", "cutpaste"], min_length=1,
        description="pseudo-defect sources DRAEM trains on and STPM teacher fine-tuning paints "
        "(seminspect.data.pseudo_defects)")
    draem_fab_types: list[Literal[FAB_TYPES]] = Field(
        default_factory=lambda: list(FAB_TYPES), min_length=1,
        description="the virtual-fab defect injectors the 'fab' source draws from (hold some out to measure "
        "whether physical pseudo-defects help on defect kinds they never painted)")
    # diffusion reconstruction (seminspect.models.anomaly.diffusion; epochs, lr, batch_size and the draem_* pseudo-
    # defects shared)
    diffusion_width: int = Field(16, ge=4, le=128, description="denoiser U-Net channels at full resolution")
    diffusion_steps: int = Field(200, ge=10, le=2000, description="length of the cosine noise schedule")
    diffusion_start: float = Field(0.3, gt=0, le=1, description="inference noises the input to this fraction of "
                                   "the schedule (and training draws levels up to it)")
    diffusion_sample_steps: int = Field(4, ge=1, le=100, description="deterministic DDIM steps back to a clean image")
    diffusion_student_width: int = Field(0, ge=0, le=128, description="one-pass student U-Net width (0 = none); "
                                         "once distilled, the student scores")
    diffusion_student_epochs: int = Field(10, ge=1, le=1000, description="student epochs on the denoiser's labels")
    draem_anomaly_prob: float = Field(0.5, ge=0, le=1, description="share of training images given a pseudo-defect")
    draem_min_area: float = Field(0.005, gt=0, le=0.5, description="pseudo-defect area, fraction of the image")
    draem_max_area: float = Field(0.08, gt=0, le=0.5, description="pseudo-defect area, fraction of the image")
    # common
    batch_size: int = Field(16, ge=1)
    sigma: float = Field(4.0, ge=0)
    map_dilation: int = Field(
        0,
        ge=0,
        description="local-max window (px) applied to each anomaly map before the Gaussian smoothing; "
        "0 = off. Spreads a peak over the defect's extent: on DeepPCB, whose ground truth is boxes larger than "
        "the defects, a window chosen on validation pairs raises pixel AUROC (benchmarks/results/anomaly_deeppcb.md)",
    )
    score_sigma: float | None = Field(
        None,
        ge=0,
        description="Gaussian smoothing (px) of the map the IMAGE score is taken from; None = sigma. "
        "Image and pixel metrics want different smoothing: a wide window spreads a map over a defect's extent "
        "(pixel AUROC) but dilutes the peak of a small defect (image AUROC); on the 460 px virtual fab no single "
        "setting chosen on calib met both targets (benchmarks/results/anomaly_fab.md)",
    )
    score_dilation: int | None = Field(
        None, ge=0, description="local-max window (px) of the map the image score is taken from; None = map_dilation"
    )
    top_k: int = Field(1, ge=1)
    centre_sigma: float = Field(0.0, ge=0)
    view_combine: Literal["max", "mean"] = Field(
        "max",
        description="how a sample's target-view maps combine: pixel-wise max, or mean (averages the "
        "independent noise of several detectors; the better rule on the 5-angle virtual fab)",
    )
    false_alarm_rate: float = Field(0.01, gt=0, lt=1)
    confidence: float = Field(0.95, gt=0, lt=1)
    calib_fraction: float = Field(
        0.2,
        ge=0,
        lt=1,
        description="share of the fit split's normals held out for "
        "the threshold; 0 = no threshold (predict then flags nothing and says so)",
    )
    score_groups: str | None = Field(
        None,
        description="metadata key (e.g. product, cell_type) whose groups get their own score scale: image scores "
        "become (score - median) / IQR of the group's held-out normal scores, so one threshold serves every group "
        "(needs calib_fraction > 0; models/anomaly/score_groups.py)",
    )
    bank_per_group: bool = Field(
        False,
        description="PatchCore with score_groups: one memory bank per group (each up to max_bank_patches), so an "
        "image's patches are compared with its own group's normal patches only; a scored sample of a group "
        "without a bank is refused in one line",
    )
    seed: int = Field(0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _old_padding_key(cls, data: Any) -> Any:
        return migrate_padding(data)

    @field_validator("student_backbone")
    @classmethod
    def _known_student(cls, name: str | None) -> str | None:
        """The registry's own check (its message lists the names and the closest one); ``tiny`` as for ``backbone``."""
        if name is None or name == "tiny":
            return name
        from seminspect.models.backbones import BackboneError, get_backbone_cfg

        try:
            get_backbone_cfg(name)
        except BackboneError as exc:
            raise ValueError(str(exc)) from None
        return name

    @model_validator(mode="after")
    def _budget_is_patchcore(self) -> AnomalyConfig:
        if self.memory_budget_mib is not None and self.model != "patchcore":
            raise ValueError("memory_budget_mib applies to model: patchcore (STPM's memory is set by batch_size)")
        if self.bank_per_group and (self.model != "patchcore" or not self.score_groups):
            raise ValueError("bank_per_group applies to model: patchcore with score_groups set (the metadata column "
                             "that names each sample's group)")
        if self.position_weight and self.model != "patchcore":
            raise ValueError(f"position_weight applies to model: patchcore ({self.model} has no memory bank)")
        if self.student_backbone is not None and self.model != "stpm":
            raise ValueError(f"student_backbone applies to model: stpm ({self.model} has no student)")
        if self.teacher_finetune_epochs and self.model != "stpm":
            raise ValueError(f"teacher_finetune_epochs applies to model: stpm ({self.model} has no teacher to tune)")
        if self.model in ("draem", "diffusion") and self.conditioning == "difference":
            raise ValueError(f"conditioning: difference is PatchCore's; {self.model} takes 'none' or 'reference'")
        if self.draem_min_area > self.draem_max_area:
            raise ValueError(f"draem_min_area {self.draem_min_area} exceeds draem_max_area {self.draem_max_area}")
        return self


FIELDS = tuple(AnomalyConfig.model_fields)


def migrate_padding(data: Any) -> Any:
    """``reflect_padding: true/false`` (configs and saved models before ``stpm_padding``) -> reflect/zeros."""
    if not isinstance(data, dict) or "reflect_padding" not in data:
        return data
    data = dict(data)
    old = data.pop("reflect_padding")
    if isinstance(old, bool):
        new = "reflect" if old else "zeros"
        if data.setdefault("stpm_padding", new) != new:
            raise ValueError(f"reflect_padding: {old} contradicts stpm_padding: {data['stpm_padding']}")
    else:
        raise ValueError(f"reflect_padding (old name of stpm_padding) must be true or false, got {old!r}")
    return data


def _suggestions(exc: ValidationError) -> list[str]:
    """``did you mean 'registration' for 'regstration'?`` for each unknown key close to a field."""
    out = []
    for e in exc.errors():
        if e["type"] == "extra_forbidden" and e["loc"]:
            close = difflib.get_close_matches(str(e["loc"][0]), FIELDS, n=1)
            if close:
                out.append(f"did you mean {close[0]!r} for {str(e['loc'][0])!r}?")
    return out


def validate_config(data: dict[str, Any], where: str) -> AnomalyConfig:
    """``AnomalyConfig`` from ``data``; any problem raises one line ``WHERE: key: problem (got v); key2: ...``.

    The line comes from the shared formatter (:mod:`seminspect.utils.config_errors`), the same as
    the ADC and depth configs'; an unknown key close to a field name gets a suggestion.
    """
    try:
        return AnomalyConfig.model_validate(data)
    except ValidationError as exc:
        text = "; ".join([format_validation_error(where, exc), *_suggestions(exc)])
        raise AnomalyConfigError(text) from None


def _layer_problems(cfg: AnomalyConfig) -> list[str]:
    """Layer indices a built-in backbone (one map per ``out_indices`` entry) cannot serve."""
    n_maps = len(cfg.out_indices)
    problems = []
    if cfg.model == "patchcore" and max(cfg.layers) >= n_maps:
        problems.append(
            f"layers: index {max(cfg.layers)} is out of range: out_indices {cfg.out_indices} gives "
            f"{n_maps} map(s), indices 0..{n_maps - 1}"
        )
    if cfg.model == "stpm" and len(cfg.layer_weights) < n_maps:
        problems.append(
            f"layer_weights: {len(cfg.layer_weights)} weight(s) for the {n_maps} maps of out_indices {cfg.out_indices}"
        )
    return problems


def load_anomaly_config(path: str | Path | None, overrides: list[str] | None = None) -> AnomalyConfig:
    """The config of ``path`` (YAML; None: the defaults) with ``--set key=value`` overrides, checked whole.

    Raises :class:`AnomalyConfigError` with one line naming the file (and the ``--set`` items) and
    every problem with its key.
    """
    from seminspect.utils.io import read_yaml_mapping
    from seminspect.utils.yaml_strict import apply_overrides

    overrides = list(overrides or [])
    data: dict[str, Any] = {} if path is None else read_yaml_mapping(path, AnomalyConfigError)
    apply_overrides(data, overrides, AnomalyConfigError)
    sets = " ".join(f"--set {item}" for item in overrides)
    if path is None:
        where = f"invalid anomaly config ({sets})" if sets else "invalid anomaly config"
    else:
        where = f"{path} with {sets}" if sets else str(path)
    cfg = validate_config(data, where)
    problems = _layer_problems(cfg)
    if problems:
        raise AnomalyConfigError(f"{where}: {'; '.join(problems)}")
    return cfg

"""ADC training configuration: a pydantic model read from / written to YAML.

The ``image`` and ``model`` sections are defined with the model (:mod:`seminspect.models.adc_spec`),
because inference reads them back from an artefact without importing training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from seminspect.errors import SeminspectError
from seminspect.models.adc_spec import ImageConfig, ModelConfig
from seminspect.utils.config_errors import validate_config
from seminspect.utils.io import read_yaml_mapping


class ConfigError(SeminspectError):
    """A training configuration file is missing or invalid."""


Op = Annotated[int, Field(ge=0, le=7)]  # a dihedral op: 0 = identity .. 7


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class GenerateConfig(_Strict):
    """Generate a virtual-fab dataset at ``data.path`` when it does not exist yet."""

    n_samples: int = 400
    abnormal_fraction: float = 0.5
    seed: int = 0
    fab: dict[str, Any] = Field(default_factory=dict)  # FabConfig fields
    splits: dict[str, float] = Field(default_factory=lambda: {"train": 0.6, "calib": 0.2, "test": 0.2})


class DataConfig(_Strict):
    path: str
    train_split: str = "train"
    val_split: str | None = None  # None: carve val_fraction out of the train split (stratified)
    val_fraction: float = 0.15
    calib_split: str = "calib"
    test_split: str = "test"
    roles: list[str] | None = None  # e.g. [target] to drop references (ablation)
    max_train: int | None = None  # subsample the train split (quick runs)
    generate: GenerateConfig | None = None


class LossConfig(_Strict):
    gamma: float = 2.0
    alpha: float = 0.5
    smoothing: float = 0.1
    w_abnormal: float = 1.0
    w_type: float = 0.5
    w_hier: float = 0.25
    consistency: float = 0.5


class TrainConfig(_Strict):
    cache_features: bool = True  # frozen-backbone phase on cached features (the fast CPU path)
    cache_dir: str | None = None  # default: <output>/cache
    augment: list[Op] = Field(default_factory=lambda: [0], min_length=1)  # dihedral ops cached/sampled
    tta: list[Op] = Field(default_factory=lambda: [0], min_length=1)  # dihedral ops averaged at evaluation
    # > 0: the training sites are encoded a second time with the classifier's window moved by up to this
    # many px per axis (a seeded draw per site; data/prepare.py), one more augmentation slice beside each
    # op of ``augment``; validation, calibration and inference keep the unmoved window
    window_jitter: int = Field(0, ge=0)
    epochs: int = Field(30, ge=0)
    finetune_epochs: int = Field(0, ge=0)  # then unfreeze the last backbone stages and train live
    finetune_stages: int = Field(1, ge=0)
    finetune_augment: list[Op] | None = None  # dihedral ops drawn while fine-tuning (None = augment)
    # update the BatchNorm statistics of the unfrozen stages while fine-tuning (False: keep them as loaded).
    # With the default batches (batch_size // 8 sites) they are noisy: on a from-scratch CNN it lowered top-1
    # by 0.016-0.074 (benchmarks/results/longtail_study_deeppcb_scratch_bn.md); for larger batches
    finetune_batchnorm: bool = False
    batch_size: int = Field(64, gt=0)
    lr: float = Field(3e-3, gt=0)
    backbone_lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    patience: int = Field(8, ge=1)  # early stopping on validation loss
    balanced_sampling: bool = True
    balance_power: float = Field(0.5, ge=0)
    hard_mining: bool = False  # upweight the highest-loss samples each epoch
    encode_batch: int = Field(32, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _drop_retired_keys(cls, data: Any) -> Any:
        """Read configs and artefacts written before ``train.ensemble`` was retired.

        ``ensemble`` was declared but never used; every artefact of that time has ``ensemble: 1``
        in its ``config.yaml``, so that value is dropped. Any other value asked for something
        that never happened: it is an error pointing at what does it now.
        """
        if isinstance(data, dict) and "ensemble" in data:
            if data["ensemble"] not in (1, None):
                raise ValueError("train.ensemble is no longer supported (it was never applied); "
                                 "use seminspect.training.options.train_ensemble")
            data = {k: v for k, v in data.items() if k != "ensemble"}
        return data


class TriageConfig(_Strict):
    target_precision: float = Field(0.99, gt=0, lt=1)
    confidence: float = Field(0.95, gt=0, lt=1)
    normal_error: float = Field(0.01, gt=0, lt=1)  # auto-normal route: error (missed defects) target
    # auto-normal below this quantile of the calib normals' p(abnormal) instead of the certified threshold (not
    # certified; for defect types the calib split lacks: docs/anomaly.md, "unseen types"); None = certified
    normal_coverage: float | None = Field(None, gt=0, lt=1)
    min_train_samples: int = Field(80, ge=0)
    # "none of the known types" -> review (decision.OpenSetTypeRule), fitted on the calib split's
    # defects of trained types, giving up ``open_set_rejection`` of them; None = off
    open_set: Literal["max_softmax", "mahalanobis"] | None = None
    open_set_rejection: float = Field(0.05, gt=0, lt=1)


class ADCConfig(_Strict):
    """Everything ``seminspect train`` needs."""

    data: DataConfig
    image: ImageConfig = Field(default_factory=ImageConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    triage: TriageConfig = Field(default_factory=TriageConfig)
    seed: int = 0
    output: str = "runs/adc"
    threads: int | None = None

    @model_validator(mode="after")
    def _jitter_needs_a_movable_window(self) -> ADCConfig:
        im = self.image
        if self.train.window_jitter and (im.crop is None or (
                im.registration and im.registration_method not in ("integer", "joint"))):
            raise ValueError("train.window_jitter needs image.crop and integer or joint registration (or none)")
        return self

    @classmethod
    def from_yaml(cls, path: str | Path) -> ADCConfig:
        path = Path(path)
        data = read_yaml_mapping(path, ConfigError)
        # every problem, each with its key and value, on the one line of the error
        cfg = validate_config(cls, data, path, ConfigError)
        # Relative data paths are relative to the config file's folder's parent chain as written;
        # keep them as given (resolved against the working directory) for simplicity.
        return cfg

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

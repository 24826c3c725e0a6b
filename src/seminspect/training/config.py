"""ADC training configuration: a pydantic model read from / written to YAML.

The ``image`` and ``model`` sections are defined with the model (:mod:`seminspect.models.adc_spec`),
because inference reads them back from an artefact without importing training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from seminspect.errors import SeminspectError
from seminspect.models.adc_spec import ImageConfig, ModelConfig
from seminspect.utils.io import read_yaml_mapping


class ConfigError(SeminspectError):
    """A training configuration file is missing or invalid."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


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
    augment: list[int] = Field(default_factory=lambda: [0])  # dihedral ops cached/sampled (0 = identity .. 7)
    tta: list[int] = Field(default_factory=lambda: [0])  # dihedral ops averaged at evaluation
    epochs: int = 30
    finetune_epochs: int = 0  # then unfreeze the last backbone stages and train live
    finetune_stages: int = 1
    finetune_augment: list[int] | None = None  # dihedral ops drawn while fine-tuning (None = augment)
    batch_size: int = 64
    lr: float = 3e-3
    backbone_lr: float = 1e-4
    weight_decay: float = 0.01
    patience: int = 8  # early stopping on validation loss
    balanced_sampling: bool = True
    balance_power: float = 0.5
    hard_mining: bool = False  # upweight the highest-loss samples each epoch
    encode_batch: int = 32

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
    target_precision: float = 0.99
    confidence: float = 0.95
    normal_error: float = 0.01  # auto-normal route: error (missed defects) target
    min_train_samples: int = 80


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

    @classmethod
    def from_yaml(cls, path: str | Path) -> ADCConfig:
        path = Path(path)
        data = read_yaml_mapping(path, ConfigError)
        try:
            cfg = cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(x) for x in first["loc"])
            raise ConfigError(f"{path}: {where}: {first['msg']} ({len(exc.errors())} problem(s))") from None
        # Relative data paths are relative to the config file's folder's parent chain as written;
        # keep them as given (resolved against the working directory) for simplicity.
        return cfg

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

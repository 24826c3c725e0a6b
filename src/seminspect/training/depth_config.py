"""The depth training configuration (``configs/depth*.yaml``): a strict pydantic model read from YAML.

:class:`DepthConfig` holds the data, model, loss and optimiser sections of a run of
:func:`seminspect.training.depth_train.train_depth`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from seminspect.errors import SeminspectError
from seminspect.utils.config_errors import validate_config
from seminspect.utils.io import read_yaml_mapping


class DepthConfigError(SeminspectError, ValueError):
    """A depth config or checkpoint is invalid."""


class DepthDataError(SeminspectError, ValueError):
    """Depth training data is missing or malformed."""


class _Strict(BaseModel):
    # every key known, every number finite: ``lr: .inf`` or ``.nan`` is refused like a typo
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


Channel = Annotated[int, Field(ge=0)]


class DataSection(_Strict):
    source: Literal["samsung_npz", "dataset"] = "samsung_npz"
    path: str = Field("../shared/data/samsung_sem_depth/train.npz", min_length=1)
    val_fraction: float = Field(0.1, gt=0, lt=1)
    split_seed: int = Field(0, ge=0)
    # how sites without a split column are cut (data/depth_split.py): "group" keeps every depth map
    # (and near-identical SEM stack) on one side; "acquisition" keeps whole acquisitions on one side;
    # "random" is the old split, which leaks twins (only to compare against)
    split: Literal["group", "acquisition", "random"] = "group"
    train_split: str = Field("train", min_length=1)
    val_split: str = Field("val", min_length=1)  # for dataset folders; "calib" for the virtual fab
    channels: int | None = Field(None, ge=1)  # use the first C acquisitions; None = all
    crop: int | None = Field(None, ge=1)  # centre crop of square side `crop` (large virtual-fab views)
    max_sites: int | None = Field(None, ge=1)  # keep the first N train sites (quick experiments)
    # standardise each site's inputs by its own mean and spread over all its acquisitions (before the
    # training-set scalars): the model sees structure, not the acquisition's brightness and contrast
    site_norm: bool = False


class ModelSection(_Strict):
    levels: int = Field(2, ge=0, le=6)
    width: int = Field(32, ge=1)
    norm: Literal["batch", "instance", "group", "none"] = "batch"
    global_context: bool = False  # site-wide context vector at the bottleneck (see UNet)
    floor_head: bool = False  # one site-wide floor depth, gated per pixel into the map (see UNet)


class LossSection(_Strict):
    mode: Literal["l1", "pix2pix"] = "l1"
    gan_weight: float = Field(0.01, ge=0)  # L1 + gan_weight * GAN (pix2pix's lambda_L1=100 <=> 0.01)
    mse_epochs: int = Field(0, ge=0)  # final epochs trained with MSE instead of L1 (aligns with RMSE)
    disc_width: int = Field(32, ge=1)
    disc_layers: int = Field(2, ge=1, le=6)


class OptimSection(_Strict):
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(2e-3, gt=0, le=1)  # AdamW: above 1 the weights only blow up
    disc_lr: float = Field(2e-4, gt=0, le=1)
    weight_decay: float = Field(1e-4, ge=0)
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_steps: int = Field(100, ge=0)
    flips: bool = True
    # A mirror can turn one input channel into another: flipping the image left-right turns what the
    # east-facing detector saw into what the west-facing one would see. Channel i of a flipped site is
    # the mirrored channel flip_*_channels[i]. None: the channels are interchangeable under the mirror
    # (the Samsung acquisitions). The virtual fab's 5 detectors (in-lens, E, S, W, N): lr [0, 3, 2, 1, 4],
    # ud [0, 1, 4, 3, 2].
    flip_lr_channels: list[Channel] | None = None
    flip_ud_channels: list[Channel] | None = None
    # each epoch, each training site's C input channels are C draws with replacement from its own C
    # acquisitions: new noise mixes of the same site (the Samsung sites have 4 acquisitions of one view)
    resample_acquisitions: bool = False
    # brightness / contrast / noise augmentation mimicking acquisition changes, strength 0 (off) .. 1:
    # per site, gain 1 +- 0.2 s about the site mean, offset +- 0.1 s, Gaussian noise of sd up to 0.03 s
    # (in [0, 1] grey units); drawn per (seed, epoch, batch), so a resumed run replays it
    intensity_aug: float = Field(0.0, ge=0, le=1)
    ema_decay: float | None = Field(None, gt=0, lt=1)  # validate/save an EMA of the weights (and BN buffers)
    patience: int | None = Field(10, ge=1)  # epochs without a better validation RMSE before stopping
    # wall-clock budget of this process (all ensemble members); checked at epoch ends
    max_minutes: float | None = Field(None, ge=0)


class DepthConfig(_Strict):
    """A depth training run (``configs/depth*.yaml``)."""

    data: DataSection = DataSection()
    model: ModelSection = ModelSection()
    loss: LossSection = LossSection()
    optim: OptimSection = OptimSection()
    seed: int = Field(0, ge=0)
    threads: int | None = Field(None, ge=1)
    checkpoint_every: int = Field(200, ge=1)  # steps between last.pt saves (also at each epoch end)
    channels_last: bool = True  # faster convolutions on CPU
    # start from this best.pt (fine-tuning); its normalisation is kept
    init_from: str | None = Field(None, min_length=1)
    # Train this many U-Nets one after the other (seeds seed, seed + 1, ...; folders member0, member1,
    # ...) and save their average as best.pt. They share optim.max_minutes: each member gets an equal
    # share of what is left of it when it starts.
    ensemble: int = Field(1, ge=1)

    @classmethod
    def load(cls, path: str | Path) -> DepthConfig:
        path = Path(path)
        data = read_yaml_mapping(path, DepthConfigError)
        return validate_config(cls, data, path, DepthConfigError, "invalid depth config")

    def with_options(self, source: str = "command line", **changes: Any) -> DepthConfig:
        """A copy with ``changes`` (dotted keys as ``"optim.epochs"``) applied and validated again.

        Options override a validated config, so they are checked with the same ranges: a bad
        value is a :class:`DepthConfigError` naming ``source`` and the key, before any work.
        """
        data = self.model_dump()
        for key, value in changes.items():
            *parents, leaf = key.split(".")
            node = data
            for part in parents:
                node = node[part]
            node[leaf] = value
        return validate_config(DepthConfig, data, source, DepthConfigError, "invalid depth config")

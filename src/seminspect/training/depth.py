"""Train a depth U-Net (L1 alone, or pix2pix: L1 + lambda * GAN) on SEM sites held in memory.

Data: every site is ``x (C, H, W)`` float32 in [0, 1] (C acquisitions of one view, stacked as
channels) and ``y (H, W)`` float32 depth in the data's units. Two loaders fill
:class:`DepthData`:

* :func:`load_samsung_npz` reads ``samsung_sem_depth/train.npz`` straight into tensors (5,000
  sites of 66x45: reading them through 25,000 PNG files every epoch would dominate the run);
* :func:`load_depth_dataset` reads a project dataset folder (target views -> channels,
  ``Sample.depth`` -> target), e.g. the virtual fab's output or ``seminspect import samsung-depth``.

The validation split of the npz file is fixed and documented (docs/depth.md): whole groups of
twin sites (same depth map or near-identical SEM stack) on one side, about 10 % of the sites in
validation (:mod:`~seminspect.data.depth_split`); the old random permutation (it leaks twins)
stays selectable as ``data.split: random``. Dataset folders use their ``split`` column.

Training is deterministic for a seed and a thread count: the order and flips of epoch ``e``
come from a generator seeded by ``(seed, e)``, so a run stopped after any step and resumed
from ``last.pt`` replays exactly the same batches as an uninterrupted run.

The code lives in one module per concept; this module keeps every name importable from here:
:mod:`~seminspect.training.depth_config` (the config and its errors),
:mod:`~seminspect.training.depth_data` (data and loaders), :mod:`~seminspect.training.depth_npz`
(the checked reader of the Samsung file), :mod:`~seminspect.training.depth_predictor` (the
trained model), :mod:`~seminspect.training.depth_schedule` (batch order, flips, schedules),
:mod:`~seminspect.training.depth_resume` (``last.pt`` and what it must match),
:mod:`~seminspect.training.depth_loop` (one generator's loop and its numerical guards) and
:mod:`~seminspect.training.depth_train` (a run: checks, ensembles).
"""

from __future__ import annotations

from seminspect.training.depth_config import (
    DataSection,
    DepthConfig,
    DepthConfigError,
    DepthDataError,
    LossSection,
    ModelSection,
    OptimSection,
)
from seminspect.training.depth_data import (
    DepthData,
    _centre_crop,
    dataset_to_tensors,
    load_data,
    load_depth_dataset,
    load_samsung_npz,
    read_npz_sites,
    samsung_split,
    split_data,
)
from seminspect.training.depth_predictor import MODEL_KIND, DepthPredictor, Normaliser, _NormalisedGenerator
from seminspect.training.depth_schedule import _ema_avg_fn, _epoch_plan, _flip, _lr_lambda, _resample_plan
from seminspect.training.depth_train import DepthTrainingError, TrainResult, check_data, errors, train_depth

__all__ = [
    "MODEL_KIND",
    "DataSection",
    "DepthConfig",
    "DepthConfigError",
    "DepthData",
    "DepthDataError",
    "DepthPredictor",
    "DepthTrainingError",
    "LossSection",
    "ModelSection",
    "Normaliser",
    "OptimSection",
    "TrainResult",
    "_NormalisedGenerator",
    "_centre_crop",
    "_ema_avg_fn",
    "_epoch_plan",
    "_flip",
    "_lr_lambda",
    "_resample_plan",
    "check_data",
    "dataset_to_tensors",
    "errors",
    "load_data",
    "load_depth_dataset",
    "load_samsung_npz",
    "read_npz_sites",
    "samsung_split",
    "split_data",
    "train_depth",
]

"""Train a depth U-Net (L1 alone, or pix2pix: L1 + lambda * GAN) on SEM sites held in memory.

Data: every site is ``x (C, H, W)`` float32 in [0, 1] (C acquisitions of one view, stacked as
channels) and ``y (H, W)`` float32 depth in the data's units. Two loaders fill
:class:`DepthData`:

* :func:`load_samsung_npz` reads ``samsung_sem_depth/train.npz`` straight into tensors (5,000
  sites of 66x45: reading them through 25,000 PNG files every epoch would dominate the run);
* :func:`load_depth_dataset` reads a project dataset folder (target views -> channels,
  ``Sample.depth`` -> target), e.g. the virtual fab's output or ``seminspect import samsung-depth``.

The validation split of the npz file is fixed and documented (docs/depth.md): a permutation
of the site indices drawn with ``numpy.random.default_rng(split_seed=0)``; its last 10 % are
validation. Dataset folders use their ``split`` column.

Training is deterministic for a seed and a thread count: the order and flips of epoch ``e``
come from a generator seeded by ``(seed, e)``, so a run stopped after any step and resumed
from ``last.pt`` replays exactly the same batches as an uninterrupted run.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from seminspect.errors import SeminspectError
from seminspect.models.depth import PatchGAN, UNet, UNetEnsemble, build_generator
from seminspect.utils.io import atomic_path, atomic_write_json, read_yaml_mapping
from seminspect.utils.progress import make_progress

MODEL_KIND = "seminspect.depth.unet/1"


class DepthConfigError(SeminspectError, ValueError):
    """A depth config or checkpoint is invalid."""


class DepthDataError(SeminspectError, ValueError):
    """Depth training data is missing or malformed."""


# ----- configuration ---------------------------------------------------------------------------
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataSection(_Strict):
    source: Literal["samsung_npz", "dataset"] = "samsung_npz"
    path: str = "../shared/data/samsung_sem_depth/train.npz"
    val_fraction: float = Field(0.1, gt=0, lt=1)
    split_seed: int = 0
    train_split: str = "train"
    val_split: str = "val"  # for dataset folders; "calib" for the virtual fab
    channels: int | None = None  # use the first C acquisitions; None = all
    crop: int | None = None  # centre crop of square side `crop` (large virtual-fab views)
    max_sites: int | None = None  # keep the first N train sites (quick experiments)


class ModelSection(_Strict):
    levels: int = Field(2, ge=0, le=6)
    width: int = Field(32, ge=1)
    norm: Literal["batch", "instance", "group", "none"] = "batch"
    global_context: bool = False  # site-wide context vector at the bottleneck (see UNet)


class LossSection(_Strict):
    mode: Literal["l1", "pix2pix"] = "l1"
    gan_weight: float = Field(0.01, ge=0)  # L1 + gan_weight * GAN (pix2pix's lambda_L1=100 <=> 0.01)
    mse_epochs: int = Field(0, ge=0)  # final epochs trained with MSE instead of L1 (aligns with RMSE)
    disc_width: int = 32
    disc_layers: int = 2


class OptimSection(_Strict):
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(2e-3, gt=0)
    disc_lr: float = Field(2e-4, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_steps: int = Field(100, ge=0)
    flips: bool = True
    # A mirror can turn one input channel into another: flipping the image left-right turns what the
    # east-facing detector saw into what the west-facing one would see. Channel i of a flipped site is
    # the mirrored channel flip_*_channels[i]. None: the channels are interchangeable under the mirror
    # (the Samsung acquisitions). The virtual fab's 5 detectors (in-lens, E, S, W, N): lr [0, 3, 2, 1, 4],
    # ud [0, 1, 4, 3, 2].
    flip_lr_channels: list[int] | None = None
    flip_ud_channels: list[int] | None = None
    # each epoch, each training site's C input channels are C draws with replacement from its own C
    # acquisitions: new noise mixes of the same site (the Samsung sites have 4 acquisitions of one view)
    resample_acquisitions: bool = False
    ema_decay: float | None = Field(None, gt=0, lt=1)  # validate/save an EMA of the weights (and BN buffers)
    patience: int | None = 10  # epochs without a better validation RMSE before stopping
    max_minutes: float | None = None  # wall-clock budget of this process (all ensemble members); checked at epoch ends


class DepthConfig(_Strict):
    """A depth training run (``configs/depth*.yaml``)."""

    data: DataSection = DataSection()
    model: ModelSection = ModelSection()
    loss: LossSection = LossSection()
    optim: OptimSection = OptimSection()
    seed: int = 0
    threads: int | None = None
    checkpoint_every: int = Field(200, ge=1)  # steps between last.pt saves (also at each epoch end)
    channels_last: bool = True  # faster convolutions on CPU
    init_from: str | None = None  # start from this best.pt (fine-tuning); its normalisation is kept
    # Train this many U-Nets one after the other (seeds seed, seed + 1, ...; folders member0, member1,
    # ...) and save their average as best.pt. They share optim.max_minutes: each member gets an equal
    # share of what is left of it when it starts.
    ensemble: int = Field(1, ge=1)

    @classmethod
    def load(cls, path: str | Path) -> DepthConfig:
        path = Path(path)
        data = read_yaml_mapping(path, DepthConfigError)
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            msgs = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise DepthConfigError(f"{path}: invalid depth config: {msgs}") from None


# ----- data ------------------------------------------------------------------------------------
@dataclass
class DepthData:
    """Sites in memory: ``x (N, C, H, W)`` float32 in [0, 1], ``y (N, H, W)`` float32 depth units."""

    x: torch.Tensor
    y: torch.Tensor
    ids: list[str]
    units: str = ""

    def __post_init__(self) -> None:
        if self.x.ndim != 4 or self.y.ndim != 3 or self.x.shape[0] != self.y.shape[0] \
                or self.x.shape[-2:] != self.y.shape[-2:]:
            raise DepthDataError(f"inputs {tuple(self.x.shape)} and depth {tuple(self.y.shape)} do not match")
        if len(self.ids) != self.x.shape[0]:
            raise DepthDataError(f"{len(self.ids)} ids for {self.x.shape[0]} sites")

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def channels(self) -> int:
        return self.x.shape[1]

    def subset(self, index: np.ndarray | list[int]) -> DepthData:
        idx = torch.as_tensor(np.asarray(index, dtype=np.int64))
        return DepthData(self.x[idx], self.y[idx], [self.ids[i] for i in idx.tolist()], self.units)


def samsung_split(n: int, val_fraction: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The fixed split of the Samsung file: ``(train_idx, val_idx)``, both sorted.

    ``perm = numpy.random.default_rng(seed).permutation(n)``; the last ``round(n * val_fraction)``
    entries of ``perm`` are validation (500 of 5,000 for the defaults).
    """
    perm = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(n * val_fraction)))
    return np.sort(perm[:-n_val]), np.sort(perm[-n_val:])


def load_samsung_npz(path: str | Path, val_fraction: float = 0.1, split_seed: int = 0,
                     channels: int | None = None) -> tuple[DepthData, DepthData]:
    """Read ``train.npz`` (``sem`` uint8 (N, 4, H, W), ``depth`` uint8 (N, H, W), ``name``).

    Returns ``(train, val)`` per :func:`samsung_split`; depth stays in the file's units.
    """
    path = Path(path)
    if not path.is_file():
        raise DepthDataError(f"{path}: Samsung depth file not found")
    try:
        with np.load(path, allow_pickle=False) as f:
            sem, depth = f["sem"], f["depth"]
            names = [str(s) for s in f["name"]] if "name" in f.files else [f"site{i:05d}" for i in range(len(sem))]
    except KeyError as exc:
        raise DepthDataError(f"{path}: missing array {exc} (need 'sem' and 'depth')") from None
    except Exception as exc:
        raise DepthDataError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from None
    if sem.ndim == 3:
        sem = sem[:, None]
    if sem.ndim != 4 or depth.shape != (sem.shape[0], *sem.shape[2:]):
        raise DepthDataError(f"{path}: sem {sem.shape} and depth {depth.shape} do not match")
    if channels is not None:
        sem = sem[:, :channels]
    scale = 255.0 if sem.dtype == np.uint8 else (65535.0 if sem.dtype == np.uint16 else 1.0)
    data = DepthData(torch.from_numpy(sem.astype(np.float32) / scale),
                     torch.from_numpy(depth.astype(np.float32)), names, units="Samsung depth units")
    tr, va = samsung_split(len(data), val_fraction, split_seed)
    return data.subset(tr), data.subset(va)


def _centre_crop(a: np.ndarray, crop: int | None) -> np.ndarray:
    if crop is None:
        return a
    h, w = a.shape[-2:]
    top, left = max(0, (h - crop) // 2), max(0, (w - crop) // 2)
    return a[..., top:top + crop, left:left + crop]


def dataset_to_tensors(dataset: Any, channels: int | None = None, crop: int | None = None,
                       require_depth: bool = True) -> DepthData:
    """Target views of each sample of a :class:`~seminspect.data.dataset.SampleDataset` -> tensors.

    The target views, ordered by index, become the channels; ``Sample.depth`` the target
    (zeros with ``require_depth=False``, for prediction).
    """
    from seminspect.data.imageio import to_float
    from seminspect.utils.progress import track

    xs, ys, ids = [], [], []
    n_ch = None
    where = getattr(dataset, "manifest_path", "dataset")
    for sample in track(dataset, "loading sites"):
        views = sample.targets or sample.views
        if channels is not None:
            views = views[:channels]
        if n_ch is None:
            n_ch = len(views)
        if len(views) != n_ch:
            raise DepthDataError(f"{where}: sample {sample.sample_id!r} has {len(views)} target views, "
                                 f"the first sample has {n_ch}; use data.channels to pick a common number")
        x = np.stack([to_float(v.image) for v in views])
        if sample.depth is None:
            if require_depth:
                raise DepthDataError(f"{where}: sample {sample.sample_id!r} has no depth map")
            y = np.zeros(x.shape[-2:], np.float32)
        else:
            y = np.asarray(sample.depth, np.float32)
        if y.shape != x.shape[-2:]:
            raise DepthDataError(f"{where}: sample {sample.sample_id!r}: depth {y.shape} vs image {x.shape[-2:]}")
        xs.append(_centre_crop(x, crop))
        ys.append(_centre_crop(y, crop))
        ids.append(sample.sample_id)
    if not xs:
        raise DepthDataError(f"{where}: no samples")
    shapes = {a.shape for a in xs}
    if len(shapes) > 1:
        raise DepthDataError(f"{where}: sites have different sizes {sorted(shapes)[:3]}; use data.crop")
    units = getattr(getattr(dataset, "info", None), "depth_units", "") or ""
    return DepthData(torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys)), ids, units)


def load_depth_dataset(root: str | Path, train_split: str = "train", val_split: str = "val",
                       val_fraction: float = 0.1, split_seed: int = 0, channels: int | None = None,
                       crop: int | None = None) -> tuple[DepthData, DepthData]:
    """A dataset folder as ``(train, val)``; without a ``split`` column, a seeded permutation."""
    from seminspect.data.dataset import SampleDataset

    ds = SampleDataset(root, roles=["target"])
    splits = ds.metadata_column("split")
    if any(splits):
        if val_split not in splits:
            raise DepthDataError(f"{ds.manifest_path}: no samples with split == {val_split!r} "
                                 f"(have {sorted(set(splits))}); set data.val_split")
        return (dataset_to_tensors(ds.split(train_split), channels, crop),
                dataset_to_tensors(ds.split(val_split), channels, crop))
    data = dataset_to_tensors(ds, channels, crop)
    tr, va = samsung_split(len(data), val_fraction, split_seed)
    return data.subset(tr), data.subset(va)


def load_data(cfg: DataSection) -> tuple[DepthData, DepthData]:
    if cfg.source == "samsung_npz":
        train, val = load_samsung_npz(cfg.path, cfg.val_fraction, cfg.split_seed, cfg.channels)
    else:
        train, val = load_depth_dataset(cfg.path, cfg.train_split, cfg.val_split, cfg.val_fraction,
                                        cfg.split_seed, cfg.channels, cfg.crop)
    if cfg.max_sites is not None:
        train = train.subset(np.arange(min(cfg.max_sites, len(train))))
    return train, val


# ----- the trained model -----------------------------------------------------------------------
@dataclass
class Normaliser:
    """Scalar standardisation of inputs and depth, fitted on the training split."""

    x_mean: float
    x_std: float
    y_mean: float
    y_std: float

    @classmethod
    def fit(cls, data: DepthData) -> Normaliser:
        return cls(float(data.x.mean()), float(data.x.std()) or 1.0,
                   float(data.y.mean()), float(data.y.std()) or 1.0)


class DepthPredictor:
    """A trained generator with its normalisation: SEM in [0, 1] -> depth in the data's units."""

    def __init__(self, generator: UNet | UNetEnsemble, norm: Normaliser, meta: dict[str, Any] | None = None) -> None:
        self.generator = generator.eval()
        self.norm = norm
        self.meta = meta or {}

    @torch.no_grad()
    def predict(self, x: torch.Tensor | np.ndarray, batch_size: int = 256) -> np.ndarray:
        """``x (N, C, H, W)`` float in [0, 1] -> ``(N, H, W)`` float32 depth."""
        x = torch.as_tensor(np.asarray(x, np.float32) if isinstance(x, np.ndarray) else x)
        self.generator.eval()
        out = []
        for i in range(0, x.shape[0], batch_size):
            xb = (x[i:i + batch_size] - self.norm.x_mean) / self.norm.x_std
            out.append(self.generator(xb)[:, 0] * self.norm.y_std + self.norm.y_mean)
        return torch.cat(out).numpy().astype(np.float32)

    def state(self) -> dict[str, Any]:
        g = self.generator
        return {"kind": MODEL_KIND, "model": g.hparams(),
                "norm": vars(self.norm), "meta": self.meta,
                "state_dict": {k: v.detach().clone() for k, v in g.state_dict().items()}}

    def save(self, path: str | Path) -> None:
        with atomic_path(path) as tmp:
            torch.save(self.state(), tmp)

    def export_onnx(self, path: str | Path, height: int, width: int) -> Path:
        """Export generator + normalisation for ``(batch, C, height, width)`` inputs in [0, 1] (ONNX Runtime).

        The file maps SEM in [0, 1] straight to depth in the data's units; the batch axis is
        dynamic, the image size fixed (the pad-and-crop is traced for this size).
        """
        from seminspect.export import export_onnx

        module = _NormalisedGenerator(self.generator, self.norm).eval()
        example = torch.rand(2, self.generator.in_channels, height, width)
        return export_onnx(module, example, path, input_names=["sem"], output_names=["depth"],
                           dynamic_axes={"sem": {0: "batch"}}, dynamo=False)

    @classmethod
    def load(cls, path: str | Path) -> DepthPredictor:
        path = Path(path)
        if not path.is_file():
            raise DepthConfigError(f"{path}: depth model file not found")
        try:
            st = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise DepthConfigError(f"{path}: not a depth model ({type(exc).__name__}: {exc})") from None
        if not isinstance(st, dict) or st.get("kind") != MODEL_KIND:
            kind = st.get("kind") if isinstance(st, dict) else None
            raise DepthConfigError(f"{path}: not a seminspect depth model (kind {kind!r})")
        try:
            g = build_generator(st["model"])  # files written before hparams() lack newer keys: defaults apply
            g.load_state_dict(st["state_dict"])
        except (TypeError, RuntimeError) as exc:
            raise DepthConfigError(f"{path}: model does not match its stored architecture ({exc})") from None
        return cls(g, Normaliser(**st["norm"]), st.get("meta", {}))


class _NormalisedGenerator(torch.nn.Module):
    """SEM in [0, 1] ``(N, C, H, W)`` -> depth ``(N, H, W)`` in data units (what ONNX exports)."""

    def __init__(self, generator: UNet | UNetEnsemble, norm: Normaliser) -> None:
        super().__init__()
        self.generator, self.norm = generator, norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.generator((x - self.norm.x_mean) / self.norm.x_std)
        return y[:, 0] * self.norm.y_std + self.norm.y_mean


# ----- training --------------------------------------------------------------------------------
@dataclass
class TrainResult:
    best_rmse: float
    best_epoch: int
    epochs_run: int
    steps: int
    finished: bool  # False when stopped early by `stop_after_steps`
    history: list[dict[str, float]] = field(default_factory=list)
    out_dir: Path | None = None


def _flip(x: torch.Tensor, code: torch.Tensor, lr_channels: list[int] | None = None,
          ud_channels: list[int] | None = None) -> torch.Tensor:
    """Flip each sample of ``(B, C, H, W)`` by ``code`` (bit 0: left-right, bit 1: up-down).

    ``lr_channels``/``ud_channels``: after a left-right / up-down flip, channel ``i`` of the output
    is the mirrored channel ``lr_channels[i]`` (a mirror turns a detector that looks from the east
    into one that looks from the west); None keeps the channel order.
    """
    x = x.clone()
    for bit, dims, order in ((1, [-1], lr_channels), (2, [-2], ud_channels)):
        sel = (code & bit) != 0
        if sel.any():
            flipped = torch.flip(x[sel], dims)
            x[sel] = flipped if order is None else flipped[:, order]
    return x


def _epoch_plan(seed: int, epoch: int, n: int, flips: bool) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g)
    codes = torch.randint(0, 4, (n,), generator=g) if flips else torch.zeros(n, dtype=torch.long)
    return perm, codes


def _resample_plan(seed: int, epoch: int, n: int, channels: int) -> torch.Tensor:
    """``(n, channels)`` acquisition indices drawn with replacement for epoch ``epoch`` (own generator, so
    the order and flips of a run without resampling stay as they were)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch + 7_919_000)
    return torch.randint(0, channels, (n, channels), generator=g)


def _ema_avg_fn(decay: float):
    """EMA update with a warm-up: the decay is ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates.

    Without the warm-up the average keeps a ``decay**n`` share of the random initial weights
    (0.998**1000 = 13 %), which ruins its early validation scores.
    """
    def avg(averaged: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor) -> torch.Tensor:
        n = float(num_averaged)
        d = min(decay, (1.0 + n) / (10.0 + n))
        return d * averaged + (1.0 - d) * current
    return avg


def _lr_lambda(cfg: OptimSection, total_steps: int):
    def f(step: int) -> float:
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "constant":
            return 1.0
        t = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
        return 0.5 * (1 + math.cos(math.pi * t))
    return f


def errors(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Overall RMSE and MAE over all pixels of all sites (data's depth units)."""
    d = np.asarray(pred, np.float64) - np.asarray(true, np.float64)
    return {"rmse": float(np.sqrt(np.mean(d**2))), "mae": float(np.mean(np.abs(d)))}


def train_depth(cfg: DepthConfig, out_dir: str | Path, data: tuple[DepthData, DepthData] | None = None,
                resume: bool = True, stop_after_steps: int | None = None, verbose: bool = True) -> TrainResult:
    """Train; write ``best.pt`` (a :class:`DepthPredictor`), ``last.pt`` (resumable), ``history.json``.

    With ``cfg.ensemble > 1`` the members train in ``member0``, ``member1``, ... (each with its own
    ``best.pt``, ``last.pt``, ``history.json``) and ``best.pt`` is their average; ``ensemble.json``
    records each member's and the average's validation RMSE.

    Args:
        cfg: the run's configuration.
        out_dir: run folder; an existing ``last.pt`` there is resumed when ``resume``.
        data: ``(train, val)``; loaded from ``cfg.data`` when None.
        stop_after_steps: stop (after saving ``last.pt``) once this many optimiser steps are done
            in total (over all members) -- simulates a killed job in tests.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    train, val = data if data is not None else load_data(cfg.data)
    if train.channels != val.channels:
        raise DepthDataError(f"train has {train.channels} channels, val {val.channels}")
    for key in ("flip_lr_channels", "flip_ud_channels"):
        order = getattr(cfg.optim, key)
        if order is not None and sorted(order) != list(range(train.channels)):
            raise DepthConfigError(f"optim.{key} = {order} is not an order of the data's {train.channels} "
                                   f"channels (a permutation of 0..{train.channels - 1})")
    budget_s = None if cfg.optim.max_minutes is None else 60.0 * cfg.optim.max_minutes
    if cfg.ensemble == 1:
        return _train_one(cfg, out, train, val, resume, stop_after_steps, verbose, budget_s)
    return _train_ensemble(cfg, out, train, val, resume, stop_after_steps, verbose, budget_s)


def _train_ensemble(cfg: DepthConfig, out: Path, train: DepthData, val: DepthData, resume: bool,
                    stop_after_steps: int | None, verbose: bool, budget_s: float | None) -> TrainResult:
    """Train ``cfg.ensemble`` members in turn, then save and score their average (see :func:`train_depth`)."""
    t_start = time.time()
    results: list[TrainResult] = []
    steps = 0
    for k in range(cfg.ensemble):
        member_cfg = cfg.model_copy(update={"seed": cfg.seed + k, "ensemble": 1}, deep=True)
        share = None if budget_s is None else max(0.0, budget_s - (time.time() - t_start)) / (cfg.ensemble - k)
        left = None if stop_after_steps is None else stop_after_steps - steps
        if left is not None and left <= 0:
            break
        if verbose:
            print(f"ensemble member {k + 1}/{cfg.ensemble} (seed {member_cfg.seed})", flush=True)
        r = _train_one(member_cfg, out / f"member{k}", train, val, resume, left, verbose, share)
        results.append(r)
        steps += r.steps
        if not r.finished:
            break
    history = [{"member": k, **row} for k, r in enumerate(results) for row in r.history]
    atomic_write_json(out / "history.json", history)
    if len(results) < cfg.ensemble or not results[-1].finished:
        return TrainResult(best_rmse=min(r.best_rmse for r in results) if results else math.inf, best_epoch=-1,
                           epochs_run=len(history), steps=steps, finished=False, history=history, out_dir=out)
    summary: dict[str, Any] = {"members": [], "val_sites": len(val)}
    averages = {}
    for weights in ("best", "final"):
        members = [DepthPredictor.load(out / f"member{k}" / f"{weights}.pt") for k in range(cfg.ensemble)]
        norms = {tuple(vars(m.norm).values()) for m in members}
        if len(norms) != 1:
            raise DepthConfigError(f"{out}: the members were trained with different normalisations {norms}")
        meta = {**members[0].meta, "config": cfg.model_dump(), "ensemble_of": weights}
        averages[weights] = DepthPredictor(UNetEnsemble([m.generator for m in members]), members[0].norm, meta)
        summary[f"val_rmse_{weights}"] = errors(averages[weights].predict(val.x), val.y.numpy())["rmse"]
    for k, r in enumerate(results):
        summary["members"].append({"seed": cfg.seed + k, "best_epoch": r.best_epoch, "val_rmse_best": r.best_rmse,
                                   "val_rmse_final": r.history[-1]["val_rmse"] if r.history else None})
    averages["best"].save(out / "best.pt")
    averages["final"].save(out / "final.pt")
    atomic_write_json(out / "ensemble.json", summary)
    if verbose:
        print(f"ensemble of {cfg.ensemble}: val RMSE {summary['val_rmse_best']:.3f} (members' best epochs), "
              f"{summary['val_rmse_final']:.3f} (members' final weights); members "
              + ", ".join(f"{m['val_rmse_best']:.3f}" for m in summary["members"]), flush=True)
    return TrainResult(best_rmse=summary["val_rmse_best"], best_epoch=-1, epochs_run=len(history), steps=steps,
                       finished=True, history=history, out_dir=out)


def _train_one(cfg: DepthConfig, out: Path, train: DepthData, val: DepthData, resume: bool,
               stop_after_steps: int | None, verbose: bool, budget_s: float | None) -> TrainResult:
    """One generator (see :func:`train_depth`); ``budget_s``: this call's wall-clock budget in seconds."""
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    norm = Normaliser.fit(train)
    xt = (train.x - norm.x_mean) / norm.x_std
    yt = ((train.y - norm.y_mean) / norm.y_std)[:, None]
    mem = torch.channels_last if cfg.channels_last else torch.contiguous_format
    gen = UNet(train.channels, 1, **cfg.model.model_dump())
    if cfg.init_from:
        init = DepthPredictor.load(cfg.init_from)
        g0 = init.generator
        if g0.hparams() != gen.hparams():
            raise DepthConfigError(f"{cfg.init_from}: model architecture {g0.hparams()} differs from the "
                                   f"config's {gen.hparams()}")
        gen.load_state_dict(g0.state_dict())
        norm = init.norm
        xt = (train.x - norm.x_mean) / norm.x_std
        yt = ((train.y - norm.y_mean) / norm.y_std)[:, None]
    gen = gen.to(memory_format=mem)
    opt = torch.optim.AdamW(gen.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    n_batches = math.ceil(len(train) / cfg.optim.batch_size)
    total = cfg.optim.epochs * n_batches
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg.optim, total))
    pix2pix = cfg.loss.mode == "pix2pix"
    disc = d_opt = None
    if pix2pix:
        disc = PatchGAN(train.channels, 1, cfg.loss.disc_width, cfg.loss.disc_layers).to(memory_format=mem)
        d_opt = torch.optim.Adam(disc.parameters(), lr=cfg.optim.disc_lr, betas=(0.5, 0.999))
    meta = {"norm": cfg.model.norm, "units": train.units, "config": cfg.model_dump()}
    # The EMA copy (weights and batch-norm buffers) is what validation sees and best.pt holds:
    # it removes the epoch-to-epoch swings of the raw weights at a high learning rate.
    ema = None
    if cfg.optim.ema_decay is not None:
        from torch.optim.swa_utils import AveragedModel

        ema = AveragedModel(gen, avg_fn=_ema_avg_fn(cfg.optim.ema_decay), use_buffers=True)

    state = {"epoch": 0, "batch": 0, "step": 0, "best_rmse": math.inf, "best_epoch": -1, "bad_epochs": 0,
             "history": []}
    last = out / "last.pt"
    if resume and last.is_file():
        ck = torch.load(last, map_location="cpu", weights_only=True)
        if ck.get("config") != cfg.model_dump():
            raise DepthConfigError(f"{last}: checkpoint was written with a different config; "
                                   "use a new output folder or --no-resume")
        gen.load_state_dict(ck["gen"])
        if ema is not None:
            ema.load_state_dict(ck["ema"])
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        if pix2pix:
            disc.load_state_dict(ck["disc"])
            d_opt.load_state_dict(ck["d_opt"])
        torch.set_rng_state(ck["torch_rng"])
        state = ck["state"]

    def save_last() -> None:
        ck = {"config": cfg.model_dump(), "gen": gen.state_dict(), "opt": opt.state_dict(),
              "sched": sched.state_dict(), "state": state, "torch_rng": torch.get_rng_state()}
        if pix2pix:
            ck["disc"], ck["d_opt"] = disc.state_dict(), d_opt.state_dict()
        if ema is not None:
            ck["ema"] = ema.state_dict()
        with atomic_path(last) as tmp:
            torch.save(ck, tmp)

    stopped = False
    t_start = time.time()
    with make_progress() as progress:
        task = progress.add_task("depth training", total=total, completed=state["step"])
        while state["epoch"] < cfg.optim.epochs:
            epoch = state["epoch"]
            t0 = time.time()
            perm, codes = _epoch_plan(cfg.seed, epoch, len(train), cfg.optim.flips)
            picks = _resample_plan(cfg.seed, epoch, len(train), xt.shape[1]) if cfg.optim.resample_acquisitions \
                else None
            use_mse = epoch >= cfg.optim.epochs - cfg.loss.mse_epochs
            gen.train()
            loss_sum = torch.tensor(state.get("loss_sum", 0.0) if state["batch"] else 0.0)
            for b in range(state["batch"], n_batches):
                idx = perm[b * cfg.optim.batch_size:(b + 1) * cfg.optim.batch_size]
                xb, yb = xt[idx], yt[idx]
                if picks is not None:
                    xb = torch.gather(xb, 1, picks[idx][:, :, None, None].expand_as(xb))
                if cfg.optim.flips:
                    xb = _flip(xb, codes[idx], cfg.optim.flip_lr_channels, cfg.optim.flip_ud_channels)
                    yb = _flip(yb, codes[idx])
                xb = xb.contiguous(memory_format=mem)
                pred = gen(xb)
                rec = F.mse_loss(pred, yb) if use_mse else F.l1_loss(pred, yb)
                loss = rec
                if pix2pix:
                    # Discriminator step on (SEM, real) vs (SEM, generated) pairs.
                    d_real, d_fake = disc(xb, yb), disc(xb, pred.detach())
                    d_loss = 0.5 * (F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
                                    + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)))
                    d_opt.zero_grad(set_to_none=True)
                    d_loss.backward()
                    d_opt.step()
                    g_fake = disc(xb, pred)
                    loss = rec + cfg.loss.gan_weight * F.binary_cross_entropy_with_logits(
                        g_fake, torch.ones_like(g_fake))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                if ema is not None:
                    ema.update_parameters(gen)
                loss_sum += rec.detach()
                state["loss_sum"] = float(loss_sum)
                state["batch"] = b + 1
                state["step"] += 1
                progress.update(task, advance=1, description=f"depth epoch {epoch + 1}/{cfg.optim.epochs}")
                if stop_after_steps is not None and state["step"] >= stop_after_steps:
                    stopped = True
                    break
                if state["step"] % cfg.checkpoint_every == 0:
                    save_last()
            if stopped:
                break
            model = gen if ema is None else ema.module
            m = errors(DepthPredictor(model, norm, meta).predict(val.x), val.y.numpy())
            row = {"epoch": epoch + 1, "train_loss": float(loss_sum) / max(1, n_batches),
                   "val_rmse": m["rmse"], "val_mae": m["mae"], "lr": opt.param_groups[0]["lr"],
                   "seconds": time.time() - t0}
            if ema is not None:  # the raw weights too, to show what the average adds
                row["val_rmse_raw"] = errors(DepthPredictor(gen, norm, meta).predict(val.x), val.y.numpy())["rmse"]
            state["history"].append(row)
            if verbose:
                progress.console.print(f"epoch {epoch + 1}: loss {row['train_loss']:.4f}  val RMSE {m['rmse']:.3f}  "
                                       f"MAE {m['mae']:.3f}"
                                       + (f"  raw RMSE {row['val_rmse_raw']:.3f}" if ema is not None else "")
                                       + f"  ({row['seconds']:.0f}s)", highlight=False)
            if m["rmse"] < state["best_rmse"]:
                state.update(best_rmse=m["rmse"], best_epoch=epoch + 1, bad_epochs=0)
                DepthPredictor(model, norm, meta).save(out / "best.pt")
            else:
                state["bad_epochs"] += 1
            state["epoch"] = epoch + 1
            state["batch"] = 0
            # Early stopping never cuts into the MSE fine-tuning phase.
            early = (cfg.optim.patience is not None and state["bad_epochs"] >= cfg.optim.patience
                     and state["epoch"] < cfg.optim.epochs - cfg.loss.mse_epochs)
            out_of_time = budget_s is not None and time.time() - t_start > budget_s
            if early or out_of_time:
                state["stopped_reason"] = "early stopping" if early else "time budget"
                state["epoch"] = cfg.optim.epochs
            save_last()
            atomic_write_json(out / "history.json", state["history"])
    if stopped:
        save_last()
    else:  # the weights training ended with (the EMA's, when used), beside best.pt's best epoch
        DepthPredictor(gen if ema is None else ema.module, norm, meta).save(out / "final.pt")
    return TrainResult(best_rmse=state["best_rmse"], best_epoch=state["best_epoch"],
                       epochs_run=len(state["history"]), steps=state["step"], finished=not stopped,
                       history=list(state["history"]), out_dir=out)

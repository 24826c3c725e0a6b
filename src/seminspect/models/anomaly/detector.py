"""The fit/predict estimator around the pure-PyTorch anomaly models.

::

    det = AnomalyDetector(AnomalyConfig(model="patchcore", conditioning="reference"))
    det.fit(SampleDataset("fab").split("train"))          # normal samples only (abnormal ones skipped)
    scores, maps = det.predict(SampleDataset("fab").split("test"))
    det.save("model_dir"); det = AnomalyDetector.load("model_dir")

A sample is scored view by view: every target view (with the reference view of the same index,
registered onto it) gives a map; the sample's map is the pixel-wise max (or, with
``view_combine="mean"``, the mean) over its target views and its score the map's max. A
threshold is fitted on held-out *normal* scores (``NormalQuantileThreshold``: bound on the
false-alarm rate, no anomalies needed), or with
:meth:`AnomalyDetector.fit_precision_threshold` when labelled anomalies exist.

Saved models are ``config.json`` + ``weights.safetensors`` (no pickle). The backbone weights are
stored too, so a saved model scores identically without the weight packages.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from seminspect.data.imageio import to_float
from seminspect.data.prepare import Alignment
from seminspect.data.sample import Role, Sample
from seminspect.models.anomaly.config import AnomalyConfig, validate_config
from seminspect.models.anomaly.features import AnomalyConfigError, build_backbone
from seminspect.models.anomaly.memory import MemoryPlan, item_bytes, plan_memory
from seminspect.models.anomaly.patchcore import PatchCoreModel, greedy_coreset
from seminspect.models.anomaly.stpm import STPMModel
from seminspect.utils.io import atomic_path, atomic_write_json
from seminspect.utils.progress import track

FORMAT = "seminspect-anomaly"
FORMAT_VERSION = 1


class AnomalyWarning(UserWarning):
    """Something the detector did that the user may not expect (e.g. a crop that discards most of an image)."""


@dataclass
class AnomalyResult:
    """Scores with the ground truth of the scored samples (for evaluation).

    ``maps`` ``(N, H, W)`` float32; ``masks`` ``(N, H, W)`` bool or None; ``labels`` ``(N,)`` 1/0/-1.
    """

    sample_ids: list[str]
    scores: np.ndarray
    maps: np.ndarray
    labels: np.ndarray
    defect_types: list[str | None]
    masks: np.ndarray | None = None
    images: np.ndarray | None = None
    metadata: list[dict[str, str]] = field(default_factory=list)


@dataclass
class _Item:
    sample_index: int
    target: np.ndarray  # (H, W) float32
    reference: np.ndarray | None
    mask: np.ndarray | None


def _fallback_quantile_threshold(scores: np.ndarray, far: float, confidence: float) -> dict[str, Any]:
    """Order-statistic threshold with a Clopper-Pearson bound (used when seminspect.decision is absent)."""
    from scipy import stats

    s = np.sort(np.asarray(scores, dtype=np.float64))
    n = len(s)
    # largest number m of calibration scores allowed above the threshold with upper bound <= far
    best_m = -1
    for m in range(n):
        upper = 1.0 if m >= n else float(stats.beta.ppf(confidence, m + 1, n - m))
        if upper <= far:
            best_m = m
        else:
            break
    if best_m < 0:
        thr = float(s[-1]) if n else math.inf
        upper = 1.0 if n == 0 else float(stats.beta.ppf(confidence, 1, n))
    else:
        thr = float(s[n - 1 - best_m])
        upper = float(stats.beta.ppf(confidence, best_m + 1, n - best_m))
    return {"kind": "normal_quantile", "threshold": thr, "false_alarm_upper_bound": upper,
            "false_alarm_rate": far, "confidence": confidence, "n": n, "implementation": "fallback"}


def fit_normal_threshold(scores: np.ndarray, far: float = 0.01, confidence: float = 0.95) -> dict[str, Any]:
    """Threshold from normal scores only: ``seminspect.decision.NormalQuantileThreshold`` when present."""
    try:
        from seminspect.decision import InsufficientDataError, NormalQuantileThreshold
    except ImportError:
        return _fallback_quantile_threshold(scores, far, confidence)
    try:
        t = NormalQuantileThreshold(false_alarm_rate=far, confidence=confidence).fit(np.asarray(scores))
    except InsufficientDataError as exc:
        # Too few held-out normals to *guarantee* the target: use the largest normal score and say
        # what bound it actually gives, rather than refusing to produce a model.
        out = _fallback_quantile_threshold(scores, far, confidence)
        out["warning"] = str(exc)
        return out
    out = {"kind": "normal_quantile", "threshold": float(t.threshold_),
           "false_alarm_upper_bound": float(t.false_alarm_upper_bound_), "false_alarm_rate": far,
           "confidence": confidence, "n": len(scores), "implementation": "seminspect.decision"}
    if hasattr(t, "to_dict"):
        out["decision"] = t.to_dict()
    return out


def _to_tensor(arrays: Sequence[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(arrays)[:, None].astype(np.float32, copy=False))


class AnomalyDetector:
    """Fit on normal samples, predict anomaly maps and scores, save/load (see module docstring)."""

    def __init__(self, config: AnomalyConfig | dict[str, Any] | None = None, backbone: nn.Module | None = None):
        self.config = (config if isinstance(config, AnomalyConfig)
                       else validate_config(dict(config or {}), "invalid anomaly config"))
        self._custom_backbone = backbone
        self.model: PatchCoreModel | STPMModel = self._build()
        self.threshold: dict[str, Any] | None = None
        self.normal_score_range: tuple[float, float] | None = None
        self.history: dict[str, Any] = {}

    # ----- construction ---------------------------------------------------------------------
    def _backbone(self, pretrained: bool, seed: int = 0) -> nn.Module:
        cfg = self.config
        if self._custom_backbone is not None:
            import copy

            return copy.deepcopy(self._custom_backbone)
        return build_backbone(cfg.backbone, pretrained=pretrained, out_indices=cfg.out_indices,
                              weights_path=cfg.weights_path, seed=seed)

    def _build(self, pretrained: bool | None = None) -> PatchCoreModel | STPMModel:
        cfg = self.config
        pretrained = cfg.pretrained if pretrained is None else pretrained
        if cfg.model == "patchcore":
            bb = self._backbone(pretrained, cfg.seed)
            n_maps = len(bb.feature_info)
            if any(i < 0 or i >= n_maps for i in cfg.layers):
                raise AnomalyConfigError(f"layers {cfg.layers} out of range for a backbone with {n_maps} maps")
            return PatchCoreModel(bb, layers=tuple(cfg.layers), pool=cfg.pool, embed_dim=cfg.embed_dim,
                                  conditioning=cfg.conditioning, reference_weight=cfg.reference_weight,
                                  match_radius=cfg.match_radius, sigma=cfg.sigma, top_k=cfg.top_k,
                                  centre_sigma=cfg.centre_sigma, seed=cfg.seed, map_dilation=cfg.map_dilation)
        teacher = self._backbone(pretrained, cfg.seed)
        student = self._backbone(False, cfg.seed + 1000)
        if self._custom_backbone is not None:  # a fresh student: re-initialise the copied module
            for m in student.modules():
                if hasattr(m, "reset_parameters") and m is not student:
                    m.reset_parameters()
        for p in student.parameters():
            p.requires_grad_(True)
        weights = cfg.layer_weights[: len(teacher.feature_info)]
        if len(weights) != len(teacher.feature_info):
            raise AnomalyConfigError(f"{len(cfg.layer_weights)} layer_weights for {len(teacher.feature_info)} maps")
        return STPMModel(teacher, student, mode=cfg.stpm_mode, layer_weights=weights, loss=cfg.loss,
                         sigma=cfg.sigma, top_k=cfg.top_k, centre_sigma=cfg.centre_sigma,
                         reflect_padding=cfg.reflect_padding, map_dilation=cfg.map_dilation)

    @property
    def needs_reference(self) -> bool:
        cfg = self.config
        return (cfg.model == "patchcore" and cfg.conditioning != "none") or (
            cfg.model == "stpm" and cfg.stpm_mode == "template")

    # ----- data -----------------------------------------------------------------------------
    def _preprocess(self, image: np.ndarray, is_mask: bool = False) -> np.ndarray:
        cfg = self.config
        if cfg.crop is not None:
            h, w = image.shape
            c = min(cfg.crop, h, w)
            if not is_mask and c < cfg.crop and c * c < 0.75 * h * w:
                self._warn_crop(h, w, c)
            y0, x0 = (h - c) // 2, (w - c) // 2
            image = image[y0:y0 + c, x0:x0 + c]
        if cfg.image_size is not None and image.shape != (cfg.image_size, cfg.image_size):
            t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
            mode = "nearest" if is_mask else "area"
            image = F.interpolate(t, size=(cfg.image_size,) * 2, mode=mode)[0, 0].numpy()
        return np.ascontiguousarray(image)

    def _warn_crop(self, h: int, w: int, c: int) -> None:
        """Say once per image size that ``crop`` fell back to the short side and discards much of the image."""
        warned: set[tuple[int, int]] = self.__dict__.setdefault("_crop_warned", set())
        if (h, w) in warned:
            return
        warned.add((h, w))
        warnings.warn(f"crop {self.config.crop}: a {h}x{w} (HxW) image is cut to its centre {c}x{c} (its short side), "
                      f"keeping {c * c / (h * w):.0%} of its area; set crop: null (and image_size) to keep it whole",
                      AnomalyWarning, stacklevel=3)

    def _items_of_sample(self, index: int, sample: Sample,
                         alignment: dict[int, Alignment] | None = None) -> Iterator[_Item]:
        """One item per target view. ``alignment`` (from ``PrepareSample.align``, computed once per site
        by the inspector) replaces this model's own registration for the indices it holds."""
        from seminspect.data.registration import register_pair, shifted_reference

        cfg = self.config
        for tgt, ref in sample.pairs():
            t = to_float(tgt.image)
            r = None
            if ref is not None and ref.image.shape == tgt.image.shape:
                given = None if alignment is None or cfg.registration == "off" else alignment.get(tgt.index)
                if given is not None or cfg.registration != "off":
                    reg = (shifted_reference(ref.image, given.shift) if given is not None else
                           register_pair(t, ref.image, method=cfg.registration, max_shift=cfg.max_shift))
                    r = reg.warped
                    if cfg.fill_border:
                        # The uncovered strip holds reflected content the reference never showed there: on the
                        # virtual fab it put the highest normal score at the image border in 54 of 80 normal
                        # test sites (benchmarks/results/anomaly_fab.md). Target pixels there compare as equal.
                        r = np.where(reg.valid_mask(), r, t).astype(np.float32)
                else:
                    r = to_float(ref.image)
                if cfg.match_intensity:  # detector gain / brightness drift between the dies is not a defect
                    r = ((r - r.mean()) / (r.std() + 1e-6) * t.std() + t.mean()).astype(np.float32)
            if r is None and self.needs_reference:
                raise AnomalyConfigError(
                    f"sample {sample.sample_id!r}: target view {tgt.index} has no reference view of the same "
                    f"index and size, which this reference-conditioned model needs")
            mask = None if tgt.mask is None else self._preprocess(tgt.mask.astype(np.float32), is_mask=True) > 0.5
            t = self._denoise(self._preprocess(t))
            yield _Item(index, t, None if r is None else self._denoise(self._preprocess(r)), mask)

    def _denoise(self, image: np.ndarray) -> np.ndarray:
        """Gaussian pre-smoothing (``denoise_sigma`` px; reflect borders) of an ``(H, W)`` float image."""
        if self.config.denoise_sigma <= 0:
            return image
        from scipy import ndimage

        return ndimage.gaussian_filter(image, self.config.denoise_sigma, mode="reflect").astype(np.float32)

    def _samples(self, data: Any) -> Iterator[tuple[int, Sample]]:
        from seminspect.data.batch import Batch

        if isinstance(data, Batch):
            yield from enumerate(_batch_to_samples(data))
        elif isinstance(data, Sample):
            yield 0, data
        else:
            for i in range(len(data)):
                yield i, data[i]

    def _memory_plan(self, shape: tuple[int, int], bank_rows: int | None = None) -> MemoryPlan | None:
        """The PatchCore settings ``memory_budget_mib`` allows for items of ``shape`` (None: no budget)."""
        cfg = self.config
        model = self.model
        if cfg.memory_budget_mib is None or not isinstance(model, PatchCoreModel):
            return None
        key = (shape, bank_rows)
        if getattr(self, "_plan_key", None) != key:
            reduction = model.backbone.feature_info[model.layers[0]]["reduction"]
            per_item = item_bytes(model.backbone, shape[0], shape[1],
                                  images_per_item=2 if self.needs_reference else 1, raw_dim=model.raw_dim,
                                  reduction=reduction)
            self._plan = plan_memory(int(cfg.memory_budget_mib * 2**20), per_item_bytes=per_item, dim=model.dim,
                                     proj_dim=min(cfg.coreset_proj_dim, model.dim), max_batch=cfg.batch_size,
                                     max_pool=cfg.max_pool_patches, max_bank=cfg.max_bank_patches,
                                     bank_rows=bank_rows)
            self._plan_key = key
        return self._plan

    def _planned(self, items: Iterator[_Item], bank_rows: int | None = None
                 ) -> tuple[Iterator[_Item], MemoryPlan | None]:
        """Peek at the first item to size the memory plan; the items come back whole."""
        import itertools

        first = next(items, None)
        if first is None:
            return iter(()), None
        plan = self._memory_plan(first.target.shape, bank_rows)
        if plan is not None and isinstance(self.model, PatchCoreModel):
            self.model.query_chunk = plan.query_chunk
        return itertools.chain([first], items), plan

    def _batches(self, items: Iterator[_Item], batch_size: int | None = None
                 ) -> Iterator[tuple[list[_Item], torch.Tensor, torch.Tensor | None]]:
        """Group consecutive same-size items into model batches (``batch_size`` default: the config's)."""
        batch_size = batch_size or self.config.batch_size
        buf: list[_Item] = []

        def flush() -> tuple[list[_Item], torch.Tensor, torch.Tensor | None]:
            t = _to_tensor([it.target for it in buf])
            r = None
            if all(it.reference is not None for it in buf):
                r = _to_tensor([it.reference for it in buf])  # type: ignore[misc]
            return list(buf), t, r

        for it in items:
            if buf and (len(buf) >= batch_size or it.target.shape != buf[0].target.shape):
                yield flush()
                buf.clear()
            buf.append(it)
        if buf:
            yield flush()

    def _normal_split(self, data: Any) -> tuple[list[Sample], list[Sample]]:
        """Normal samples of ``data`` (labelled abnormal ones dropped), split into fit / held-out."""
        samples = [s for _, s in self._samples(data) if s.is_abnormal is not True]
        if not samples:
            raise AnomalyConfigError("no normal samples to fit the anomaly model on")
        rng = np.random.default_rng(self.config.seed)
        order = rng.permutation(len(samples))
        n_cal = int(round(self.config.calib_fraction * len(samples)))
        if n_cal and len(samples) - n_cal < 1:
            n_cal = 0
        cal = [samples[i] for i in sorted(order[:n_cal])]
        fit = [samples[i] for i in sorted(order[n_cal:])]
        return fit, cal

    # ----- fitting --------------------------------------------------------------------------
    def fit(self, normal: Any, calib: Any | None = None, checkpoint_dir: str | Path | None = None) -> AnomalyDetector:
        """Fit on normal samples (a SampleDataset, list of Samples or Batch; abnormal ones are skipped).

        ``calib``: held-out normal samples for the threshold; by default ``calib_fraction`` of
        ``normal`` is held out. ``checkpoint_dir`` (STPM): checkpoint each epoch there and resume.
        """
        from seminspect.utils.seed import seed_everything

        seed_everything(self.config.seed)
        if calib is None:
            fit_samples, cal_samples = self._normal_split(normal)
        else:
            fit_samples = [s for _, s in self._samples(normal) if s.is_abnormal is not True]
            cal_samples = [s for _, s in self._samples(calib) if s.is_abnormal is not True]
        start = time.perf_counter()
        if self.config.model == "patchcore":
            self._fit_patchcore(fit_samples)
        else:
            self._fit_stpm(fit_samples, checkpoint_dir)
        self.history["fit_seconds"] = time.perf_counter() - start
        self.history["n_fit_samples"] = len(fit_samples)
        if cal_samples:
            scores, _ = self.predict(cal_samples)
            self.fit_threshold(scores)
        return self

    def fit_threshold(self, normal_scores: np.ndarray) -> dict[str, Any]:
        """Set the decision threshold from held-out normal scores (bounded false-alarm rate)."""
        normal_scores = np.asarray(normal_scores, dtype=np.float64)
        if not np.isfinite(normal_scores).all():
            raise AnomalyConfigError(f"{int((~np.isfinite(normal_scores)).sum())} held-out normal scores are NaN/inf: "
                                     "the model produces non-finite maps (for STPM: an untrained or diverged student)")
        self.threshold = fit_normal_threshold(normal_scores, self.config.false_alarm_rate, self.config.confidence)
        self.normal_score_range = (float(np.min(normal_scores)), float(np.max(normal_scores)))
        return self.threshold

    def fit_precision_threshold(self, scores: np.ndarray, labels: np.ndarray, target_precision: float = 0.99,
                                confidence: float = 0.95) -> dict[str, Any]:
        """Precision-constrained threshold when labelled anomalies exist (``PrecisionThreshold``)."""
        from seminspect.decision import PrecisionThreshold

        t = PrecisionThreshold(target_precision=target_precision, confidence=confidence).fit(
            np.asarray(scores), np.asarray(labels))
        self.threshold = {"kind": "precision", "threshold": float(t.threshold_), "precision": float(t.precision_),
                          "precision_lower_bound": float(t.precision_lower_bound_), "recall": float(t.recall_),
                          "target_precision": target_precision, "confidence": confidence}
        return self.threshold

    def _fit_patchcore(self, samples: list[Sample]) -> None:
        cfg = self.config
        model = self.model
        assert isinstance(model, PatchCoreModel)
        n_views = max(1, len(samples[0].targets))
        items, plan = self._planned(it for i, s in track(list(enumerate(samples)), "patchcore features")
                                    for it in self._items_of_sample(i, s))
        max_pool = cfg.max_pool_patches if plan is None else plan.max_pool_patches
        per_image = max(1, max_pool // max(1, len(samples) * n_views))
        gen = torch.Generator().manual_seed(cfg.seed)
        # One preallocated pool, filled in place: thousands of small per-batch tensors kept alive between the
        # batches' large temporaries fragmented the C heap (glibc's adaptive mmap threshold), so the process
        # grew ~0.1 MiB per batch beyond what it held (benchmarks/results/anomaly_speed.md, 2026-11-23).
        n_items = sum(max(1, len(s.targets)) for s in samples)
        pool = torch.empty(0)
        filled = 0
        for _, t, r in self._batches(items, None if plan is None else plan.batch_size):
            emb = model.embed(t, r)
            n, d, h, w = emb.shape
            flat = emb.permute(0, 2, 3, 1).reshape(n, h * w, d)
            if h * w > per_image:  # bound the pool before the coreset: random patches per image
                idx = torch.stack([torch.randperm(h * w, generator=gen)[:per_image] for _ in range(n)])
                flat = torch.gather(flat, 1, idx[:, :, None].expand(-1, -1, d))
            rows = flat.reshape(-1, d)
            if filled + rows.shape[0] > pool.shape[0]:  # first batch, or items larger than the first
                grown = torch.empty(max(filled + rows.shape[0], n_items * min(per_image, h * w)), d)
                if filled:
                    grown[:filled] = pool[:filled]
                pool = grown
            pool[filled:filled + rows.shape[0]] = rows
            filled += rows.shape[0]
        feats = pool[:filled]
        limit = cfg.max_bank_patches if plan is None else plan.max_bank_patches
        if cfg.max_bank_bytes is not None:
            limit = min(limit, max(1, cfg.max_bank_bytes // (4 * feats.shape[1])))
        idx = greedy_coreset(feats, min(limit, feats.shape[0]), proj_dim=cfg.coreset_proj_dim, seed=cfg.seed,
                             progress=True, chunk=65536 if plan is None else plan.coreset_chunk)
        model.bank = feats[idx]
        self.history.update({"pool_patches": int(feats.shape[0]), "bank_patches": int(model.bank.shape[0]),
                             "bank_bytes": int(model.bank.numel() * 4), "embed_dim": int(feats.shape[1])})
        if plan is not None:
            self.history["memory_plan"] = plan.to_dict()

    def _fit_stpm(self, samples: list[Sample], checkpoint_dir: str | Path | None) -> None:
        cfg = self.config
        model = self.model
        assert isinstance(model, STPMModel)
        items = [it for i, s in track(list(enumerate(samples)), "stpm data") for it in self._items_of_sample(i, s)]
        if len({it.target.shape for it in items}) != 1:
            raise AnomalyConfigError("STPM training needs images of one size; set crop or image_size")
        targets = _to_tensor([it.target for it in items])
        refs = _to_tensor([it.reference for it in items]) if self.needs_reference else None  # type: ignore[misc]
        opt = torch.optim.Adam([p for p in model.student.parameters() if p.requires_grad], lr=cfg.lr)
        start_epoch = 0
        losses: list[float] = []
        ckpt = Path(checkpoint_dir) if checkpoint_dir else None
        if ckpt is not None and (ckpt / "checkpoint.json").is_file():
            start_epoch, losses = _load_checkpoint(ckpt, model, opt, cfg)
        n = targets.shape[0]
        skipped = 0
        for epoch in range(start_epoch, cfg.epochs):
            model.train()
            gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)  # order fixed per epoch: resumable
            order = torch.randperm(n, generator=gen)
            total, count = 0.0, 0
            for idx in track(stpm_batches(order, cfg.batch_size), f"stpm epoch {epoch + 1}/{cfg.epochs}"):
                batch_t = targets[idx]
                if float(batch_t.std()) < FEATURELESS_STD:
                    # Every image of the batch is the same flat grey: train-mode BatchNorm would divide
                    # rounding noise by sqrt(eps) at every layer (see stpm_batches). Nothing to learn.
                    skipped += 1
                    continue
                loss = model.loss(batch_t, None if refs is None else refs[idx])
                if not torch.isfinite(loss):
                    raise AnomalyConfigError(f"STPM training diverged (non-finite loss) in epoch {epoch + 1}; "
                                             "lower lr or use loss: huber")
                opt.zero_grad()
                loss.backward()
                bad = [name for name, p in model.student.named_parameters()
                       if p.grad is not None and not torch.isfinite(p.grad).all()]
                if bad:  # refuse the step: one non-finite gradient makes every weight NaN for good
                    raise AnomalyConfigError(
                        f"STPM training: non-finite gradients in {len(bad)} student parameters (first: {bad[0]}) "
                        f"in epoch {epoch + 1}; lower lr or use loss: huber")
                opt.step()
                total += float(loss.detach()) * len(idx)
                count += len(idx)
            losses.append(total / max(count, 1))
            if ckpt is not None:
                _save_checkpoint(ckpt, model, opt, cfg, epoch + 1, losses)
        model.eval()
        self.history["losses"] = losses
        self.history["skipped_featureless_batches"] = skipped

    # ----- prediction -----------------------------------------------------------------------
    @torch.no_grad()
    def score(self, data: Any, keep_images: bool = False,
              alignments: Sequence[dict[int, Alignment]] | None = None, progress: bool = True) -> AnomalyResult:
        """Scores, maps and the ground truth of ``data`` (SampleDataset, list of Samples, Batch).

        ``alignments``: one ``{index: Alignment}`` per sample, reused instead of registering again.
        """
        self.model.eval()
        listed = list(self._samples(data))
        samples_meta: dict[int, Sample] = dict(listed)
        n_views = {i: len(s.targets) for i, s in listed}
        empty = [s.sample_id for s in samples_meta.values() if not s.targets]
        if empty:
            raise AnomalyConfigError(f"{len(empty)} sample(s) have no target view to score (first: {empty[0]!r})")

        def items() -> Iterator[_Item]:
            for i, s in track(listed, "anomaly scoring") if progress else listed:
                yield from self._items_of_sample(i, s, None if alignments is None else alignments[i])

        # The maps are written into one preallocated (N, H, W) array as the views come (no per-sample copies
        # stacked at the end: that held the result twice); score maps live only until their sample is complete.
        map_arr = np.zeros((0, 0, 0), np.float32)
        scores = np.zeros(len(listed))
        counts: dict[int, int] = {}
        masks: dict[int, np.ndarray] = {}
        images: dict[int, np.ndarray] = {}
        score_maps: dict[int, np.ndarray] = {}  # only when the image score has its own post-processing
        cfg = self.config
        mean = cfg.view_combine == "mean"
        separate = self.separate_score_maps

        def combine(current: np.ndarray | None, mi: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
            if current is None:
                if out is None:
                    return mi.copy()
                out[...] = mi
                return out
            if mean:
                current += mi
            else:
                np.maximum(current, mi, out=current)
            return current

        bank_rows = int(self.model.bank.shape[0]) if isinstance(self.model, PatchCoreModel) else None
        planned, plan = self._planned(items(), bank_rows)
        for batch_items, t, r in self._batches(planned, None if plan is None else plan.batch_size):
            raw = self.model.raw_maps(t, r)
            m = self.model.postprocess(raw)[:, 0].numpy()
            sm = self.model.postprocess(raw, cfg.score_dilation, cfg.score_sigma)[:, 0].numpy() if separate else m
            for it, mi, si in zip(batch_items, m, sm, strict=True):
                k = it.sample_index
                if map_arr.shape[0] == 0:
                    map_arr = np.zeros((len(listed), *mi.shape), np.float32)
                if mi.shape != map_arr.shape[1:]:
                    raise AnomalyConfigError(
                        f"sample {samples_meta[k].sample_id!r}: map size {mi.shape} differs from {map_arr.shape[1:]}: "
                        "set crop or image_size to score samples of different sizes together")
                first = k not in counts
                combine(None if first else map_arr[k], mi, out=map_arr[k])
                if separate:
                    score_maps[k] = combine(score_maps.get(k), si)
                counts[k] = counts.get(k, 0) + 1
                if counts[k] == n_views[k]:  # the sample is complete: finish its map and score
                    if mean:
                        map_arr[k] /= counts[k]
                    smap = score_maps.pop(k) / (counts[k] if mean else 1) if separate else map_arr[k]
                    scores[k] = _scores_from_maps(smap[None], cfg.top_k)[0]
                if it.mask is not None:
                    masks[k] = it.mask if k not in masks else (masks[k] | it.mask)
                if keep_images and k not in images:
                    images[k] = it.target
        order = sorted(samples_meta)
        mask_arr = None
        if masks:
            mask_arr = np.stack([masks.get(k, np.zeros(map_arr.shape[1:], bool)) for k in order])
        labels = np.array([-1 if samples_meta[k].is_abnormal is None else int(samples_meta[k].is_abnormal)
                           for k in order], dtype=np.int64)
        return AnomalyResult(
            sample_ids=[samples_meta[k].sample_id for k in order], scores=scores, maps=map_arr, labels=labels,
            defect_types=[samples_meta[k].defect_type for k in order], masks=mask_arr,
            images=np.stack([images[k] for k in order]) if keep_images and order else None,
            metadata=[dict(samples_meta[k].metadata) for k in order],
        )

    @property
    def separate_score_maps(self) -> bool:
        """Whether image scores come from differently post-processed maps than the returned anomaly maps."""
        cfg = self.config
        return ((cfg.score_sigma is not None and cfg.score_sigma != cfg.sigma)
                or (cfg.score_dilation is not None and cfg.score_dilation != cfg.map_dilation))

    def predict(self, data: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(image_scores (N,), anomaly_maps (N, H, W))`` for a SampleDataset, list of Samples or Batch."""
        res = self.score(data)
        return res.scores, res.maps

    def decide(self, scores: np.ndarray) -> np.ndarray:
        """``(N,)`` bool: score above the fitted threshold."""
        if self.threshold is None:
            raise AnomalyConfigError("no threshold fitted: fit with held-out normal samples or call fit_threshold")
        return np.asarray(scores) > self.threshold["threshold"]

    # ----- persistence ----------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``weights.safetensors`` (atomically) into ``directory``."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().clone() for k, v in self.model.state_dict().items()}
        with atomic_path(directory / "weights.safetensors") as tmp:
            save_file(state, str(tmp))
        atomic_write_json(directory / "config.json", {
            "format": FORMAT, "version": FORMAT_VERSION, "config": self.config.model_dump(),
            "threshold": self.threshold, "normal_score_range": self.normal_score_range,
            "history": self.history, "custom_backbone": self._custom_backbone is not None,
        })
        return directory

    @classmethod
    def load(cls, directory: str | Path, backbone: nn.Module | None = None) -> AnomalyDetector:
        """Load a saved detector; pass ``backbone`` (same architecture) if it was fitted with a custom one."""
        from safetensors.torch import load_file

        directory = Path(directory)
        cfg_path = directory / "config.json"
        if not cfg_path.is_file():
            raise AnomalyConfigError(f"{cfg_path}: not found; not a saved anomaly model folder")
        try:
            meta = json.loads(cfg_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise AnomalyConfigError(f"{cfg_path}: not valid JSON ({exc})") from None
        if meta.get("format") != FORMAT:
            raise AnomalyConfigError(f"{cfg_path}: not a seminspect anomaly model (format {meta.get('format')!r})")
        if meta.get("custom_backbone") and backbone is None:
            raise AnomalyConfigError(f"{cfg_path}: fitted with a custom backbone module; pass it to load()")
        det = cls.__new__(cls)
        saved = dict(meta["config"]) if isinstance(meta.get("config"), dict) else {}
        # models saved before these settings existed scored with their then-behaviour: keep it
        saved.setdefault("fill_border", False)
        saved.setdefault("match_radius", 1)
        det.config = validate_config(saved, f"{cfg_path}: invalid saved config")
        det._custom_backbone = backbone
        det.model = det._build(pretrained=False)  # weights come from the file, not the packages
        weights = directory / "weights.safetensors"
        if not weights.is_file():
            raise AnomalyConfigError(f"{weights}: not found")
        from safetensors import SafetensorError

        try:
            state = load_file(str(weights))
        except (SafetensorError, OSError) as exc:  # corrupt, truncated or not safetensors at all
            raise AnomalyConfigError(f"{weights}: not a readable safetensors file ({exc})") from None
        try:
            if isinstance(det.model, PatchCoreModel):
                det.model.bank = torch.empty_like(state["bank"])
            det.model.load_state_dict(state)
        except KeyError as exc:
            raise AnomalyConfigError(f"{weights}: does not match the model in config.json (no tensor {exc})") from None
        except RuntimeError as exc:
            detail = " ".join(ln.strip() for ln in str(exc).splitlines() if ln.strip())[:300]
            raise AnomalyConfigError(f"{weights}: does not match the model in config.json ({detail})") from None
        det.model.eval()
        det.threshold = meta.get("threshold")
        rng = meta.get("normal_score_range")
        det.normal_score_range = None if rng is None else (float(rng[0]), float(rng[1]))
        det.history = meta.get("history", {})
        return det


FEATURELESS_STD = 1e-3  # pixel std (images in [0, 1]; < 1/4 grey level of 8 bits): the batch is one flat grey


def stpm_batches(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Split an epoch's sample order into training batches; no batch is smaller than ``batch_size // 2``.

    A short remainder joins the previous batch instead of forming its own (unless the whole epoch
    is shorter). Why: the student's BatchNorm layers normalise by the *batch* statistics. A batch
    of one or two images -- in DeepPCB often flat all-black or all-white crops of the binarised
    board (35 % of them) -- can be one flat grey whose per-channel variance is at rounding-noise
    level; each BatchNorm then multiplies the backward gradient by up to ``1 / sqrt(eps) = 316``
    (measured: 10-30x per layer), which overflows float32 to inf through MobileNetV2's dozens of
    BatchNorm layers; Adam writes NaN into every weight and every later score is NaN. Batches of
    several images carry between-image variance and stay well-conditioned.
    """
    n = int(order.shape[0])
    if n == 0:
        return []
    bounds = list(range(0, n, batch_size)) + [n]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < max(2, batch_size // 2):
        del bounds[-2]  # merge the short remainder into the previous batch
    return [order[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def _scores_from_maps(maps: np.ndarray, top_k: int) -> np.ndarray:
    if maps.size == 0:
        return np.zeros(0)
    flat = maps.reshape(maps.shape[0], -1)
    if top_k <= 1:
        return flat.max(1).astype(np.float64)
    k = min(top_k, flat.shape[1])
    return np.sort(flat, axis=1)[:, -k:].mean(1).astype(np.float64)


def _batch_to_samples(batch: Any) -> list[Sample]:
    """Target/reference views of a :class:`~seminspect.data.batch.Batch` back as Samples (float images)."""
    from seminspect.data.sample import View

    out = []
    for b in range(len(batch)):
        views = []
        for v in range(batch.roles.shape[1]):
            code = int(batch.roles[b, v])
            if code < 0 or code == Role.ZOOM.code:
                continue
            role = Role.TARGET if code == Role.TARGET.code else Role.REFERENCE
            mask = None
            if batch.masks is not None and role == Role.TARGET:
                mask = batch.masks[b, v, 0].numpy() > 0.5
            views.append(View(role, int(batch.indices[b, v]), batch.images[b, v, 0].numpy(), mask=mask))
        lab = int(batch.is_abnormal[b])
        out.append(Sample(batch.sample_ids[b], views, is_abnormal=None if lab < 0 else bool(lab),
                          metadata=batch.metadata[b] if batch.metadata else {}))
    return out


# ----- STPM checkpoints (safetensors + JSON; optimizer state flattened, no pickle) ---------------
def _save_checkpoint(directory: Path, model: STPMModel, opt: torch.optim.Optimizer, cfg: AnomalyConfig,
                     epoch: int, losses: list[float]) -> None:
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"student.{k}": v.detach().contiguous().clone() for k, v in model.student.state_dict().items()}
    for pid, st in opt.state_dict()["state"].items():
        for name, val in st.items():
            tensors[f"opt.{pid}.{name}"] = torch.as_tensor(val).detach().contiguous().clone()
    with atomic_path(directory / "checkpoint.safetensors") as tmp:
        save_file(tensors, str(tmp))
    atomic_write_json(directory / "checkpoint.json", {"epoch": epoch, "losses": losses,
                                                      "config": cfg.model_dump()})


def _load_checkpoint(directory: Path, model: STPMModel, opt: torch.optim.Optimizer,
                     cfg: AnomalyConfig) -> tuple[int, list[float]]:
    from safetensors.torch import load_file

    meta = json.loads((directory / "checkpoint.json").read_text(encoding="utf-8"))
    saved = dict(meta.get("config", {}))
    now = cfg.model_dump()
    # map post-processing does not change training; a checkpoint from before map_dilation existed stays valid
    differs = [k for k in now if k not in ("epochs", "map_dilation", "score_sigma", "score_dilation")
               and saved.get(k) != now[k]]
    if differs:
        raise AnomalyConfigError(f"{directory}: checkpoint was written with different settings {differs}; "
                                 "use another checkpoint folder")
    tensors = load_file(str(directory / "checkpoint.safetensors"))
    model.student.load_state_dict({k[len("student."):]: v for k, v in tensors.items() if k.startswith("student.")})
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, val in tensors.items():
        if key.startswith("opt."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = val
    opt.load_state_dict({"state": state, "param_groups": opt.state_dict()["param_groups"]})
    return int(meta["epoch"]), list(meta.get("losses", []))

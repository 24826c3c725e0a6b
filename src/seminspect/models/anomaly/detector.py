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

import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from seminspect.data.prepare import Alignment
from seminspect.data.sample import Sample
from seminspect.models.anomaly.bank import BankGroups, fill_bank, split_by_group
from seminspect.models.anomaly.config import AnomalyConfig, validate_config
from seminspect.models.anomaly.diffusion import DiffusionModel
from seminspect.models.anomaly.diffusion_fit import distill_student, train_diffusion
from seminspect.models.anomaly.draem import DRAEMModel
from seminspect.models.anomaly.draem_fit import train_draem
from seminspect.models.anomaly.features import AnomalyConfigError, build_backbone
from seminspect.models.anomaly.memory import MemoryPlan, PlanCache
from seminspect.models.anomaly.patchcore import PatchCoreModel
from seminspect.models.anomaly.persistence import read_meta, read_weights, write_model
from seminspect.models.anomaly.result import AnomalyResult, MapCollector
from seminspect.models.anomaly.score_groups import check_held_out, fit_groups, normalise
from seminspect.models.anomaly.stpm import STPMModel, mixed_student
from seminspect.models.anomaly.stpm_fit import train_student
from seminspect.models.anomaly.teacher_tune import tune_teacher
from seminspect.models.anomaly.threshold import fit_normal_threshold
from seminspect.models.anomaly.views import Item, ViewPreparer, batches, samples_of, to_tensor, unletterbox
from seminspect.utils.progress import track


class AnomalyDetector:
    """Fit on normal samples, predict anomaly maps and scores, save/load (see module docstring)."""

    def __init__(self, config: AnomalyConfig | dict[str, Any] | None = None, backbone: nn.Module | None = None):
        self.config = (config if isinstance(config, AnomalyConfig)
                       else validate_config(dict(config or {}), "invalid anomaly config"))
        self._custom_backbone = backbone
        self.model: PatchCoreModel | STPMModel | DRAEMModel | DiffusionModel = self._build()
        self.threshold: dict[str, Any] | None = None
        self.normal_score_range: tuple[float, float] | None = None
        self.score_groups: dict[str, Any] | None = None  # per-group median / IQR (config.score_groups)
        self.bank_groups: BankGroups | None = None  # bank_per_group: which bank rows each group owns
        self.history: dict[str, Any] = {}

    # ----- construction ---------------------------------------------------------------------
    def _backbone(self, pretrained: bool, seed: int = 0) -> nn.Module:
        cfg = self.config
        if self._custom_backbone is not None:
            import copy

            return copy.deepcopy(self._custom_backbone)
        return build_backbone(cfg.backbone, pretrained=pretrained, out_indices=cfg.out_indices,
                              weights_path=cfg.weights_path, seed=seed)

    def _build(self, pretrained: bool | None = None) -> PatchCoreModel | STPMModel | DRAEMModel | DiffusionModel:
        cfg = self.config
        pretrained = cfg.pretrained if pretrained is None else pretrained
        if cfg.model in ("draem", "diffusion"):  # no backbone: initial weights from the seed alone
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.seed)
                return self._build_from_scratch()
        if cfg.model == "patchcore":
            bb = self._backbone(pretrained, cfg.seed)
            n_maps = len(bb.feature_info)
            if any(i < 0 or i >= n_maps for i in cfg.layers):
                raise AnomalyConfigError(f"layers {cfg.layers} out of range for a backbone with {n_maps} maps")
            return PatchCoreModel(bb, layers=tuple(cfg.layers), pool=cfg.pool, embed_dim=cfg.embed_dim,
                                  conditioning=cfg.conditioning, reference_weight=cfg.reference_weight,
                                  match_radius=cfg.match_radius, sigma=cfg.sigma, top_k=cfg.top_k,
                                  centre_sigma=cfg.centre_sigma, seed=cfg.seed, map_dilation=cfg.map_dilation,
                                  position_weight=cfg.position_weight)
        teacher = self._backbone(pretrained, cfg.seed)
        custom = self._custom_backbone is not None
        if cfg.student_backbone not in (None, cfg.backbone):  # a mixed pair: adapters where channels differ
            student = mixed_student(teacher, cfg.student_backbone, "custom backbone" if custom else cfg.backbone,
                                    cfg.out_indices, cfg.seed + 1000)
        else:
            student = self._backbone(False, cfg.seed + 1000)
            if custom:  # a fresh student: re-initialise the copied module
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
                         padding=cfg.stpm_padding, padding_value=cfg.padding_value, map_dilation=cfg.map_dilation)

    def _build_from_scratch(self) -> DRAEMModel | DiffusionModel:
        cfg = self.config
        if cfg.model == "draem":  # both sub-networks learn from scratch
            return DRAEMModel(width=cfg.draem_width, reference=cfg.conditioning == "reference", sigma=cfg.sigma,
                              top_k=cfg.top_k, centre_sigma=cfg.centre_sigma, map_dilation=cfg.map_dilation)
        return DiffusionModel(width=cfg.diffusion_width, reference=cfg.conditioning == "reference",
                              steps=cfg.diffusion_steps, start=cfg.diffusion_start,
                              sample_steps=cfg.diffusion_sample_steps, student_width=cfg.diffusion_student_width,
                              seed=cfg.seed, sigma=cfg.sigma, top_k=cfg.top_k, centre_sigma=cfg.centre_sigma,
                              map_dilation=cfg.map_dilation)

    @property
    def needs_reference(self) -> bool:
        cfg = self.config
        return (cfg.model in ("patchcore", "draem", "diffusion") and cfg.conditioning != "none") or (
            cfg.model == "stpm" and cfg.stpm_mode != "classic")

    # ----- data -----------------------------------------------------------------------------
    @property
    def views(self) -> ViewPreparer:
        """Registration, crop / resize and denoising of a sample's views (:mod:`.views`)."""
        prep = self.__dict__.get("_views")
        if prep is None or prep.config is not self.config:
            prep = self._views = ViewPreparer(self.config, self.needs_reference)
        return prep

    def _items_of_sample(self, index: int, sample: Sample,
                         alignment: dict[int, Alignment] | None = None) -> Iterator[Item]:
        return self.views.items(index, sample, alignment)

    def _planned(self, items: Iterator[Item], bank_rows: int | None = None
                 ) -> tuple[Iterator[Item], MemoryPlan | None]:
        """The items back whole, and the PatchCore plan ``memory_budget_mib`` allows for them (None: no budget)."""
        model = self.model
        if self.config.memory_budget_mib is None or not isinstance(model, PatchCoreModel):
            return items, None
        plans: PlanCache = self.__dict__.setdefault("_plans", PlanCache())  # also on a loaded detector
        return plans.planned(items, model, self.config, 2 if self.needs_reference else 1, bank_rows)

    def _normal_split(self, data: Any) -> tuple[list[Sample], list[Sample]]:
        """Normal samples of ``data`` (labelled abnormal ones dropped), split into fit / held-out."""
        samples = [s for _, s in samples_of(data) if s.is_abnormal is not True]
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
        ``normal`` is held out. ``checkpoint_dir`` (STPM, DRAEM, diffusion): checkpoint each epoch there and resume.
        """
        from seminspect.utils.seed import seed_everything

        seed_everything(self.config.seed)
        if calib is None:
            fit_samples, cal_samples = self._normal_split(normal)
        else:
            fit_samples = [s for _, s in samples_of(normal) if s.is_abnormal is not True]
            cal_samples = [s for _, s in samples_of(calib) if s.is_abnormal is not True]
        self.score_groups = None
        if self.config.score_groups:  # at the door: a missing column must not cost a whole fit
            check_held_out(self.config.score_groups, cal_samples)
        if self.config.preset == "auto" and fit_samples:
            from seminspect.models.anomaly.presets import resolve

            self.config, self.history["preset"] = resolve(self.config, fit_samples)
            self.model = self._build()
        start = time.perf_counter()
        if self.config.model == "patchcore":
            self._fit_patchcore(fit_samples)
        else:
            self._fit_trained(fit_samples, checkpoint_dir)
        self.history["fit_seconds"] = time.perf_counter() - start
        self.history["n_fit_samples"] = len(fit_samples)
        if cal_samples:
            res = self.score(cal_samples)
            scores = res.scores
            if self.config.score_groups:
                self.score_groups = fit_groups(scores, res.metadata, self.config.score_groups, res.sample_ids)
                scores = normalise(scores, res.metadata, self.score_groups, res.sample_ids)
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
        """One memory bank, or with ``bank_per_group`` one per group (concatenated; ``self.bank_groups`` says whose)."""
        cfg = self.config
        model = self.model
        assert isinstance(model, PatchCoreModel)
        groups = split_by_group(samples, cfg.score_groups) if cfg.bank_per_group else {"": samples}
        parts, bounds, pool_total, plan = [], [], 0, None
        for name, members in groups.items():
            what = f"patchcore features {name}".strip()
            items, plan = self._planned(it for i, s in track(list(enumerate(members)), what)
                                        for it in self._items_of_sample(i, s))
            max_pool = cfg.max_pool_patches if plan is None else plan.max_pool_patches
            limit = cfg.max_bank_patches if plan is None else plan.max_bank_patches
            if cfg.max_bank_bytes is not None:
                limit = min(limit, max(1, cfg.max_bank_bytes // (4 * model.dim)))
            part, pooled = fill_bank(
                model, batches(items, cfg.batch_size if plan is None else plan.batch_size),
                n_items=sum(max(1, len(s.targets)) for s in members),
                per_image=max(1, max_pool // max(1, len(members) * max(1, len(members[0].targets)))), limit=limit,
                proj_dim=cfg.coreset_proj_dim, seed=cfg.seed, chunk=65536 if plan is None else plan.coreset_chunk,
                precision=cfg.coreset_precision)
            start = bounds[-1][1] if bounds else 0
            bounds.append((start, start + len(part)))
            parts.append(part)
            pool_total += pooled
        model.bank = torch.cat(parts) if len(parts) > 1 else parts[0]
        self.bank_groups = BankGroups(cfg.score_groups or "", list(groups), bounds) if cfg.bank_per_group else None
        model.group_bounds = None if self.bank_groups is None else self.bank_groups.bounds
        self.history.update({"pool_patches": pool_total, "bank_patches": int(model.bank.shape[0]),
                             "bank_bytes": int(model.bank.numel() * 4), "embed_dim": int(model.bank.shape[1])})
        if plan is not None:
            self.history["memory_plan"] = plan.to_dict()

    def _fit_trained(self, samples: list[Sample], checkpoint_dir: str | Path | None) -> None:
        """STPM's student, DRAEM's two sub-networks or the diffusion denoiser (and student), trained on the views."""
        cfg = self.config
        model = self.model
        name = cfg.model.upper()
        items = [it for i, s in track(list(enumerate(samples)), f"{cfg.model} data")
                 for it in self._items_of_sample(i, s)]
        if len({it.target.shape for it in items}) != 1:
            raise AnomalyConfigError(f"{name} training needs images of one size; set crop or image_size")
        targets = to_tensor([it.target for it in items])
        refs = to_tensor([it.reference for it in items]) if self.needs_reference else None  # type: ignore[misc]
        if isinstance(model, DRAEMModel):
            self.history.update(train_draem(model, targets, refs, cfg, checkpoint_dir))
        elif isinstance(model, DiffusionModel):
            self.history.update(train_diffusion(model, targets, refs, cfg, checkpoint_dir))
            if model.student is not None:
                self.history.update(distill_student(model, targets, refs, cfg, checkpoint_dir))
        else:
            assert isinstance(model, STPMModel)
            if cfg.teacher_finetune_epochs:  # on the images the teacher will see: the targets or the references
                seen = refs if cfg.stpm_mode == "template" and refs is not None else targets
                self.history.update(tune_teacher(model, seen, cfg, checkpoint_dir))
            self.history.update(train_student(model, targets, refs, cfg, checkpoint_dir))

    # ----- prediction -----------------------------------------------------------------------
    @torch.no_grad()
    def score(self, data: Any, keep_images: bool = False,
              alignments: Sequence[dict[int, Alignment]] | None = None, progress: bool = True) -> AnomalyResult:
        """Scores, maps and the ground truth of ``data`` (SampleDataset, list of Samples, Batch).

        ``alignments``: one ``{index: Alignment}`` per sample, reused instead of registering again.
        """
        self.model.eval()
        listed = list(samples_of(data))
        samples_meta: dict[int, Sample] = dict(listed)
        empty = [s.sample_id for s in samples_meta.values() if not s.targets]
        if empty:
            raise AnomalyConfigError(f"{len(empty)} sample(s) have no target view to score (first: {empty[0]!r})")

        def items() -> Iterator[Item]:
            for i, s in track(listed, "anomaly scoring") if progress else listed:
                yield from self._items_of_sample(i, s, None if alignments is None else alignments[i])

        cfg = self.config
        separate = self.separate_score_maps
        collector = MapCollector(samples_meta, mean=cfg.view_combine == "mean", top_k=cfg.top_k,
                                 ragged=cfg.resize == "keep_aspect" and cfg.image_size is not None, separate=separate)
        bank_rows = int(self.model.bank.shape[0]) if isinstance(self.model, PatchCoreModel) else None
        # bank_per_group: each sample's bank, found (or refused) before any image is scored
        bank_of = None if self.bank_groups is None else {
            i: self.bank_groups.index(s.metadata, s.sample_id) for i, s in samples_meta.items()}
        planned, plan = self._planned(items(), bank_rows)
        for batch_items, t, r in batches(planned, cfg.batch_size if plan is None else plan.batch_size):
            if bank_of is None:
                raw = self.model.raw_maps(t, r)
            else:  # each image searches its own group's bank
                assert isinstance(self.model, PatchCoreModel)
                raw = self.model.raw_maps(t, r, [bank_of[it.sample_index] for it in batch_items])
            m = self.model.postprocess(raw)[:, 0].numpy()
            sm = self.model.postprocess(raw, cfg.score_dilation, cfg.score_sigma)[:, 0].numpy() if separate else m
            for it, mi, si in zip(batch_items, m, sm, strict=True):
                image = it.target if keep_images and not collector.has_image(it.sample_index) else None
                if it.box is not None and it.native is not None:  # keep_aspect: back to the native size
                    mi = unletterbox(mi, it.box, it.native)
                    si = unletterbox(si, it.box, it.native) if separate else mi
                    image = None if image is None else unletterbox(image, it.box, it.native)
                collector.add(it.sample_index, mi, si if separate else None, it.mask, image)
        res = collector.result()
        if self.score_groups is not None:  # comparable across groups (score_groups.py); raw kept beside
            res.raw_scores = res.scores
            res.scores = normalise(res.scores, res.metadata, self.score_groups, res.sample_ids)
        return res

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
        return write_model(directory, self.model, {
            "config": self.config.model_dump(), "threshold": self.threshold,
            "normal_score_range": self.normal_score_range, "score_groups": self.score_groups,
            "bank_groups": None if self.bank_groups is None else self.bank_groups.to_dict(),
            "history": self.history,
            "custom_backbone": self._custom_backbone is not None})

    @classmethod
    def load(cls, directory: str | Path, backbone: nn.Module | None = None) -> AnomalyDetector:
        """Load a saved detector; pass ``backbone`` (same architecture) if it was fitted with a custom one."""
        meta = read_meta(directory, has_backbone=backbone is not None)
        det = cls.__new__(cls)
        saved = dict(meta["config"]) if isinstance(meta.get("config"), dict) else {}
        # models saved before these settings existed scored with their then-behaviour: keep it
        saved.setdefault("fill_border", False)
        saved.setdefault("match_radius", 1)
        det.config = validate_config(saved, f"{Path(directory) / 'config.json'}: invalid saved config")
        det._custom_backbone = backbone
        det.model = det._build(pretrained=False)  # weights come from the file, not the packages
        read_weights(directory, det.model)
        if isinstance(det.model, DiffusionModel):  # a saved student was trained: it scores, as after fit
            det.model.use_student = det.model.student is not None
        det.threshold = meta.get("threshold")
        rng = meta.get("normal_score_range")
        det.normal_score_range = None if rng is None else (float(rng[0]), float(rng[1]))
        det.score_groups = meta.get("score_groups")
        det.bank_groups = BankGroups.from_dict(meta["bank_groups"]) if meta.get("bank_groups") else None
        if det.bank_groups is not None and isinstance(det.model, PatchCoreModel):
            det.model.group_bounds = det.bank_groups.bounds
        det.history = meta.get("history", {})
        return det

"""Student-Teacher Feature Pyramid Matching (STPM, Wang et al. 2021), classic and template-conditioned.

Pure PyTorch (training loop in :mod:`seminspect.models.anomaly.detector`).

- ``mode="classic"``: teacher and student both see the target; the student, trained on normal
  images only, fails to reproduce the teacher's features where the target is abnormal.
- ``mode="template"``: the teacher sees the registered *reference* die, the student the target.
  The student learns to predict the defect-free reference's features from the target; on a
  defect the target differs from the reference and the prediction misses. The user's own study
  found this far better than the reverse (AP 0.93 vs 0.79).

Per-layer discrepancy ``0.5 * ||norm(s) - norm(t)||^2`` (features L2-normalised over channels),
upsampled to the image size, weighted over layers (layers 1-3 by default), Gaussian-smoothed,
optionally multiplied by a centre prior. The student uses reflect padding in its convolutions.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from seminspect.models.anomaly.features import (
    AnomalyMapModel,
    freeze,
    set_reflect_padding,
)

MODES = ("classic", "template")
LOSSES = ("l2", "huber")


class STPMModel(AnomalyMapModel):
    """Teacher (frozen, pretrained) and student (same architecture, from scratch).

    Args:
        teacher: frozen backbone returning a list of maps.
        student: backbone of the same architecture (trainable); reflect padding is switched on.
        mode: ``"classic"`` or ``"template"``.
        layer_weights: weight of each returned map in the anomaly map (and the loss).
        loss: ``"l2"`` (STPM) or ``"huber"`` (smooth L1 on normalised features, robust to outliers).
        map_dilation: local-max window (image pixels) applied to the map before smoothing; 0/1 = off.
        sigma: Gaussian smoothing in image pixels; ``top_k``: image score = mean of top-k pixels.
        centre_sigma: if > 0, centre prior width as a fraction of the image size.
    """

    def __init__(self, teacher: nn.Module, student: nn.Module, mode: str = "template",
                 layer_weights: Sequence[float] = (1.0, 1.0, 1.0), loss: str = "l2", sigma: float = 4.0,
                 top_k: int = 1, centre_sigma: float = 0.0, reflect_padding: bool = True, huber_delta: float = 0.1,
                 map_dilation: int = 0):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"STPM mode must be one of {MODES}, got {mode!r}")
        if loss not in LOSSES:
            raise ValueError(f"STPM loss must be one of {LOSSES}, got {loss!r}")
        self.teacher = freeze(teacher)
        self.student = student
        if reflect_padding:
            set_reflect_padding(self.student)
        self.mode = mode
        self.layer_weights = tuple(float(w) for w in layer_weights)
        if len(self.layer_weights) != len(teacher.feature_info):
            raise ValueError(f"{len(self.layer_weights)} layer weights for {len(teacher.feature_info)} feature maps")
        self.loss_kind = loss
        self.huber_delta = huber_delta
        self.sigma = sigma
        self.map_dilation = map_dilation
        self.top_k = top_k
        self.centre_sigma = centre_sigma

    def train(self, mode: bool = True) -> STPMModel:
        super().train(mode)
        self.teacher.eval()  # frozen BatchNorm statistics
        return self

    def _pairs(self, target: torch.Tensor, reference: torch.Tensor | None) -> tuple[list, list]:
        if self.mode == "template":
            if reference is None:
                raise ValueError("template-conditioned STPM needs the registered reference image")
            teacher_in = reference
        else:
            teacher_in = target
        with torch.no_grad():
            t_feats = self.teacher(teacher_in)
        s_feats = self.student(target)
        return t_feats, s_feats

    def loss(self, target: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
        """Scalar training loss on a batch of normal images ``(N, 1, H, W)``."""
        t_feats, s_feats = self._pairs(target, reference)
        total = target.new_zeros(())
        for w, t, s in zip(self.layer_weights, t_feats, s_feats, strict=True):
            if w == 0:
                continue
            t = F.normalize(t, dim=1)
            s = F.normalize(s, dim=1)
            if self.loss_kind == "l2":
                layer = 0.5 * (t - s).pow(2).sum(1).mean()
            else:
                layer = F.smooth_l1_loss(s, t, beta=self.huber_delta, reduction="none").sum(1).mean()
            total = total + w * layer
        return total

    @torch.no_grad()
    def raw_maps(self, target: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
        """``(N, 1, H, W)`` weighted teacher-student distances upsampled to the image, before post-processing."""
        t_feats, s_feats = self._pairs(target, reference)
        size = target.shape[-2:]
        maps = target.new_zeros(target.shape[0], 1, *size)
        for w, t, s in zip(self.layer_weights, t_feats, s_feats, strict=True):
            if w == 0:
                continue
            d = 0.5 * (F.normalize(t, dim=1) - F.normalize(s, dim=1)).pow(2).sum(1, keepdim=True)
            maps = maps + w * F.interpolate(d, size=size, mode="bilinear", align_corners=False)
        return maps

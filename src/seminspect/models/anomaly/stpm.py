"""Student-Teacher Feature Pyramid Matching (STPM, Wang et al. 2021), classic and template-conditioned.

Pure PyTorch (training loop in :mod:`seminspect.models.anomaly.detector`).

- ``mode="classic"``: teacher and student both see the target; the student, trained on normal
  images only, fails to reproduce the teacher's features where the target is abnormal.
- ``mode="template"``: the teacher sees the registered *reference* die, the student the target.
  The student learns to predict the defect-free reference's features from the target; on a
  defect the target differs from the reference and the prediction misses. The user's own study
  found this far better than the reverse (AP 0.93 vs 0.79).
- ``mode="template_student"``: that reverse (teacher sees the target, student the reference), kept
  so the study's comparison can be measured.

Per-layer discrepancy ``0.5 * ||norm(s) - norm(t)||^2`` (features L2-normalised over channels),
upsampled to the image size, weighted over layers (layers 1-3 by default), Gaussian-smoothed,
optionally multiplied by a centre prior. The student's convolutions pad by reflection (default),
with zeros, or with a constant value (:func:`set_padding`).

The student is by default the teacher's architecture; :func:`mixed_student` builds one of another
backbone ("mixed pair", ``student_backbone``) whose maps have the teacher's reductions, with a
trainable 1x1 convolution per layer (:class:`AdaptedStudent`) where the channel counts differ.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from seminspect.models.anomaly.features import (
    AnomalyConfigError,
    AnomalyMapModel,
    build_backbone,
    freeze,
    set_reflect_padding,
)

MODES = ("classic", "template", "template_student")
LOSSES = ("l2", "huber", "cosine")
PADDINGS = ("reflect", "zeros", "constant")


class _ConstantPadConv2d(nn.Conv2d):
    """A ``Conv2d`` that pads its input with ``pad_value`` instead of zeros (same parameters, same state dict)."""

    pad_value: float = 0.0

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        padded = F.pad(input, self._reversed_padding_repeated_twice, mode="constant", value=self.pad_value)
        return F.conv2d(padded, weight, bias, self.stride, 0, self.dilation, self.groups)


def set_padding(module: nn.Module, mode: str, value: float = 0.0) -> int:
    """Make every padded plain ``Conv2d`` of ``module`` pad by ``mode`` (one of :data:`PADDINGS`); the count.

    ``constant`` swaps the layer's class for :class:`_ConstantPadConv2d` (weights untouched), since
    ``Conv2d`` itself pads only with zeros or by copying pixels.
    """
    if mode not in PADDINGS:
        raise ValueError(f"STPM padding must be one of {PADDINGS}, got {mode!r}")
    if mode == "reflect":
        return set_reflect_padding(module)
    count = 0
    for m in module.modules():
        if type(m) in (nn.Conv2d, _ConstantPadConv2d) and m.padding != "valid" and any(
                p > 0 for p in m._reversed_padding_repeated_twice):
            m.padding_mode = "zeros"
            if mode == "constant":
                m.__class__ = _ConstantPadConv2d
                m.pad_value = float(value)
            count += 1
    return count


class AdaptedStudent(nn.Module):
    """A student backbone whose maps are mapped onto the teacher's channel counts by 1x1 convolutions.

    ``adapters[i]`` is a trainable ``Conv2d(C_student_i, C_teacher_i, 1)`` where the counts differ and
    ``Identity`` where they agree; the adapters are part of the student (trained, saved and
    checkpointed with it). ``feature_info`` is the backbone's with the teacher's channel counts.
    """

    def __init__(self, backbone: nn.Module, channels: Sequence[int]):
        super().__init__()
        own = [int(f["num_chs"]) for f in backbone.feature_info]
        self.backbone = backbone
        self.adapters = nn.ModuleList(nn.Identity() if s == t else nn.Conv2d(s, int(t), 1)
                                      for s, t in zip(own, channels, strict=True))
        self.feature_info = [{**f, "num_chs": int(t)} for f, t in zip(backbone.feature_info, channels, strict=True)]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [a(f) for a, f in zip(self.adapters, self.backbone(x), strict=True)]


def pair_student(teacher: nn.Module, student: nn.Module, teacher_name: str, student_name: str) -> nn.Module:
    """``student``, checked to give the teacher's map sizes, with adapters where the channel counts differ.

    Raises :class:`AnomalyConfigError` (one line naming both backbones) when the number of maps or the
    reductions of the used layers differ: the teacher-student distance is taken cell by cell.
    """
    t_info, s_info = list(teacher.feature_info), list(student.feature_info)
    t_red = [int(f["reduction"]) for f in t_info]
    s_red = [int(f["reduction"]) for f in s_info]
    if t_red != s_red:
        raise AnomalyConfigError(
            f"student_backbone {student_name!r} does not fit backbone {teacher_name!r}: its maps have reductions "
            f"{s_red}, the teacher's {t_red}; a student needs the teacher's reductions at every used layer")
    t_chs = [int(f["num_chs"]) for f in t_info]
    if [int(f["num_chs"]) for f in s_info] == t_chs:
        return student
    return AdaptedStudent(student, t_chs)


def mixed_student(teacher: nn.Module, name: str, teacher_name: str, out_indices: Sequence[int],
                  seed: int) -> nn.Module:
    """A from-scratch student of backbone ``name`` for ``teacher`` (:func:`pair_student`), initialised from ``seed``.

    The backbone and any adapters are drawn from their own generator seeded with ``seed`` (the
    global one is left as it was), so the config alone reproduces the student.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        student = build_backbone(name, pretrained=False, out_indices=out_indices, seed=seed)
        return pair_student(teacher, student, teacher_name, name)


class STPMModel(AnomalyMapModel):
    """Teacher (frozen, pretrained) and student (by default the same architecture, from scratch).

    Args:
        teacher: frozen backbone returning a list of maps.
        student: trainable module returning maps of the teacher's sizes and channels: a backbone of the
            same architecture, or another one wrapped by :func:`pair_student`; its padding is set by ``padding``.
        mode: ``"classic"``, ``"template"`` or ``"template_student"``.
        layer_weights: weight of each returned map in the anomaly map (and the loss).
        loss: ``"l2"`` (STPM: on channel-normalised features per location, i.e. ``1 - cos`` per location),
            ``"huber"`` (smooth L1 on normalised features, robust to outliers) or ``"cosine"`` (``1 - cos``
            of the whole raw layer flattened per image: a global constraint, as ReContrast's).
        padding, padding_value: the student's convolution padding (:func:`set_padding`).
        map_dilation: local-max window (image pixels) applied to the map before smoothing; 0/1 = off.
        sigma: Gaussian smoothing in image pixels; ``top_k``: image score = mean of top-k pixels.
        centre_sigma: if > 0, centre prior width as a fraction of the image size.
    """

    def __init__(self, teacher: nn.Module, student: nn.Module, mode: str = "template",
                 layer_weights: Sequence[float] = (1.0, 1.0, 1.0), loss: str = "l2", sigma: float = 4.0,
                 top_k: int = 1, centre_sigma: float = 0.0, padding: str = "reflect", huber_delta: float = 0.1,
                 map_dilation: int = 0, padding_value: float = 0.0):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"STPM mode must be one of {MODES}, got {mode!r}")
        if loss not in LOSSES:
            raise ValueError(f"STPM loss must be one of {LOSSES}, got {loss!r}")
        self.teacher = freeze(teacher)
        self.student = student
        set_padding(self.student, padding, padding_value)
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
        teacher_in, student_in = target, target
        if self.mode != "classic":
            if reference is None:
                raise ValueError(f"STPM mode {self.mode!r} needs the registered reference image")
            if self.mode == "template":
                teacher_in = reference
            else:
                student_in = reference
        with torch.no_grad():
            t_feats = self.teacher(teacher_in)
        s_feats = self.student(student_in)
        return t_feats, s_feats

    def loss(self, target: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
        """Scalar training loss on a batch of normal images ``(N, 1, H, W)``."""
        t_feats, s_feats = self._pairs(target, reference)
        total = target.new_zeros(())
        for w, t, s in zip(self.layer_weights, t_feats, s_feats, strict=True):
            if w == 0:
                continue
            if self.loss_kind == "cosine":  # on raw features: on normalised ones it would equal l2
                total = total + w * (1 - F.cosine_similarity(s.flatten(1), t.flatten(1), dim=1)).mean()
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

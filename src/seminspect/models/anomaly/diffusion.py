"""Diffusion reconstruction (DDPM / DDIM, in the spirit of AnoDDPM and ChipDiffusion) and its one-pass student.

Pure PyTorch (training loop, distillation and checkpoints in
:mod:`seminspect.models.anomaly.diffusion_fit`).

- A small U-Net **denoiser** (DRAEM's :class:`~seminspect.models.anomaly.draem.UNet`; the noise
  level enters as a constant input channel) predicts the *clean* image ``x0`` from a noised one.
  Trained on normal images and on pseudo-defect images whose target is their clean version, so
  that restoring removes a defect.
- Inference noises the input to an intermediate level ``start`` (a fraction of the ``steps`` of a
  cosine schedule) with one fixed, seeded noise pattern, then takes ``sample_steps`` deterministic
  DDIM steps back to ``t = 0``. The map is the residual between the input and its restoration.
- The **student** (optional, ``student_width > 0``) is a U-Net that maps the input straight to
  the denoiser's restoration in one forward pass; once trained, ``use_student`` makes it the scorer.
- ``reference=True``: the registered reference die is an extra input channel of both networks.

Images ``(N, 1, H, W)`` float32 in [0, 1], any size (reflect-padded to a multiple of ``2 ** depth``).
"""

from __future__ import annotations

import math

import torch

from seminspect.models.anomaly.draem import UNet, pad_to_multiple
from seminspect.models.anomaly.features import AnomalyMapModel


def cosine_alpha_bar(steps: int) -> torch.Tensor:
    """``(steps + 1,)`` cumulative signal fraction of the cosine schedule (Nichol & Dhariwal), 1 at t = 0."""
    t = torch.arange(steps + 1, dtype=torch.float64) / steps
    f = torch.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
    return (f / f[0]).clamp(1e-5, 1.0).float()


class DiffusionModel(AnomalyMapModel):
    """Denoiser (+ optional student); the map is ``|input - restoration|`` ``(N, 1, H, W)``.

    Args:
        width, depth: the denoiser U-Net (channels at full resolution, number of down-samplings).
        reference: the registered reference is an extra input channel.
        steps: length of the noise schedule; ``start``: inference starts at ``round(start * steps)``;
        sample_steps: DDIM steps from there to 0; ``seed``: the fixed inference noise.
        student_width: width of the one-pass student U-Net (0 = none).
        sigma, map_dilation, top_k, centre_sigma: the shared map post-processing (:class:`AnomalyMapModel`).
    """

    def __init__(self, width: int = 16, depth: int = 3, reference: bool = False, steps: int = 200,
                 start: float = 0.3, sample_steps: int = 4, student_width: int = 0, seed: int = 0,
                 sigma: float = 4.0, top_k: int = 1, centre_sigma: float = 0.0, map_dilation: int = 0):
        super().__init__()
        self.reference, self.depth, self.steps, self.seed = bool(reference), depth, int(steps), int(seed)
        self.t_start = max(1, min(self.steps, round(start * self.steps)))
        self.sample_steps = max(1, min(int(sample_steps), self.t_start))
        extra = 1 if reference else 0
        self.denoiser = UNet(2 + extra, 1, width, depth, skips=True)
        self.student = UNet(1 + extra, 1, student_width, depth, skips=True) if student_width else None
        self.use_student = False  # set once the student is trained (and by load when it exists)
        self.register_buffer("alpha_bar", cosine_alpha_bar(self.steps), persistent=False)
        self.sigma, self.top_k, self.centre_sigma, self.map_dilation = sigma, top_k, centre_sigma, map_dilation

    # ----- shapes ---------------------------------------------------------------------------
    def _check(self, target: torch.Tensor, reference: torch.Tensor | None) -> None:
        if target.ndim != 4 or target.shape[1] != 1:
            raise ValueError(f"the diffusion model takes (N, 1, H, W) images, got {tuple(target.shape)}")
        if min(target.shape[-2:]) < 2 ** self.depth:
            raise ValueError(f"the diffusion model needs images of at least {2 ** self.depth} px, "
                             f"got {tuple(target.shape[-2:])}")
        if self.reference and (reference is None or reference.shape != target.shape):
            raise ValueError("the reference-aware diffusion model needs the registered reference, same shape")

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` padded to a multiple of ``2 ** depth`` (the U-Nets' down-samplings)."""
        return pad_to_multiple(x, 2 ** self.depth)

    # ----- the denoiser ---------------------------------------------------------------------
    def predict_clean(self, noisy: torch.Tensor, t: torch.Tensor, reference: torch.Tensor | None) -> torch.Tensor:
        """Denoiser's ``x0`` estimate in [-1, 1] for ``noisy`` ``(N, 1, H, W)`` (padded) at levels ``t`` ``(N,)``."""
        level = (t.float() / self.steps).view(-1, 1, 1, 1).expand(-1, 1, *noisy.shape[-2:])
        parts = [noisy, level] + ([reference * 2 - 1] if self.reference and reference is not None else [])
        return torch.tanh(self.denoiser(torch.cat(parts, 1)))

    def noised(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """``x_t`` of ``x0`` in [-1, 1] at levels ``t`` ``(N,)``."""
        ab = self.alpha_bar[t].view(-1, 1, 1, 1)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def schedule(self) -> list[int]:
        """The inference levels, from ``t_start`` down to 0 (``sample_steps + 1`` values)."""
        levels = torch.linspace(self.t_start, 0, self.sample_steps + 1).round().long().tolist()
        return [int(v) for v in levels]

    @torch.no_grad()
    def restore_with_denoiser(self, target: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
        """The multi-step restoration ``(N, 1, H, W)`` in [0, 1] (deterministic DDIM from ``t_start``)."""
        self._check(target, reference)
        h, w = target.shape[-2:]
        x = self.pad(target) * 2 - 1
        ref = None if reference is None or not self.reference else self.pad(reference)
        gen = torch.Generator().manual_seed(self.seed)
        noise = torch.randn(1, 1, *x.shape[-2:], generator=gen).to(x.device).expand_as(x)
        levels = self.schedule()
        n = x.shape[0]
        xt = self.noised(x, torch.full((n,), levels[0], dtype=torch.long), noise)
        x0 = x
        for t, t_next in zip(levels[:-1], levels[1:], strict=True):
            x0 = self.predict_clean(xt, torch.full((n,), t, dtype=torch.long), ref)
            if t_next == 0:
                break
            ab, ab_next = self.alpha_bar[t], self.alpha_bar[t_next]
            eps = (xt - ab.sqrt() * x0) / (1 - ab).sqrt()
            xt = ab_next.sqrt() * x0 + (1 - ab_next).sqrt() * eps
        return ((x0 + 1) / 2)[..., :h, :w]

    # ----- the student ----------------------------------------------------------------------
    def student_restore(self, target: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
        """The student's one-pass restoration ``(N, 1, H, W)`` in [0, 1] (with gradients)."""
        if self.student is None:
            raise ValueError("this diffusion model has no student (student_width 0)")
        self._check(target, reference)
        h, w = target.shape[-2:]
        parts = [self.pad(target)] + ([self.pad(reference)] if self.reference and reference is not None else [])
        return torch.sigmoid(self.student(torch.cat(parts, 1)))[..., :h, :w]

    @torch.no_grad()
    def restore(self, target: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
        """The scorer's restoration: the student's when ``use_student``, else the denoiser's."""
        if self.use_student:
            return self.student_restore(target, reference)
        return self.restore_with_denoiser(target, reference)

    @torch.no_grad()
    def raw_maps(self, target: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
        """``(N, 1, H, W)`` absolute residual between the input and its restoration, before post-processing."""
        return (target - self.restore(target, reference)).abs()

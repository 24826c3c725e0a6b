"""What each step of depth training sees: the epoch's order and flips, acquisition mixes, the
learning-rate schedule and the weight average (EMA).

Deterministic for a seed: the order and flips of epoch ``e`` come from a generator seeded by
``(seed, e)``, so a run resumed from ``last.pt`` replays exactly the same batches.
"""

from __future__ import annotations

import math

import torch

from seminspect.training.depth_config import OptimSection


def _flip(
    x: torch.Tensor, code: torch.Tensor, lr_channels: list[int] | None = None, ud_channels: list[int] | None = None
) -> torch.Tensor:
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


def _intensity_aug(
    xb: torch.Tensor, seed: int, epoch: int, batch: int, strength: float, x_std: float
) -> torch.Tensor:
    """Brightness, contrast and noise changes of a batch ``(B, C, H, W)`` of normalised inputs.

    Per site: gain ``1 +- 0.2 strength`` about the site's mean, offset ``+- 0.1 strength`` and Gaussian
    noise of a standard deviation up to ``0.03 strength``, all in [0, 1] grey units (divided by
    ``x_std`` for the normalised inputs). Drawn from a generator seeded by ``(seed, epoch, batch)``.
    """
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch * 10_007 + batch + 15_485_863)
    b = xb.shape[0]
    gain = 1.0 + 0.2 * strength * (2 * torch.rand(b, 1, 1, 1, generator=g) - 1)
    offset = 0.1 * strength * (2 * torch.rand(b, 1, 1, 1, generator=g) - 1) / x_std
    sd = 0.03 * strength * torch.rand(b, 1, 1, 1, generator=g) / x_std
    mean = xb.mean(dim=(1, 2, 3), keepdim=True)
    noise = torch.randn(xb.shape, generator=g) * sd
    return (mean + gain * (xb - mean) + offset + noise).to(xb.dtype)


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

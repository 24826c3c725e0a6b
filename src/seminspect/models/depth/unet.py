"""U-Net generator: several SEM acquisitions of a site in, one depth map out.

Input ``(N, C, H, W)`` float32 (C = number of acquisitions stacked as channels, already
normalised by the caller), output ``(N, 1, H, W)`` float32 in the caller's normalised depth
units. Any ``H, W`` works: the input is reflect-padded up to a multiple of ``2**levels`` and the
output cropped back (the Samsung sites are 66x45). Convolutions use reflect padding so the
borders of a tiny image are not biased toward zero. Pure PyTorch; knows nothing of training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; expected batch, instance, group or none")


class ConvBlock(nn.Sequential):
    """Two 3x3 reflect-padded convolutions, each followed by a norm and a ReLU."""

    def __init__(self, in_ch: int, out_ch: int, norm: str = "batch") -> None:
        bias = norm == "none"
        super().__init__(
            nn.Conv2d(in_ch, out_ch, 3, padding=1, padding_mode="reflect", bias=bias),
            _norm(norm, out_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, padding=1, padding_mode="reflect", bias=bias),
            _norm(norm, out_ch),
            nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """U-Net with ``levels`` down/up steps and ``width`` channels at full resolution.

    Channels double at each level (capped at ``max_width``). Down-sampling is 2x2 max-pooling,
    up-sampling a 2x2 transposed convolution, skips are concatenated (Ronneberger et al. 2015).

    Args:
        in_channels: number of SEM acquisitions stacked as channels (1 or more).
        out_channels: depth maps predicted (1).
        levels: number of 2x down-samplings (0 = a plain conv net). Shallow (2) suits 66x45 sites.
        width: channels of the first block.
        norm: ``batch`` | ``instance`` | ``group`` | ``none``.
        max_width: channel cap for deep levels.
        global_context: add a site-wide context vector to the bottleneck (global average pool ->
            1x1 conv -> ReLU -> 1x1 conv, broadcast and added). A small U-Net sees only a local
            window, but the depth of a hole floor is a property of the whole site, and a per-site
            offset of the floor dominates its errors. On the Samsung sites this lowered the
            validation RMSE (docs/depth.md), though that offset is still the largest error left.
        floor_head: an explicit floor-depth head: one value per site and output channel from the
            pooled bottleneck (a linear layer), and a second decoder channel that gates it in per
            pixel: ``map = free + sigmoid(gate) * (floor - free)``. Pixels the gate assigns to the
            hole floor all take the one site-wide floor depth instead of each being regressed.
    """

    def __init__(self, in_channels: int = 4, out_channels: int = 1, levels: int = 2, width: int = 32,
                 norm: str = "batch", max_width: int = 512, global_context: bool = False,
                 floor_head: bool = False) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1 or levels < 0 or width < 1:
            raise ValueError("UNet needs in_channels, out_channels, width >= 1 and levels >= 0")
        self.in_channels, self.out_channels, self.levels, self.width = in_channels, out_channels, levels, width
        self.norm, self.max_width = norm, max_width
        chs = [min(width * 2**i, max_width) for i in range(levels + 1)]
        self.down = nn.ModuleList()
        prev = in_channels
        for ch in chs[:-1]:
            self.down.append(ConvBlock(prev, ch, norm))
            prev = ch
        self.bottleneck = ConvBlock(prev, chs[-1], norm)
        self.global_context = global_context
        self.context = nn.Sequential(nn.Conv2d(chs[-1], chs[-1], 1), nn.ReLU(inplace=True),
                                     nn.Conv2d(chs[-1], chs[-1], 1)) if global_context else None
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for i in reversed(range(levels)):
            self.up.append(nn.ConvTranspose2d(chs[i + 1], chs[i], 2, stride=2))
            self.dec.append(ConvBlock(2 * chs[i], chs[i], norm))
        self.floor_head = floor_head
        self.floor = nn.Linear(chs[-1], out_channels) if floor_head else None
        self.head = nn.Conv2d(chs[0], out_channels * (2 if floor_head else 1), 1)

    @property
    def multiple(self) -> int:
        return 2**self.levels

    def hparams(self) -> dict[str, int | str | bool]:
        """The constructor arguments: ``UNet(**net.hparams())`` builds the same architecture."""
        return {"in_channels": self.in_channels, "out_channels": self.out_channels, "levels": self.levels,
                "width": self.width, "norm": self.norm, "max_width": self.max_width,
                "global_context": self.global_context, "floor_head": self.floor_head}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> ``(N, out_channels, H, W)``."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"UNet expects (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        x = pad_to_multiple(x, self.multiple, minimum=2 * self.multiple)
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottleneck(x)
        if self.context is not None:
            x = x + self.context(x.mean(dim=(2, 3), keepdim=True))
        floor = self.floor(x.mean(dim=(2, 3))) if self.floor is not None else None
        for up, dec in zip(self.up, self.dec, strict=True):
            x = dec(torch.cat([up(x), skips.pop()], dim=1))
        y = self.head(x)
        if floor is not None:
            free, gate = y[:, :self.out_channels], torch.sigmoid(y[:, self.out_channels:])
            y = free + gate * (floor[..., None, None] - free)
        return y[..., :h, :w]


def pad_to_multiple(x: torch.Tensor, multiple: int, minimum: int = 1) -> torch.Tensor:
    """Pad bottom/right of ``(N, C, H, W)`` to a multiple of ``multiple`` and at least ``minimum``.

    Reflect padding where the image is large enough (it keeps the texture statistics of the
    border), replicate padding otherwise (reflect needs pad < size). ``minimum`` keeps the
    bottleneck at least 2x2, which the reflect-padded 3x3 convolutions need.
    """
    h, w = x.shape[-2:]
    ph = max((-h) % multiple, minimum - h)
    pw = max((-w) % multiple, minimum - w)
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)

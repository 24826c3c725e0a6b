"""CBAM (Woo et al. 2018): channel then spatial attention, for the ADC's channels-last grid maps.

    cbam = GridCBAM(dim=128)
    h = cbam(h)        # h (..., g, g, D) -> the same shape, each cell and channel gated in (0, 1)

The user's hierarchical-classification study carried a CBAM block on its ResNet50's maps. Here
the backbone is frozen and its pooled grids cached, so the block sits where the ADC's trainable
maps are: on each view's ``g x g`` die-compared grid (``MultiViewADC``'s ``pair`` output), before
the grid is pooled to a token. Channel attention: a shared two-layer MLP on the cells' mean and
max, summed, sigmoid. Spatial attention: a ``k x k`` convolution on the channels' mean and max
maps, sigmoid (``k = 3`` suits the 4-8 cell grids; the paper's 7 is for 7x7+ maps).
Touches torch only.
"""

from __future__ import annotations

import torch
from torch import nn


class GridCBAM(nn.Module):
    """Channel and spatial attention on ``(..., g, g, D)`` channels-last grids.

    Args:
        dim: channels ``D``.
        reduction: hidden width of the channel MLP is ``max(dim // reduction, 4)``.
        kernel: spatial attention kernel (odd).
    """

    def __init__(self, dim: int, reduction: int = 8, kernel: int = 3) -> None:
        super().__init__()
        if kernel % 2 != 1:
            raise ValueError(f"CBAM spatial kernel must be odd, got {kernel}")
        hidden = max(dim // reduction, 4)
        self.channel_mlp = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))
        self.spatial = nn.Conv2d(2, 1, kernel, padding=kernel // 2)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        lead, (g1, g2, d) = h.shape[:-3], h.shape[-3:]
        x = h.reshape(-1, g1, g2, d)
        gate_c = torch.sigmoid(self.channel_mlp(x.mean((1, 2))) + self.channel_mlp(x.amax((1, 2))))
        x = x * gate_c[:, None, None, :]
        stats = torch.stack([x.mean(-1), x.amax(-1)], dim=1)  # (N, 2, g, g)
        x = x * torch.sigmoid(self.spatial(stats)).squeeze(1)[..., None]
        return x.reshape(*lead, g1, g2, d)

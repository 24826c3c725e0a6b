"""PatchGAN discriminator conditioned on the SEM input (pix2pix, Isola et al. 2017).

It sees the SEM acquisitions and a depth map side by side, ``(N, C + 1, H, W)``, and returns
``(N, 1, H', W')`` logits: one real/fake verdict per overlapping patch. Judging patches, not
whole images, makes it push the generator toward sharp local structure (edges, trench walls),
which the L1 loss alone tends to blur.
"""

from __future__ import annotations

import torch
from torch import nn


class PatchGAN(nn.Module):
    """Conditional patch discriminator.

    Args:
        in_channels: SEM channels (the condition).
        depth_channels: depth maps judged (1).
        width: channels of the first layer (doubles per layer, capped at ``8 * width``).
        n_layers: strided 4x4 layers; receptive field 16 px for 2, 34 px for 3, 70 px for 4
            (the pix2pix default). Small sites (66x45) want 2.
    """

    def __init__(self, in_channels: int = 4, depth_channels: int = 1, width: int = 32, n_layers: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels + depth_channels, width, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        ch = width
        for i in range(1, n_layers + 1):
            nxt = min(width * 2**i, width * 8)
            stride = 2 if i < n_layers else 1
            layers += [
                nn.Conv2d(ch, nxt, 4, stride=stride, padding=1, bias=False),
                nn.InstanceNorm2d(nxt, affine=True),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            ch = nxt
        layers.append(nn.Conv2d(ch, 1, 4, stride=1, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, sem: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        """``sem (N, C, H, W)``, ``depth (N, 1, H, W)`` -> patch logits ``(N, 1, H', W')``."""
        return self.net(torch.cat([sem, depth], dim=1))

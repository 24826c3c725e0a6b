"""Average of several depth generators: ``(N, C, H, W)`` -> the mean of their ``(N, 1, H, W)`` outputs.

Members trained from different seeds memorise different training sites; their mean keeps what
they share. Pure PyTorch; the members are plain :class:`~seminspect.models.depth.unet.UNet`
modules, and :func:`build_generator` rebuilds either kind from its ``hparams()``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from seminspect.models.depth.unet import UNet


class UNetEnsemble(nn.Module):
    """Mean output of ``members`` (all with the same input channels)."""

    def __init__(self, members: list[UNet]) -> None:
        super().__init__()
        if not members:
            raise ValueError("UNetEnsemble needs at least one member")
        channels = {m.in_channels for m in members}
        if len(channels) != 1:
            raise ValueError(f"UNetEnsemble members take different input channels: {sorted(channels)}")
        self.members = nn.ModuleList(members)
        self.in_channels = members[0].in_channels

    def hparams(self) -> dict[str, Any]:
        """``build_generator(ens.hparams())`` builds the same architecture."""
        return {"members": [m.hparams() for m in self.members]}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> ``(N, 1, H, W)``: the members' mean."""
        return torch.stack([m(x) for m in self.members]).mean(dim=0)


def build_generator(spec: dict[str, Any]) -> UNet | UNetEnsemble:
    """A generator from its ``hparams()``: a :class:`UNet`, or a :class:`UNetEnsemble` (``{"members": [...]}``)."""
    if "members" in spec:
        return UNetEnsemble([UNet(**m) for m in spec["members"]])
    return UNet(**spec)

"""A small plain CNN trained from scratch: the no-pretraining baseline of the backbone comparison.

Five stages of (3x3 conv stride 2, BN, ReLU) + (3x3 conv, BN, ReLU): reductions 2..32, channels 16..256,
about 1.2 M parameters. It has no pretrained weights: ``pretrained=True`` raises `WeightsNotFoundError`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ._builder import FeatureBackbone
from ._registry import BackboneCfg, register_backbone

_CHANNELS = (16, 32, 64, 128, 256)


def _block(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, 2, 1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class SimpleCNN(nn.Module):
    """The full network: ``stages`` only (no classifier; the ADC heads sit on top of the features)."""

    def __init__(self, in_chans: int = 3) -> None:
        super().__init__()
        chans = (in_chans, *_CHANNELS)
        self.stages = nn.Sequential(*[_block(chans[i], chans[i + 1]) for i in range(len(_CHANNELS))])
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x)


class SimpleCNNFeatures(FeatureBackbone):
    def __init__(self, full: SimpleCNN, cfg: BackboneCfg, in_chans: int, out_indices: Sequence[int]) -> None:
        super().__init__(cfg, in_chans, out_indices)
        self.stages = nn.Sequential(*list(full.stages.children())[: self.out_indices[-1] + 1])
        self._take = set(self.out_indices)

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for idx, stage in enumerate(self.stages):
            x = stage(x)
            if idx in self._take:
                out.append(x)
        return out


_CFG = BackboneCfg(
    name="simple_cnn",
    family="simple_cnn",
    stages=tuple({"num_chs": c, "reduction": 2 ** (i + 1)} for i, c in enumerate(_CHANNELS)),
    stem_key="stages.0.0.weight",
    # Centre [0, 1] images around 0 with unit-ish spread; there is no pretraining to match.
    mean=(0.5, 0.5, 0.5),
    std=(0.25, 0.25, 0.25),
    weights=None,
    description="plain 10-layer CNN, random init (train from scratch)",
)


register_backbone(_CFG, full_model=SimpleCNN, features=SimpleCNNFeatures)

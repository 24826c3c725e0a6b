"""Shared machinery for building feature backbones: the base module, stem adaptation, weights loading.

`FeatureBackbone` is the module every constructor returns (normalisation inside, list of feature maps
out, `.feature_info`). `build_backbone` runs the common recipe: full architecture (RGB stem, classifier)
-> strict load of the package or user weights -> 1-channel (or N-channel) stem -> truncate to the
requested stages. Nothing here downloads anything.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._registry import BackboneCfg, BackboneError, WeightsNotFoundError, locate_weights


def adapt_input_conv(in_chans: int, conv_weight: torch.Tensor) -> torch.Tensor:
    """Turn an RGB stem weight ``(O, 3, kh, kw)`` into one for ``in_chans`` input channels (timm's recipe).

    1 channel: sum over colour, so a gray image gives the response the RGB net gives to that gray
    replicated in R, G and B. More channels: repeat RGB and rescale by ``3 / in_chans`` so that the
    activation scale is kept.
    """
    dtype = conv_weight.dtype
    w = conv_weight.float()
    out_ch, in_ch, kh, kw = w.shape
    if in_chans == in_ch:
        return conv_weight
    if in_ch != 3:
        raise BackboneError(f"cannot adapt a stem with {in_ch} input channels to {in_chans}")
    if in_chans == 1:
        w = w.sum(dim=1, keepdim=True)
    else:
        repeat = int(math.ceil(in_chans / 3))
        w = w.repeat(1, repeat, 1, 1)[:, :in_chans] * (3.0 / in_chans)
    return w.to(dtype)


def channel_stats(cfg: BackboneCfg, in_chans: int) -> tuple[list[float], list[float]]:
    """Per-channel mean/std for images in [0, 1]: RGB as configured, otherwise folded to gray averages."""
    if in_chans == 3:
        return list(cfg.mean), list(cfg.std)
    return [sum(cfg.mean) / 3] * in_chans, [sum(cfg.std) / 3] * in_chans


class FeatureBackbone(nn.Module):
    """Base of every backbone: ``forward(x (N, in_chans, H, W) float32 in [0, 1]) -> list of (N, C_i, H_i, W_i)``.

    Subclasses implement `forward_stages` on the normalised input and return the maps listed in
    ``out_indices``; ``H_i = ceil(H / reduction_i)`` for every registered backbone.
    """

    def __init__(self, cfg: BackboneCfg, in_chans: int, out_indices: Sequence[int]) -> None:
        super().__init__()
        self.name = cfg.name
        self.pretrained_cfg = cfg
        self.in_chans = in_chans
        self.out_indices = tuple(out_indices)
        self.feature_info = [dict(cfg.stages[i]) for i in self.out_indices]
        mean, std = channel_stats(cfg, in_chans)
        # Not persistent: a saved state dict holds only learned weights, with the architecture's key names.
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise BackboneError(
                f"{self.name}: expected input (N, {self.in_chans}, H, W), got {tuple(x.shape)}"
            )
        return self.forward_stages((x - self.mean) / self.std)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, in_chans={self.in_chans}, out_indices={self.out_indices}"


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a torch file (``weights_only=True``: no code is run)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd: Any = load_file(str(path), device="cpu")
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any read failure is the user's file's problem
        raise BackboneError(f"{path}: cannot read weights ({type(exc).__name__}: {exc})") from exc
    # Training checkpoints often wrap the state dict.
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise BackboneError(f"{path}: not a state dict (a mapping of parameter names to tensors)")
    return dict(sd)


def _key_report(expected: set[str], got: set[str]) -> str:
    missing = sorted(expected - got)
    unexpected = sorted(got - expected)
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
    return "; ".join(parts)


def _strict_load(module: nn.Module, sd: dict[str, torch.Tensor], source: str) -> None:
    try:
        module.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        raise BackboneError(f"{source}: weights do not fit the architecture: {exc}") from exc


def build_backbone(
    cfg: BackboneCfg,
    *,
    full_model_fn: Callable[[], nn.Module],
    features_fn: Callable[[nn.Module, int, tuple[int, ...]], FeatureBackbone],
    pretrained: bool,
    in_chans: int,
    out_indices: Sequence[int],
    weights_path: str | Path | None,
) -> FeatureBackbone:
    """The common recipe; ``full_model_fn`` builds the whole RGB network, ``features_fn`` cuts it down.

    Weights, in order of precedence: ``weights_path`` (a state dict with the full architecture's key
    names, RGB stem; or the state dict of a backbone built with the same ``in_chans``/``out_indices``),
    else the package weights when ``pretrained``, else random initialisation. Loading is strict.
    """
    if in_chans < 1:
        raise BackboneError(f"in_chans must be >= 1, got {in_chans}")
    out_indices = tuple(int(i) for i in out_indices)
    if not out_indices or any(i < 0 or i >= len(cfg.stages) for i in out_indices):
        raise BackboneError(
            f"{cfg.name}: out_indices {out_indices} out of range; stages 0..{len(cfg.stages) - 1} are "
            + ", ".join(f"{i}: {s['num_chs']}ch/{s['reduction']}" for i, s in enumerate(cfg.stages))
        )
    if list(out_indices) != sorted(set(out_indices)):
        raise BackboneError(f"{cfg.name}: out_indices must be increasing and unique, got {out_indices}")

    sd: dict[str, torch.Tensor] | None = None
    source = ""
    if weights_path is not None:
        sd, source = load_state_dict_file(weights_path), str(weights_path)
    elif pretrained:
        path = locate_weights(cfg)
        sd, source = load_state_dict_file(path), str(path)

    full = full_model_fn()
    own_form = False
    if sd is not None:
        full_keys = set(full.state_dict())
        if set(sd) == full_keys:
            _strict_load(full, sd, source)
        else:
            own_form = True
    stem = full.get_submodule(cfg.stem_key.rsplit(".", 1)[0])
    if not isinstance(stem, nn.Conv2d):
        raise BackboneError(f"{cfg.name}: stem_key {cfg.stem_key!r} is not a convolution")  # a registry bug
    if in_chans != stem.in_channels:
        with torch.no_grad():
            new_w = adapt_input_conv(in_chans, stem.weight.detach())
        stem.weight = nn.Parameter(new_w)
        stem.in_channels = in_chans
    backbone = features_fn(full, in_chans, out_indices)
    if own_form:
        assert sd is not None
        own_keys = set(backbone.state_dict())
        if set(sd) != own_keys:
            raise BackboneError(
                f"{source}: keys fit neither the full {cfg.name} architecture nor a {cfg.name} backbone with "
                f"in_chans={in_chans}, out_indices={out_indices}; "
                f"vs the full architecture: {_key_report(set(full.state_dict()), set(sd))}"
            )
        _strict_load(backbone, sd, source)
    return backbone.eval()

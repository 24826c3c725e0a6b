"""Backbones and patch features shared by the anomaly models (pure PyTorch, no fitting logic).

Backbones come from :func:`seminspect.models.backbones.create_backbone` (pretrained ImageNet
weights shipped in packages). ``"tiny"`` names a small seeded random conv stack,
:class:`TinyConvBackbone`, used by tests and as a dependency-free fallback: random conv features
are a reasonable texture descriptor for PatchCore, and it doubles as a from-scratch student.

All image tensors are ``(N, 1, H, W)`` float32 in [0, 1]; the backbone normalises internally.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from seminspect.errors import SeminspectError


class AnomalyConfigError(SeminspectError, ValueError):
    """An anomaly-model setting or saved model is invalid."""


class TinyConvBackbone(nn.Module):
    """Four stride-2 conv stages (reductions 2, 4, 8, 16); returns the stages in ``out_indices``.

    Mirrors the ``create_backbone`` interface (list of maps, ``feature_info``). Initialised from
    ``seed`` so that a config alone reproduces it.
    """

    def __init__(self, in_chans: int = 1, out_indices: Sequence[int] = (1, 2, 3), width: int = 16, seed: int = 0):
        super().__init__()
        with torch.random.fork_rng(devices=[]):  # the global generator is left as it was
            torch.manual_seed(seed)
            chans = [width, width * 2, width * 4, width * 4]
            stages = []
            prev = in_chans
            for ch in chans:
                stages.append(nn.Sequential(
                    nn.Conv2d(prev, ch, 3, stride=2, padding=1), nn.BatchNorm2d(ch), nn.ReLU(inplace=True),
                    nn.Conv2d(ch, ch, 3, padding=1), nn.BatchNorm2d(ch), nn.ReLU(inplace=True),
                ))
                prev = ch
        self.stages = nn.ModuleList(stages)
        self.out_indices = tuple(int(i) for i in out_indices)
        if any(i < 0 or i >= len(stages) for i in self.out_indices):
            raise AnomalyConfigError(f"tiny backbone has stages 0..{len(stages) - 1}, got out_indices {out_indices}")
        self.feature_info = [{"num_chs": chans[i], "reduction": 2 ** (i + 1)} for i in self.out_indices]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - 0.5) / 0.25  # the same fixed normalisation for every call
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.out_indices:
                outs.append(x)
            if i >= max(self.out_indices):
                break
        return outs


def build_backbone(name: str, pretrained: bool = True, out_indices: Sequence[int] = (1, 2, 3),
                   weights_path: str | None = None, seed: int = 0) -> nn.Module:
    """A feature backbone by name: ``"tiny"`` or any name known to ``create_backbone``."""
    if name == "tiny":
        return TinyConvBackbone(out_indices=out_indices, seed=seed)
    try:
        from seminspect.models.backbones import create_backbone
    except ImportError as exc:  # the backbones package is built by another part of the project
        raise AnomalyConfigError(
            f"backbone {name!r} needs seminspect.models.backbones.create_backbone, which is not available "
            f"({exc}); use backbone 'tiny'"
        ) from None
    return create_backbone(name, pretrained=pretrained, in_chans=1, out_indices=tuple(out_indices),
                           weights_path=weights_path)


def set_reflect_padding(module: nn.Module) -> int:
    """Switch every padded ``Conv2d`` to reflect padding (fewer border artefacts); returns the count."""
    count = 0
    for m in module.modules():
        if isinstance(m, nn.Conv2d) and any(p > 0 for p in _pair(m.padding)):
            m.padding_mode = "reflect"
            count += 1
    return count


def _pair(p: Any) -> tuple[int, ...]:
    return tuple(p) if isinstance(p, tuple | list) else (p, p)


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode, no gradients, weights in channels-last layout (MobileNetV2 at 256 px on 2 cores: 15 ms
    per image instead of 30, same outputs to 1e-5; the inputs need no conversion)."""
    module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def local_pool(feature: torch.Tensor, size: int) -> torch.Tensor:
    """Local average over a ``size x size`` neighbourhood (stride 1, same size): patch context."""
    if size <= 1:
        return feature
    return F.avg_pool2d(feature, size, stride=1, padding=size // 2, count_include_pad=False)


def patch_embedding(maps: Sequence[torch.Tensor], layers: Sequence[int], pool: int = 3) -> torch.Tensor:
    """Combine backbone maps into one ``(N, C, h, w)`` patch map at the finest chosen layer's grid.

    Each chosen map is locally averaged, resized (bilinear) to the first chosen layer's size and
    L2-normalised per layer so no layer dominates by scale; channels are concatenated.
    """
    chosen = [maps[i] for i in layers]
    size = chosen[0].shape[-2:]
    out = []
    for f in chosen:
        f = local_pool(f, pool)
        if f.shape[-2:] != size:
            f = F.interpolate(f, size=size, mode="bilinear", align_corners=False)
        out.append(F.normalize(f, dim=1) * (f.shape[1] ** 0.5 / 8.0))
    return torch.cat(out, dim=1)


def best_local_match(target: torch.Tensor, reference: torch.Tensor, radius: int = 1) -> torch.Tensor:
    """For each target position, the reference feature within ``radius`` cells closest to it.

    ``target``, ``reference``: ``(N, C, h, w)``. Searching a small window absorbs the sub-cell
    misalignment left after registration, so normal structure cancels and only real differences
    remain in ``target - best_local_match(...)``.
    """
    if radius <= 0:
        return reference
    n, c, h, w = reference.shape
    padded = F.pad(reference, (radius,) * 4, mode="replicate")
    best = reference
    best_d = (target - reference).pow(2).sum(1, keepdim=True)
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            cand = padded[:, :, dy:dy + h, dx:dx + w]
            d = (target - cand).pow(2).sum(1, keepdim=True)
            better = d < best_d
            best = torch.where(better, cand, best)
            best_d = torch.where(better, d, best_d)
    return best


#: largest map side smoothed by matrix products (two ``n x n`` matrices); larger maps use 1-D convolutions
DENSE_BLUR_MAX = 2048


def _gaussian_kernel(sigma: float, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, int]:
    """The normalised 1-D Gaussian of :func:`gaussian_blur` (``2 radius + 1`` taps, radius ``round(4 sigma)``)."""
    radius = max(1, int(round(4 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=dtype)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum(), radius


@functools.lru_cache(maxsize=16)
def _blur_matrix(n: int, sigma: float) -> torch.Tensor:
    """``(n, n)`` float32 matrix of the 1-D Gaussian of :func:`gaussian_blur` along one axis, reflect borders
    folded in (the taps that fall outside are added to the pixel they reflect onto)."""
    k, radius = _gaussian_kernel(sigma, torch.float64)
    pad = min(radius, n - 1)
    k = k[radius - pad: radius + pad + 1]
    rows = torch.arange(n)[:, None].expand(n, 2 * pad + 1)
    cols = (rows + torch.arange(-pad, pad + 1)[None]).abs()  # reflect at 0
    cols = torch.where(cols > n - 1, 2 * (n - 1) - cols, cols)  # and at n - 1
    m = torch.zeros(n, n, dtype=torch.float64)
    m.index_put_((rows.reshape(-1), cols.reshape(-1)), k.repeat(n), accumulate=True)
    return m.float()


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian smoothing of ``(N, 1, H, W)`` maps (reflect borders).

    Up to ``DENSE_BLUR_MAX`` px a side it is two matrix products (``Ky @ map @ Kx^T``: 14x faster than
    1-D convolutions at 256 px on 2 cores, 6x at 640 px, equal within 4e-7); beyond, 1-D convolutions.
    """
    if sigma <= 0:
        return maps
    h, w = maps.shape[-2:]
    if max(h, w) <= DENSE_BLUR_MAX:
        ky, kx = _blur_matrix(h, float(sigma)), _blur_matrix(w, float(sigma))
        return ky.to(maps) @ maps @ kx.to(maps).t()
    k, radius = _gaussian_kernel(sigma, maps.dtype)
    k = k.to(maps.device)
    pad_y, pad_x = min(radius, h - 1), min(radius, w - 1)
    out = F.pad(maps, (0, 0, pad_y, pad_y), mode="reflect") if pad_y else maps
    ky = k[radius - pad_y: radius + pad_y + 1]
    out = F.conv2d(out, ky.view(1, 1, -1, 1))
    out = F.pad(out, (pad_x, pad_x, 0, 0), mode="reflect") if pad_x else out
    kx = k[radius - pad_x: radius + pad_x + 1]
    return F.conv2d(out, kx.view(1, 1, 1, -1))


def dilate_map(maps: torch.Tensor, size: int) -> torch.Tensor:
    """Grey dilation (local max over a ``size x size`` window, stride 1, same size) of ``(N, 1, H, W)`` maps.

    Spreads each peak over the window before smoothing, so a map covers the whole extent of a
    defect region rather than only its most different patch: where ground truth is given as boxes
    (DeepPCB) this is what pixel AUROC rewards. ``size <= 1`` returns the maps unchanged; an even
    size is rounded up to the next odd one (a centred window).
    """
    if size <= 1:
        return maps
    k = size | 1
    return F.max_pool2d(maps, k, stride=1, padding=k // 2)


def centre_prior(size: tuple[int, int], sigma_frac: float, floor: float = 0.3) -> torch.Tensor:
    """``(H, W)`` weight in [floor, 1]: a Gaussian bump at the image centre.

    Review-SEM sites are centred on the suspected defect, so an anomaly near the centre matters more
    than one at the border; ``floor`` keeps off-centre anomalies visible.
    """
    h, w = size
    yy = (torch.arange(h, dtype=torch.float32) - (h - 1) / 2) / (sigma_frac * h)
    xx = (torch.arange(w, dtype=torch.float32) - (w - 1) / 2) / (sigma_frac * w)
    g = torch.exp(-0.5 * (yy[:, None] ** 2 + xx[None, :] ** 2))
    return floor + (1.0 - floor) * g


def postprocess_maps(maps: torch.Tensor, dilation: int, sigma: float, centre_sigma: float) -> torch.Tensor:
    """Raw ``(N, 1, H, W)`` maps -> local max over ``dilation`` px, Gaussian ``sigma`` px, centre prior."""
    maps = gaussian_blur(dilate_map(maps, dilation), sigma)
    if centre_sigma > 0:
        maps = maps * centre_prior(tuple(maps.shape[-2:]), centre_sigma).to(maps)
    return maps


class AnomalyMapModel(nn.Module):
    """The scoring tail PatchCore and STPM share: raw maps -> post-processing -> ``(scores, maps)``.

    Subclasses implement :meth:`raw_maps` and set ``map_dilation``, ``sigma``, ``centre_sigma`` and
    ``top_k``. The estimator calls :meth:`raw_maps` and :meth:`postprocess` itself when the image
    score has its own post-processing (``score_sigma`` / ``score_dilation``).
    """

    map_dilation: int
    sigma: float
    centre_sigma: float
    top_k: int

    def raw_maps(self, target: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
        """``(N, 1, H, W)`` per-pixel distances before any post-processing."""
        raise NotImplementedError

    def postprocess(self, maps: torch.Tensor, dilation: int | None = None, sigma: float | None = None) -> torch.Tensor:
        """Local-max window, Gaussian smoothing and centre prior (the model's own settings by default)."""
        return postprocess_maps(maps, self.map_dilation if dilation is None else dilation,
                                self.sigma if sigma is None else sigma, self.centre_sigma)

    @torch.no_grad()
    def forward(self, target: torch.Tensor, reference: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Score images: ``(scores (N,), maps (N, 1, H, W))``."""
        maps = self.postprocess(self.raw_maps(target, reference))
        return image_score(maps, self.top_k), maps


def image_score(maps: torch.Tensor, top_k: int = 1) -> torch.Tensor:
    """``(N,)`` image scores from ``(N, 1, H, W)`` maps: the max, or the mean of the top-k pixels."""
    flat = maps.flatten(1)
    if top_k <= 1:
        return flat.max(1).values
    return flat.topk(min(top_k, flat.shape[1]), dim=1).values.mean(1)


@torch.no_grad()
def pooled_embedding(backbone: nn.Module, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """``(N, sum C)`` global-average-pooled, concatenated backbone features (for drift tests)."""
    out = []
    for start in range(0, images.shape[0], batch_size):
        maps = backbone(images[start:start + batch_size])
        out.append(torch.cat([m.mean(dim=(-2, -1)) for m in maps], dim=1))
    return torch.cat(out)

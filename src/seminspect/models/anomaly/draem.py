"""DRAEM (Zavrtanik et al. 2021): a reconstructive and a discriminative sub-network, optionally reference-aware.

Pure PyTorch (training loop and checkpoints in :mod:`seminspect.models.anomaly.draem_fit`; the
pseudo-defects it trains on in :mod:`seminspect.data.pseudo_defects`).

- The **reconstructive** sub-network, an encoder-decoder *without* skip connections (so it cannot
  copy a defect through), learns to restore the clean image from one with a pseudo-defect.
- The **discriminative** sub-network, a U-Net, sees the input beside its restoration and outputs a
  per-pixel logit of "anomalous"; its sigmoid is the anomaly map.
- ``reference=True``: the registered reference die is an extra input channel of both sub-networks
  (restore towards the reference; compare the target with both).

Images ``(N, 1, H, W)`` float32 in [0, 1], any size (padded by reflection to a multiple of
``2 ** depth`` inside, cropped back). Widths are small by default (16 channels at full
resolution, doubling per level) so a model trains on a 2-core CPU; the paper uses 128 / 64.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seminspect.models.anomaly.features import AnomalyMapModel


def _block(cin: int, cout: int) -> nn.Sequential:
    """Two 3x3 convolutions with GroupNorm (BatchNorm is ill-conditioned on flat batches) and ReLU."""
    def norm(c: int) -> nn.GroupNorm:
        return nn.GroupNorm(min(8, c // 2) or 1, c)

    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, padding_mode="reflect"), norm(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1, padding_mode="reflect"), norm(cout),
                         nn.ReLU(inplace=True))


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad ``(..., H, W)`` at the bottom and right to multiples of ``multiple`` (reflect; replicate if too small)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="reflect" if min(h, w) > max(ph, pw) else "replicate")
    return x


class UNet(nn.Module):
    """Encoder-decoder of ``depth`` levels (``width * 2**k`` channels at level k), skips optional."""

    def __init__(self, in_ch: int, out_ch: int, width: int = 16, depth: int = 3, skips: bool = True):
        super().__init__()
        chans = [width * 2 ** k for k in range(depth + 1)]
        self.skips = skips
        self.depth = depth
        self.down = nn.ModuleList([_block(in_ch, chans[0])] + [_block(chans[k - 1], chans[k])
                                                              for k in range(1, depth + 1)])
        self.up = nn.ModuleList([_block(chans[k + 1] + (chans[k] if skips else 0), chans[k])
                                 for k in reversed(range(depth))])
        self.head = nn.Conv2d(chans[0], out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = []
        for k, block in enumerate(self.down):
            x = block(x if k == 0 else F.max_pool2d(x, 2))
            feats.append(x)
        for i, block in enumerate(self.up):
            skip = feats[self.depth - 1 - i]
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], 1) if self.skips else x)
        return self.head(x)


class DRAEMModel(AnomalyMapModel):
    """Reconstructive + discriminative sub-networks; the map is the discriminative sigmoid ``(N, 1, H, W)``.

    Args:
        width: channels at full resolution (doubling per level); ``depth``: number of down-samplings.
        reference: the registered reference is an extra input channel of both sub-networks.
        sigma, map_dilation, top_k, centre_sigma: the shared map post-processing (:class:`AnomalyMapModel`).
    """

    def __init__(self, width: int = 16, depth: int = 3, reference: bool = False, sigma: float = 4.0,
                 top_k: int = 1, centre_sigma: float = 0.0, map_dilation: int = 0):
        super().__init__()
        self.reference = bool(reference)
        self.depth = depth
        extra = 1 if reference else 0
        self.reconstructive = UNet(1 + extra, 1, width, depth, skips=False)
        self.discriminative = UNet(2 + extra, 1, width, depth, skips=True)
        self.sigma, self.top_k, self.centre_sigma, self.map_dilation = sigma, top_k, centre_sigma, map_dilation

    def _inputs(self, target: torch.Tensor, reference: torch.Tensor | None) -> torch.Tensor:
        if target.ndim != 4 or target.shape[1] != 1:
            raise ValueError(f"DRAEM takes (N, 1, H, W) images, got {tuple(target.shape)}")
        if min(target.shape[-2:]) < 2 ** self.depth:
            raise ValueError(f"DRAEM needs images of at least {2 ** self.depth} px, got {tuple(target.shape[-2:])}")
        if not self.reference:
            return target
        if reference is None or reference.shape != target.shape:
            raise ValueError("reference-aware DRAEM needs the registered reference, same shape as the target")
        return torch.cat([target, reference], 1)

    def _pad(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        return pad_to_multiple(x, 2 ** self.depth), (x.shape[-2], x.shape[-1])

    def forward_train(self, target: torch.Tensor,
                      reference: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(restored (N, 1, H, W), logits (N, 1, H, W))`` for images in [0, 1]."""
        x, (h, w) = self._pad(self._inputs(target, reference))
        restored = torch.sigmoid(self.reconstructive(x))
        logits = self.discriminative(torch.cat([x, restored], 1))
        return restored[..., :h, :w], logits[..., :h, :w]

    @torch.no_grad()
    def raw_maps(self, target: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
        """``(N, 1, H, W)`` probability of "anomalous" per pixel, before post-processing."""
        return torch.sigmoid(self.forward_train(target, reference)[1])


def ssim_loss(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """``1 - mean SSIM`` of two ``(N, 1, H, W)`` images in [0, 1] (Gaussian window, as DRAEM's loss)."""
    x = torch.arange(window, dtype=a.dtype, device=a.device) - window // 2
    g = torch.exp(-(x ** 2) / (2 * sigma * sigma))
    g = (g / g.sum())
    k = (g[:, None] * g[None, :])[None, None]
    pad = window // 2

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(t, (pad, pad, pad, pad), mode="replicate"), k)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a ** 2
    var_b = blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    ssim = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return 1.0 - ssim.mean()


def focal_loss(logits: torch.Tensor, mask: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Binary focal loss of per-pixel logits against a ``(N, 1, H, W)`` float mask (DRAEM's segmentation loss)."""
    bce = F.binary_cross_entropy_with_logits(logits, mask, reduction="none")
    p_t = torch.exp(-bce)
    return ((1 - p_t) ** gamma * bce).mean()


def draem_loss(model: DRAEMModel, augmented: torch.Tensor, clean: torch.Tensor, mask: torch.Tensor,
               reference: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """L2 + SSIM restoration loss plus focal segmentation loss; the total and its parts."""
    restored, logits = model.forward_train(augmented, reference)
    l2 = F.mse_loss(restored, clean)
    ss = ssim_loss(restored, clean)
    seg = focal_loss(logits, mask)
    return l2 + ss + seg, {"l2": float(l2.detach()), "ssim": float(ss.detach()), "focal": float(seg.detach())}

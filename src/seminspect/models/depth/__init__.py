"""Depth from SEM images: a U-Net generator, an ensemble of them, and a PatchGAN discriminator (pix2pix).

Training lives in :mod:`seminspect.training.depth`, evaluation in
:mod:`seminspect.training.depth_eval`.
"""

from seminspect.models.depth.ensemble import UNetEnsemble, build_generator
from seminspect.models.depth.patchgan import PatchGAN
from seminspect.models.depth.unet import UNet, pad_to_multiple

__all__ = ["PatchGAN", "UNet", "UNetEnsemble", "build_generator", "pad_to_multiple"]

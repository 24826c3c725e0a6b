"""What defines a trained ADC model apart from its weights: input preparation and architecture.

    spec_image = ImageConfig(crop=128, max_shift=8)
    model = build_adc(ModelConfig(backbone="mobilenetv2"), taxonomy, pretrained=False)
    prepare = make_prepare(spec_image)

These two sections of a training config (``image:``, ``model:``) are all that inference needs
to rebuild the model and prepare its input the way training did; training's config
(:mod:`seminspect.training.config`) composes them with its own sections.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from seminspect.data.prepare import PrepareSample
from seminspect.data.taxonomy import Taxonomy
from seminspect.models.adc import MultiViewADC


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImageConfig(_Strict):
    crop: int | None = Field(224, gt=0)  # centre crop at native resolution (None = whole image)
    resize: int | None = Field(None, gt=0)  # then resize to this size (None = keep)
    registration: bool = True  # align each reference to its target (phase correlation), once
    registration_method: Literal["integer", "joint", "phase", "ecc"] = "integer"
    max_shift: float = Field(24.0, ge=0)
    # where the crop sits: the image centre, or the strongest die-to-die difference over the whole
    # field ("difference": a defect anywhere in the field stays in the window; data/locate.py)
    crop_centre: Literal["image", "difference"] = "image"

    @model_validator(mode="after")
    def _centre_needs_integer_registration(self) -> ImageConfig:
        if self.crop_centre == "difference" and (
                self.crop is None or not self.registration or self.registration_method not in ("integer", "joint")):
            raise ValueError("crop_centre 'difference' needs a crop and registration_method integer or joint")
        return self


class ModelConfig(_Strict):
    backbone: str = "mobilenetv2"
    pretrained: bool = True
    weights_path: str | None = None
    out_indices: list[int] = Field(default_factory=lambda: [1, 2, 3])
    grid: int = Field(8, gt=0)
    pool: Literal["avg", "max", "avgmax"] = "avgmax"
    dim: int = Field(128, gt=0)
    fusion: Literal["mean", "attention", "gru"] = "attention"
    dropout: float = Field(0.1, ge=0, lt=1)
    # shared: one trunk under every head; independent: the type head and each tree level's head
    # read their own trunk (the abnormal head keeps the shared one)
    level_features: Literal["shared", "independent"] = "shared"
    attention: Literal["none", "cbam"] = "none"  # CBAM on each view's die-compared grid


def build_adc(m: ModelConfig, taxonomy: Taxonomy, pretrained: bool | None = None) -> MultiViewADC:
    """The model of ``m`` for ``taxonomy`` (``pretrained=False``: weights come from an artefact)."""
    return MultiViewADC(
        backbone_name=m.backbone, pretrained=m.pretrained if pretrained is None else pretrained, taxonomy=taxonomy,
        out_indices=m.out_indices, grid=m.grid, dim=m.dim, fusion=m.fusion, weights_path=m.weights_path,
        dropout=m.dropout, pool=m.pool, level_features=m.level_features, attention=m.attention,
    )


def make_prepare(im: ImageConfig, jitter: int = 0, seed: int = 0) -> PrepareSample:
    """The site preparation of ``im``; ``jitter`` / ``seed``: training's moved windows (``PrepareSample``)."""
    return PrepareSample(crop=im.crop, register=im.registration, method=im.registration_method,
                         max_shift=im.max_shift, centre=im.crop_centre, jitter=jitter, seed=seed)

"""Settings of the virtual fab: image geometry, views, difficulty and the SEM image model.

Every physical knob has a unit in its description; defaults give 460x460 px images at
2 nm/px of 60 nm high lines, imaged by 5 detectors.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from seminspect.errors import SeminspectError

PATTERN_FAMILIES = ("line_space", "contact_array", "turns", "logic")
DIFFICULTIES = ("easy", "medium", "hard")

# Defect "strength" in [0, 1] is drawn uniformly from this range; each injector maps it to a
# size / contrast (0 = at the noise floor: 1 px particle, 1 px width change, faint residue).
STRENGTH_RANGE: dict[str, tuple[float, float]] = {
    "easy": (0.6, 1.0),
    "medium": (0.25, 1.0),
    "hard": (0.0, 0.45),
}
# Primary-beam dose in electrons per pixel at unit SE yield (shot noise ~ 1/sqrt(dose * yield)).
DEFAULT_DOSE: dict[str, float] = {"easy": 200.0, "medium": 120.0, "hard": 60.0}
LONG_TAIL_FIELDS = ("long_tail", "tail_exponent", "n_holdout", "holdout_types")


class FabConfigError(SeminspectError, ValueError):
    """An invalid virtual-fab setting."""


class FabConfig(BaseModel):
    """Configuration of :func:`seminspect.data.synth.generate_sample`.

    Views: ``n_angles`` target views (detector 0 = in-lens, 1..4 = side detectors at azimuths
    0/90/180/270 deg), ``n_references`` reference-die views of the same detectors, and
    ``n_zooms`` magnified crops of the target around the defect (magnifications 2, 4, 3, 6, 8).
    """

    model_config = ConfigDict(extra="forbid")

    image_size: int = Field(460, ge=32, le=4096, description="image height = width, px")
    n_angles: int = Field(5, ge=0, le=5, description="target views (detectors)")
    n_references: int | None = Field(None, ge=0, le=5, description="reference views; None = n_angles")
    n_zooms: int = Field(0, ge=0, le=5, description="magnified target crops around the site")
    difficulty: Literal["easy", "medium", "hard"] = "medium"
    dose: float | None = Field(None, gt=0, description="electrons / px at unit yield; None = per difficulty")
    pattern_families: list[str] = Field(default_factory=lambda: list(PATTERN_FAMILIES))
    bits: Literal[8, 16] = 8
    image_format: Literal["png", "tiff"] = "png"
    pixel_nm: float = Field(2.0, gt=0, description="pixel size, nm")
    line_height_nm: float = Field(60.0, gt=0, description="pattern (line / film) height, nm")
    beam_sigma_px: float = Field(0.9, ge=0, description="Gaussian beam blur, px")
    max_misalignment_px: float = Field(3.0, ge=0, le=16, description="reference shift bound per axis, px")
    brightness_drift: float = Field(0.04, ge=0, description="relative gain change target vs reference (1 sd)")
    charging: float = Field(0.08, ge=0, description="amplitude of the low-frequency charging field")
    scan_jitter_px: float = Field(0.25, ge=0, description="per scan line horizontal jitter, px (1 sd)")
    width_variation_px: float = Field(0.35, ge=0, description="nuisance line-width variation, px (1 sd)")
    ler_px: float = Field(0.25, ge=0, description="nuisance line-edge roughness, px (1 sd)")
    site_offset: float = Field(0.08, ge=0, le=0.4, description="defect / site centre offset, fraction of size "
                               "(0.4: anywhere in the inner 80 % of the field)")
    # Long-tail fab (datasets only; docs/virtual_fab.md): types of the 55-leaf sem_longtail tree drawn
    # from a Zipf law, some types held out of train / calib.
    long_tail: bool = Field(False, description="draw types from sem_longtail with Zipf-like frequencies")
    tail_exponent: float = Field(1.0, gt=0, le=4, description="Zipf exponent s: p(rank k) ~ k^-s")
    n_holdout: int = Field(0, ge=0, le=27, description="types drawn from the rarer half kept out of train/calib")
    holdout_types: list[str] = Field(default_factory=list, description="types kept out of train/calib, by name")

    @field_validator("pattern_families")
    @classmethod
    def _families(cls, value: list[str]) -> list[str]:
        bad = [f for f in value if f not in PATTERN_FAMILIES]
        if bad or not value:
            raise ValueError(f"pattern_families must be a non-empty subset of {list(PATTERN_FAMILIES)}, got {value}")
        return list(dict.fromkeys(value))

    @field_validator("holdout_types")
    @classmethod
    def _holdout_names(cls, value: list[str]) -> list[str]:
        from seminspect.data.synth.longtail import longtail_types

        bad = [t for t in value if t not in longtail_types()]
        if bad:
            raise ValueError(f"not types of the sem_longtail taxonomy: {bad}")
        return list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _tail(self) -> FabConfig:
        if (self.n_holdout or self.holdout_types) and not self.long_tail:
            raise ValueError("n_holdout / holdout_types need long_tail=True")
        return self

    def long_tail_settings(self) -> dict[str, object]:
        """The long-tail fields, or {} when off (keeps older datasets' settings comparable on resume)."""
        return ({k: getattr(self, k) for k in LONG_TAIL_FIELDS}) if self.long_tail else {}

    @model_validator(mode="after")
    def _views(self) -> FabConfig:
        total = self.n_angles + self.refs + self.n_zooms
        if total < 1:
            raise ValueError("a sample needs at least one view (n_angles + n_references + n_zooms >= 1)")
        return self

    @property
    def refs(self) -> int:
        """Number of reference views (``n_references`` or, when None, ``n_angles``)."""
        return self.n_angles if self.n_references is None else self.n_references

    @property
    def effective_dose(self) -> float:
        return self.dose if self.dose is not None else DEFAULT_DOSE[self.difficulty]

    @property
    def strength_range(self) -> tuple[float, float]:
        return STRENGTH_RANGE[self.difficulty]

    @classmethod
    def make(cls, **kwargs: object) -> FabConfig:
        """Build a config, turning validation errors into one-line :class:`FabConfigError`."""
        from pydantic import ValidationError

        try:
            return cls(**kwargs)
        except ValidationError as exc:
            msgs = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in exc.errors())
            raise FabConfigError(f"invalid virtual-fab settings: {msgs}") from None

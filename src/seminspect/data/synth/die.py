"""One die of the virtual fab: the editable state a defect changes, and its rendering to a height map.

A :class:`DieState` holds the layout raster plus the physical fields the defect injectors
write (edge displacement, added height, foreign material, SE-yield change). :func:`render`
turns it into a height map in nm with sloped, corner-rounded sidewalls, a material map and a
base secondary-electron yield map, all ``(C, C)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

# Material ids of the material map and their base SE yield (arbitrary units, ~electrons out per
# electron in). Substrate (trench floor, oxide) is darker than the pattern material.
SUBSTRATE, PATTERN, PARTICLE, RESIDUE, STAIN = 0, 1, 2, 3, 4
MATERIAL_NAMES = ("substrate", "pattern", "particle", "residue", "stain")
BASE_YIELD = np.array([0.2, 0.42, 0.42, 0.42, 0.42], dtype=np.float32)


@dataclass
class DieState:
    """Editable die, all ``(C, C)`` canvas arrays.

    Attributes:
        binary: bool, True where pattern material stands (before corner rounding).
        bias: float32 edge displacement, px (> 0 moves edges outward: wider lines).
        extra_height: float32 height added on top of the pattern, nm (particles, blisters, < 0 for pits).
        material: uint8 foreign-material overlay (0 = none, else a material id).
        yield_delta: float32 change of SE yield (residue, stain, particle contrast).
    """

    binary: np.ndarray
    bias: np.ndarray
    extra_height: np.ndarray
    material: np.ndarray
    yield_delta: np.ndarray

    @classmethod
    def from_binary(cls, binary: np.ndarray, bias: np.ndarray) -> DieState:
        shape = binary.shape
        return cls(binary.copy(), bias.astype(np.float32), np.zeros(shape, np.float32),
                   np.zeros(shape, np.uint8), np.zeros(shape, np.float32))

    def copy(self) -> DieState:
        return DieState(self.binary.copy(), self.bias.copy(), self.extra_height.copy(),
                        self.material.copy(), self.yield_delta.copy())


@dataclass
class DieRender:
    """Rendered die: ``height`` float32 nm, ``material`` uint8 ids, ``base_yield`` float32; all ``(C, C)``."""

    height: np.ndarray
    material: np.ndarray
    base_yield: np.ndarray


def render(state: DieState, line_height_nm: float, rounding_px: float, wall_px: float) -> DieRender:
    """Height map with sidewalls ``wall_px`` wide and corners rounded over ``rounding_px``.

    The layout raster is smoothed with a Gaussian (rounds corners as lithography does); an edge
    sits where the smoothed value crosses 0.5, shifted by ``bias`` px (the smoothed profile of a
    straight edge falls by ``1 / (sqrt(2 pi) sigma)`` per px there).
    """
    s = max(rounding_px, 0.5)
    d = ndimage.gaussian_filter(state.binary.astype(np.float32), s, truncate=3.0)
    slope = 1.0 / (np.sqrt(2 * np.pi) * s)  # d per px at a straight edge
    # frac = (d - 0.5 + bias * slope) / (wall * slope) + 0.5, in place to spare temporaries
    # The edge shift acts only where the smoothed raster is between 0 and 1 (near an edge), so a
    # large local bias cannot punch holes into the flat top of a wide feature.
    d += state.bias * np.float32(4 * slope) * d * (1 - d)
    d *= np.float32(1.0 / (wall_px * slope))
    d += np.float32(0.5 - 0.5 / (wall_px * slope))
    frac = np.clip(d, 0.0, 1.0, out=d)
    material = (frac > 0.5).astype(np.uint8)
    height = (np.float32(3.0) - np.float32(2.0) * frac)  # smoothstep: rounded top and foot of the wall
    height *= frac
    height *= frac
    height *= np.float32(line_height_nm)
    height += state.extra_height
    if state.material.any():
        np.copyto(material, state.material, where=state.material > 0)
    base_yield = BASE_YIELD.take(material)
    base_yield += state.yield_delta
    return DieRender(height, material, base_yield)


def window(state: DieState, sl: tuple[slice, slice]) -> DieState:
    """A rectangular part of a die (views, not copies)."""
    return DieState(state.binary[sl], state.bias[sl], state.extra_height[sl], state.material[sl],
                    state.yield_delta[sl])


def smooth_field(shape: tuple[int, int], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-sd random field ``(H, W)`` float32 with correlation length about ``sigma`` px."""
    if sigma < 4:
        field = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma, mode="wrap")
    else:  # a sum of random separable waves (outer products: no large filter, no BLAS)
        field = np.zeros(shape, np.float32)
        yy, xx = np.arange(shape[0], dtype=np.float32), np.arange(shape[1], dtype=np.float32)
        for _ in range(6):
            fy, fx = rng.normal(0, 1 / (2 * np.pi * sigma), 2)
            py, px = rng.uniform(0, 2 * np.pi, 2)
            field += np.multiply.outer(np.cos(2 * np.pi * fy * yy + py), np.cos(2 * np.pi * fx * xx + px))
    field = field.astype(np.float32, copy=False)
    field -= field.mean()
    field /= float(field.std()) or 1.0
    return field


_TEXTURES: dict[tuple[int, int], np.ndarray] = {}


def _texture(sigma: float, size: int) -> np.ndarray:
    """A cached, fixed, periodic unit-sd noise texture of correlation ``sigma`` px (>= 2 * size side)."""
    side = 1 << int(np.ceil(np.log2(max(2 * size, 256))))
    key = (int(round(sigma * 100)), side)
    if key not in _TEXTURES:
        _TEXTURES[key] = smooth_field((side, side), sigma, np.random.default_rng(12345))
    return _TEXTURES[key]


def texture_patch(shape: tuple[int, int], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """A random window (offset, flips) of a cached noise texture: fine-grained noise at no cost per die."""
    tex = _texture(sigma, max(shape))
    y, x = rng.integers(0, tex.shape[0] - shape[0]), rng.integers(0, tex.shape[1] - shape[1])
    patch = tex[y:y + shape[0], x:x + shape[1]]
    if rng.random() < 0.5:
        patch = patch[::-1]
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    return patch


def nuisance_bias(shape: tuple[int, int], width_sd: float, ler_sd: float, rng: np.random.Generator,
                  scale: float) -> np.ndarray:
    """Edge displacement of a normal die, px: a global width bias, slow across-die drift, and LER."""
    bias = 0.5 * width_sd * smooth_field(shape, 60.0 * scale, rng)
    bias += np.float32(rng.normal(0.0, width_sd))
    if ler_sd > 0:
        bias += np.float32(ler_sd) * texture_patch(shape, 1.5 * scale, rng)
    return bias

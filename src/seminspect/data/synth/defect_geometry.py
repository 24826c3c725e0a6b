"""Shared ground of the defect injectors: where and how strongly to inject, and the shapes they draw with.

:class:`DefectContext` (site position, strength, scale) and small geometry helpers used by the
pattern (:mod:`.defects_pattern`) and surface (:mod:`.defects`) injectors: a clipped window
around a point (``site_window``), a spherical-cap bump (``add_dome``), material / yield edits
(``add_material``), a soft irregular blob (``soft_blob``), a free spot away from the pattern
(``free_spot``), and grooves (``groove``) along a wiggling path (``wiggle_path``). Edits a
``DieState`` in place; touches nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from seminspect.data.synth.die import DieState
from seminspect.data.synth.layout import Layout


@dataclass
class DefectContext:
    """Where and how strongly to inject. ``cy, cx`` canvas px; ``scale`` = feature scale factor."""

    layout: Layout
    cy: float
    cx: float
    strength: float
    rng: np.random.Generator
    scale: float
    image_size: int
    line_height_nm: float
    pixel_nm: float

    def lerp(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(np.clip(self.strength, 0.0, 1.0))


Injector = Callable[[DieState, DefectContext], None]
LINE_FAMILIES = ("line_space", "turns", "logic")
ALL_FAMILIES = ("line_space", "contact_array", "turns", "logic")


# ----- helpers ----------------------------------------------------------------------------------
Window = tuple[tuple[slice, slice], np.ndarray, np.ndarray]


def site_window(shape: tuple[int, int], cy: float, cx: float, r: float) -> Window:
    """Slices of a ``(2r+1)`` window around a point (clipped) and its coordinates relative to the point."""
    r = int(np.ceil(r)) + 1
    y0, y1 = max(int(cy) - r, 0), min(int(cy) + r + 1, shape[0])
    x0, x1 = max(int(cx) - r, 0), min(int(cx) + r + 1, shape[1])
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    return (slice(y0, y1), slice(x0, x1)), yy - np.float32(cy), xx - np.float32(cx)


def add_dome(die: DieState, cy: float, cx: float, radius: float, height: float) -> np.ndarray:
    """Add a spherical-cap bump; return its normalised profile in the window (for material / yield)."""
    sl, yy, xx = site_window(die.binary.shape, cy, cx, radius + 1)
    r2 = (yy * yy + xx * xx) / np.float32(radius * radius)
    prof = np.sqrt(np.clip(1.0 - r2, 0.0, 1.0))
    # A sub-pixel particle still covers part of a pixel: keep a minimum footprint at its centre.
    if radius < 1.0:
        prof = np.maximum(prof, np.exp(-(yy * yy + xx * xx) / np.float32(2 * 0.5**2)) * radius)
    die.extra_height[sl] = np.maximum(die.extra_height[sl], height * prof)
    return prof


def add_material(die: DieState, sl: tuple[slice, slice], where: np.ndarray, material: int, dyield: float,
                  weight: np.ndarray | None = None) -> None:
    die.material[sl][where] = material
    die.yield_delta[sl] += np.float32(dyield) * (where.astype(np.float32) if weight is None else weight)


def soft_blob(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, radius: float,
              rough: float = 0.35) -> np.ndarray:
    """Irregular soft blob in [0, 1] of about ``radius`` px: a radial falloff perturbed by a smooth field."""
    r = np.sqrt(yy * yy + xx * xx) / np.float32(max(radius, 0.5))
    noise = ndimage.gaussian_filter(rng.standard_normal(yy.shape).astype(np.float32), max(radius / 3, 1.0))
    noise /= float(noise.std()) or 1.0
    v = 1.0 - r + np.float32(rough) * noise
    return np.clip(v / 0.25 + 0.5, 0.0, 1.0)


def free_spot(die: DieState, ctx: DefectContext, clearance: float, search: float) -> tuple[float, float]:
    """A point near the centre at least ``clearance`` px from any pattern (the centre if none found)."""
    sl, yy, xx = site_window(die.binary.shape, ctx.cy, ctx.cx, search)
    dist = ndimage.distance_transform_edt(~die.binary[sl])
    ok = dist >= clearance
    if not ok.any():
        ok = dist >= dist.max() * 0.8
    score = np.where(ok, yy * yy + xx * xx + ctx.rng.uniform(0, 4, yy.shape), np.inf)
    iy, ix = np.unravel_index(int(np.argmin(score)), score.shape)
    return float(sl[0].start + iy), float(sl[1].start + ix)


def groove(die: DieState, points: np.ndarray, half_width: float, depth: float, lip: float = 0.0) -> None:
    """Cut a groove of ``half_width`` px and ``depth`` nm along a polyline of points ``(N, 2)`` (y, x)."""
    n = die.binary.shape[0]
    pad = half_width + 3
    y0 = int(max(points[:, 0].min() - pad, 0))
    y1 = int(min(points[:, 0].max() + pad + 1, n))
    x0 = int(max(points[:, 1].min() - pad, 0))
    x1 = int(min(points[:, 1].max() + pad + 1, n))
    if y1 <= y0 or x1 <= x0:
        return
    seed = np.ones((y1 - y0, x1 - x0), bool)
    iy = np.clip(np.round(points[:, 0]).astype(int) - y0, 0, y1 - y0 - 1)
    ix = np.clip(np.round(points[:, 1]).astype(int) - x0, 0, x1 - x0 - 1)
    seed[iy, ix] = False
    d = ndimage.distance_transform_edt(seed).astype(np.float32)
    hw = np.float32(max(half_width, 0.5))
    cut = np.clip(1.0 - (d / hw) ** 2, 0.0, 1.0)
    rim = np.exp(-((d - hw * 1.6) ** 2) / (2 * hw * hw)) * np.float32(lip)
    die.extra_height[y0:y1, x0:x1] += np.float32(depth) * (rim - cut)


def wiggle_path(rng: np.random.Generator, cy: float, cx: float, length: float, angle: float,
                wiggle: float) -> np.ndarray:
    """Points every 0.5 px along a path through ``(cy, cx)``; ``wiggle`` = turn sd per step (rad)."""
    steps = max(int(length / 0.5), 2)
    half = steps // 2
    turns = np.cumsum(rng.normal(0, wiggle, steps))
    turns -= turns[half]
    ang = angle + turns
    dy, dx = 0.5 * np.sin(ang), 0.5 * np.cos(ang)
    y = np.cumsum(dy) - np.cumsum(dy)[half] + cy
    x = np.cumsum(dx) - np.cumsum(dx)[half] + cx
    return np.stack([y, x], axis=1)

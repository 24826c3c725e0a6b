"""Defect injectors: one physical change of a die per leaf type of the ``sem_default`` taxonomy.

Each injector edits a :class:`~seminspect.data.synth.die.DieState` in place near the site
centre: pattern defects change the layout raster (bridge, open, width, contacts, ...), foreign
and surface defects add height (particles, blisters), remove it (scratches, cracks, pits) or
change material / SE yield (residue, stain). The pixel mask is derived afterwards by comparing
the rendered die with and without the change (:func:`defect_mask`), so it matches what every
detector sees. ``strength`` in [0, 1] sets size and contrast; 0 is at the noise floor (a 1 px
particle, a 1 px width change, a residue 0.5 nm thick).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from seminspect.data.synth.defect_geometry import (
    ALL_FAMILIES,
    LINE_FAMILIES,
    DefectContext,
    Injector,
    add_dome,
    add_material,
    groove,
    site_window,
    soft_blob,
    wiggle_path,
)
from seminspect.data.synth.defects_pattern import (
    bridge,
    extra_contact,
    extra_pattern,
    line_edge_roughness,
    line_too_narrow,
    line_too_wide,
    missing_contact,
    missing_pattern,
    necking,
    open_,
)
from seminspect.data.synth.die import PARTICLE, RESIDUE, STAIN, SUBSTRATE, DieRender, DieState

__all__ = ["INJECTORS", "DefectContext", "Injector", "compatible_families", "defect_mask"]


# ----- foreign material and surface defects -----------------------------------------------------
def _particle(die: DieState, ctx: DefectContext, cy: float, cx: float, radius: float, contrast: float) -> None:
    height = radius * ctx.pixel_nm * ctx.rng.uniform(1.0, 1.8)
    prof = add_dome(die, cy, cx, radius, height)
    sl, _, _ = site_window(die.binary.shape, cy, cx, radius + 1)
    add_material(die, sl, prof > 0.05, PARTICLE, contrast, weight=np.sqrt(prof))


def small_particle(die: DieState, ctx: DefectContext) -> None:
    """A particle of about 1-8 px diameter, brighter than its surroundings (charging)."""
    r = ctx.lerp(0.6, 4.0) * max(ctx.scale, 0.6)
    _particle(die, ctx, ctx.cy, ctx.cx, r, ctx.lerp(0.04, 0.5))


def large_particle(die: DieState, ctx: DefectContext) -> None:
    """A large irregular particle (several overlapping lumps), tall and bright."""
    r = ctx.lerp(6.0, 22.0) * ctx.scale
    height = ctx.lerp(25.0, 120.0)
    contrast = ctx.lerp(0.1, 0.55)
    for _ in range(int(ctx.rng.integers(2, 6))):
        oy, ox = ctx.rng.normal(0, r / 3, 2)
        rr = r * ctx.rng.uniform(0.5, 0.9)
        prof = add_dome(die, ctx.cy + oy, ctx.cx + ox, rr, height * ctx.rng.uniform(0.7, 1.0))
        sl, _, _ = site_window(die.binary.shape, ctx.cy + oy, ctx.cx + ox, rr + 1)
        where = prof > 0.02
        die.material[sl][where] = PARTICLE
        die.yield_delta[sl] = np.maximum(die.yield_delta[sl], np.float32(contrast) * np.sqrt(prof))


def particle_cluster(die: DieState, ctx: DefectContext) -> None:
    """Several small particles within a few tens of px."""
    n = int(round(ctx.lerp(3, 9)))
    spread = ctx.lerp(5.0, 16.0) * ctx.scale
    for _ in range(n):
        oy, ox = ctx.rng.normal(0, spread / 2, 2)
        r = ctx.lerp(0.7, 2.5) * max(ctx.scale, 0.6) * ctx.rng.uniform(0.7, 1.3)
        _particle(die, ctx, ctx.cy + oy, ctx.cx + ox, r, ctx.lerp(0.05, 0.45))


def residue(die: DieState, ctx: DefectContext) -> None:
    """A thin film of leftover material (0.5-10 nm), darker, with an irregular outline."""
    r = ctx.lerp(8.0, 30.0) * ctx.scale
    sl, yy, xx = site_window(die.binary.shape, ctx.cy, ctx.cx, 1.6 * r)
    blob = soft_blob(ctx.rng, yy, xx, r)
    die.extra_height[sl] += np.float32(ctx.lerp(0.5, 10.0)) * blob
    add_material(die, sl, blob > 0.5, RESIDUE, -ctx.lerp(0.025, 0.22), weight=blob)


def stain(die: DieState, ctx: DefectContext) -> None:
    """A flat discolouration (watermark / chemical stain): SE-yield change only, no height."""
    r = ctx.lerp(12.0, 40.0) * ctx.scale
    sl, yy, xx = site_window(die.binary.shape, ctx.cy, ctx.cx, 1.6 * r)
    blob = ndimage.gaussian_filter(soft_blob(ctx.rng, yy, xx, r, rough=0.25), 1.5)
    rim = np.clip(blob * (1 - blob) * 4, 0, 1)  # drying stains have a ring
    sign = -1.0 if ctx.rng.random() < 0.7 else 1.0
    weight = blob + 0.6 * rim
    add_material(die, sl, blob > 0.5, STAIN, sign * ctx.lerp(0.03, 0.22), weight=weight)


def blister(die: DieState, ctx: DefectContext) -> None:
    """A smooth dome where the film has lifted (delamination); its flanks show as a bright ring."""
    r = ctx.lerp(6.0, 26.0) * ctx.scale
    sl, yy, xx = site_window(die.binary.shape, ctx.cy, ctx.cx, r)
    rho = np.clip(np.sqrt(yy * yy + xx * xx) / np.float32(r), 0, 1)
    prof = np.cos(rho * np.pi / 2) ** 2
    die.extra_height[sl] += np.float32(ctx.lerp(4.0, 50.0)) * prof
    # the lifted film charges: brighter
    die.yield_delta[sl] += np.float32(ctx.lerp(0.01, 0.12)) * prof


def scratch(die: DieState, ctx: DefectContext) -> None:
    """A long, nearly straight groove with raised lips (mechanical damage, CMP)."""
    length = ctx.lerp(0.25, 0.8) * ctx.image_size
    pts = wiggle_path(ctx.rng, ctx.cy, ctx.cx, length, ctx.rng.uniform(0, np.pi), 0.004)
    groove(die, pts, ctx.lerp(0.6, 2.2) * max(ctx.scale, 0.6), ctx.lerp(4.0, 30.0), lip=0.3)


def crack(die: DieState, ctx: DefectContext) -> None:
    """A jagged, branching fracture line: narrow, deep, dark with bright rims."""
    length = ctx.lerp(0.1, 0.35) * ctx.image_size
    angle = ctx.rng.uniform(0, np.pi)
    pts = wiggle_path(ctx.rng, ctx.cy, ctx.cx, length, angle, 0.12)
    depth, hw = ctx.lerp(10.0, 50.0), ctx.lerp(0.6, 1.6) * max(ctx.scale, 0.6)
    groove(die, pts, hw, depth, lip=0.15)
    k = int(ctx.rng.integers(len(pts) // 4, 3 * len(pts) // 4))
    branch = wiggle_path(ctx.rng, pts[k, 0], pts[k, 1], length / 3, angle + ctx.rng.choice([-1, 1]) * 0.8, 0.12)
    groove(die, branch[len(branch) // 2:], hw * 0.8, depth * 0.7)


def pit_void(die: DieState, ctx: DefectContext) -> None:
    """A round depression (void / pit): dark floor, bright rim."""
    r = ctx.lerp(1.0, 9.0) * max(ctx.scale, 0.6)
    sl, yy, xx = site_window(die.binary.shape, ctx.cy, ctx.cx, r + 1)
    r2 = (yy * yy + xx * xx) / np.float32(r * r)
    bowl = np.clip(1.0 - r2, 0.0, 1.0)
    die.extra_height[sl] -= np.float32(ctx.lerp(8.0, 60.0)) * bowl
    add_material(die, sl, bowl > 0.3, SUBSTRATE, -ctx.lerp(0.02, 0.15), weight=bowl)


INJECTORS: dict[str, Injector] = {
    "bridge": bridge,
    "open": open_,
    "necking": necking,
    "line_too_wide": line_too_wide,
    "line_too_narrow": line_too_narrow,
    "line_edge_roughness": line_edge_roughness,
    "missing_contact": missing_contact,
    "extra_contact": extra_contact,
    "missing_pattern": missing_pattern,
    "extra_pattern": extra_pattern,
    "small_particle": small_particle,
    "large_particle": large_particle,
    "particle_cluster": particle_cluster,
    "residue": residue,
    "stain": stain,
    "blister": blister,
    "scratch": scratch,
    "crack": crack,
    "pit_void": pit_void,
}

# Layout families each type can occur on (a line defect needs lines, a missing contact contacts).
COMPATIBLE_FAMILIES: dict[str, tuple[str, ...]] = {
    **{t: LINE_FAMILIES for t in ("bridge", "open", "necking", "line_too_wide", "line_too_narrow",
                                  "line_edge_roughness", "extra_pattern")},
    "missing_contact": ("contact_array", "logic"),
}


def compatible_families(defect_type: str) -> tuple[str, ...]:
    return COMPATIBLE_FAMILIES.get(defect_type, ALL_FAMILIES)


def defect_mask(before: DieRender, after: DieRender, dilate: int = 1) -> np.ndarray:
    """Pixels whose height (> 0.25 nm and > 12 % of the peak change) or SE yield changed, ``(C, C)`` bool."""
    dh = np.abs(after.height - before.height)
    dy = np.abs(after.base_yield - before.base_yield)
    mask = np.zeros(dh.shape, bool)
    peak_h = float(dh.max())
    if peak_h > 0.25:
        mask |= dh > max(0.25, 0.12 * peak_h)
    peak_y = float(dy.max())
    if peak_y > 0.004:
        mask |= dy > max(0.004, 0.2 * peak_y)
    if dilate and mask.any():
        mask = ndimage.binary_dilation(mask, iterations=dilate)
    return mask

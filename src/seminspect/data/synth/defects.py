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

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from seminspect.data.synth.die import PARTICLE, RESIDUE, STAIN, SUBSTRATE, DieRender, DieState
from seminspect.data.synth.layout import Feature, Layout


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


def _window(shape: tuple[int, int], cy: float, cx: float, r: float) -> Window:
    """Slices of a ``(2r+1)`` window around a point (clipped) and its coordinates relative to the point."""
    r = int(np.ceil(r)) + 1
    y0, y1 = max(int(cy) - r, 0), min(int(cy) + r + 1, shape[0])
    x0, x1 = max(int(cx) - r, 0), min(int(cx) + r + 1, shape[1])
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    return (slice(y0, y1), slice(x0, x1)), yy - np.float32(cy), xx - np.float32(cx)


def _dome(die: DieState, cy: float, cx: float, radius: float, height: float) -> np.ndarray:
    """Add a spherical-cap bump; return its normalised profile in the window (for material / yield)."""
    sl, yy, xx = _window(die.binary.shape, cy, cx, radius + 1)
    r2 = (yy * yy + xx * xx) / np.float32(radius * radius)
    prof = np.sqrt(np.clip(1.0 - r2, 0.0, 1.0))
    # A sub-pixel particle still covers part of a pixel: keep a minimum footprint at its centre.
    if radius < 1.0:
        prof = np.maximum(prof, np.exp(-(yy * yy + xx * xx) / np.float32(2 * 0.5**2)) * radius)
    die.extra_height[sl] = np.maximum(die.extra_height[sl], height * prof)
    return prof


def _add_material(die: DieState, sl: tuple[slice, slice], where: np.ndarray, material: int, dyield: float,
                  weight: np.ndarray | None = None) -> None:
    die.material[sl][where] = material
    die.yield_delta[sl] += np.float32(dyield) * (where.astype(np.float32) if weight is None else weight)


def _blob(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, radius: float, rough: float = 0.35) -> np.ndarray:
    """Irregular soft blob in [0, 1] of about ``radius`` px: a radial falloff perturbed by a smooth field."""
    r = np.sqrt(yy * yy + xx * xx) / np.float32(max(radius, 0.5))
    noise = ndimage.gaussian_filter(rng.standard_normal(yy.shape).astype(np.float32), max(radius / 3, 1.0))
    noise /= float(noise.std()) or 1.0
    v = 1.0 - r + np.float32(rough) * noise
    return np.clip(v / 0.25 + 0.5, 0.0, 1.0)


def _line_point(ctx: DefectContext, min_len: int = 0) -> tuple[Feature, int]:
    """The line nearest the centre and the along-line position (canvas px) closest to the centre."""
    f = ctx.layout.nearest(ctx.cy, ctx.cx, ("line",), min_length=min_len, rng=ctx.rng)
    if f is None:
        raise ValueError("layout has no line near the site")
    n = ctx.layout.size
    margin = max(2, f.width)
    if f.horizontal:
        lo, hi = max(f.x0, 0) + margin, min(f.x1, n) - margin
        p = int(np.clip(round(ctx.cx), lo, max(lo, hi - 1)))
    else:
        lo, hi = max(f.y0, 0) + margin, min(f.y1, n) - margin
        p = int(np.clip(round(ctx.cy), lo, max(lo, hi - 1)))
    return f, p


def _set_span(die: DieState, f: Feature, p0: int, p1: int, q0: int, q1: int, value: bool) -> None:
    """Set the raster over along-line ``[p0, p1)`` x across-line ``[q0, q1)`` of a line's frame."""
    n = die.binary.shape[0]
    p0, p1 = max(p0, 0), min(p1, n)
    q0, q1 = max(q0, 0), min(q1, n)
    if f.horizontal:
        die.binary[q0:q1, p0:p1] = value
    else:
        die.binary[p0:p1, q0:q1] = value


def _across(f: Feature) -> tuple[int, int]:
    return (f.y0, f.y1) if f.horizontal else (f.x0, f.x1)


def _along(f: Feature) -> tuple[int, int]:
    return (f.x0, f.x1) if f.horizontal else (f.y0, f.y1)


def _segment(ctx: DefectContext, f: Feature, p: int, length: int) -> tuple[int, int]:
    a0, a1 = _along(f)
    return max(a0, p - length // 2), min(a1, p + (length + 1) // 2)


def _free_spot(die: DieState, ctx: DefectContext, clearance: float, search: float) -> tuple[float, float]:
    """A point near the centre at least ``clearance`` px from any pattern (the centre if none found)."""
    sl, yy, xx = _window(die.binary.shape, ctx.cy, ctx.cx, search)
    dist = ndimage.distance_transform_edt(~die.binary[sl])
    ok = dist >= clearance
    if not ok.any():
        ok = dist >= dist.max() * 0.8
    score = np.where(ok, yy * yy + xx * xx + ctx.rng.uniform(0, 4, yy.shape), np.inf)
    iy, ix = np.unravel_index(int(np.argmin(score)), score.shape)
    return float(sl[0].start + iy), float(sl[1].start + ix)


def _stroke(die: DieState, points: np.ndarray, half_width: float, depth: float, lip: float = 0.0) -> None:
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
    groove = np.clip(1.0 - (d / hw) ** 2, 0.0, 1.0)
    rim = np.exp(-((d - hw * 1.6) ** 2) / (2 * hw * hw)) * np.float32(lip)
    die.extra_height[y0:y1, x0:x1] += np.float32(depth) * (rim - groove)


def _path(rng: np.random.Generator, cy: float, cx: float, length: float, angle: float, wiggle: float) -> np.ndarray:
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


# ----- pattern defects ----------------------------------------------------------------------------
def bridge(die: DieState, ctx: DefectContext) -> None:
    """Pattern material joins a line to its neighbour across the space (a short)."""
    f, p = _line_point(ctx)
    n = die.binary.shape[0]
    q0, q1 = _across(f)
    # Walk across the space on both sides; bridge the nearer neighbour.
    best = None
    for side in (1, -1):
        q = q1 if side > 0 else q0 - 1
        steps = 0
        while 0 <= q < n and steps < 4 * ctx.layout.pitch:
            on = die.binary[q, p] if f.horizontal else die.binary[p, q]
            if on:
                break
            q += side
            steps += 1
        else:
            continue
        if steps > 0 and (best is None or steps < best[1]):
            best = (side, steps, q)
    if best is None:
        raise ValueError("no neighbouring feature to bridge to")
    side, steps, q = best
    w = max(1, int(round(ctx.lerp(1.0, 0.9 * f.width))))
    a, b = (q1, q) if side > 0 else (q + 1, q0)
    _set_span(die, f, p - w // 2, p - w // 2 + w, a, b, True)


def open_(die: DieState, ctx: DefectContext) -> None:
    """A line broken across its full width."""
    f, p = _line_point(ctx, min_len=3 * ctx.layout.pitch)
    g = max(1, int(round(ctx.lerp(1.0, 1.5 * f.width))))
    q0, q1 = _across(f)
    _set_span(die, f, p - g // 2, p - g // 2 + g, q0 - 1, q1 + 1, False)


def necking(die: DieState, ctx: DefectContext) -> None:
    """A line locally thinned from both sides, not broken."""
    f, p = _line_point(ctx, min_len=3 * ctx.layout.pitch)
    q0, q1 = _across(f)
    depth = max(1, int(round(ctx.lerp(1.0, 0.38 * f.width))))
    length = max(3, int(round(ctx.lerp(1.5, 3.0) * f.width)))
    top = depth if ctx.strength > 0.15 or ctx.rng.random() < 0.5 else 0
    _set_span(die, f, p - length // 2, p - length // 2 + length, q0, q0 + top, False)
    _set_span(die, f, p - length // 2, p - length // 2 + length, q1 - depth, q1, False)


def _width_change(die: DieState, ctx: DefectContext, wider: bool) -> None:
    f, p = _line_point(ctx, min_len=3 * ctx.layout.pitch)
    q0, q1 = _across(f)
    gap = ctx.layout.pitch - f.width
    room = (gap - 3) if wider else (f.width - 3)
    total = max(1, int(round(ctx.lerp(1.0, max(room, 1)))))
    lo = total // 2 + (total % 2 if ctx.rng.random() < 0.5 else 0)
    hi = total - lo
    length = int(round(ctx.lerp(0.25, 0.6) * ctx.image_size))
    a, b = _segment(ctx, f, p, max(length, 3 * ctx.layout.pitch))
    if wider:
        _set_span(die, f, a, b, q0 - lo, q0, True)
        _set_span(die, f, a, b, q1, q1 + hi, True)
    else:
        _set_span(die, f, a, b, q0, q0 + lo, False)
        _set_span(die, f, a, b, q1 - hi, q1, False)


def line_too_wide(die: DieState, ctx: DefectContext) -> None:
    """A stretch of one line printed wider (1 px total at strength 0)."""
    _width_change(die, ctx, wider=True)


def line_too_narrow(die: DieState, ctx: DefectContext) -> None:
    """A stretch of one line printed narrower (1 px total at strength 0)."""
    _width_change(die, ctx, wider=False)


def line_edge_roughness(die: DieState, ctx: DefectContext) -> None:
    """Both edges of a stretch of line wander by a random, short-correlated displacement."""
    f, p = _line_point(ctx, min_len=3 * ctx.layout.pitch)
    q0, q1 = _across(f)
    length = max(int(round(ctx.lerp(0.15, 0.4) * ctx.image_size)), 2 * ctx.layout.pitch)
    a, b = _segment(ctx, f, p, length)
    amp = ctx.lerp(0.9, min(3.5, 0.3 * f.width + 1))
    limit = max(1, min(f.width // 2 - 1, (ctx.layout.pitch - f.width) // 2 - 1))
    for top in (True, False):
        e = ndimage.gaussian_filter1d(ctx.rng.standard_normal(b - a), 2.0 * ctx.scale)
        e = np.clip(np.round(e / (e.std() or 1.0) * amp), -limit, limit).astype(int)
        for i, d in enumerate(e):  # d > 0: the edge moves outward (material added)
            if d == 0:
                continue
            if top:
                lo, hi = (q0 - d, q0) if d > 0 else (q0, q0 - d)
            else:
                lo, hi = (q1, q1 + d) if d > 0 else (q1 + d, q1)
            _set_span(die, f, a + i, a + i + 1, lo, hi, bool(d > 0))


def missing_contact(die: DieState, ctx: DefectContext) -> None:
    """A contact hole not opened (or a contact pad not formed); partly filled at low strength."""
    f = ctx.layout.nearest(ctx.cy, ctx.cx, ("hole", "contact"), rng=ctx.rng)
    if f is None:
        raise ValueError("layout has no contacts")
    sl = (slice(max(f.y0, 0), max(f.y1, 0)), slice(max(f.x0, 0), max(f.x1, 0)))
    if ctx.strength >= 0.5:
        die.binary[sl] = f.kind == "hole"
    else:  # incompletely opened hole / short contact: a height change of 40-90 % of the film
        frac = np.float32(0.4 + ctx.strength)
        h = np.float32(ctx.line_height_nm)
        die.extra_height[sl] += frac * h if f.kind == "hole" else -frac * h


def extra_contact(die: DieState, ctx: DefectContext) -> None:
    """A contact (hole in a film, or a raised via landing on lines) where the layout has none."""
    lay = ctx.layout
    size = max(2, int(round(ctx.lerp(0.45, 1.0) * lay.line_width)))
    if not lay.positive:  # hole array: open a hole in the film between holes
        f = lay.nearest(ctx.cy, ctx.cx, ("hole",), rng=ctx.rng)
        assert f is not None
        cy, cx = f.y0 + lay.line_width / 2, f.x0 + lay.line_width / 2 + lay.pitch / 2
        if ctx.rng.random() < 0.5:
            cy, cx = cy + lay.pitch / 2, cx - lay.pitch / 2
        y0, x0 = int(cy - size / 2), int(cx - size / 2)
        die.binary[max(y0, 0):y0 + size, max(x0, 0):x0 + size] = False
    else:
        cy, cx = _free_spot(die, ctx, size / 2 + 2, 3 * lay.pitch)
        y0, x0 = int(cy - size / 2), int(cx - size / 2)
        die.binary[max(y0, 0):y0 + size, max(x0, 0):x0 + size] = True


def missing_pattern(die: DieState, ctx: DefectContext) -> None:
    """Pattern absent over an area (lift-off, collapse, un-exposed field)."""
    lay = ctx.layout
    kinds = ("hole",) if not lay.positive else ("line", "contact", "pad")
    f = lay.nearest(ctx.cy, ctx.cx, kinds, rng=ctx.rng)
    assert f is not None
    cy = float(np.clip(ctx.cy, f.y0, f.y1 - 1))
    cx = float(np.clip(ctx.cx, f.x0, f.x1 - 1))
    h = int(round(ctx.lerp(1.2, 3.5) * lay.pitch * ctx.rng.uniform(0.7, 1.3)))
    w = int(round(ctx.lerp(1.2, 3.5) * lay.pitch * ctx.rng.uniform(0.7, 1.3)))
    y0, x0 = int(cy - h / 2), int(cx - w / 2)
    die.binary[max(y0, 0):max(y0 + h, 0), max(x0, 0):max(x0 + w, 0)] = not lay.positive


def extra_pattern(die: DieState, ctx: DefectContext) -> None:
    """An island of pattern material in a space (spurious pattern)."""
    lay = ctx.layout
    gap = max(lay.pitch - lay.line_width, 4)
    size = ctx.lerp(2.0, max(2.5, 0.8 * gap))
    cy, cx = _free_spot(die, ctx, size / 2 + 1.5, 3 * lay.pitch)
    h = max(2, int(round(size * ctx.rng.uniform(0.8, 1.2))))
    w = max(2, int(round(size * ctx.rng.uniform(1.0, 2.5))))
    if ctx.rng.random() < 0.5:
        h, w = w, h
    y0, x0 = int(cy - h / 2), int(cx - w / 2)
    die.binary[max(y0, 0):y0 + h, max(x0, 0):x0 + w] = True


# ----- foreign material and surface defects -----------------------------------------------------
def _particle(die: DieState, ctx: DefectContext, cy: float, cx: float, radius: float, contrast: float) -> None:
    height = radius * ctx.pixel_nm * ctx.rng.uniform(1.0, 1.8)
    prof = _dome(die, cy, cx, radius, height)
    sl, _, _ = _window(die.binary.shape, cy, cx, radius + 1)
    _add_material(die, sl, prof > 0.05, PARTICLE, contrast, weight=np.sqrt(prof))


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
        prof = _dome(die, ctx.cy + oy, ctx.cx + ox, rr, height * ctx.rng.uniform(0.7, 1.0))
        sl, _, _ = _window(die.binary.shape, ctx.cy + oy, ctx.cx + ox, rr + 1)
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
    sl, yy, xx = _window(die.binary.shape, ctx.cy, ctx.cx, 1.6 * r)
    blob = _blob(ctx.rng, yy, xx, r)
    die.extra_height[sl] += np.float32(ctx.lerp(0.5, 10.0)) * blob
    _add_material(die, sl, blob > 0.5, RESIDUE, -ctx.lerp(0.025, 0.22), weight=blob)


def stain(die: DieState, ctx: DefectContext) -> None:
    """A flat discolouration (watermark / chemical stain): SE-yield change only, no height."""
    r = ctx.lerp(12.0, 40.0) * ctx.scale
    sl, yy, xx = _window(die.binary.shape, ctx.cy, ctx.cx, 1.6 * r)
    blob = ndimage.gaussian_filter(_blob(ctx.rng, yy, xx, r, rough=0.25), 1.5)
    rim = np.clip(blob * (1 - blob) * 4, 0, 1)  # drying stains have a ring
    sign = -1.0 if ctx.rng.random() < 0.7 else 1.0
    weight = blob + 0.6 * rim
    _add_material(die, sl, blob > 0.5, STAIN, sign * ctx.lerp(0.03, 0.22), weight=weight)


def blister(die: DieState, ctx: DefectContext) -> None:
    """A smooth dome where the film has lifted (delamination); its flanks show as a bright ring."""
    r = ctx.lerp(6.0, 26.0) * ctx.scale
    sl, yy, xx = _window(die.binary.shape, ctx.cy, ctx.cx, r)
    rho = np.clip(np.sqrt(yy * yy + xx * xx) / np.float32(r), 0, 1)
    prof = np.cos(rho * np.pi / 2) ** 2
    die.extra_height[sl] += np.float32(ctx.lerp(4.0, 50.0)) * prof
    # the lifted film charges: brighter
    die.yield_delta[sl] += np.float32(ctx.lerp(0.01, 0.12)) * prof


def scratch(die: DieState, ctx: DefectContext) -> None:
    """A long, nearly straight groove with raised lips (mechanical damage, CMP)."""
    length = ctx.lerp(0.25, 0.8) * ctx.image_size
    pts = _path(ctx.rng, ctx.cy, ctx.cx, length, ctx.rng.uniform(0, np.pi), 0.004)
    _stroke(die, pts, ctx.lerp(0.6, 2.2) * max(ctx.scale, 0.6), ctx.lerp(4.0, 30.0), lip=0.3)


def crack(die: DieState, ctx: DefectContext) -> None:
    """A jagged, branching fracture line: narrow, deep, dark with bright rims."""
    length = ctx.lerp(0.1, 0.35) * ctx.image_size
    angle = ctx.rng.uniform(0, np.pi)
    pts = _path(ctx.rng, ctx.cy, ctx.cx, length, angle, 0.12)
    depth, hw = ctx.lerp(10.0, 50.0), ctx.lerp(0.6, 1.6) * max(ctx.scale, 0.6)
    _stroke(die, pts, hw, depth, lip=0.15)
    k = int(ctx.rng.integers(len(pts) // 4, 3 * len(pts) // 4))
    branch = _path(ctx.rng, pts[k, 0], pts[k, 1], length / 3, angle + ctx.rng.choice([-1, 1]) * 0.8, 0.12)
    _stroke(die, branch[len(branch) // 2:], hw * 0.8, depth * 0.7)


def pit_void(die: DieState, ctx: DefectContext) -> None:
    """A round depression (void / pit): dark floor, bright rim."""
    r = ctx.lerp(1.0, 9.0) * max(ctx.scale, 0.6)
    sl, yy, xx = _window(die.binary.shape, ctx.cy, ctx.cx, r + 1)
    r2 = (yy * yy + xx * xx) / np.float32(r * r)
    bowl = np.clip(1.0 - r2, 0.0, 1.0)
    die.extra_height[sl] -= np.float32(ctx.lerp(8.0, 60.0)) * bowl
    _add_material(die, sl, bowl > 0.3, SUBSTRATE, -ctx.lerp(0.02, 0.15), weight=bowl)


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

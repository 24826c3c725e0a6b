"""Pattern defect injectors: the layout raster changed near the site centre.

Bridge, open, necking, line width too wide / narrow, line-edge roughness, missing and extra
contacts, missing and extra pattern; each edits a ``DieState`` in place (registered in
:data:`seminspect.data.synth.defects.INJECTORS`).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from seminspect.data.synth.defect_geometry import DefectContext, free_spot
from seminspect.data.synth.die import DieState
from seminspect.data.synth.layout import Feature


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
        cy, cx = free_spot(die, ctx, size / 2 + 2, 3 * lay.pitch)
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
    cy, cx = free_spot(die, ctx, size / 2 + 1.5, 3 * lay.pitch)
    h = max(2, int(round(size * ctx.rng.uniform(0.8, 1.2))))
    w = max(2, int(round(size * ctx.rng.uniform(1.0, 2.5))))
    if ctx.rng.random() < 0.5:
        h, w = w, h
    y0, x0 = int(cy - h / 2), int(cx - w / 2)
    die.binary[max(y0, 0):y0 + h, max(x0, 0):x0 + w] = True

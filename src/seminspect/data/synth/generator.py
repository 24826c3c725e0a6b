"""One review site from the virtual fab.

:func:`generate_sample` builds one review site: a layout, its target die (with the defect, if
any) and reference die (same layout, independent nuisances, a few px misalignment, brightness
drift), imaged by ``n_angles`` detectors, plus zoom views centred on the defect. Datasets of
many sites: :mod:`.dataset`.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from seminspect.data.sample import Role, Sample, View
from seminspect.data.synth.config import FabConfig, FabConfigError
from seminspect.data.synth.defects import INJECTORS, DefectContext, defect_mask
from seminspect.data.synth.die import DieRender, DieState, nuisance_bias, render, window
from seminspect.data.synth.layout import feature_scale, make_layout
from seminspect.data.synth.longtail import families_for, injector_for, is_known_type
from seminspect.data.synth.sem_model import (
    DETECTORS,
    Acquisition,
    acquire,
    detector_signal,
    quantise,
    shading_basis,
    subpixel_shift,
)

ZOOM_MAGS = (2, 4, 3, 6, 8)
ZOOM_SLACK_PX = 12  # a defect's mask centroid may lie this far beyond its drawn site
# Review tools differ slightly (beam blur factor, gain factor, offset): a realistic domain shift.
TOOLS = (("SEM-A", 1.0, 1.0, 0.0), ("SEM-B", 1.15, 0.95, 0.015), ("SEM-C", 0.9, 1.05, -0.01))
DEFECT_TYPES = tuple(INJECTORS)  # sem_default; the long-tail fab adds the variants of .longtail


def _geometry(config: FabConfig) -> tuple[int, int, float]:
    """Image size S, canvas margin M, feature scale.

    The margin holds the reference's shift and, with zoom views, the widest zoom window (``S / 2`` at
    2x) centred on a defect as far off centre as ``site_offset`` allows (+ slack for the defect's
    centroid): a review SEM centres each zoom on the defect it located, wherever it lies in the field.
    At the default ``site_offset`` the zoom windows fit anyway and the margin is the shift's alone.
    """
    size = config.image_size
    margin = int(math.ceil(config.max_misalignment_px)) + 2
    if config.n_zooms:
        widest = math.ceil(size / min(ZOOM_MAGS[: config.n_zooms]))
        reach = config.site_offset * size + widest / 2 - size / 2 + ZOOM_SLACK_PX
        margin = max(margin, int(math.ceil(reach)))
    return size, margin, feature_scale(size)


def _render(state: DieState, config: FabConfig, scale: float, mag: int = 1) -> DieRender:
    return render(state, config.line_height_nm, rounding_px=1.6 * scale * mag, wall_px=2.2 * scale * mag)


def _change_mask(before: DieState, after: DieState, config: FabConfig, scale: float) -> np.ndarray:
    """Defect mask ``(C, C)``: render only the changed window of the die with and without the defect."""
    changed = before.binary != after.binary
    for a, b in ((before.extra_height, after.extra_height), (before.material, after.material),
                 (before.yield_delta, after.yield_delta), (before.bias, after.bias)):
        changed |= a != b
    mask = np.zeros(changed.shape, bool)
    if not changed.any():
        return mask
    ys, xs = np.nonzero(changed.any(axis=1))[0], np.nonzero(changed.any(axis=0))[0]
    pad = int(6 * 1.6 * scale + 2.2 * scale + 6)  # beyond this the Gaussian rounding cannot reach
    n = changed.shape[0]
    sl = (slice(max(ys[0] - pad, 0), min(ys[-1] + pad + 1, n)), slice(max(xs[0] - pad, 0), min(xs[-1] + pad + 1, n)))
    mask[sl] = defect_mask(_render(window(before, sl), config, scale), _render(window(after, sl), config, scale))
    return mask


def generate_sample(config: FabConfig, defect_type: str | None, seed: int, sample_id: str) -> Sample:
    """One review site.

    Args:
        config: virtual-fab settings.
        defect_type: a leaf of ``sem_default`` or ``sem_longtail``, or None for a normal site.
        seed: the sample's seed (same seed + config = identical sample).
        sample_id: id to give the sample.

    Returns:
        A :class:`Sample`: target views (index = detector), reference views, zoom views; masks
        ``(S, S)`` bool on target and zoom views of abnormal samples; ``depth`` = target height
        map ``(S, S)`` float32 in nm; metadata strings (product, lot, wafer, die, tool, dose, ...).
    """
    if defect_type is not None and not is_known_type(defect_type):
        raise FabConfigError(f"unknown defect type {defect_type!r}; expected a leaf of sem_default or sem_longtail")
    rng = np.random.default_rng(seed)
    size, margin, scale = _geometry(config)
    canvas = size + 2 * margin
    families = list(config.pattern_families)
    if defect_type is not None:
        allowed = families_for(defect_type)
        families = [f for f in families if f in allowed] or list(allowed)
    strength = float(rng.uniform(*config.strength_range)) if defect_type else float("nan")

    mask_canvas = None
    first = int(rng.integers(len(families)))
    for attempt in range(24):
        if attempt % 4 == 0:  # a fresh layout (next family) now and then, in case this one has no suitable feature
            family = families[(first + attempt // 4) % len(families)]
            layout = make_layout(family, canvas, scale, rng)
            tgt = DieState.from_binary(layout.binary, nuisance_bias(
                layout.binary.shape, config.width_variation_px, config.ler_px, rng, scale))
        cy, cx = canvas / 2 + rng.uniform(-1, 1, 2) * config.site_offset * size
        if defect_type is None:
            state = tgt
            break
        state = tgt.copy()
        ctx = DefectContext(layout, float(cy), float(cx), strength, rng, scale, size, config.line_height_nm,
                            config.pixel_nm)
        try:
            injector_for(defect_type)(state, ctx)
        except ValueError:
            continue
        mask_canvas = _change_mask(tgt, state, config, scale)
        inner = mask_canvas[margin:margin + size, margin:margin + size]
        if inner.any() and inner.sum() >= 0.5 * mask_canvas.sum():
            ys, xs = np.nonzero(mask_canvas)
            cy, cx = float(ys.mean()), float(xs.mean())  # the review site is centred on the defect
            break
    else:
        raise RuntimeError(f"could not inject {defect_type!r} (seed {seed}) inside the image")
    after = _render(state, config, scale)

    tool_name, blur_f, gain_f, offset_d = TOOLS[int(rng.integers(len(TOOLS)))]
    dose = config.effective_dose

    def acquisition(gain_scale: float = 1.0, offset_shift: float = 0.0) -> Acquisition:
        return Acquisition(dose=dose, beam_sigma_px=config.beam_sigma_px * blur_f,
                           scan_jitter_px=config.scan_jitter_px, charging=config.charging,
                           gain=0.8 * gain_f * gain_scale, offset=0.05 + offset_d + offset_shift)

    views: list[View] = []
    nbh = max(5, int(layout.pitch * 0.8))
    # Target die.
    if config.n_angles:
        basis = shading_basis(after, config.pixel_nm, config.line_height_nm, nbh).crop(margin, margin, size, size)
        tmask = None if mask_canvas is None else mask_canvas[margin:margin + size, margin:margin + size].copy()
        acq = acquisition()
        for k in range(config.n_angles):
            img = acquire(detector_signal(basis, DETECTORS[k]), acq, rng)
            views.append(View(Role.TARGET, k, quantise(img, config.bits), None if tmask is None else tmask.copy()))
    # Reference die: same layout, its own width bias / LER, shifted by a sub-pixel offset, other gain.
    shift = rng.uniform(-config.max_misalignment_px, config.max_misalignment_px, 2)
    if config.refs:
        ref = DieState.from_binary(layout.binary, nuisance_bias(
            layout.binary.shape, config.width_variation_px, config.ler_px, rng, scale))
        ref_render = _render(ref, config, scale)
        iy, ix = int(np.floor(shift[0])), int(np.floor(shift[1]))
        fy, fx = shift[0] - iy, shift[1] - ix
        rbasis = shading_basis(ref_render, config.pixel_nm, config.line_height_nm, nbh).crop(
            margin + iy, margin + ix, size + 1, size + 1)
        acq = acquisition(1.0 + rng.normal(0, config.brightness_drift), rng.normal(0, config.brightness_drift / 4))
        for k in range(config.refs):
            sig = subpixel_shift(detector_signal(rbasis, DETECTORS[k]), fy, fx)
            views.append(View(Role.REFERENCE, k, quantise(acquire(sig, acq, rng), config.bits)))
    # Zoom views: the target re-imaged at higher magnification around the site centre.
    for z in range(config.n_zooms):
        mag = ZOOM_MAGS[z]
        img, zmask = _zoom_view(state, mask_canvas, config, scale, mag, cy, cx, nbh, acquisition(), rng)
        views.append(View(Role.ZOOM, z, quantise(img, config.bits), zmask))

    depth = after.height[margin:margin + size, margin:margin + size].astype(np.float32)
    metadata = {
        "product": layout.family,
        "lot": f"LOT{int(rng.integers(1, 13)):02d}",
        "wafer": str(int(rng.integers(1, 26))),
        "die": f"{int(rng.integers(0, 12))}_{int(rng.integers(0, 12))}",
        "tool": tool_name,
        "dose": f"{dose:g}",
        "difficulty": config.difficulty,
        "strength": "" if defect_type is None else f"{strength:.3f}",
        "site_y": f"{cy - margin:.1f}",
        "site_x": f"{cx - margin:.1f}",
        # reference(y, x) shows what target(y + ref_dy, x + ref_dx) shows
        "ref_dy": f"{shift[0]:.3f}",
        "ref_dx": f"{shift[1]:.3f}",
        "pixel_nm": f"{config.pixel_nm:g}",
        "zoom_mags": ",".join(str(m) for m in ZOOM_MAGS[: config.n_zooms]),
        "seed": str(seed),
    }
    return Sample(sample_id, views, is_abnormal=defect_type is not None, defect_type=defect_type,
                  depth=depth, metadata=metadata)


def _zoom_view(state: DieState, mask_canvas: np.ndarray | None, config: FabConfig, scale: float, mag: int,
               cy: float, cx: float, nbh: int, acq: Acquisition,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
    """Re-render a ``size / mag`` window at ``mag`` x (in-lens detector); returns image and mask ``(S, S)``."""
    size = config.image_size
    canvas = state.binary.shape[0]
    cs = int(math.ceil(size / mag))
    y0 = int(np.clip(round(cy - cs / 2), 0, canvas - cs))
    x0 = int(np.clip(round(cx - cs / 2), 0, canvas - cs))
    sl = (slice(y0, y0 + cs), slice(x0, x0 + cs))

    def up_nearest(a: np.ndarray) -> np.ndarray:
        return np.repeat(np.repeat(a[sl], mag, axis=0), mag, axis=1)[:size, :size]

    def up_linear(a: np.ndarray) -> np.ndarray:
        return ndimage.zoom(a[sl], mag, order=1, grid_mode=True, mode="nearest")[:size, :size]

    zstate = DieState(up_nearest(state.binary), up_linear(state.bias) * np.float32(mag),
                      up_linear(state.extra_height), up_nearest(state.material), up_linear(state.yield_delta))
    zrender = _render(zstate, config, scale, mag)
    basis = shading_basis(zrender, config.pixel_nm / mag, config.line_height_nm, nbh * mag)
    img = acquire(detector_signal(basis, DETECTORS[0]), acq, rng)
    zmask = None if mask_canvas is None else up_nearest(mask_canvas)
    return img, zmask

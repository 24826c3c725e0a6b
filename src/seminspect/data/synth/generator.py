"""Samples and datasets from the virtual fab.

:func:`generate_sample` builds one review site: a layout, its target die (with the defect, if
any) and reference die (same layout, independent nuisances, a few px misalignment, brightness
drift), imaged by ``n_angles`` detectors, plus zoom views around the site centre.
:func:`generate_dataset` writes many samples to a dataset folder using all cores; it is
deterministic by seed (each sample has its own seed) and resumable: a killed run restarts where
it stopped, and the manifest is written atomically at the end.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from seminspect.data.manifest import DatasetInfo, save_sample, write_manifest
from seminspect.data.sample import Role, Sample, View
from seminspect.data.synth.config import LONG_TAIL_FIELDS, FabConfig, FabConfigError
from seminspect.data.synth.defects import INJECTORS, DefectContext, defect_mask
from seminspect.data.synth.die import DieRender, DieState, nuisance_bias, render, window
from seminspect.data.synth.layout import feature_scale, make_layout
from seminspect.data.synth.longtail import (
    LONGTAIL_TAXONOMY,
    draw_type_counts,
    families_for,
    injector_for,
    is_known_type,
    longtail_types,
    pick_holdout,
    plan_longtail_dataset,
)
from seminspect.data.synth.sem_model import (
    DETECTORS,
    Acquisition,
    acquire,
    detector_signal,
    quantise,
    shading_basis,
    subpixel_shift,
)
from seminspect.errors import SeminspectError
from seminspect.utils.io import atomic_write_json
from seminspect.utils.leftovers import remove_leftover_temps

ZOOM_MAGS = (2, 4, 3, 6, 8)
ZOOM_SLACK_PX = 12  # a defect's mask centroid may lie this far beyond its drawn site
# Review tools differ slightly (beam blur factor, gain factor, offset): a realistic domain shift.
TOOLS = (("SEM-A", 1.0, 1.0, 0.0), ("SEM-B", 1.15, 0.95, 0.015), ("SEM-C", 0.9, 1.05, -0.01))
DEFECT_TYPES = tuple(INJECTORS)  # sem_default; the long-tail fab adds the variants of .longtail


class GenerationError(SeminspectError, RuntimeError):
    """The dataset folder cannot be (re)generated as asked."""


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


# ----- datasets -----------------------------------------------------------------------------------
def sample_seed(seed: int, index: int) -> int:
    """Per-sample seed, independent of worker count and order."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def _stratified_split_counts(group_sizes: list[int], splits: dict[str, float]) -> list[dict[str, int]]:
    """Split counts per group (defect type), stratified, with the global quotas kept.

    Rounding each group on its own always hands the remainders to the largest split, so with
    1-2 samples per type the small splits got almost no defects. Here the rounding carries over
    from group to group: after each group, every split is owed ``seen * fraction`` samples and
    the group's samples go to the splits most behind. A group with at least one sample per
    split still gets one in each.
    """
    names = list(splits)
    w = np.array([splits[s] for s in names], float)
    w = w / w.sum()
    assigned = np.zeros(len(names))
    seen = 0
    out = []
    for size in group_sizes:
        seen += size
        owed = np.clip(seen * w - assigned, 0.0, None)
        counts = np.minimum(np.floor(owed).astype(int), size)
        while counts.sum() > size:  # clipping can over-fill: take from the least-owed split
            i = min((i for i in range(len(names)) if counts[i] > 0), key=lambda i: owed[i] - counts[i])
            counts[i] -= 1
        for i in np.argsort(-(owed - counts), kind="stable")[: size - counts.sum()]:
            counts[i] += 1
        if size >= len(names):
            for i in range(len(names)):
                while counts[i] == 0:
                    j = int(np.argmax(counts))
                    counts[j] -= 1
                    counts[i] += 1
        assigned += counts
        out.append(dict(zip(names, counts.tolist(), strict=True)))
    return out


def plan_dataset(n_samples: int, abnormal_fraction: float, seed: int,
                 splits: dict[str, float]) -> list[tuple[str, str | None, int, str]]:
    """``(sample_id, defect_type, sample_seed, split)`` for every sample, stratified by type."""
    rng = np.random.default_rng([int(seed), 7])
    n_abn = int(round(n_samples * abnormal_fraction))
    types: list[str | None] = [DEFECT_TYPES[i % len(DEFECT_TYPES)] for i in range(n_abn)]
    types += [None] * (n_samples - n_abn)
    order = rng.permutation(n_samples)
    types = [types[i] for i in order]
    split_of: list[str] = [""] * n_samples
    groups = [[i for i, x in enumerate(types) if x == t] for t in [*DEFECT_TYPES, None]]
    for idx, counts in zip(groups, _stratified_split_counts([len(g) for g in groups], splits), strict=True):
        labels = [s for s, c in counts.items() for _ in range(c)]
        labels = [labels[i] for i in rng.permutation(len(labels))]
        for i, s in zip(idx, labels, strict=True):
            split_of[i] = s
    return [(f"s{i:06d}", types[i], sample_seed(seed, i), split_of[i]) for i in range(n_samples)]


def _work(job: tuple[dict[str, Any], str, str | None, int, str, str]) -> list[dict[str, Any]]:
    cfg, sample_id, defect_type, sseed, split, out = job
    config = FabConfig(**cfg)
    root = Path(out)
    sample = generate_sample(config, defect_type, sseed, sample_id)
    sample.metadata["split"] = split
    rows = save_sample(sample, root, config.image_format)
    # Written last: its presence means every file of the sample is complete (resume marker).
    atomic_write_json(root / "images" / sample_id / "rows.json",
                      {"seed": sseed, "defect_type": defect_type, "split": split, "rows": rows})
    return rows


def _done_rows(root: Path, sample_id: str, sseed: int, defect_type: str | None,
               split: str) -> list[dict[str, Any]] | None:
    marker = root / "images" / sample_id / "rows.json"
    if not marker.is_file():
        return None
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if (data.get("seed"), data.get("defect_type"), data.get("split")) != (sseed, defect_type, split):
        return None
    return list(data["rows"])


def generate_dataset(out_dir: str | Path, n_samples: int, config: FabConfig | None = None,
                     abnormal_fraction: float = 0.5, seed: int = 0, workers: int | None = None,
                     splits: dict[str, float] | None = None) -> Path:
    """Write ``n_samples`` virtual-fab samples to a dataset folder and return the folder.

    Each sample's files go to ``images/<id>/``; the manifest (one row per view, with a ``split``
    column) and ``dataset.yaml`` are written atomically at the end. Samples already complete from
    an earlier, interrupted run with the same settings are kept, not regenerated, and the
    temporary files a killed run left (:mod:`seminspect.utils.leftovers`) are removed first. Defect types
    cycle through all 19 leaves of ``sem_default`` and are stratified over the splits, so every
    type is in every split once there are at least ``19 * len(splits)`` abnormal samples. With
    ``config.long_tail`` the types of ``sem_longtail`` follow a Zipf law and held-out types go
    to ``test`` only (:mod:`.longtail`); ``dataset.yaml`` then lists the counts and held-out types.
    """
    from seminspect.utils.progress import make_progress

    config = config or FabConfig()
    splits = splits or {"train": 0.6, "calib": 0.2, "test": 0.2}
    if n_samples < 1:
        raise GenerationError(f"{out_dir}: n_samples must be >= 1, got {n_samples}")
    if not 0.0 <= abnormal_fraction <= 1.0:
        raise GenerationError(f"{out_dir}: abnormal_fraction must be in [0, 1], got {abnormal_fraction}")
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    # a killed run (kill -9, out of memory) leaves the temporary file it was writing: remove them all
    remove_leftover_temps(root, recursive=True)
    config_settings = {**config.model_dump(exclude=set(LONG_TAIL_FIELDS)), **config.long_tail_settings()}
    settings = {"config": config_settings, "n_samples": n_samples, "abnormal_fraction": abnormal_fraction,
                "seed": seed, "splits": splits}
    settings_path = root / "generation.json"
    if settings_path.is_file():
        try:
            previous = json.loads(settings_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            previous = None
        if previous != json.loads(json.dumps(settings)):
            raise GenerationError(f"{settings_path}: folder holds a dataset generated with other settings; "
                                  "use a new output folder (or delete this one)")
    atomic_write_json(settings_path, settings)

    extra: dict[str, Any] = {}
    if config.long_tail:
        holdout = pick_holdout(longtail_types(), config.n_holdout, config.holdout_types, seed)
        try:
            plan = plan_longtail_dataset(n_samples, abnormal_fraction, seed, splits, config.tail_exponent, holdout)
        except ValueError as exc:
            raise GenerationError(f"{out_dir}: {exc}") from None
        n_abn = int(round(n_samples * abnormal_fraction))
        extra = {"long_tail": {"tail_exponent": config.tail_exponent, "holdout_types": holdout,
                               "type_counts": draw_type_counts(n_abn, longtail_types(), config.tail_exponent, seed)}}
    else:
        plan = plan_dataset(n_samples, abnormal_fraction, seed, splits)
    rows_by_id: dict[str, list[dict[str, Any]]] = {}
    jobs = []
    cfg = config.model_dump()
    for sid, dtype, sseed, split in plan:
        done = _done_rows(root, sid, sseed, dtype, split)
        if done is not None:
            rows_by_id[sid] = done
        else:
            jobs.append((cfg, sid, dtype, sseed, split, str(root)))
    workers = max(1, min(workers or os.cpu_count() or 1, max(len(jobs), 1)))
    with make_progress() as progress:
        task = progress.add_task("generating samples", total=n_samples, completed=len(rows_by_id))
        if workers == 1:
            for job in jobs:
                rows_by_id[job[1]] = _work(job)
                progress.advance(task)
        else:
            import multiprocessing as mp

            with mp.get_context("fork").Pool(workers) as pool:
                for rows in pool.imap_unordered(_work, jobs, chunksize=2):
                    rows_by_id[rows[0]["sample_id"]] = rows
                    progress.advance(task)
    all_rows = [r for sid, *_ in plan for r in rows_by_id[sid]]
    info = DatasetInfo(taxonomy=LONGTAIL_TAXONOMY if config.long_tail else "sem_default", depth_units="nm",
                       description=f"virtual fab: {n_samples} samples, difficulty {config.difficulty}, seed {seed}"
                       + (", long tail" if config.long_tail else ""),
                       extra={"generator": "seminspect.data.synth", "image_size": config.image_size, **extra})
    info.write(root)
    write_manifest(root, all_rows, "csv")
    return root

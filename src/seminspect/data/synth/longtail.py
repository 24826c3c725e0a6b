"""The long-tail virtual fab: a 55-type tree of injector variants, Zipf-like type frequencies, held-out types.

A *variant* is one of the 19 ``sem_default`` injectors with changed parameters, registered
under its own leaf name in the built-in ``sem_longtail`` taxonomy (same groups and families,
the variant listed beside its base type). Three kinds of change:

* size: the defect strength (size and contrast, see :mod:`.defects`) is squeezed into a
  window ``(lo, hi)`` of [0, 1]: ``s' = lo + (hi - lo) * s`` with ``s`` drawn per difficulty;
* material: the SE-yield change (``yield_factor``, -1 = dark where the base is bright) and the
  added height (``height_factor``) of the defect are scaled;
* location: the site centre is moved onto pattern material (``on_pattern``) or into a free
  space (``in_space``) before injecting, or the layout families are restricted
  (``families``: a contact-array-only stain, a logic-only bridge).

:func:`draw_type_counts` is the pure, seeded draw of how many defects each type gets (a
Zipf law over a seeded random rank order, one defect per type at least), :func:`pick_holdout`
chooses the types kept out of train / calib, and :func:`plan_longtail_dataset` makes the
per-sample plan of :func:`~seminspect.data.synth.dataset.generate_dataset`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cache
from typing import Literal

import numpy as np
from scipy import ndimage

from seminspect.data.synth.defects import INJECTORS, DefectContext, Injector, compatible_families
from seminspect.data.synth.die import DieState

LONGTAIL_TAXONOMY = "sem_longtail"


@dataclass(frozen=True)
class Variant:
    """An existing injector (``base``) with changed size, material or location parameters."""

    base: str
    strength: tuple[float, float] = (0.0, 1.0)
    yield_factor: float = 1.0
    height_factor: float = 1.0
    place: Literal["any", "on_pattern", "in_space"] = "any"
    families: tuple[str, ...] | None = None


SMALL, LARGE = (0.0, 0.35), (0.7, 1.0)
VARIANTS: dict[str, Variant] = {
    # pattern / connectivity
    "bridge_micro": Variant("bridge", strength=SMALL),
    "bridge_wide": Variant("bridge", strength=LARGE),
    "bridge_logic": Variant("bridge", families=("logic",)),
    "open_micro": Variant("open", strength=SMALL),
    "open_wide": Variant("open", strength=LARGE),
    "necking_severe": Variant("necking", strength=LARGE),
    # pattern / dimension
    "line_too_wide_slight": Variant("line_too_wide", strength=SMALL),
    "line_too_wide_dense": Variant("line_too_wide", families=("line_space",)),
    "line_too_narrow_turns": Variant("line_too_narrow", families=("turns",)),
    "line_edge_roughness_severe": Variant("line_edge_roughness", strength=LARGE),
    # pattern / feature
    "missing_contact_partial": Variant("missing_contact", strength=(0.0, 0.49)),
    "missing_contact_logic": Variant("missing_contact", families=("logic",)),
    "extra_contact_small": Variant("extra_contact", strength=SMALL),
    "missing_pattern_large": Variant("missing_pattern", strength=LARGE),
    "extra_pattern_small": Variant("extra_pattern", strength=SMALL),
    # foreign / particle
    "small_particle_dark": Variant("small_particle", yield_factor=-1.0),
    "small_particle_on_line": Variant("small_particle", place="on_pattern"),
    "small_particle_in_space": Variant("small_particle", place="in_space"),
    "large_particle_dark": Variant("large_particle", yield_factor=-1.0),
    "large_particle_flat": Variant("large_particle", height_factor=0.25),
    "particle_cluster_dense": Variant("particle_cluster", strength=LARGE),
    "particle_cluster_dark": Variant("particle_cluster", yield_factor=-1.0),
    "particle_cluster_contacts": Variant("particle_cluster", families=("contact_array",)),
    # foreign / film
    "residue_thick": Variant("residue", strength=LARGE),
    "residue_bright": Variant("residue", yield_factor=-1.0),
    "residue_on_pattern": Variant("residue", place="on_pattern"),
    "stain_small": Variant("stain", strength=SMALL),
    "stain_contacts": Variant("stain", families=("contact_array",)),
    "blister_small": Variant("blister", strength=SMALL),
    "blister_dark": Variant("blister", yield_factor=-1.0),
    # foreign / damage
    "scratch_shallow": Variant("scratch", strength=SMALL),
    "scratch_deep": Variant("scratch", strength=LARGE),
    "crack_on_pattern": Variant("crack", place="on_pattern"),
    "pit_void_large": Variant("pit_void", strength=LARGE),
    "pit_void_in_space": Variant("pit_void", place="in_space"),
    "pit_void_contacts": Variant("pit_void", families=("contact_array",)),
}


def _move_site(die: DieState, ctx: DefectContext, on_pattern: bool) -> DefectContext:
    """The context with its centre moved to the nearest point >= 2 px inside pattern (or space)."""
    r = int(3 * ctx.layout.pitch)
    n = die.binary.shape[0]
    y0, y1 = max(int(ctx.cy) - r, 0), min(int(ctx.cy) + r + 1, n)
    x0, x1 = max(int(ctx.cx) - r, 0), min(int(ctx.cx) + r + 1, n)
    region = die.binary[y0:y1, x0:x1] if on_pattern else ~die.binary[y0:y1, x0:x1]
    dist = ndimage.distance_transform_edt(region)
    ok = dist >= min(2.0, float(dist.max()))
    if not ok.any() or dist.max() <= 0:
        raise ValueError("no pattern / space near the site for this variant")
    yy, xx = np.mgrid[y0:y1, x0:x1]
    score = np.where(ok, (yy - ctx.cy) ** 2 + (xx - ctx.cx) ** 2 + ctx.rng.uniform(0, 4, ok.shape), np.inf)
    iy, ix = np.unravel_index(int(np.argmin(score)), score.shape)
    return replace(ctx, cy=float(y0 + iy), cx=float(x0 + ix))


def make_variant_injector(variant: Variant) -> Injector:
    """The injector of a variant: its base injector with the variant's parameters applied."""
    base = INJECTORS[variant.base]
    lo, hi = variant.strength

    def inject(die: DieState, ctx: DefectContext) -> None:
        ctx = replace(ctx, strength=lo + (hi - lo) * float(np.clip(ctx.strength, 0.0, 1.0)))
        if variant.place != "any":
            ctx = _move_site(die, ctx, variant.place == "on_pattern")
        before_h = die.extra_height.copy() if variant.height_factor != 1.0 else None
        before_y = die.yield_delta.copy() if variant.yield_factor != 1.0 else None
        base(die, ctx)
        if before_h is not None:
            die.extra_height[:] = before_h + np.float32(variant.height_factor) * (die.extra_height - before_h)
        if before_y is not None:
            die.yield_delta[:] = before_y + np.float32(variant.yield_factor) * (die.yield_delta - before_y)

    inject.__doc__ = f"{variant.base} variant: {variant}"
    return inject


VARIANT_INJECTORS: dict[str, Injector] = {name: make_variant_injector(v) for name, v in VARIANTS.items()}


def injector_for(defect_type: str) -> Injector:
    """The injector of a ``sem_default`` or ``sem_longtail`` leaf (KeyError if neither)."""
    return INJECTORS[defect_type] if defect_type in INJECTORS else VARIANT_INJECTORS[defect_type]


def families_for(defect_type: str) -> tuple[str, ...]:
    """Layout families a type (base or variant) can occur on."""
    variant = VARIANTS.get(defect_type)
    if variant is None:
        return compatible_families(defect_type)
    allowed = compatible_families(variant.base)
    if variant.families is None:
        return allowed
    return tuple(f for f in variant.families if f in allowed) or allowed


def is_known_type(defect_type: str) -> bool:
    return defect_type in INJECTORS or defect_type in VARIANTS


@cache
def longtail_types() -> tuple[str, ...]:
    """The leaves of the built-in ``sem_longtail`` taxonomy, in tree order."""
    from seminspect.data.taxonomy import Taxonomy

    return Taxonomy.builtin(LONGTAIL_TAXONOMY).leaves


# ----- frequencies, held-out types, dataset plan --------------------------------------------------
def type_ranks(types: Sequence[str], seed: int) -> list[str]:
    """The types in a seeded random frequency order, most frequent first."""
    rng = np.random.default_rng([int(seed), 11])
    return [types[i] for i in rng.permutation(len(types))]


def zipf_probabilities(n_types: int, exponent: float) -> np.ndarray:
    """``p_k`` proportional to ``k ** -exponent`` for ranks k = 1..n_types, ``(n_types,)`` summing to 1."""
    p = np.arange(1, n_types + 1, dtype=float) ** -float(exponent)
    return p / p.sum()


def draw_type_counts(n_defects: int, types: Sequence[str], exponent: float = 1.0,
                     seed: int = 0) -> dict[str, int]:
    """Defects per type, most frequent first: a seeded multinomial draw from a Zipf law.

    The rank order is :func:`type_ranks`; when ``n_defects >= len(types)`` every type gets one
    defect first (so a held-out type is never empty) and the rest is drawn from the Zipf law.
    """
    if n_defects < 0:
        raise ValueError(f"n_defects must be >= 0, got {n_defects}")
    ranked = type_ranks(types, seed)
    floor = 1 if n_defects >= len(ranked) else 0
    rng = np.random.default_rng([int(seed), 13])
    drawn = rng.multinomial(n_defects - floor * len(ranked), zipf_probabilities(len(ranked), exponent))
    return {t: int(c) + floor for t, c in zip(ranked, drawn, strict=True)}


def pick_holdout(types: Sequence[str], n_holdout: int, explicit: Sequence[str], seed: int) -> list[str]:
    """Held-out types: the ``explicit`` names plus ``n_holdout`` drawn from the rarer half of the ranks."""
    chosen = list(dict.fromkeys(explicit))
    if n_holdout:
        ranked = type_ranks(types, seed)
        tail = [t for t in ranked[len(ranked) // 2:] if t not in chosen]
        rng = np.random.default_rng([int(seed), 17])
        chosen += [tail[i] for i in sorted(rng.choice(len(tail), size=min(n_holdout, len(tail)), replace=False))]
    return chosen


def plan_longtail_dataset(n_samples: int, abnormal_fraction: float, seed: int, splits: dict[str, float],
                          exponent: float = 1.0, holdout: Sequence[str] = (),
                          ) -> list[tuple[str, str | None, int, str]]:
    """``(sample_id, defect_type, sample_seed, split)`` for a long-tail dataset.

    Types follow :func:`draw_type_counts` over the ``sem_longtail`` leaves; every sample of a
    held-out type goes to ``test`` (which must be a split), all other types and the normal
    sites are stratified over ``splits`` as in the balanced plan.
    """
    from seminspect.data.synth.dataset import assign_splits, sample_seed

    if holdout and "test" not in splits:
        raise ValueError(f"held-out types need a 'test' split, splits are {list(splits)}")
    types_all = longtail_types()
    n_abn = int(round(n_samples * abnormal_fraction))
    counts = draw_type_counts(n_abn, types_all, exponent, seed)
    types: list[str | None] = [t for t, c in counts.items() for _ in range(c)]
    types += [None] * (n_samples - n_abn)
    rng = np.random.default_rng([int(seed), 7])
    order = rng.permutation(n_samples)
    types = [types[i] for i in order]
    split_of = ["test"] * n_samples
    held = set(holdout)
    keys: list[str | None] = [t for t in counts if t not in held] + [None]
    assign_splits([[i for i, x in enumerate(types) if x == t] for t in keys], splits, rng, split_of)
    return [(f"s{i:06d}", types[i], sample_seed(seed, i), split_of[i]) for i in range(n_samples)]

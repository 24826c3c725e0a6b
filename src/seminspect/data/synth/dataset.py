"""Datasets from the virtual fab: many review sites (:func:`.generator.generate_sample`) in one folder.

:func:`plan_dataset` fixes each sample's id, defect type, seed and split (stratified by type);
:func:`generate_dataset` writes the samples using all cores. It is deterministic by seed (each
sample has its own seed) and resumable: a killed run restarts where it stopped, and the manifest
is written atomically at the end.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from seminspect.data.manifest import DatasetInfo, save_sample, write_manifest
from seminspect.data.synth.config import LONG_TAIL_FIELDS, FabConfig
from seminspect.data.synth.generator import DEFECT_TYPES, generate_sample
from seminspect.data.synth.longtail import (
    LONGTAIL_TAXONOMY,
    draw_type_counts,
    longtail_types,
    pick_holdout,
    plan_longtail_dataset,
)
from seminspect.errors import SeminspectError
from seminspect.utils.io import atomic_write_json
from seminspect.utils.leftovers import remove_leftover_temps


class GenerationError(SeminspectError, RuntimeError):
    """The dataset folder cannot be (re)generated as asked."""


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


def assign_splits(groups: list[list[int]], splits: dict[str, float], rng: np.random.Generator,
                  split_of: list[str]) -> None:
    """Set ``split_of[i]`` for every sample index ``i`` of ``groups`` (one group per defect type, then the
    normals): the stratified quotas of :func:`_stratified_split_counts`, shuffled within each group by ``rng``."""
    for idx, counts in zip(groups, _stratified_split_counts([len(g) for g in groups], splits), strict=True):
        labels = [s for s, c in counts.items() for _ in range(c)]
        labels = [labels[i] for i in rng.permutation(len(labels))]
        for i, s in zip(idx, labels, strict=True):
            split_of[i] = s

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
    assign_splits([[i for i, x in enumerate(types) if x == t] for t in [*DEFECT_TYPES, None]], splits, rng, split_of)
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

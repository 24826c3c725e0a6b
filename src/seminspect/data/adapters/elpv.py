"""ELPV solar-cell electroluminescence images (Deitsch et al., Solar Energy 2019) into the format.

Source: the PyPI package ``elpv_dataset`` ships ``data/labels.csv`` (``images/cellNNNN.png
probability type``, whitespace separated) and 2,624 300x300 8-bit PNGs. Its own
``elpv_dataset.utils.load_dataset()`` loads every image into memory at once; we read the same
``labels.csv`` and the PNGs one by one instead. A folder with the same layout (a clone of the
original repository's ``data/``) can be given as source instead.

Mapping: one TARGET view per cell (no reference exists); taxonomy ``elpv`` (one leaf
``defective``). Label: probability >= 2/3 -> abnormal (``defective``), 0 -> normal; 1/3 cells are
``exclude``d by default (their annotators were unsure), or kept ``unlabelled``. Metadata:
``probability`` (as written in the source), ``cell_type`` (mono/poly), ``source``.

Split: fixed 75/25 train/test, stratified by (probability, cell type), seed 0 by default, drawn
over ALL 2,624 cells (so ``uncertain`` and ``limit`` do not change anyone's split).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from seminspect.data.adapters._common import AdapterError, SkipLog, group_split, prepare_output, require
from seminspect.data.imageio import ImageReadError, read_image
from seminspect.data.manifest import DatasetInfo, DatasetWriter
from seminspect.data.sample import Sample, View
from seminspect.utils.progress import track

SPLITS = {"train": 0.75, "test": 0.25}
#: Source names that mean "the installed PyPI package" (``seminspect import elpv - OUT``).
PACKAGE_SOURCES = ("-", "elpv_dataset", "elpv-dataset")


def resolve_source(source: str | Path | None) -> Path | None:
    """None (the installed package) for ``None``, ``-``, ``elpv_dataset`` or ``elpv-dataset`` (unless a folder
    of that name exists here); otherwise the folder."""
    if source is None:
        return None
    if str(source) in PACKAGE_SOURCES and not Path(source).is_dir():
        return None
    return Path(source)


def package_data_dir() -> Path:
    """The ``data`` folder of the installed ``elpv_dataset`` package."""
    try:
        import elpv_dataset
    except ImportError:
        raise AdapterError("the ELPV importer needs the PyPI package 'elpv-dataset' "
                           "(pip install elpv-dataset)") from None
    return Path(elpv_dataset.__file__).parent / "data"


def read_labels(data_dir: Path) -> list[tuple[str, float, str]]:
    """``(relative image path, probability, cell type)`` per line of ``labels.csv``."""
    path = require(data_dir / "labels.csv", "ELPV labels.csv")
    rows = []
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            rows.append((parts[0], float(parts[1]), parts[2]))
        except (IndexError, ValueError):
            raise AdapterError(f"{path}: line {line_no}: expected 'path probability type', got {line!r}") from None
    return rows


def import_elpv(source: str | Path | None, out: str | Path, uncertain: str = "exclude", limit: int | None = None,
                seed: int = 0, overwrite: bool = False, skip_bad: bool = False,
                log: Callable[[str], None] | None = None) -> Path:
    """Convert ELPV into a dataset folder at ``out``.

    ``source``: None, ``-`` or ``elpv_dataset`` use the installed package; else a folder holding
    ``labels.csv`` and ``images/``. ``skip_bad``: an unreadable cell image is recorded in
    ``out/import_skipped.csv`` and passed over; ``log`` receives the one-line summary.
    """
    if uncertain not in ("exclude", "unlabelled"):
        raise AdapterError(f"uncertain must be 'exclude' or 'unlabelled', not {uncertain!r}")
    folder = resolve_source(source)
    data_dir = package_data_dir() if folder is None else require(folder, "ELPV data folder")
    rows = read_labels(data_dir)
    ids = [Path(p).stem for p, _, _ in rows]
    strata = [f"{prob:.3f}/{ctype}" for _, prob, ctype in rows]
    splits = group_split(ids, SPLITS, seed, strata=strata)
    keep = [i for i, (_, prob, _) in enumerate(rows) if not (uncertain == "exclude" and 0 < prob < 0.5)]
    if limit is not None:
        keep = keep[: max(int(limit), 0)]
    out = prepare_output(out, overwrite)
    info = DatasetInfo(
        taxonomy="elpv",
        description="ELPV electroluminescence solar cells (Deitsch et al. 2019, CC BY-NC-SA 4.0): one target view "
                    "per cell, no reference; abnormal = defect probability >= 2/3, normal = 0.",
        extra={"source": str(data_dir), "uncertain_cells": uncertain, "seed": seed, "split_fractions": SPLITS,
               "split_strata": "probability x cell type"},
    )
    skips = SkipLog(out, skip_bad)
    with DatasetWriter(out, info) as writer:
        for i in track(keep, "importing ELPV cells"):
            rel, prob, ctype = rows[i]
            try:
                image = read_image(data_dir / rel)
            except ImageReadError as exc:
                skips.skip(ids[i], exc, data_dir / rel)
                continue
            abnormal = True if prob >= 0.5 else (False if prob == 0 else None)
            writer.add(Sample(
                sample_id=ids[i],
                views=[View("target", 0, image, source=str(data_dir / rel))],
                is_abnormal=abnormal,
                defect_type="defective" if abnormal else None,
                metadata={"probability": f"{prob:.4f}", "cell_type": ctype, "source": rel, "split": splits[i]},
            ))
        summary = skips.finish(len(keep), "cells")
        if summary is not None:
            writer.info.extra["skipped"] = f"{len(skips.rows)} unreadable cell(s), listed in {skips.path.name}"
            if log is not None:
                log(summary)
    return out

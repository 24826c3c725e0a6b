"""A dataset read one site at a time in bounded memory, with per-site problems recorded, not raised.

    for site in iter_sites("fab_day3"):                 # folder with manifest.csv / .parquet
        if site.error: log(site.sample_id, site.file, site.error)
        else: judge(site.sample)

The manifest is read in chunks (pandas for CSV, pyarrow row batches for Parquet), never whole, so
a 20,000-site manifest costs the memory of one chunk. A site's rows must be consecutive (as every
writer in this package produces them); a site whose rows reappear later is reported as an error.
Every check ``seminspect validate`` makes of one site (missing or corrupt file, bad role or index,
no target view, reference / target size mismatch, duplicate views, too many views) is made here
per site, and every image goes through the reader at the door (:mod:`seminspect.data.door`: paths
inside the dataset folder, pixel limit, bit depth). Labels are read but the caller may ignore them;
masks and depth maps are not read.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from seminspect.data.dataset import sample_from_rows
from seminspect.data.imageio import ImageReadError
from seminspect.data.manifest import REQUIRED_COLUMNS, SAMPLE_COLUMNS, ManifestError, find_manifest
from seminspect.data.sample import MAX_VIEWS_PER_ROLE, Role, Sample
from seminspect.data.site_rules import SiteError, site_problem

__all__ = ["Site", "SiteRows", "iter_site_rows", "iter_sites", "load_site", "manifest_of", "site_problem"]

CHUNK_ROWS = 4096


@dataclass
class Site:
    """One site of the input: its position, id, and either the loaded sample or why it could not be used."""

    ordinal: int
    sample_id: str
    sample: Sample | None = None
    error: str | None = None
    file: str | None = None


def manifest_of(data: str | Path) -> tuple[Path, Path]:
    """``(dataset root, manifest path)`` for a dataset folder or a manifest file."""
    data = Path(data)
    if data.is_file() and data.name.endswith((".csv", ".parquet")):
        return data.parent, data
    if not data.exists():
        raise ManifestError(f"{data}: not found (expected a dataset folder or a manifest .csv/.parquet)")
    return data, find_manifest(data)


def _chunks(path: Path) -> Iterator[pd.DataFrame]:
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            pf = pq.ParquetFile(path)
            for batch in pf.iter_batches(batch_size=CHUNK_ROWS):
                yield batch.to_pandas()
        else:
            yield from pd.read_csv(path, dtype=str, keep_default_na=False, chunksize=CHUNK_ROWS)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise ManifestError(f"{path}: cannot read manifest ({type(exc).__name__}: {exc})") from None


def _normalise(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ManifestError(f"{path}: missing required column(s) {missing}; have {list(df.columns)}")
    df = df.astype(str).replace({"nan": "", "None": ""})
    for col in SAMPLE_COLUMNS:
        if col not in df.columns:
            df[col] = ""
    df["role"] = df["role"].str.strip().str.lower()
    df["label"] = df["label"].str.strip().str.lower()
    return df


def _check_rows(rows: list[dict], lines: list[int], mpath: Path) -> tuple[str, str] | None:
    """``(file, problem)`` for the first structural problem of a site's rows, else None."""
    for line, row in zip(lines, rows, strict=True):
        where = f"{mpath}: row {line}"
        if not row["path"].strip():
            return where, "path is empty"
        if not re.fullmatch(r"\d+", row["index"]):
            return where, f"index {row['index']!r} is not a whole number >= 0"
        if int(row["index"]) >= MAX_VIEWS_PER_ROLE:
            return where, f"index {row['index']} is outside 0..{MAX_VIEWS_PER_ROLE - 1}"
        try:
            Role.parse(row["role"])
        except ValueError:
            return where, f"role {row['role']!r} is not one of target/reference/zoom"
    return None  # the rows are left as read: a site's rows may be loaded twice (a Ray retry)


def _load(root: Path, mpath: Path, ordinal: int, sid: str, rows: list[dict], lines: list[int]) -> Site:
    if not sid:
        return Site(ordinal, sid, error="sample_id is empty", file=f"{mpath}: row {lines[0]}")
    bad = _check_rows(rows, lines, mpath)
    if bad is not None:
        return Site(ordinal, sid, error=bad[1], file=bad[0])
    try:
        sample = sample_from_rows(root, sid, rows, mpath, lines, masks=False, depth=False)
    except ImageReadError as exc:  # the file and the problem, as the reader at the door names them
        return Site(ordinal, sid, error=exc.reason, file=exc.path or str(mpath))
    except SiteError as exc:  # validate's per-site rules
        return Site(ordinal, sid, error=exc.reason, file=exc.file)
    except ManifestError as exc:
        text = str(exc)
        file, _, reason = text.partition(": ")
        return Site(ordinal, sid, error=reason or text, file=file if reason else str(mpath))
    return Site(ordinal, sid, sample=sample)


@dataclass
class SiteRows:
    """One site's manifest rows before any image is read (what :func:`load_site` turns into a :class:`Site`).

    ``error`` is set when the rows themselves are unusable (the id reappears after other sites).
    """

    ordinal: int
    sample_id: str
    rows: list[dict]
    lines: list[int]
    error: str | None = None
    file: str | None = None


def iter_site_rows(data: str | Path, start: int = 0, stop: int | None = None) -> Iterator[SiteRows]:
    """Each site's rows in manifest order, ordinals ``start <= i < stop`` (others skipped, rows not kept).

    Streams the manifest in chunks; structural problems of the whole manifest raise :class:`ManifestError`.
    """
    _, mpath = manifest_of(data)

    def wanted(i: int) -> bool:
        return start <= i and (stop is None or i < stop)

    seen: set[str] = set()
    cur: str | None = None  # id of the site whose rows are being collected
    dup = False  # its rows reappeared after other sites: reported, not loaded
    rows: list[dict] = []
    lines: list[int] = []
    ordinal, line = -1, 1
    for chunk in _chunks(mpath):
        for row in _normalise(chunk, mpath).to_dict("records"):
            line += 1
            sid = row["sample_id"].strip()
            if sid != cur or ordinal < 0:
                if ordinal >= 0 and not dup and wanted(ordinal):
                    yield SiteRows(ordinal, cur or "", rows, lines)
                if stop is not None and ordinal + 1 >= stop:
                    return
                ordinal += 1
                cur, rows, lines = sid, [], []
                dup = sid in seen
                seen.add(sid)
                if dup and wanted(ordinal):
                    yield SiteRows(ordinal, sid, [], [], error="rows of this site are not consecutive in the "
                                   "manifest (the id appeared earlier)", file=f"{mpath}: row {line}")
            if not dup and wanted(ordinal):
                rows.append(row)
                lines.append(line)
    if ordinal >= 0 and not dup and wanted(ordinal):
        yield SiteRows(ordinal, cur or "", rows, lines)


def load_site(data: str | Path, site: SiteRows) -> Site:
    """Read one site's images (every per-site check of ``validate``); problems become ``Site.error``."""
    if site.error is not None:
        return Site(site.ordinal, site.sample_id, error=site.error, file=site.file)
    root, mpath = manifest_of(data)
    return _load(root, mpath, site.ordinal, site.sample_id, site.rows, site.lines)


def iter_sites(data: str | Path, start: int = 0, stop: int | None = None) -> Iterator[Site]:
    """Sites of ``data`` in manifest order, ordinals ``start <= i < stop`` loaded (others skipped unread).

    Structural problems of the whole manifest (unreadable, a required column missing) raise
    :class:`ManifestError`; a problem of one site is a :class:`Site` with ``error`` set.
    """
    root, mpath = manifest_of(data)
    for rows in iter_site_rows(data, start, stop):
        if rows.error is not None:
            yield Site(rows.ordinal, rows.sample_id, error=rows.error, file=rows.file)
        else:
            yield _load(root, mpath, rows.ordinal, rows.sample_id, rows.rows, rows.lines)

"""Shared pieces of the importers: output folder handling, deterministic group-aware splits."""

from __future__ import annotations

import shutil
from collections.abc import Hashable, Sequence
from pathlib import Path

import numpy as np

from seminspect.data.manifest import MANIFEST_NAMES
from seminspect.errors import SeminspectError


class AdapterError(SeminspectError, ValueError):
    """A source dataset is missing or malformed, or the output folder cannot be used."""


def prepare_output(out: str | Path, overwrite: bool) -> Path:
    """Create ``out``; refuse to mix with an existing dataset unless ``overwrite`` (then clear it).

    Only the files a dataset folder holds (``images/``, manifests, ``dataset.yaml``) are removed.
    """
    out = Path(out)
    existing = [out / n for n in MANIFEST_NAMES if (out / n).exists()]
    if existing:
        if not overwrite:
            raise AdapterError(f"{out}: already holds a dataset ({existing[0].name}); pass --overwrite to replace it")
        for path in existing:
            path.unlink()
        if (out / "images").is_dir():
            shutil.rmtree(out / "images")
        if (out / "dataset.yaml").exists():
            (out / "dataset.yaml").unlink()
    out.mkdir(parents=True, exist_ok=True)
    return out


def require(path: Path, what: str) -> Path:
    if not path.exists():
        raise AdapterError(f"{path}: {what} not found")
    return path


def group_split(groups: Sequence[Hashable], fractions: dict[str, float], seed: int,
                strata: Sequence[Hashable] | None = None) -> list[str]:
    """Assign a split name to each item so that all items of a group share one split.

    Groups are shuffled with ``numpy.random.default_rng(seed)`` (after sorting, so the result does
    not depend on input order) and cut by cumulative ``fractions`` (normalised to sum to 1). With
    ``strata`` (one value per item, constant within a group), the cut is made within each stratum,
    so every split keeps the strata proportions.

    Returns:
        split name per item, in input order.
    """
    names = list(fractions)
    frac = np.array([fractions[n] for n in names], dtype=np.float64)
    if (frac < 0).any() or frac.sum() <= 0:
        raise ValueError(f"bad split fractions {fractions}")
    cum = np.cumsum(frac / frac.sum())
    strata = list(strata) if strata is not None else [0] * len(groups)
    group_stratum: dict[Hashable, Hashable] = {}
    for g, s in zip(groups, strata, strict=True):
        group_stratum.setdefault(g, s)
    assignment: dict[Hashable, str] = {}
    rng = np.random.default_rng(seed)
    for stratum in sorted({str(s) for s in group_stratum.values()}):
        members = sorted((g for g, s in group_stratum.items() if str(s) == stratum), key=str)
        order = rng.permutation(len(members))
        n = len(members)
        # Rounded cut points: split k gets positions [cuts[k-1], cuts[k]).
        cuts = np.rint(cum * n).astype(int)
        for pos, gi in enumerate(order):
            k = int(np.searchsorted(cuts, pos, side="right"))
            assignment[members[gi]] = names[min(k, len(names) - 1)]
    return [assignment[g] for g in groups]


SKIP_REPORT = "import_skipped.csv"


class SkipLog:
    """Unreadable source items: with ``--skip-bad`` recorded and passed over, otherwise the first one stops the import.

    :meth:`skip` records one item (or raises without ``--skip-bad``); :meth:`finish` writes
    ``out/import_skipped.csv`` (item, file, error) when anything was skipped, or removes a report an
    earlier import into ``out`` left, and returns a one-line summary (None when nothing was skipped).
    """

    def __init__(self, out: str | Path, enabled: bool) -> None:
        self.out = Path(out)
        self.enabled = enabled
        self.rows: list[dict[str, str]] = []

    @property
    def path(self) -> Path:
        return self.out / SKIP_REPORT

    def skip(self, item: str, exc: Exception, file: str | Path = "") -> None:
        """Record ``item`` as skipped (``--skip-bad``) or raise ``exc`` as an :class:`AdapterError`."""
        message = " ".join(str(exc).split())
        if not self.enabled:
            raise exc if isinstance(exc, AdapterError) else AdapterError(message) from None
        self.rows.append({"item": item, "file": str(file), "error": message})

    def finish(self, total: int, unit: str) -> str | None:
        """Write the report (when any item was skipped); ``AdapterError`` if every item was."""
        if not self.rows:
            self.path.unlink(missing_ok=True)
            return None
        import csv

        from seminspect.utils.io import atomic_path

        with atomic_path(self.path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=["item", "file", "error"])
            writer.writeheader()
            writer.writerows(self.rows)
        summary = (f"skipped {len(self.rows)} of {total} {unit} (unreadable; first: {self.rows[0]['item']}: "
                   f"{self.rows[0]['error']}); the list is in {self.path}")
        if len(self.rows) >= total:
            raise AdapterError(f"every one of the {total} {unit} was unreadable: {summary}")
        return summary

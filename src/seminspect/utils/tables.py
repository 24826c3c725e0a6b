"""Write a results table in the format its file name asks for: ``.csv``, ``.parquet`` or ``.json``.

Before, ``anomaly predict -o scores.parquet`` wrote CSV text under a ``.parquet`` name. Now the
suffix chooses the format, and any other suffix is refused in one line before any work
(:func:`check_table_path`). JSON is a list of row objects, strict (a missing value is ``null``;
never ``NaN``). Writes are atomic.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from seminspect.errors import SeminspectError

SUFFIXES = (".csv", ".parquet", ".json")


class OutputFormatError(SeminspectError, ValueError):
    """An output file name whose suffix names no format seminspect writes."""


def check_table_path(path: str | Path, what: str = "output") -> str:
    """The format of ``path`` (``csv``, ``parquet`` or ``json``); any other suffix raises one line."""
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        shown = f"suffix {suffix!r}" if suffix else "no suffix"
        raise OutputFormatError(f"{path}: {what} has {shown}; the format follows the suffix: {', '.join(SUFFIXES)}")
    return suffix[1:]


def write_table(df: pd.DataFrame, path: str | Path, what: str = "output") -> Path:
    """Write ``df`` atomically as CSV, Parquet or JSON (row objects), chosen by the suffix of ``path``."""
    from seminspect.utils.io import atomic_path, atomic_write_json

    path = Path(path)
    fmt = check_table_path(path, what)
    if fmt == "json":
        rows = df.astype(object).where(df.notna(), None).to_dict(orient="records")
        atomic_write_json(path, rows)
        return path
    with atomic_path(path) as tmp:
        if fmt == "csv":
            df.to_csv(tmp, index=False)
        else:
            df.to_parquet(tmp, index=False)
    return path

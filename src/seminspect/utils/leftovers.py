"""Temporary files left by a killed run: found by the name :func:`seminspect.utils.io.atomic_path` gives them.

``atomic_path(folder / "name.ext")`` writes to ``folder/.name.ext.XXXXXXXX.ext`` (``tempfile.mkstemp``:
8 characters from ``a-z0-9_``; ``.tmp`` when the name has no suffix) and renames it onto
``name.ext`` at the end, or removes it when the writer raises. A process killed in between
(``kill -9``, out of memory, power) leaves the temporary file behind for ever; the next run that
writes into the same folder calls :func:`remove_leftover_temps` there first.

Only names of exactly that pattern are removed, never a final file. A run writing into a folder
while another run writes into the same folder would lose its temporary files: seminspect's
commands do not share their output folders.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["is_leftover_temp", "remove_leftover_temps"]

# ".<name>.<8 chars of mkstemp>.<suffix>" -- the suffix is checked against <name> in is_leftover_temp
_PATTERN = re.compile(r"^\.(?P<name>.+)\.(?P<rand>[a-z0-9_]{8})(?P<suffix>\.[^.]*)$")


def is_leftover_temp(name: str) -> bool:
    """Whether ``name`` is a temporary file name of ``atomic_path`` (``.target0.png.k2j_9xq1.png``)."""
    m = _PATTERN.match(name)
    if m is None:
        return False
    expected = Path(m["name"]).suffix or ".tmp"
    return m["suffix"] == expected


def remove_leftover_temps(folder: str | Path, recursive: bool = False) -> list[Path]:
    """Remove the temporary files a killed writer left in ``folder`` (and its sub-folders if ``recursive``).

    Returns the paths removed; a folder that does not exist holds none. Symbolic links are never
    followed or removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed: list[Path] = []
    candidates = folder.rglob(".*") if recursive else folder.glob(".*")
    for path in candidates:
        if not is_leftover_temp(path.name) or path.is_symlink() or not path.is_file():
            continue
        try:
            path.unlink()
        except FileNotFoundError:  # gone meanwhile
            continue
        removed.append(path)
    return removed

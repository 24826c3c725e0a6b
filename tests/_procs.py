"""Child processes of a test's subprocess, read from Linux ``/proc`` (tests that kill runs use it)."""

from __future__ import annotations

from pathlib import Path


def children(pid: int) -> set[int]:
    """The live children of ``pid``, whichever of its threads started them (empty once it is gone)."""
    try:
        return {int(c) for t in Path(f"/proc/{pid}/task").iterdir() for c in (t / "children").read_text().split()}
    except OSError:
        return set()


def alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie or a dead process does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] not in "ZX"
    except OSError:
        return False

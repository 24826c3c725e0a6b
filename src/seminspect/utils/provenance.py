"""Where a result came from: the package version, the git commit of the code, the time (UTC)."""

from __future__ import annotations

import functools
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@functools.cache
def code_provenance() -> dict[str, Any]:
    """``{"seminspect": version, "commit": sha or None, "dirty": bool or None}`` of the running code."""
    from seminspect import __version__

    here = Path(__file__).resolve().parent
    out: dict[str, Any] = {"seminspect": __version__, "commit": None, "dirty": None}
    try:
        sha = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=5, check=True).stdout
        out["commit"], out["dirty"] = sha, bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        pass  # not a git checkout (an installed wheel): the version alone
    return out

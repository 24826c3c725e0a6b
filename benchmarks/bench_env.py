"""What every benchmark result file says about its run: CPU, cores, load, date, command.

One place for it, so no script writes a fixed date or a claim about the load it did not measure
(``../shared/FINDINGS.md``). The ``*_common.py`` helpers of each benchmark family build their
headers from these; a script without a family imports them directly.
"""

from __future__ import annotations

import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpus() -> str:
    """``no GPU``, or how many NVIDIA GPUs the driver lists (``/proc/driver/nvidia/gpus``)."""
    found = Path("/proc/driver/nvidia/gpus")
    n = len(list(found.iterdir())) if found.is_dir() else 0
    return "no GPU" if n == 0 else f"{n} NVIDIA GPU{'s' if n > 1 else ''}"


def machine() -> str:
    """``<CPU model>, <n> cores, <OS> <release>, <GPUs>``."""
    return f"{cpu_model()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, {gpus()}"


def load() -> str:
    """The 1 / 5 / 15-minute load averages, ``0.41/1.02/1.10``."""
    a, b, c = os.getloadavg()
    return f"{a:.2f}/{b:.2f}/{c:.2f}"


def now() -> str:
    """The date and time of the run, ``2026-12-07 12:30 UTC``."""
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


def command() -> str:
    """The command as run: ``python benchmarks/x.py --flag value``."""
    return "python " + " ".join(sys.argv)


__all__ = ["command", "cpu_model", "gpus", "load", "machine", "now"]

"""Numbers for people: percentages, intervals, counts and "n/a (why)" instead of NaN.

    pct(0.8553)                 -> "85.5 %"
    pct_interval(0.756, 0.925)  -> "75.6-92.5 %"
    pct_ci(0.855, (0.756, 0.925)) -> "85.5 % (95 % CI 75.6-92.5 %)"
    count(12345)                -> "12,345"
    number(0.98734)             -> "0.987"
    prob(0.998123)              -> "0.9981"

Every helper takes ``None``, NaN or infinity and answers ``"n/a"`` (with ``missing`` as the
reason in brackets when given), so a report never shows a raw ``nan`` or ``inf``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def is_number(value: Any) -> bool:
    """A finite real number (not bool, not None, not NaN/inf)."""
    if value is None or isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def na(reason: str | None = None) -> str:
    return f"n/a ({reason})" if reason else "n/a"


def pct(value: Any, digits: int = 1, missing: str | None = None) -> str:
    """``0.8553`` -> ``"85.5 %"``; 100 % and 0 % are written without decimals."""
    if not is_number(value):
        return na(missing)
    v = 100.0 * float(value)
    if v in (0.0, 100.0):
        return f"{v:.0f} %"
    return f"{v:.{digits}f} %"


def pct_interval(lo: Any, hi: Any, digits: int = 1, missing: str | None = None) -> str:
    """``(0.756, 0.925)`` -> ``"75.6-92.5 %"``."""
    if not (is_number(lo) and is_number(hi)):
        return na(missing)
    return f"{pct(lo, digits)[:-2]}-{pct(hi, digits)}"


def pct_ci(value: Any, interval: Sequence[Any] | None, confidence: float = 0.95, digits: int = 1,
           missing: str | None = None) -> str:
    """``"85.5 % (95 % CI 75.6-92.5 %)"``; the interval is left out when absent."""
    if not is_number(value):
        return na(missing)
    text = pct(value, digits)
    if interval is not None and len(interval) == 2 and is_number(interval[0]) and is_number(interval[1]):
        text += f" ({pct(confidence, 0)} CI {pct_interval(interval[0], interval[1], digits)})"
    return text


def count(value: Any, missing: str | None = None) -> str:
    """``12345`` -> ``"12,345"``."""
    if not is_number(value):
        return na(missing)
    return f"{int(value):,}"


def number(value: Any, digits: int = 3, missing: str | None = None) -> str:
    """A score like AUROC: ``0.98734`` -> ``"0.987"`` (at most ``digits`` decimals)."""
    if not is_number(value):
        return na(missing)
    return f"{float(value):.{digits}f}"


def prob(value: Any, missing: str | None = None) -> str:
    """A probability or threshold quoted against another: four decimals (``"0.9981"``)."""
    return number(value, 4, missing)


def share(part: int, whole: int) -> str:
    """``"12 of 300 (4.0 %)"``."""
    if not whole:
        return f"{count(part)} of 0"
    return f"{count(part)} of {count(whole)} ({pct(part / whole)})"


def words(key: str) -> str:
    """A raw key in words: ``"type_macro_f1"`` -> ``"type macro f1"`` (for names no table spells out)."""
    return str(key).replace("_", " ").strip()

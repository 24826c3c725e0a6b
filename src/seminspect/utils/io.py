"""Atomic file writes: a reader never sees a half-written file, a killed job leaves none."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _read_umask() -> int:
    # The only way to read the umask is to set it; done once at import, before any worker threads.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix or ".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp makes the file private (0600); give it the mode a plain open() would (umask).
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as standard JSON: NaN / infinite floats become ``null`` with a ``<key>_note`` beside them.

    ``json.dumps(..., allow_nan=False)`` guards the result: JSON has no ``NaN`` / ``Infinity``
    (``JSON.parse`` and strict parsers reject them), so a value that slips past the conversion
    fails here, loudly, instead of being written.
    """
    text = json.dumps(finite_json(obj), indent=2, sort_keys=False, default=_json_default, allow_nan=False)
    atomic_write_text(path, text + "\n")


def _nonfinite_note(x: float) -> str:
    if x != x:
        return "undefined (NaN when computed: e.g. a rate over zero samples, or a metric that needs both classes)"
    return f"{'+' if x > 0 else '-'}Inf when computed (e.g. a threshold that no score passes)"


def _is_nonfinite(v: Any) -> bool:
    import math

    import numpy as np

    return isinstance(v, float | np.floating) and not math.isfinite(v)


def _count_nonfinite(v: Any) -> int:
    import numpy as np

    if isinstance(v, np.ndarray):
        return int((~np.isfinite(v)).sum()) if v.dtype.kind in "fc" else 0
    if isinstance(v, list | tuple):
        return sum(_count_nonfinite(x) for x in v)
    return int(_is_nonfinite(v))


def finite_json(obj: Any) -> Any:
    """``obj`` ready for standard JSON: every NaN / infinite float becomes ``None``, and in a mapping
    a ``<key>_note`` string says why beside it (unless the mapping already holds that note, e.g.
    ``"auroc_note": "undefined: needs both classes, got only normal samples"``). A list holding
    such values gets one note for the list. ``json.dumps`` would otherwise write ``NaN`` /
    ``Infinity``, which strict readers reject. Applied by :func:`atomic_write_json`."""
    import numpy as np

    if isinstance(obj, np.ndarray):
        obj = obj.tolist()
    if _is_nonfinite(obj):
        return None
    if isinstance(obj, float | np.floating):
        return float(obj)
    if isinstance(obj, dict):
        out: dict[Any, Any] = {}
        for k, v in obj.items():
            out[k] = finite_json(v)
            note = f"{k}_note"
            if note in obj:
                continue
            if _is_nonfinite(v):
                out[note] = _nonfinite_note(float(v))
            elif isinstance(v, list | tuple | np.ndarray) and (bad := _count_nonfinite(v)):
                out[note] = f"{bad} value(s) not finite (NaN/Inf) when computed, written as null"
        return out
    if isinstance(obj, list | tuple):
        return [finite_json(v) for v in obj]
    return obj


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_yaml_mapping(path: str | Path, error: type[Exception], what: str = "config") -> dict[str, Any]:
    """Read a YAML file whose top level is a mapping; an empty file gives ``{}``.

    A missing file, invalid YAML (or text) and a non-mapping top level raise ``error`` with a
    one-line message naming the file, e.g. ``runs/x.yaml: config file not found``. Read with the
    YAML 1.2 core schema (:mod:`seminspect.utils.yaml_strict`): ``registration: off`` is the string
    ``'off'``, not ``False``.
    """
    import yaml

    from seminspect.utils.yaml_strict import read_text

    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: {what} file not found")
    try:
        data = read_text(path)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise error(f"{path}: not valid YAML ({type(exc).__name__}: {exc})".replace("\n", " ")) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise error(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data

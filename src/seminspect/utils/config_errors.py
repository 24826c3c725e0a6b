"""One line for every problem of a config: pydantic's validation errors as ``FILE: key: problem; key: problem``.

Every config reader (ADC training, depth training, the anomaly config, ...) validates the whole
file at load, before any work, and reports **every** problem on the one line of its error, each
with its dotted key and the value that was given::

    runs/bad.yaml: train.batch_size: Input should be greater than 0 (got 0); train.augment.0: Input should be
    less than or equal to 7 (got 9)

    from seminspect.utils.config_errors import validate_config
    cfg = validate_config(ADCConfig, data, path, ConfigError)   # raises ConfigError(one line) when invalid

:func:`format_validation_error` gives the text alone, for readers that build their error themselves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

__all__ = ["format_problems", "format_validation_error", "validate_config"]

M = TypeVar("M", bound=BaseModel)

_SCALARS = (bool, int, float, str, type(None))


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _problem(error: Any) -> str:
    """``key.sub.0: message (got value)`` for one pydantic error entry."""
    key = ".".join(str(x) for x in error.get("loc", ())) or "(top level)"
    msg = _one_line(error.get("msg", "invalid"))
    value = error.get("input")
    shown = ""
    if isinstance(value, _SCALARS) and error.get("type") not in ("missing", "extra_forbidden"):
        text = repr(value)
        shown = f" (got {text if len(text) <= 60 else text[:57] + '...'})"
    return f"{key}: {msg}{shown}"


def format_problems(exc: ValidationError) -> str:
    """Every problem of ``exc`` on one line: ``key: message (got value); key: message ...``."""
    return "; ".join(_problem(e) for e in exc.errors())


def format_validation_error(source: str | Path, exc: ValidationError, what: str = "") -> str:
    """The one-line message ``"SOURCE: [WHAT: ]key: message (got value); ..."``.

    ``source`` names the file (or ``"command line"`` for options); ``what`` is an optional prefix
    such as ``"invalid depth config"``.
    """
    prefix = f"{source}: " + (f"{what}: " if what else "")
    return prefix + format_problems(exc)


def validate_config(model: type[M], data: Any, source: str | Path, error: type[Exception], what: str = "") -> M:
    """``model.model_validate(data)``; on failure ``error`` with :func:`format_validation_error`'s one line."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(format_validation_error(source, exc, what)) from None

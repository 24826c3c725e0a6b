"""The estimator contract shared by thresholds and the triage policy.

Parameters are plain constructor arguments, stored unchanged and validated in one place
(:meth:`DecisionEstimator._validate_params`, called by ``fit`` and ``from_dict``); ``fit``
returns ``self``; learned attributes end with ``_``. Estimators serialise to plain JSON
(``to_dict`` / ``save``; no pickle): non-finite floats become the strings ``"inf"``, ``"-inf"``,
``"nan"`` and arrays keep their dtype, so a loaded estimator predicts exactly as the saved one.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from seminspect.errors import SeminspectError
from seminspect.utils.io import atomic_write_text

FORMAT_VERSION = 1


class DecisionError(SeminspectError, ValueError):
    """Bad input to a threshold or triage policy (shapes, labels, parameters, files)."""


class NotFittedError(DecisionError, AttributeError):
    """``predict`` (or an attribute read) before ``fit``."""


class InsufficientDataError(DecisionError):
    """Too few calibration samples for the requested bound; the message says how many are needed."""


# ----- parameter constraints (one validation path for every estimator) -----------------------
@dataclass(frozen=True)
class Interval:
    """A numeric range. ``closed`` in {"both", "left", "right", "neither"}; ``None`` = unbounded."""

    kind: type
    low: float | None
    high: float | None
    closed: str = "both"

    def check(self, owner: str, name: str, value: Any) -> None:
        allowed = (int, np.integer) if self.kind is int else (int, float, np.number)
        ok_type = isinstance(value, allowed)
        if isinstance(value, bool) or not ok_type or (self.kind is float and not np.isfinite(value)):
            raise DecisionError(f"{owner}: {name} must be a finite {self.kind.__name__}, got {value!r}")
        lo_ok = self.low is None or (value >= self.low if self.closed in ("both", "left") else value > self.low)
        hi_ok = self.high is None or (value <= self.high if self.closed in ("both", "right") else value < self.high)
        if not (lo_ok and hi_ok):
            lb = "[" if self.closed in ("both", "left") else "("
            rb = "]" if self.closed in ("both", "right") else ")"
            lo = "-inf" if self.low is None else self.low
            hi = "inf" if self.high is None else self.high
            raise DecisionError(f"{owner}: {name} must lie in {lb}{lo}, {hi}{rb}, got {value!r}")


@dataclass(frozen=True)
class Optional_:
    """``None`` or a value satisfying the inner constraint."""

    inner: Interval

    def check(self, owner: str, name: str, value: Any) -> None:
        if value is not None:
            self.inner.check(owner, name, value)


PROBABILITY = Interval(float, 0.0, 1.0, "neither")


# ----- JSON encoding that keeps arrays and non-finite floats exact ---------------------------
def _encode(obj: Any) -> Any:
    if isinstance(obj, DecisionEstimator):
        return {"__estimator__": obj.to_dict()}
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": [_encode(x) for x in obj.tolist()], "dtype": str(obj.dtype), "shape": list(obj.shape)}
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        x = float(obj)
        if np.isnan(x):
            return "nan"
        if np.isinf(x):
            return "inf" if x > 0 else "-inf"
        return x
    if isinstance(obj, dict):
        return {str(k): _encode(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_encode(x) for x in obj]
    return obj


_NONFINITE = {"inf": float("inf"), "-inf": float("-inf"), "nan": float("nan")}


def _decode(obj: Any) -> Any:
    if isinstance(obj, dict):
        if "__estimator__" in obj:
            return estimator_from_dict(obj["__estimator__"])
        if "__ndarray__" in obj:
            flat = _decode(obj["__ndarray__"])
            dtype = np.dtype(obj["dtype"])
            return np.array(flat, dtype=dtype).reshape(obj["shape"])
        return {k: _decode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(x) for x in obj]
    if isinstance(obj, str) and obj in _NONFINITE:
        return _NONFINITE[obj]
    return obj


_REGISTRY: dict[str, type[DecisionEstimator]] = {}


def estimator_from_dict(data: dict[str, Any]) -> DecisionEstimator:
    """Rebuild any decision estimator from :meth:`DecisionEstimator.to_dict` output."""
    name = data.get("class") if isinstance(data, dict) else None
    if name not in _REGISTRY:
        raise DecisionError(f"unknown decision estimator {name!r}; known: {sorted(_REGISTRY)}")
    return _REGISTRY[name].from_dict(data)


class DecisionEstimator:
    """Base class: parameters, validation, fitted-state checks and JSON persistence."""

    _parameter_constraints: ClassVar[dict[str, Any]] = {}
    # learned attributes written to JSON (all end with "_")
    _fitted_attributes: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _REGISTRY[cls.__name__] = cls

    # -- parameters --------------------------------------------------------------------------
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p != "self"]

    def get_params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> DecisionEstimator:
        valid = set(self._param_names())
        for key, value in params.items():
            if key not in valid:
                raise DecisionError(f"{type(self).__name__}: unknown parameter {key!r}; valid: {sorted(valid)}")
            setattr(self, key, value)
        return self

    def _validate_params(self) -> None:
        owner = type(self).__name__
        for name, constraint in self._parameter_constraints.items():
            constraint.check(owner, name, getattr(self, name))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # -- fitted state ------------------------------------------------------------------------
    def __sklearn_is_fitted__(self) -> bool:
        return all(hasattr(self, a) for a in self._fitted_attributes)

    def _check_fitted(self) -> None:
        if not self.__sklearn_is_fitted__():
            raise NotFittedError(f"{type(self).__name__} is not fitted yet: call fit(...) first")

    # -- persistence -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: class, format version, parameters and (when fitted) learned state."""
        out: dict[str, Any] = {"class": type(self).__name__, "version": FORMAT_VERSION}
        out["params"] = _encode(self.get_params())
        if self.__sklearn_is_fitted__():
            out["fitted"] = _encode({a: getattr(self, a) for a in self._fitted_attributes})
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DecisionEstimator:
        if not isinstance(data, dict) or data.get("class") != cls.__name__:
            got = data.get("class") if isinstance(data, dict) else type(data).__name__
            raise DecisionError(f"expected a saved {cls.__name__}, got {got!r}")
        if data.get("version") != FORMAT_VERSION:
            raise DecisionError(f"{cls.__name__}: unsupported format version {data.get('version')!r}")
        params = _decode(data.get("params", {}))
        unknown = set(params) - set(cls._param_names())
        if unknown:
            raise DecisionError(f"{cls.__name__}: unknown saved parameters {sorted(unknown)}")
        est = cls(**params)
        est._validate_params()
        fitted = _decode(data.get("fitted", {}))
        missing = [a for a in cls._fitted_attributes if a not in fitted] if fitted else []
        if missing:
            raise DecisionError(f"{cls.__name__}: saved state lacks {missing}")
        for key, value in fitted.items():
            setattr(est, key, value)
        return est

    def save(self, path: str | Path) -> Path:
        """Write the estimator as JSON, atomically (a killed job never leaves half a file)."""
        path = Path(path)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")  # strict JSON
        return path

    @classmethod
    def load(cls, path: str | Path) -> DecisionEstimator:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DecisionError(f"{path}: file not found") from None
        except json.JSONDecodeError as exc:
            raise DecisionError(f"{path}: not valid JSON ({exc})") from None
        try:
            return cls.from_dict(data) if cls is not DecisionEstimator else estimator_from_dict(data)
        except DecisionError as exc:
            raise DecisionError(f"{path}: {exc}") from None


# ----- input checks --------------------------------------------------------------------------
def check_scores(scores: Any, name: str = "scores", owner: str = "") -> np.ndarray:
    """1-D finite float64 array (a (N, 1) column is accepted and flattened)."""
    prefix = f"{owner}: " if owner else ""
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise DecisionError(f"{prefix}{name} must be 1-D (N,), got shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        raise DecisionError(f"{prefix}{name} has {int(bad.sum())} non-finite values (NaN/inf); remove or fix them")
    return arr


def check_binary(labels: Any, n: int, name: str = "labels", owner: str = "") -> np.ndarray:
    """1-D bool array of length ``n`` from 0/1 or bool labels."""
    prefix = f"{owner}: " if owner else ""
    arr = np.asarray(labels)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise DecisionError(f"{prefix}{name} must have shape ({n},), got {arr.shape}")
    values = set(np.unique(arr).tolist())
    if not values <= {0, 1}:  # bools compare equal to 0/1
        raise DecisionError(f"{prefix}{name} must be 0/1 or bool, found values {sorted(values)[:5]}")
    return arr.astype(bool)

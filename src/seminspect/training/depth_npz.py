"""Reading the Samsung depth file (``train.npz``) with its headers checked before any array is read.

The file is a zip of ``.npy`` arrays: ``sem`` (N, C, H, W) or (N, H, W) of uint8/uint16 (or float in
[0, 1]), ``depth`` (N, H, W) of a number type, optionally ``name`` (N,) strings. Each header is read
first: the names present, the number types (never objects: nothing is unpickled), the shapes
(the same N sites and H x W everywhere, at least two sites), the pixel limit per view
(:mod:`seminspect.data.limits`), and that the archive holds as many bytes as the headers
declare. Then the arrays are read and NaN / Inf values refused. Every refusal is one line
naming the file (:class:`~seminspect.training.depth_config.DepthDataError`).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from seminspect.data import limits
from seminspect.data.depthio import npy_header
from seminspect.training.depth_config import DepthDataError as NpzError

REQUIRED = ("sem", "depth")


def _header(zf: zipfile.ZipFile, member: str, path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """``(shape, dtype)`` from the ``.npy`` header of ``member``, checked against the member's size."""
    info = zf.getinfo(member)
    with zf.open(info) as fh:
        try:
            shape, _, dtype = npy_header(fh)
        except ValueError as exc:
            raise NpzError(f"{path}: array {member!r}: {exc}") from None
        offset = fh.tell()
    name = member.removesuffix(".npy")
    if dtype.hasobject:
        raise NpzError(f"{path}: array {name!r} holds Python objects (type {dtype}); only numbers and text are read")
    need = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if info.file_size < need:
        raise NpzError(f"{path}: array {name!r} is truncated ({info.file_size} bytes, its header needs {need})")
    return tuple(int(s) for s in shape), dtype


def read_samsung_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(sem (N, C, H, W), depth (N, H, W), names)`` from ``path``, every check passed."""
    path = Path(path)
    if not path.is_file():
        raise NpzError(f"{path}: Samsung depth file not found")
    try:
        with zipfile.ZipFile(path) as zf:
            members = {m.removesuffix(".npy"): m for m in zf.namelist() if m.endswith(".npy")}
            missing = [k for k in REQUIRED if k not in members]
            if missing:
                have = ", ".join(repr(k) for k in sorted(members)) or "none"
                raise NpzError(f"{path}: missing array {missing[0]!r} (need 'sem' and 'depth'; the file has {have})")
            headers = {k: _header(zf, members[k], path) for k in (*REQUIRED, "name") if k in members}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        if isinstance(exc, NpzError):
            raise
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        raise NpzError(f"{path}: not a readable .npz archive ({reason})") from None
    _check_headers(path, headers)
    try:
        with np.load(path, allow_pickle=False) as f:
            sem, depth = f["sem"], f["depth"]
            names = [str(s) for s in f["name"]] if "name" in headers else [f"site{i:05d}" for i in range(len(sem))]
    except Exception as exc:  # numpy/zipfile raise many types for a corrupt member (bad CRC, short data)
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        raise NpzError(f"{path}: cannot read ({reason})") from None
    if sem.ndim == 3:
        sem = sem[:, None]
    _check_values(path, sem, depth, names)
    return sem, depth, names


def _check_headers(path: Path, headers: dict[str, tuple[tuple[int, ...], np.dtype]]) -> None:
    (sem_shape, sem_dtype), (depth_shape, depth_dtype) = headers["sem"], headers["depth"]
    if sem_dtype.kind not in "uf" or sem_dtype.itemsize > 8 or (sem_dtype.kind == "u" and sem_dtype.itemsize > 2):
        raise NpzError(f"{path}: array 'sem' has type {sem_dtype}; expected uint8, uint16 or float in [0, 1]")
    if depth_dtype.kind not in "iuf":
        raise NpzError(f"{path}: array 'depth' has type {depth_dtype}; expected a number type")
    if len(sem_shape) not in (3, 4):
        raise NpzError(f"{path}: array 'sem' has shape {sem_shape}; expected (N, C, H, W) or (N, H, W)")
    if len(depth_shape) != 3:
        raise NpzError(f"{path}: array 'depth' has shape {depth_shape}; expected (N, H, W)")
    n, hw = sem_shape[0], sem_shape[-2:]
    if depth_shape != (n, *hw):
        raise NpzError(f"{path}: sem {sem_shape} and depth {depth_shape} do not match (same sites N and H x W)")
    if n < 2:
        raise NpzError(f"{path}: {n} site(s); at least 2 are needed (a training and a validation site)")
    if len(sem_shape) == 4 and sem_shape[1] < 1:
        raise NpzError(f"{path}: array 'sem' has no channels (shape {sem_shape})")
    limits.check_pixels(path, hw[0], hw[1], limits.max_pixels())
    if "name" in headers:
        name_shape, name_dtype = headers["name"]
        if name_dtype.kind not in "US" or name_shape != (n,):
            raise NpzError(f"{path}: array 'name' has type {name_dtype} and shape {name_shape}; expected {n} strings")


def _non_finite(a: np.ndarray) -> tuple[int, int, int]:
    """``(NaN count, Inf count, first site index)`` of a float array ``(N, ...)``; (0, 0, -1) if all finite."""
    if a.dtype.kind != "f":
        return 0, 0, -1
    bad = ~np.isfinite(a)
    if not bad.any():
        return 0, 0, -1
    n_nan = int(np.isnan(a).sum())
    first = int(np.flatnonzero(bad.reshape(len(a), -1).any(axis=1))[0])
    return n_nan, int(bad.sum()) - n_nan, first


def _check_values(path: Path, sem: np.ndarray, depth: np.ndarray, names: list[str]) -> None:
    for name, a in (("sem", sem), ("depth", depth)):
        n_nan, n_inf, first = _non_finite(a)
        if first >= 0:
            raise NpzError(
                f"{path}: array {name!r} holds {n_nan} NaN and {n_inf} Inf value(s) (first at site {first}, "
                f"{names[first]!r}); training on them gives NaN losses"
            )
    if sem.dtype.kind == "f" and (float(sem.min()) < 0.0 or float(sem.max()) > 1.0):
        raise NpzError(
            f"{path}: float array 'sem' ranges {float(sem.min()):g}..{float(sem.max()):g}; "
            "float images must lie in [0, 1] (or store them as uint8/uint16)"
        )

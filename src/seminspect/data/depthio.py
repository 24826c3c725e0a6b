"""Reading depth maps: ``.npy``, float or integer TIFF, or an 8/16-bit image, as ``(H, W)`` float32.

Like the image reader, the header comes first: shape, pixel count (the limit of
:mod:`seminspect.data.limits`) and pixel type are checked before any value is read, and a map
holding NaN or Inf is refused (docs/trust.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np

from seminspect.data import limits
from seminspect.data.imageio import read_image, read_tiff
from seminspect.data.limits import check_pixels
from seminspect.data.refusals import ImageReadError, NonFiniteError, require_file


def read_depth(path: str | Path, max_pixels: int | None = None) -> np.ndarray:
    """Depth map as ``(H, W)`` float32 from ``.npy`` or TIFF/PNG; every value finite.

    Raises :class:`ImageReadError` (or a subclass from :mod:`seminspect.data.refusals`) naming
    the file: missing, not 2-D, over the pixel limit, not a number type, NaN or Inf inside.
    """
    path = Path(path)
    require_file(path, "depth file not found")
    limit = limits.max_pixels(max_pixels)
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            depth = _read_npy(path, limit)
        elif suffix in {".tif", ".tiff"}:
            depth = read_tiff(path, limit, depth=True)
        else:
            depth = read_image(path, max_pixels=limit)
    except ImageReadError:
        raise
    except Exception as exc:  # numpy and tifffile raise many types for corrupt files
        raise ImageReadError.at(path, f"cannot read depth map ({type(exc).__name__}: {exc})") from None
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise ImageReadError.at(path, f"depth map must be 2-D, got shape {depth.shape}")
    depth = depth.astype(np.float32)
    finite = np.isfinite(depth)
    if not finite.all():
        n_nan = int(np.isnan(depth).sum())
        n_inf = int(depth.size - finite.sum()) - n_nan
        raise NonFiniteError.at(path, f"depth map holds {n_nan} NaN and {n_inf} Inf value(s) (after conversion "
                                      "to float32); mark missing depth by leaving the depth column empty")
    return depth


def npy_header(fh: BinaryIO) -> tuple[tuple[int, ...], bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` from the header of the ``.npy`` stream ``fh`` (left at the data);
    ValueError for a format version other than 1.0 or 2.0."""
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fh)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(fh)
    raise ValueError(f"unsupported .npy format version {version}")


def _read_npy(path: Path, limit: int) -> np.ndarray:
    """An ``.npy`` array after its header is checked (2-D, within the limit, a number type, complete)."""
    with open(path, "rb") as fh:
        try:
            shape, fortran, dtype = npy_header(fh)
        except ValueError as exc:
            raise ImageReadError.at(path, str(exc)) from None
        offset = fh.tell()
    if len(shape) != 2:
        raise ImageReadError.at(path, f"depth map must be 2-D, got shape {tuple(shape)}")
    check_pixels(path, int(shape[0]), int(shape[1]), limit)
    if dtype.kind not in "iuf" or dtype.hasobject:
        raise ImageReadError.at(path, f"depth pixel type {dtype} is not an integer or float type")
    need = offset + int(shape[0]) * int(shape[1]) * dtype.itemsize
    if path.stat().st_size < need:
        raise ImageReadError.at(path, f"truncated .npy file ({path.stat().st_size} bytes, header needs {need})")
    return np.load(path, allow_pickle=False)

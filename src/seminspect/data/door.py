"""The one reader at the door: every image, mask and depth file a manifest names goes through here.

:func:`read_input` resolves the manifest entry against the dataset folder, refuses a path that
leads outside it (absolute, ``..``, a symlink out), then hands the file to the image or depth
reader, which check the header (pixel limit, stacks, pixel type) before decoding and refuse
colour, NaN and Inf. ``validate``, ``train``, ``evaluate``, ``predict``, ``anomaly``, ``depth``
and ``drift`` all read through it, so they refuse the same files with the same messages
(docs/trust.md).

More folders may be allowed besides the dataset folder: the ``allow_roots`` argument, or the
environment variable ``SEMINSPECT_EXTRA_ROOTS`` (folders separated by ``os.pathsep``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from seminspect.data.depthio import read_depth
from seminspect.data.imageio import read_image
from seminspect.data.refusals import ImageReadError, MissingFileError, OutsideRootError, require_file

ENV_EXTRA_ROOTS = "SEMINSPECT_EXTRA_ROOTS"
Kind = Literal["image", "mask", "depth"]


def allowed_roots(root: str | Path, allow_roots: Sequence[str | Path] | None = None) -> list[Path]:
    """The dataset folder, then ``allow_roots``, then the folders in ``$SEMINSPECT_EXTRA_ROOTS``, resolved."""
    extra = [p for p in os.environ.get(ENV_EXTRA_ROOTS, "").split(os.pathsep) if p.strip()]
    return [Path(r).expanduser().resolve() for r in [root, *(allow_roots or ()), *extra]]


def resolve_inside(root: str | Path, rel: str | Path, what: str = "file",
                   allow_roots: Sequence[str | Path] | None = None) -> Path:
    """``root / rel`` if, once ``..`` and symlinks are resolved, it lies inside an allowed root.

    Returns the path as written (``root / rel``), which is what messages name; raises
    :class:`OutsideRootError` (or :class:`MissingFileError` for an empty entry) otherwise.
    """
    if not str(rel).strip():
        raise MissingFileError.at(Path(root), f"{what} path is empty")
    path = Path(root) / rel
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # symlink loops, NUL bytes
        raise ImageReadError.at(path, f"{what} path cannot be used ({type(exc).__name__}: {exc})") from None
    roots = allowed_roots(root, allow_roots)
    if not any(resolved.is_relative_to(r) for r in roots):
        how = "is absolute" if Path(rel).is_absolute() else ("goes up with '..'" if ".." in Path(rel).parts
                                                            else "goes through a symlink")
        raise OutsideRootError.at(
            path, f"{what} path {str(rel)!r} {how} and leads outside the dataset folder {roots[0]} (to {resolved}); "
                  f"only files inside it are read (add a folder with {ENV_EXTRA_ROOTS}; see docs/trust.md)")
    return path


def read_input(root: str | Path, rel: str | Path, kind: Kind = "image", *, max_pixels: int | None = None,
               allow_roots: Sequence[str | Path] | None = None) -> np.ndarray:
    """Read one file named by a manifest: ``kind`` ``image`` and ``mask`` as uint8/uint16, ``depth`` as float32.

    A mask is read as an image (nonzero = defect is the caller's rule). Raises
    :class:`ImageReadError` or one of its subclasses in :mod:`seminspect.data.refusals`; the
    message is one line, ``"FILE: problem"``.
    """
    path = resolve_inside(root, rel, kind, allow_roots)
    if kind == "depth":
        return read_depth(path, max_pixels=max_pixels)
    if kind not in ("image", "mask"):
        raise ValueError(f"kind must be image, mask or depth, not {kind!r}")
    return read_image(path, max_pixels=max_pixels)


def check_input(root: str | Path, rel: str | Path, kind: Kind = "image",
                allow_roots: Sequence[str | Path] | None = None) -> Path:
    """The path rule and existence only (``validate --fast``): ``root / rel``, or the refusal raised."""
    path = resolve_inside(root, rel, kind, allow_roots)
    require_file(path, f"{'depth ' if kind == 'depth' else ''}file not found")
    return path


__all__ = ["ENV_EXTRA_ROOTS", "ImageReadError", "allowed_roots", "check_input", "read_input", "resolve_inside"]

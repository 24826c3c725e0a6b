"""What the reader at the door refuses: one error class per kind of refusal (docs/trust.md).

Every error is a :class:`~seminspect.errors.SeminspectError` whose message is one line,
``"FILE: problem"``; ``path`` and ``reason`` hold the two halves and ``kind`` the stable name
that ``seminspect validate`` reports (the same names as its problem kinds).
"""

from __future__ import annotations

from pathlib import Path
from typing import Self

from seminspect.errors import SeminspectError


def one_line(text: str) -> str:
    """``text`` with line breaks folded into spaces (library messages sometimes carry them)."""
    return " ".join(str(text).split())


class ImageReadError(SeminspectError, ValueError):
    """An image, mask or depth file is missing, unreadable or not what the format allows."""

    kind = "corrupt_image"

    def __init__(self, message: str, path: str | Path | None = None, reason: str | None = None) -> None:
        self.message = one_line(message)
        self.path = None if path is None else str(path)
        self.reason = one_line(reason) if reason is not None else self.message
        super().__init__(self.message, self.path, self.reason)  # args rebuild it when unpickled

    def __str__(self) -> str:
        return self.message

    @classmethod
    def at(cls, path: str | Path, reason: str) -> Self:
        """The error ``"PATH: reason"`` for one file."""
        return cls(f"{path}: {reason}", path, reason)


class MissingFileError(ImageReadError):
    """The file named in the manifest does not exist (or is not a regular file)."""

    kind = "missing_file"


class OutsideRootError(ImageReadError):
    """The path leads outside the dataset folder: absolute, through ``..``, or a symlink out."""

    kind = "outside_root"


class TooManyPixelsError(ImageReadError):
    """The file's header declares more pixels than the limit (``SEMINSPECT_MAX_PIXELS``)."""

    kind = "too_many_pixels"


class NonFiniteError(ImageReadError):
    """A depth map holds NaN or Inf values."""

    kind = "non_finite"


def require_file(path: Path, missing: str = "file not found") -> None:
    """Raise :class:`MissingFileError` unless ``path`` is a regular file (an unusable name is refused too)."""
    try:
        exists = path.is_file()
    except OSError as exc:  # a name too long, a path through a file, ...
        raise ImageReadError.at(path, f"cannot open ({exc.strerror or type(exc).__name__})") from None
    except ValueError as exc:  # an embedded NUL byte
        raise ImageReadError.at(path, f"cannot open ({exc})") from None
    if not exists:
        raise MissingFileError.at(path, missing)

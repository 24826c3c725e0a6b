"""The pixel limit: how many pixels one image, mask or depth map may declare before it is refused.

The limit is checked from the file's header, before any pixel is decoded, so a small file that
declares a huge image (a "decompression bomb") costs nothing. Default
:data:`DEFAULT_MAX_PIXELS` per view; the environment variable ``SEMINSPECT_MAX_PIXELS`` or the
``max_pixels`` argument of the readers change it (docs/trust.md). Pillow's own
decompression-bomb guard is kept in line with the same number.
"""

from __future__ import annotations

import os
from pathlib import Path

from seminspect.data.refusals import TooManyPixelsError
from seminspect.errors import SeminspectError

#: Default limit: 50 megapixels per view (a 7071 x 7071 image), far above any SEM frame.
DEFAULT_MAX_PIXELS = 50_000_000
ENV_MAX_PIXELS = "SEMINSPECT_MAX_PIXELS"


class LimitConfigError(SeminspectError, ValueError):
    """``SEMINSPECT_MAX_PIXELS`` (or a ``max_pixels`` argument) is not a positive whole number."""


def max_pixels(override: int | None = None) -> int:
    """The pixel limit in force: ``override`` if given, else ``$SEMINSPECT_MAX_PIXELS``, else the default."""
    if override is not None:
        value: object = override
        source = "max_pixels"
    else:
        raw = os.environ.get(ENV_MAX_PIXELS, "").strip()
        if not raw:
            return DEFAULT_MAX_PIXELS
        value, source = raw.replace("_", ""), ENV_MAX_PIXELS
    try:
        limit = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise LimitConfigError(f"{source}: {value!r} is not a whole number of pixels") from None
    if limit <= 0:
        raise LimitConfigError(f"{source}: {limit} must be a positive number of pixels")
    return limit


def check_pixels(path: str | Path, height: int, width: int, limit: int) -> None:
    """Refuse an image of ``height x width`` over ``limit`` pixels, naming ``path``."""
    if height * width > limit:
        raise too_many_pixels(path, height * width, limit, f"{width}x{height} is ")


def too_many_pixels(path: str | Path, pixels: int | None, limit: int, prefix: str = "") -> TooManyPixelsError:
    """The refusal of an image of ``pixels`` pixels (None: unknown, over the limit) naming ``path``."""
    count = "more pixels than the limit" if pixels is None else f"{pixels:,} pixels"
    return TooManyPixelsError.at(
        path, f"{prefix}{count}, over the limit of {limit:,} per view "
              f"(raise it with {ENV_MAX_PIXELS} if the file is genuine; see docs/trust.md)")


def sync_pillow(limit: int) -> None:
    """Make Pillow's decompression-bomb guard agree with ``limit``.

    Pillow warns above ``MAX_IMAGE_PIXELS`` and raises above twice that, when a file is opened;
    the readers check ``limit`` themselves right after, so Pillow's guard only has to stop at or
    above ``limit`` (never below it, which would refuse files the limit allows).
    """
    from PIL import Image

    if Image.MAX_IMAGE_PIXELS != limit:
        Image.MAX_IMAGE_PIXELS = limit

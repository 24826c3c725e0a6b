"""Reading and writing SEM images: PNG, TIFF and JPEG, 8- or 16-bit grayscale.

This is the one place where image pixels on disk become arrays (header first: size, stacks and
pixel type are checked before decoding; docs/trust.md), and :func:`to_float` the one place where
integer pixels become float32 in [0, 1]. Dataset files are read through
:func:`seminspect.data.door.read_input`, which also keeps their paths inside the dataset folder.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from seminspect.data import limits
from seminspect.data.limits import check_pixels, sync_pillow, too_many_pixels
from seminspect.data.refusals import ImageReadError, require_file
from seminspect.utils.io import atomic_path

__all__ = ["IMAGE_SUFFIXES", "ImageReadError", "read_image", "to_float", "to_uint", "write_image"]

IMAGE_SUFFIXES = {".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp"}
#: Pillow decodes a file only in the format its suffix names (a ".png" holding a GIF is refused).
PILLOW_FORMATS = {".png": ["PNG"], ".jpg": ["JPEG"], ".jpeg": ["JPEG"], ".bmp": ["BMP"]}
_PILLOW_16BIT = {"I;16", "I;16B", "I;16L", "I;16N"}
#: Pillow modes turned into RGB and accepted only when the three channels are equal.
_PILLOW_RGB = {"P", "PA", "LA", "RGB", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr"}
_ALLOWED_DTYPES = (np.uint8, np.uint16, np.bool_)


def read_image(path: str | Path, max_pixels: int | None = None) -> np.ndarray:
    """Read a grayscale image as ``(H, W)`` uint8 or uint16, refusing what the header already rules out.

    The header is read first: more than ``max_pixels`` pixels (default: the limit in
    :mod:`seminspect.data.limits`), a stack or an unsupported pixel type is refused before any
    pixel is decoded. RGB files whose channels are equal are accepted as grayscale; colour
    images, stacks and other dtypes raise :class:`ImageReadError` naming the file.
    """
    path = Path(path)
    require_file(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise ImageReadError.at(path, f"unsupported image type {suffix!r} (use PNG, TIFF or JPEG)")
    limit = limits.max_pixels(max_pixels)
    try:
        array = read_tiff(path, limit) if suffix in {".tif", ".tiff"} else _read_pillow(path, limit)
    except ImageReadError:
        raise
    except Exception as exc:  # PIL and tifffile raise many types for corrupt files
        raise ImageReadError.at(path, f"cannot decode image ({type(exc).__name__}: {exc})") from None
    return _as_gray(array, path)


def read_tiff(path: Path, limit: int, depth: bool = False) -> np.ndarray:
    """Decode a TIFF's first series after checking its tags: shape, pixel count, pixel type.

    Images take ``(H, W)``, ``(1, H, W)`` or ``(H, W, 3|4)`` in uint8/uint16/bool; depth maps
    (``depth=True``) take ``(H, W)`` of any integer or float type.
    """
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if not tif.series:
            raise ImageReadError.at(path, "TIFF holds no image")
        series = tif.series[0]
        shape = tuple(int(n) for n in series.shape)
        dtype = None if series.dtype is None else np.dtype(series.dtype)
        if depth:
            if len(shape) != 2:
                raise ImageReadError.at(path, f"depth map must be 2-D, got shape {shape}")
            height, width = shape
        else:
            height, width = image_geometry(shape, path)
        check_pixels(path, height, width, limit)
        if depth:
            if dtype is None or dtype.kind not in "iuf":
                raise ImageReadError.at(path, f"depth pixel type {dtype} is not an integer or float type")
        elif dtype is None or dtype.type not in _ALLOWED_DTYPES:
            raise ImageReadError.at(path, f"pixel type {dtype} is not 8- or 16-bit unsigned")
        _check_inflation(tif, series, path, int(np.prod(shape)) * dtype.itemsize)
        return np.asarray(series.asarray())


#: TIFF compressions whose data tifffile inflates without a bound (when imagecodecs is absent).
_INFLATING = {8: "zlib", 32946: "zlib", 50013: "zlib", 34925: "lzma"}


def _check_inflation(tif: Any, series: Any, path: Path, expected: int) -> None:
    """Refuse a TIFF whose compressed strips or tiles inflate past the declared image (a decompression bomb).

    Each segment is inflated at most ``expected + 1`` bytes here, so the check itself is bounded.
    """
    import lzma
    import zlib

    for page in series.pages:
        codec = _INFLATING.get(int(getattr(page, "compression", 1) or 1))
        if codec is None:
            continue
        for offset, count in zip(page.dataoffsets, page.databytecounts, strict=False):
            if not count:
                continue
            tif.filehandle.seek(offset)
            data = tif.filehandle.read(count)
            inflater = zlib.decompressobj() if codec == "zlib" else lzma.LZMADecompressor()
            try:
                n = len(inflater.decompress(data, expected + 1))
            except (zlib.error, lzma.LZMAError) as exc:
                raise ImageReadError.at(path, f"cannot decode image ({type(exc).__name__}: {exc})") from None
            if n > expected:
                raise ImageReadError.at(path, f"compressed data inflates past the declared {expected:,} bytes "
                                              "(a decompression bomb)")


def image_geometry(shape: tuple[int, ...], path: Path) -> tuple[int, int]:
    """``(height, width)`` of a header's shape: ``(H, W)``, ``(1, H, W)`` or ``(H, W, 3|4)``; others refused."""
    if len(shape) == 3 and shape[-1] in (3, 4):
        height, width = shape[0], shape[1]
    elif len(shape) == 3 and shape[0] == 1:
        height, width = shape[1], shape[2]
    elif len(shape) == 2:
        height, width = shape
    else:
        raise ImageReadError.at(path, f"expected a 2-D grayscale image, got shape {shape}")
    if height * width == 0:
        raise ImageReadError.at(path, "empty image")
    return height, width


def _open_pillow(path: Path, limit: int) -> Any:
    sync_pillow(limit)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limit is checked just below
        try:
            im = Image.open(path, formats=PILLOW_FORMATS.get(path.suffix.lower()))
        except Image.DecompressionBombError as exc:  # over twice the limit: Pillow refuses first
            found = re.search(r"\((\d+) pixels\)", str(exc))
            raise too_many_pixels(path, int(found.group(1)) if found else None, limit) from None
    return im


def _read_pillow(path: Path, limit: int) -> np.ndarray:
    with _open_pillow(path, limit) as im:
        width, height = im.size
        if height * width == 0:
            raise ImageReadError.at(path, "empty image")
        check_pixels(path, height, width, limit)
        mode = im.mode
        if mode == "F":
            raise ImageReadError.at(path, "pixel type float32 is not 8- or 16-bit unsigned")
        if mode not in _PILLOW_16BIT | _PILLOW_RGB | {"1", "L", "I"}:
            raise ImageReadError.at(path, f"image mode {mode!r} is not 8- or 16-bit grayscale")
        im.load()
        if mode in _PILLOW_16BIT:
            return np.asarray(im, dtype=np.uint16)
        if mode == "I":
            array = np.asarray(im)
            if array.min() < 0 or array.max() > 65535:
                raise ImageReadError.at(path, "32-bit integer pixels out of 16-bit range")
            return array.astype(np.uint16)
        if mode in {"L", "1"}:
            return np.asarray(im.convert("L"))
        return np.asarray(im.convert("RGB"))


def _as_gray(array: np.ndarray, path: Path) -> np.ndarray:
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        rgb = array[..., :3]
        if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
            raise ImageReadError.at(path, "colour image; SEM views must be grayscale")
        array = rgb[..., 0]
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise ImageReadError.at(path, f"expected a 2-D grayscale image, got shape {array.shape}")
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    if array.dtype not in (np.uint8, np.uint16):
        raise ImageReadError.at(path, f"pixel type {array.dtype} is not 8- or 16-bit unsigned")
    if array.size == 0:
        raise ImageReadError.at(path, "empty image")
    return np.ascontiguousarray(array)


def write_image(path: str | Path, image: np.ndarray) -> None:
    """Write a ``(H, W)`` uint8/uint16 image atomically; the format follows the suffix."""
    path = Path(path)
    if image.ndim != 2 or image.dtype not in (np.uint8, np.uint16, np.bool_):
        raise ValueError(f"{path}: write_image takes (H, W) uint8/uint16/bool, got {image.shape} {image.dtype}")
    if image.dtype == np.bool_:
        image = image.astype(np.uint8) * 255
    suffix = path.suffix.lower()
    with atomic_path(path) as tmp:
        if suffix in {".tif", ".tiff"}:
            import tifffile

            tifffile.imwrite(tmp, image, compression="zlib")
        elif suffix == ".png":
            # Pillow infers "L" for uint8 and "I;16" for uint16 arrays.
            Image.fromarray(np.ascontiguousarray(image)).save(tmp, format="PNG", compress_level=1)
        else:
            raise ValueError(f"{path}: write PNG or TIFF (lossless), not {suffix!r}")


def to_float(image: np.ndarray) -> np.ndarray:
    """Pixels to float32 in [0, 1]: uint8 / 255, uint16 / 65535; float input is passed through."""
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    if image.dtype == np.uint16:
        return image.astype(np.float32) / 65535.0
    if image.dtype == np.bool_:
        return image.astype(np.float32)
    return image.astype(np.float32, copy=False)


def to_uint(image: np.ndarray, bits: int = 8) -> np.ndarray:
    """Float image in [0, 1] to uint8 or uint16 (clipped, rounded)."""
    if bits not in (8, 16):
        raise ValueError("bits must be 8 or 16")
    scale = 255.0 if bits == 8 else 65535.0
    dtype = np.uint8 if bits == 8 else np.uint16
    return np.clip(np.rint(np.asarray(image, dtype=np.float64) * scale), 0, scale).astype(dtype)

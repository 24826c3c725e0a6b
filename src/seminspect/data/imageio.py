"""Reading and writing SEM images: PNG, TIFF and JPEG, 8- or 16-bit grayscale.

This is the one place where pixels on disk become arrays, and :func:`to_float` the one place
where integer pixels become float32 in [0, 1].
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from seminspect.errors import SeminspectError
from seminspect.utils.io import atomic_path

IMAGE_SUFFIXES = {".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp"}


class ImageReadError(SeminspectError, ValueError):
    """An image file is missing, unreadable or not a grayscale 8/16-bit image."""


def read_image(path: str | Path) -> np.ndarray:
    """Read a grayscale image as ``(H, W)`` uint8 or uint16.

    RGB files whose channels are equal are accepted as grayscale; colour images, stacks and
    other dtypes raise :class:`ImageReadError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise ImageReadError(f"{path}: unsupported image type {suffix!r} (use PNG, TIFF or JPEG)")
    try:
        if suffix in {".tif", ".tiff"}:
            import tifffile

            array = np.asarray(tifffile.imread(path))
        else:
            with Image.open(path) as im:
                im.load()
                if im.mode in {"I;16", "I;16B", "I;16L"}:
                    array = np.asarray(im, dtype=np.uint16)
                elif im.mode == "I":
                    array = np.asarray(im)
                    if array.min() < 0 or array.max() > 65535:
                        raise ImageReadError(f"{path}: 32-bit integer pixels out of 16-bit range")
                    array = array.astype(np.uint16)
                elif im.mode in {"L", "P", "1"}:
                    array = np.asarray(im.convert("L"))
                else:
                    array = np.asarray(im.convert("RGB"))
    except ImageReadError:
        raise
    except Exception as exc:  # PIL and tifffile raise many types for corrupt files
        raise ImageReadError(f"{path}: cannot decode image ({type(exc).__name__}: {exc})") from None
    return _as_gray(array, path)


def _as_gray(array: np.ndarray, path: Path) -> np.ndarray:
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        rgb = array[..., :3]
        if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
            raise ImageReadError(f"{path}: colour image; SEM views must be grayscale")
        array = rgb[..., 0]
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise ImageReadError(f"{path}: expected a 2-D grayscale image, got shape {array.shape}")
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    if array.dtype not in (np.uint8, np.uint16):
        raise ImageReadError(f"{path}: pixel type {array.dtype} is not 8- or 16-bit unsigned")
    if array.size == 0:
        raise ImageReadError(f"{path}: empty image")
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

"""Hostile input files for the tests of the reader at the door (tests/test_door.py, test_bad_inputs.py, fuzz).

Small files whose header declares a huge image (TIFF, PNG, JPEG, ``.npy``), and the catalogue of
bad-input cases: each one breaks one site of a dataset folder copy and says what a reader must
report (the ``validate`` problem kind and the text naming the file or field).
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

VICTIM = "s0000"  # a normal site of the train split: every command reads it


# ----- files whose header lies about their size --------------------------------------------------
def tiff_header_only(path: Path, width: int, height: int, bits: int = 8, compression: int = 1,
                     payload: bytes = bytes(64)) -> Path:
    """A baseline TIFF (one strip) declaring ``width x height`` whose strip holds ``payload`` (64 bytes)."""
    entries = [(256, 4, width), (257, 4, height), (258, 3, bits), (259, 3, compression), (262, 3, 1), (273, 4, 0),
               (277, 3, 1), (278, 4, height), (279, 4, len(payload))]
    ifd_offset = 8
    data_offset = ifd_offset + 2 + 12 * len(entries) + 4
    body = bytearray(b"II*\x00" + struct.pack("<I", ifd_offset) + struct.pack("<H", len(entries)))
    for tag, typ, value in entries:
        if tag == 273:
            value = data_offset
        body += struct.pack("<HHIHH", tag, typ, 1, value, 0) if typ == 3 else struct.pack("<HHII", tag, typ, 1, value)
    body += struct.pack("<I", 0) + payload
    path.write_bytes(bytes(body))
    return path


def tiff_zlib_bomb(path: Path, width: int = 100, height: int = 100, inflated: int = 50_000_000) -> Path:
    """A small deflate TIFF declaring ``width x height`` whose one strip inflates to ``inflated`` bytes."""
    return tiff_header_only(path, width, height, compression=8, payload=zlib.compress(bytes(inflated), 9))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_header_only(path: Path, width: int, height: int, bits: int = 8) -> Path:
    """A PNG with a valid IHDR declaring ``width x height`` grayscale and a few bytes of image data."""
    ihdr = struct.pack(">IIBBBBB", width, height, bits, 0, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(bytes(256)))
    path.write_bytes(data + _png_chunk(b"IEND", b""))
    return path


def jpeg_header_only(path: Path, width: int, height: int) -> Path:
    """A small grayscale JPEG whose SOF marker is patched to declare ``width x height``."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(buf, format="JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(data))
    return path


def npy_header_only(path: Path, shape: tuple[int, ...], dtype: str = "<f4") -> Path:
    """An ``.npy`` header declaring ``shape`` followed by no data."""
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": dtype, "fortran_order": False, "shape": shape})
    return path


# ----- the catalogue of bad-input cases ------------------------------------------------------------
@dataclass(frozen=True)
class Expect:
    """What a reader must report: ``kind`` as ``validate`` names it, ``needle`` in the message, the ``field``."""

    kind: str
    needle: str
    field: str  # what is broken: "image", "mask", "depth", "reference" (a reference view) or "manifest"
    reason: str  # text of the problem itself


def _manifest(ds: Path) -> pd.DataFrame:
    return pd.read_csv(ds / "manifest.csv", dtype=str, keep_default_na=False)


def _victim_row(m: pd.DataFrame) -> int:
    hits = m.index[(m.sample_id == VICTIM) & (m.role == "target") & (m["index"] == "0")]
    return int(hits[0])


def _set(ds: Path, column: str, value: str, whole_site: bool = False) -> None:
    m = _manifest(ds)
    if column not in m.columns:
        m[column] = ""
    if whole_site:
        m.loc[m.sample_id == VICTIM, column] = value
    else:
        m.loc[_victim_row(m), column] = value
    m.to_csv(ds / "manifest.csv", index=False)


def _victim_path(ds: Path) -> Path:
    m = _manifest(ds)
    return ds / m.loc[_victim_row(m), "path"]


def _secret(outside: Path, shape: tuple[int, int] = (64, 64)) -> Path:
    from seminspect.data.imageio import write_image

    outside.mkdir(parents=True, exist_ok=True)
    write_image(outside / "secret.png", np.full(shape, 77, np.uint8))
    return outside / "secret.png"


def case_dotdot(ds: Path, outside: Path) -> Expect:
    _secret(outside)
    _set(ds, "path", f"../{outside.name}/secret.png")
    return Expect("outside_root", f"../{outside.name}/secret.png", "image", "outside the dataset folder")


def case_absolute(ds: Path, outside: Path) -> Expect:
    secret = _secret(outside)
    _set(ds, "path", str(secret))
    return Expect("outside_root", str(secret), "image", "outside the dataset folder")


def case_symlink(ds: Path, outside: Path) -> Expect:
    secret = _secret(outside)
    (ds / "images" / "escape.png").symlink_to(secret)
    _set(ds, "path", "images/escape.png")
    return Expect("outside_root", "images/escape.png", "image", "outside the dataset folder")


def case_mask_outside(ds: Path, outside: Path) -> Expect:
    _secret(outside)
    _set(ds, "mask", f"../{outside.name}/secret.png")
    return Expect("outside_root", f"../{outside.name}/secret.png", "mask", "outside the dataset folder")


def case_depth_outside(ds: Path, outside: Path) -> Expect:
    import tifffile

    outside.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(outside / "depth.tiff", np.zeros((64, 64), np.float32))
    _set(ds, "depth", f"../{outside.name}/depth.tiff", whole_site=True)
    return Expect("outside_root", f"../{outside.name}/depth.tiff", "depth", "outside the dataset folder")


def case_huge_tiff(ds: Path, outside: Path) -> Expect:
    tiff_header_only(ds / "images" / "huge.tif", 80000, 80000)
    _set(ds, "path", "images/huge.tif")
    return Expect("too_many_pixels", "images/huge.tif", "image", "over the limit")


def case_huge_tiff16(ds: Path, outside: Path) -> Expect:
    tiff_header_only(ds / "images" / "huge16.tif", 20000, 20000, bits=16)
    _set(ds, "path", "images/huge16.tif")
    return Expect("too_many_pixels", "images/huge16.tif", "image", "over the limit")


def case_huge_png(ds: Path, outside: Path) -> Expect:
    victim = _victim_path(ds)
    png_header_only(victim, 80000, 80000)
    return Expect("too_many_pixels", victim.relative_to(ds).as_posix(), "image", "over the limit")


def case_huge_jpeg(ds: Path, outside: Path) -> Expect:
    jpeg_header_only(ds / "images" / "huge.jpg", 60000, 60000)
    _set(ds, "path", "images/huge.jpg")
    return Expect("too_many_pixels", "images/huge.jpg", "image", "over the limit")


def case_tiff_zlib_bomb(ds: Path, outside: Path) -> Expect:
    tiff_zlib_bomb(ds / "images" / "bomb.tif", 64, 64)
    _set(ds, "path", "images/bomb.tif")
    return Expect("corrupt_image", "images/bomb.tif", "image", "decompression bomb")


def case_huge_npy_depth(ds: Path, outside: Path) -> Expect:
    npy_header_only(ds / "images" / "huge_depth.npy", (80000, 80000))
    _set(ds, "depth", "images/huge_depth.npy", whole_site=True)
    return Expect("too_many_pixels", "images/huge_depth.npy", "depth", "over the limit")


def case_nan_depth(ds: Path, outside: Path) -> Expect:
    d = np.ones((64, 64), np.float32)
    d[3, 4] = np.nan
    np.save(ds / "images" / "nan_depth.npy", d)
    _set(ds, "depth", "images/nan_depth.npy", whole_site=True)
    return Expect("non_finite", "images/nan_depth.npy", "depth", "1 NaN")


def case_inf_depth(ds: Path, outside: Path) -> Expect:
    import tifffile

    d = np.ones((64, 64), np.float32)
    d[0, 0] = np.inf
    tifffile.imwrite(ds / "images" / "inf_depth.tiff", d)
    _set(ds, "depth", "images/inf_depth.tiff", whole_site=True)
    return Expect("non_finite", "images/inf_depth.tiff", "depth", "1 Inf")


def case_missing(ds: Path, outside: Path) -> Expect:
    victim = _victim_path(ds)
    victim.unlink()
    return Expect("missing_file", victim.relative_to(ds).as_posix(), "image", "not found")


def case_corrupt(ds: Path, outside: Path) -> Expect:
    victim = _victim_path(ds)
    victim.write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    return Expect("corrupt_image", victim.relative_to(ds).as_posix(), "image", "cannot decode")


def case_colour(ds: Path, outside: Path) -> Expect:
    from PIL import Image

    victim = _victim_path(ds)
    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(victim)
    return Expect("corrupt_image", victim.relative_to(ds).as_posix(), "image", "colour")


def case_float_image(ds: Path, outside: Path) -> Expect:
    import tifffile

    tifffile.imwrite(ds / "images" / "float.tif", np.zeros((64, 64), np.float32))
    _set(ds, "path", "images/float.tif")
    return Expect("corrupt_image", "images/float.tif", "image", "not 8- or 16-bit")


def case_stack(ds: Path, outside: Path) -> Expect:
    import tifffile

    tifffile.imwrite(ds / "images" / "stack.tif", np.zeros((3, 64, 64), np.uint8), photometric="minisblack")
    _set(ds, "path", "images/stack.tif")
    return Expect("corrupt_image", "images/stack.tif", "image", "2-D grayscale")


def case_mask_size(ds: Path, outside: Path) -> Expect:
    from seminspect.data.imageio import write_image

    write_image(ds / "images" / "small_mask.png", np.zeros((32, 32), np.uint8))
    _set(ds, "mask", "images/small_mask.png")
    return Expect("mask_size_mismatch", "small_mask.png", "mask", "32")


def case_size_mismatch(ds: Path, outside: Path) -> Expect:
    from seminspect.data.imageio import write_image

    m = _manifest(ds)
    ref = m.index[(m.sample_id == VICTIM) & (m.role == "reference") & (m["index"] == "0")][0]
    write_image(ds / m.loc[ref, "path"], np.zeros((32, 32), np.uint8))
    return Expect("size_mismatch", "32x32", "reference", "reference view 0")


def case_bad_role(ds: Path, outside: Path) -> Expect:
    _set(ds, "role", "sideways")
    return Expect("bad_role", "manifest.csv", "manifest", "'sideways'")


def case_bad_index(ds: Path, outside: Path) -> Expect:
    _set(ds, "index", "1.5")
    return Expect("bad_index", "manifest.csv", "manifest", "'1.5'")


def case_empty_path(ds: Path, outside: Path) -> Expect:
    _set(ds, "path", "")
    return Expect("empty_field", "manifest.csv", "manifest", "path")


def case_no_target(ds: Path, outside: Path) -> Expect:
    m = _manifest(ds)
    m = m[~((m.sample_id == VICTIM) & (m.role == "target"))]
    m.to_csv(ds / "manifest.csv", index=False)
    return Expect("no_target", "manifest.csv", "manifest", "no target view")


def case_bad_label(ds: Path, outside: Path) -> Expect:
    _set(ds, "label", "maybe", whole_site=True)
    return Expect("bad_label", "manifest.csv", "manifest", "'maybe'")


CASES: dict[str, Callable[[Path, Path], Expect]] = {
    name.removeprefix("case_"): fn for name, fn in globals().items() if name.startswith("case_")
}

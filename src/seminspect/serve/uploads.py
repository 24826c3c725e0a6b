"""A request's views to a :class:`~seminspect.data.sample.Sample`: uploaded files or paths under the data root.

Every file is read by :func:`seminspect.data.imageio.read_image` (the one image reader) and the site by
:func:`seminspect.data.stream.site_problem` (``validate``'s per-site checks). Each problem raises a
:class:`RequestError` naming the field. Uploaded bytes land in the store under their SHA-256, so a
view is written once however often it is sent; a file referenced by path is never copied.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from seminspect.data.imageio import ImageReadError, read_image
from seminspect.data.sample import MAX_VIEWS_PER_ROLE, Role, Sample, View
from seminspect.data.stream import site_problem
from seminspect.serve.config import ServeConfig
from seminspect.serve.errors import RequestError
from seminspect.utils.digest import sha256_file

UPLOAD_SUFFIXES = {".png", ".tif", ".tiff"}
META_KEYS = ("lot", "wafer", "die", "product", "tool")


@dataclass
class StoredView:
    role: str
    index: int
    path: str
    sha256: str
    height: int
    width: int
    bits: int


def parse_role_index(field: str, role: Any, index: Any) -> tuple[Role, int]:
    try:
        r = Role.parse(str(role))
    except ValueError:
        raise RequestError(422, field, f"unknown view role {role!r}; expected target, reference or zoom") from None
    try:
        i = int(str(index))
    except ValueError:
        raise RequestError(422, field, f"index {index!r} is not a whole number") from None
    if not 0 <= i < MAX_VIEWS_PER_ROLE:
        raise RequestError(422, field, f"index {i} is outside 0..{MAX_VIEWS_PER_ROLE - 1}")
    return r, i


def _check_pixels(field: str, path: Path, cfg: ServeConfig) -> None:
    """Refuse an over-large view from its header, before decoding it."""
    try:
        if path.suffix.lower() in {".tif", ".tiff"}:
            import tifffile

            with tifffile.TiffFile(path) as tf:
                shape = tf.pages[0].shape
            pixels = int(np.prod(shape[:2]))
        else:
            from PIL import Image

            with Image.open(path) as im:
                pixels = im.size[0] * im.size[1]
    except Exception:  # undecodable: read_image names the problem
        return
    if pixels > cfg.max_pixels:
        raise RequestError(413, field, f"{pixels} pixels, at most {cfg.max_pixels} per view")


def _read(field: str, path: Path, cfg: ServeConfig) -> np.ndarray:
    _check_pixels(field, path, cfg)
    try:
        image = read_image(path)
    except ImageReadError as exc:
        raise RequestError(422, field, str(exc).replace(f"{path}: ", "")) from None
    if image.size > cfg.max_pixels:
        raise RequestError(413, field, f"{image.size} pixels, at most {cfg.max_pixels} per view")
    return image


def _stored(role: Role, index: int, path: Path, sha: str, image: np.ndarray) -> StoredView:
    return StoredView(role.value, index, str(path), sha, int(image.shape[0]), int(image.shape[1]),
                      8 if image.dtype == np.uint8 else 16)


def store_upload(field: str, filename: str, data: bytes, role: Role, index: int,
                 cfg: ServeConfig) -> tuple[View, StoredView]:
    """Check one uploaded view and keep it in the store under its SHA-256."""
    suffix = Path(filename or "").suffix.lower()
    if suffix not in UPLOAD_SUFFIXES:
        raise RequestError(415, field, f"file name {filename!r}: upload PNG or TIFF (.png, .tif, .tiff)")
    if not data:
        raise RequestError(422, field, "empty file")
    sha = hashlib.sha256(data).hexdigest()
    assert cfg.store is not None
    final = cfg.store / sha[:2] / f"{sha}{suffix}"
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=final.parent, suffix=suffix)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        image = _read(field, tmp, cfg)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return View(role, index, image, source=field), _stored(role, index, final, sha, image)


def resolve_under_root(field: str, rel: Any, cfg: ServeConfig) -> Path:
    """``rel`` as a file under the data root; anything that leaves it (``..``, absolute, a link out) is refused."""
    if not isinstance(rel, str) or not rel.strip():
        raise RequestError(422, field, "missing: a file path relative to the data root")
    if "\x00" in rel:
        raise RequestError(400, field, "path contains a NUL byte")
    p = Path(rel)
    if p.is_absolute() or rel.startswith(("/", "\\")) or ".." in p.parts or ".." in rel.replace("\\", "/").split("/"):
        raise RequestError(400, field, "path must stay under the data root (no absolute paths, no '..')")
    full = (cfg.data_root / p).resolve()
    if not full.is_relative_to(cfg.data_root):
        raise RequestError(400, field, "path resolves outside the data root")
    if not full.is_file():
        raise RequestError(404, field, f"no file {rel!r} under the data root")
    return full


def referenced_view(field: str, item: Any, cfg: ServeConfig) -> tuple[View, StoredView]:
    if not isinstance(item, dict):
        raise RequestError(422, field, "each view must be an object with role, index and path")
    for key in ("role", "index", "path"):
        if key not in item:
            raise RequestError(422, f"{field}.{key}", "missing")
    role, index = parse_role_index(f"{field}.role", item["role"], item["index"])
    path = resolve_under_root(f"{field}.path", item["path"], cfg)
    image = _read(f"{field}.path", path, cfg)
    return View(role, index, image, source=str(path)), _stored(role, index, path, sha256_file(path), image)


def build_sample(sample_id: Any, views: list[View], meta: Any, cfg: ServeConfig) -> Sample:
    """The site, checked as ``validate`` checks one (views count, duplicates, targets, sizes)."""
    if sample_id is not None and (not isinstance(sample_id, str) or not sample_id.strip() or len(sample_id) > 300):
        raise RequestError(422, "sample_id", "must be a non-empty string of at most 300 characters")
    if meta is not None and not isinstance(meta, dict):
        raise RequestError(422, "meta", "must be an object of strings (lot, wafer, tool, product, ...)")
    if not views:
        raise RequestError(422, "views", "missing: at least one view (a target) is needed")
    if len(views) > cfg.max_views:
        raise RequestError(413, "views", f"{len(views)} views, at most {cfg.max_views} per site")
    keys = [(v.role.value, v.index) for v in views]
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise RequestError(422, "views", f"two views share role and index: {dupes[0][0]} {dupes[0][1]}")
    sid = sample_id or f"site-{uuid.uuid4().hex[:12]}"
    sample = Sample(sid.strip(), list(views), metadata={str(k): str(v) for k, v in (meta or {}).items()})
    problem = site_problem(sample)
    if problem:
        raise RequestError(422, "views", problem)
    return sample

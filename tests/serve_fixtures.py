"""Helpers of the service tests: skip without the serve extra, a tiny trained artefact, image bytes."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import numpy as np
import pytest

SERVE_MODULES = ("fastapi", "uvicorn", "sqlalchemy", "alembic", "multipart", "jinja2", "argon2", "httpx")


def need_serve_extra() -> None:
    missing = [m for m in SERVE_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"the serve extra is not installed (missing {', '.join(missing)}): pip install -e '.[dev]'")


def train_tiny(root: Path, n: int = 64) -> tuple[Path, Path]:
    """A dataset of shifted 64 px sites and a tiny artefact trained on it (a few seconds)."""
    from seminspect.workflow import train_and_evaluate
    from test_inference import make_shifted_dataset, tiny_config

    ds = make_shifted_dataset(root / "ds", n=n)
    train_and_evaluate(tiny_config(ds, root / "art"), log=None, report=False)
    return ds, root / "art"


def png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def tiff_bytes(image: np.ndarray) -> bytes:
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, image)
    return buf.getvalue()


def texture(seed: int, size: int = 64, bits: int = 8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.random((size, size))
    return (img * (255 if bits == 8 else 65535)).astype(np.uint8 if bits == 8 else np.uint16)


def site_files(seed: int, size: int = 64, bits: int = 8, fmt: str = "png") -> dict[str, tuple[str, bytes, str]]:
    """A target/reference pair as multipart file parts."""
    enc = png_bytes if fmt == "png" else tiff_bytes
    t, r = texture(seed, size, bits), texture(seed, size, bits)
    r = np.roll(r, (1, 0), axis=(0, 1))
    return {"target_0": (f"t.{fmt}", enc(t), "image/png"), "reference_0": (f"r.{fmt}", enc(r), "image/png")}

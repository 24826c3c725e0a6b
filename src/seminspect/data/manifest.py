"""The on-disk dataset format: a folder of images plus a manifest with one row per view.

::

    my_dataset/
        dataset.yaml          # taxonomy (built-in name or a YAML path relative to here), notes
        manifest.csv          # or manifest.parquet; one row per view
        images/...            # any layout; paths in the manifest are relative to the folder

Manifest columns (see docs/data_format.md):

==============  =========  =====================================================================
column          required   meaning
==============  =========  =====================================================================
sample_id       yes        site id; all rows of a sample share it
role            yes        ``target``, ``reference`` or ``zoom``
index           yes        detector / angle number, 0..4 (pairs target i with reference i)
path            yes        image file (PNG/TIFF/JPEG, 8- or 16-bit grayscale)
mask            no         defect mask file for this view (>= half of full scale = defect; see data.masks)
label           no         ``normal`` / ``abnormal`` (empty = unlabelled)
defect_type     no         leaf of the taxonomy (abnormal samples only)
depth           no         depth map file for the sample (TIFF float32 or 16-bit, or .npy)
lot, wafer,     no         metadata, kept as strings; any other column is kept as metadata too
die, product,
tool, split
==============  =========  =====================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from seminspect.data.imageio import write_image
from seminspect.data.sample import Sample
from seminspect.errors import SeminspectError
from seminspect.utils.io import atomic_path, atomic_write_text, read_yaml_mapping

REQUIRED_COLUMNS = ("sample_id", "role", "index", "path")
SAMPLE_COLUMNS = ("label", "defect_type", "depth")
METADATA_COLUMNS = ("lot", "wafer", "die", "product", "tool", "split")
LABELS = {"normal": False, "abnormal": True}
MANIFEST_NAMES = ("manifest.csv", "manifest.parquet")


class ManifestError(SeminspectError, ValueError):
    """The dataset folder or its manifest is malformed."""


@dataclass
class DatasetInfo:
    """Contents of ``dataset.yaml``."""

    taxonomy: str = "sem_default"
    description: str = ""
    depth_units: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, root: Path) -> DatasetInfo:
        path = root / "dataset.yaml"
        if not path.is_file():
            return cls()
        data = read_yaml_mapping(path, ManifestError, what="dataset.yaml")
        known = {k: data.pop(k) for k in ("taxonomy", "description", "depth_units") if k in data}
        return cls(**{k: str(v) for k, v in known.items()}, extra=data)

    def write(self, root: Path) -> None:
        data = {"taxonomy": self.taxonomy, "description": self.description, "depth_units": self.depth_units}
        data.update(self.extra)
        atomic_write_text(root / "dataset.yaml", yaml.safe_dump(data, sort_keys=False))

    def taxonomy_spec(self, root: Path) -> str:
        """Built-in taxonomy name, or the YAML path resolved against the dataset folder."""
        if self.taxonomy.endswith((".yaml", ".yml")):
            return str((root / self.taxonomy).resolve())
        return self.taxonomy


def find_manifest(root: str | Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise ManifestError(f"{root}: dataset folder not found")
    for name in MANIFEST_NAMES:
        if (root / name).is_file():
            return root / name
    raise ManifestError(f"{root}: no manifest.csv or manifest.parquet in the dataset folder")


def read_manifest(root: str | Path) -> pd.DataFrame:
    """Read and normalise a manifest; raise :class:`ManifestError` on a structural problem.

    Checks columns and types only; :mod:`seminspect.data.validate` checks files and labels.
    """
    path = find_manifest(root)
    try:
        if path.suffix == ".parquet":
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:
        raise ManifestError(f"{path}: cannot read manifest ({type(exc).__name__}: {exc})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ManifestError(f"{path}: missing required column(s) {missing}; have {list(df.columns)}")
    if df.empty:
        raise ManifestError(f"{path}: manifest has no rows")
    df = df.astype(str).replace({"nan": "", "None": ""})
    for col in SAMPLE_COLUMNS:
        if col not in df.columns:
            df[col] = ""
    bad_index = ~df["index"].str.fullmatch(r"\d+")
    if bad_index.any():
        row = int(np.flatnonzero(bad_index.to_numpy())[0])
        raise ManifestError(f"{path}: row {row + 2}: index {df['index'].iloc[row]!r} is not a whole number")
    df["index"] = df["index"].astype(int)
    df["role"] = df["role"].str.strip().str.lower()
    df["label"] = df["label"].str.strip().str.lower()
    df.attrs["manifest_path"] = str(path)
    return df


def write_manifest(root: str | Path, rows: list[dict[str, Any]], fmt: str = "csv") -> Path:
    """Write manifest rows atomically (``fmt`` is ``csv`` or ``parquet``)."""
    root = Path(root)
    df = pd.DataFrame(rows)
    for col in REQUIRED_COLUMNS:
        if col not in df.columns:
            raise ManifestError(f"manifest rows lack required column {col!r}")
    ordered = [c for c in (*REQUIRED_COLUMNS, "mask", *SAMPLE_COLUMNS, *METADATA_COLUMNS) if c in df.columns]
    df = df[ordered + [c for c in df.columns if c not in ordered]].fillna("")
    path = root / f"manifest.{fmt}"
    with atomic_path(path) as tmp:
        if fmt == "parquet":
            df.astype(str).to_parquet(tmp, index=False)
        elif fmt == "csv":
            df.to_csv(tmp, index=False)
        else:
            raise ValueError(f"manifest format must be csv or parquet, not {fmt!r}")
    return path


def save_sample(sample: Sample, root: str | Path, image_format: str = "png") -> list[dict[str, Any]]:
    """Write a sample's images (and masks, depth) under ``root`` and return its manifest rows.

    Files go to ``images/<sample_id>/<role><index>.<fmt>``; masks beside them as
    ``<role><index>_mask.png``; depth as ``depth.tiff`` (float32).
    """
    root = Path(root)
    rel_dir = Path("images") / sample.sample_id
    label = "" if sample.is_abnormal is None else ("abnormal" if sample.is_abnormal else "normal")
    depth_rel = ""
    if sample.depth is not None:
        import tifffile

        depth_rel = str(rel_dir / "depth.tiff")
        (root / rel_dir).mkdir(parents=True, exist_ok=True)
        with atomic_path(root / depth_rel) as tmp:
            tifffile.imwrite(tmp, np.asarray(sample.depth, dtype=np.float32), compression="zlib")
    rows = []
    for view in sample.views:
        rel = rel_dir / f"{view.role.value}{view.index}.{image_format}"
        write_image(root / rel, view.image)
        mask_rel = ""
        if view.mask is not None:
            mask_rel = str(rel_dir / f"{view.role.value}{view.index}_mask.png")
            write_image(root / mask_rel, view.mask.astype(bool))
        rows.append(
            {
                "sample_id": sample.sample_id,
                "role": view.role.value,
                "index": view.index,
                "path": str(rel),
                "mask": mask_rel,
                "label": label,
                "defect_type": sample.defect_type or "",
                "depth": depth_rel,
                **{k: str(v) for k, v in sample.metadata.items()},
            }
        )
    return rows


class DatasetWriter:
    """Write samples into a dataset folder; the manifest is written atomically on :meth:`close`."""

    def __init__(self, root: str | Path, info: DatasetInfo | None = None, image_format: str = "png",
                 manifest_format: str = "csv") -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.info = info or DatasetInfo()
        self.image_format = image_format
        self.manifest_format = manifest_format
        self.rows: list[dict[str, Any]] = []

    def add(self, sample: Sample) -> None:
        self.rows.extend(save_sample(sample, self.root, self.image_format))

    def add_rows(self, rows: list[dict[str, Any]]) -> None:
        self.rows.extend(rows)

    def close(self) -> Path:
        self.info.write(self.root)
        return write_manifest(self.root, self.rows, self.manifest_format)

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.close()

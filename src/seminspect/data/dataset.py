"""A dataset folder as a sequence of typed :class:`~seminspect.data.sample.Sample` objects.

Labels and metadata come from the manifest without touching image files, so splitting,
stratifying and counting are cheap; images are read when a sample is indexed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from seminspect.data.imageio import ImageReadError, read_image
from seminspect.data.manifest import LABELS, DatasetInfo, ManifestError, read_manifest
from seminspect.data.sample import Role, Sample, View
from seminspect.data.taxonomy import Taxonomy

_NON_METADATA = {"sample_id", "role", "index", "path", "mask", "label", "defect_type", "depth"}


def read_depth(path: Path) -> np.ndarray:
    """Depth map as ``(H, W)`` float32 from ``.npy`` or TIFF/PNG."""
    if not path.is_file():
        raise ImageReadError(f"{path}: depth file not found")
    try:
        if path.suffix == ".npy":
            depth = np.load(path, allow_pickle=False)
        elif path.suffix.lower() in {".tif", ".tiff"}:
            import tifffile

            depth = tifffile.imread(path)
        else:
            depth = read_image(path)
    except ImageReadError:
        raise
    except Exception as exc:
        raise ImageReadError(f"{path}: cannot read depth map ({type(exc).__name__}: {exc})") from None
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise ImageReadError(f"{path}: depth map must be 2-D, got shape {depth.shape}")
    return depth.astype(np.float32)


class SampleDataset(Sequence[Sample]):
    """Samples of a dataset folder (``manifest.csv``/``.parquet`` + images).

    Args:
        root: dataset folder.
        roles: keep only views of these roles (e.g. ``["target"]`` for an ablation).
        transform: optional callable applied to each loaded :class:`Sample`.
        sample_ids: restrict to (and order by) these ids.
    """

    def __init__(
        self,
        root: str | Path,
        roles: Sequence[str] | None = None,
        transform: Callable[[Sample], Sample] | None = None,
        sample_ids: Sequence[str] | None = None,
    ) -> None:
        self.root = Path(root)
        self.info = DatasetInfo.read(self.root)
        self.manifest = read_manifest(self.root)
        self.manifest_path = self.manifest.attrs["manifest_path"]
        self.roles = None if roles is None else {Role.parse(r) for r in roles}
        self.transform = transform
        groups = self.manifest.groupby("sample_id", sort=False).indices
        if sample_ids is None:
            self.sample_ids = list(groups)
        else:
            unknown = [s for s in sample_ids if s not in groups]
            if unknown:
                raise ManifestError(f"{self.manifest_path}: unknown sample ids {unknown[:5]}")
            self.sample_ids = list(sample_ids)
        self._rows = {sid: groups[sid] for sid in self.sample_ids}
        first = self.manifest.groupby("sample_id", sort=False).first()
        self._first = first.loc[self.sample_ids]

    # ----- cheap, label-only access ----------------------------------------------------------
    def __len__(self) -> int:
        return len(self.sample_ids)

    @property
    def taxonomy(self) -> Taxonomy:
        return Taxonomy.load(self.info.taxonomy_spec(self.root))

    @property
    def is_abnormal(self) -> np.ndarray:
        """``(N,)`` int64: 1 abnormal, 0 normal, -1 unlabelled."""
        return self._first["label"].map({"abnormal": 1, "normal": 0}).fillna(-1).astype(np.int64).to_numpy()

    @property
    def defect_types(self) -> list[str | None]:
        return [t or None for t in self._first["defect_type"].tolist()]

    def metadata_column(self, name: str) -> list[str]:
        if name not in self._first.columns:
            return [""] * len(self)
        return self._first[name].astype(str).tolist()

    def subset(self, sample_ids: Sequence[str]) -> SampleDataset:
        return SampleDataset(self.root, roles=None if self.roles is None else [r.value for r in self.roles],
                             transform=self.transform, sample_ids=sample_ids)

    def split(self, name: str) -> SampleDataset:
        """Samples whose ``split`` metadata equals ``name`` (train/val/calib/test)."""
        ids = [sid for sid, s in zip(self.sample_ids, self.metadata_column("split"), strict=True) if s == name]
        if not ids:
            raise ManifestError(f"{self.manifest_path}: no samples with split == {name!r}")
        return self.subset(ids)

    # ----- loading ---------------------------------------------------------------------------
    def __getitem__(self, i: int) -> Sample:  # type: ignore[override]
        if isinstance(i, slice):
            raise TypeError("use subset() for slices")
        sid = self.sample_ids[i]
        sample = self.load(sid)
        return self.transform(sample) if self.transform else sample

    def load(self, sample_id: str) -> Sample:
        rows: pd.DataFrame = self.manifest.iloc[self._rows[sample_id]]
        return sample_from_rows(self.root, sample_id, rows.to_dict("records"), self.manifest_path,
                                [int(r) + 2 for r in self._rows[sample_id]], self.roles)


def sample_from_rows(root: Path, sample_id: str, rows: Sequence[dict], manifest_path: str | Path,
                     line_numbers: Sequence[int], roles: set[Role] | None = None, masks: bool = True,
                     depth: bool = True) -> Sample:
    """One :class:`Sample` from its manifest rows (normalised as by ``read_manifest``), images read.

    ``line_numbers``: the manifest line of each row (header = 1), for error messages. ``masks`` /
    ``depth`` False skip those files (inference needs neither). Raises :class:`ManifestError` or
    :class:`ImageReadError` naming the file.
    """
    views = []
    for line, row in zip(line_numbers, rows, strict=True):
        where = f"{manifest_path}: row {line} (sample {sample_id!r})"
        try:
            role = Role.parse(row["role"])
        except ValueError as exc:
            raise ManifestError(f"{where}: {exc}") from None
        if roles is not None and role not in roles:
            continue
        image = read_image(root / row["path"])
        mask = None
        if masks and row.get("mask", ""):
            mask = read_image(root / row["mask"]) > 0
            if mask.shape != image.shape:
                raise ManifestError(f"{where}: mask {row['mask']} is {mask.shape}, image is {image.shape}")
        try:
            views.append(View(role=role, index=int(row["index"]), image=image, mask=mask,
                              source=str(root / row["path"])))
        except ValueError as exc:
            raise ManifestError(f"{where}: {exc}") from None
    if not views:
        raise ManifestError(f"{manifest_path}: sample {sample_id!r} has no views of roles {roles}")
    first = rows[0]
    label = first.get("label", "")
    if label and label not in LABELS:
        raise ManifestError(f"{manifest_path}: sample {sample_id!r}: label {label!r} is not normal/abnormal")
    depth_map = read_depth(root / first["depth"]) if depth and first.get("depth", "") else None
    metadata = {c: str(v) for c, v in first.items() if c not in _NON_METADATA and str(v)}
    try:
        return Sample(sample_id=sample_id, views=views, is_abnormal=LABELS.get(label),
                      defect_type=first.get("defect_type", "") or None, depth=depth_map, metadata=metadata)
    except ValueError as exc:
        raise ManifestError(f"{manifest_path}: {exc}") from None


def select_split(dataset: str | Path, split: str | None, drop_roles: Sequence[str] = ()) -> SampleDataset:
    """The sites of ``split`` (all when None), with the views of ``drop_roles`` removed."""
    keep = None
    if drop_roles:
        dropped = {Role.parse(r) for r in drop_roles}
        keep = [r.value for r in Role if r not in dropped]
    ds = SampleDataset(dataset, roles=keep)
    if split:
        if split not in set(ds.metadata_column("split")):
            found = sorted(set(ds.metadata_column("split")) - {""})
            raise ManifestError(f"{ds.manifest_path}: no samples with split == {split!r} (splits here: "
                                f"{', '.join(found) or 'none'}; use --split all)")
        ds = ds.split(split)
    return ds

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
        views = []
        for row_no, row in zip(self._rows[sample_id], rows.itertuples(index=False), strict=True):
            where = f"{self.manifest_path}: row {row_no + 2} (sample {sample_id!r})"
            try:
                role = Role.parse(row.role)
            except ValueError as exc:
                raise ManifestError(f"{where}: {exc}") from None
            if self.roles is not None and role not in self.roles:
                continue
            image = read_image(self.root / row.path)
            mask = None
            if getattr(row, "mask", ""):
                mask = read_image(self.root / row.mask) > 0
                if mask.shape != image.shape:
                    raise ManifestError(f"{where}: mask {row.mask} is {mask.shape}, image is {image.shape}")
            views.append(View(role=role, index=int(row.index), image=image, mask=mask,
                              source=str(self.root / row.path)))
        if not views:
            raise ManifestError(f"{self.manifest_path}: sample {sample_id!r} has no views of roles {self.roles}")
        first = rows.iloc[0]
        label = first["label"]
        if label and label not in LABELS:
            raise ManifestError(f"{self.manifest_path}: sample {sample_id!r}: label {label!r} is not normal/abnormal")
        depth = read_depth(self.root / first["depth"]) if first["depth"] else None
        metadata = {c: str(first[c]) for c in rows.columns if c not in _NON_METADATA and str(first[c])}
        return Sample(
            sample_id=sample_id,
            views=views,
            is_abnormal=LABELS.get(label),
            defect_type=first["defect_type"] or None,
            depth=depth,
            metadata=metadata,
        )

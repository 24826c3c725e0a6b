"""A dataset folder as a sequence of typed :class:`~seminspect.data.sample.Sample` objects.

Labels and metadata come from the manifest without touching image files, so splitting,
stratifying and counting are cheap; images are read when a sample is indexed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from seminspect.data.depthio import read_depth
from seminspect.data.door import read_input
from seminspect.data.manifest import LABELS, DatasetInfo, ManifestError, read_manifest
from seminspect.data.masks import binarise_mask, mask_rule, parse_threshold
from seminspect.data.sample import Role, Sample, View
from seminspect.data.site_rules import SiteError, site_problem
from seminspect.data.taxonomy import Taxonomy

_NON_METADATA = {"sample_id", "role", "index", "path", "mask", "label", "defect_type", "depth"}

__all__ = ["SampleDataset", "read_depth", "sample_from_rows", "select_split"]


class SampleDataset(Sequence[Sample]):
    """Samples of a dataset folder (``manifest.csv``/``.parquet`` + images).

    Args:
        root: dataset folder.
        roles: keep only views of these roles (e.g. ``["target"]`` for an ablation).
        transform: optional callable applied to each loaded :class:`Sample`.
        sample_ids: restrict to (and order by) these ids.
        allow_roots: folders besides ``root`` that manifest paths may lead into (docs/trust.md).
    """

    def __init__(
        self,
        root: str | Path,
        roles: Sequence[str] | None = None,
        transform: Callable[[Sample], Sample] | None = None,
        sample_ids: Sequence[str] | None = None,
        allow_roots: Sequence[str | Path] | None = None,
    ) -> None:
        self.root = Path(root)
        self.allow_roots = None if allow_roots is None else list(allow_roots)
        self.info = DatasetInfo.read(self.root)
        self.mask_threshold = parse_threshold(self.info.extra.get("mask_threshold"), str(self.root / "dataset.yaml"),
                                              ManifestError)
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
                             transform=self.transform, sample_ids=sample_ids, allow_roots=self.allow_roots)

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
                                [int(r) + 2 for r in self._rows[sample_id]], self.roles,
                                allow_roots=self.allow_roots, mask_threshold=self.mask_threshold)

    @property
    def mask_rule(self) -> str:
        """Which mask pixels this dataset's masks count as defect (:mod:`seminspect.data.masks`)."""
        return mask_rule(self.mask_threshold)


def sample_from_rows(root: Path, sample_id: str, rows: Sequence[dict], manifest_path: str | Path,
                     line_numbers: Sequence[int], roles: set[Role] | None = None, masks: bool = True,
                     depth: bool = True, allow_roots: Sequence[str | Path] | None = None,
                     mask_threshold: float | None = None) -> Sample:
    """One :class:`Sample` from its manifest rows (normalised as by ``read_manifest``), images read.

    ``line_numbers``: the manifest line of each row (header = 1), for error messages. ``masks`` /
    ``depth`` False skip those files (inference needs neither). Masks become bool with
    :func:`~seminspect.data.masks.binarise_mask` (``mask_threshold`` None: half of full scale). Every file is read by
    :func:`~seminspect.data.door.read_input` (paths kept inside ``root`` or ``allow_roots``), and
    the site must pass ``validate``'s per-site rules (:mod:`seminspect.data.site_rules`) when its
    target views are loaded. Raises :class:`ManifestError` (:class:`SiteError` for a per-site rule)
    or :class:`ImageReadError` naming the file.
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
        if not str(row["path"]).strip():
            raise SiteError(manifest_path, line, sample_id, "path is empty")
        image = read_input(root, row["path"], "image", allow_roots=allow_roots)
        mask = None
        if masks and row.get("mask", ""):
            mask = binarise_mask(read_input(root, row["mask"], "mask", allow_roots=allow_roots), mask_threshold)
            if mask.shape != image.shape:
                raise SiteError(manifest_path, line, sample_id, f"mask {row['mask']!r} is {mask.shape[0]}x"
                                f"{mask.shape[1]}, image is {image.shape[0]}x{image.shape[1]}")
        try:
            views.append(View(role=role, index=int(row["index"]), image=image, mask=mask,
                              source=str(root / row["path"])))
        except ValueError as exc:
            raise ManifestError(f"{where}: {exc}") from None
    checks_targets = roles is None or Role.TARGET in roles
    if not views:
        present = sorted({str(r.get("role", "")) for r in rows})
        reason = (f"no target view (roles: {present})" if checks_targets else
                  f"no views of roles {sorted(r.value for r in roles or ())} (roles: {present})")
        raise SiteError(manifest_path, line_numbers[0], sample_id, reason)
    first = rows[0]
    label = first.get("label", "")
    if label and label not in LABELS:
        raise ManifestError(f"{manifest_path}: sample {sample_id!r}: label {label!r} is not normal/abnormal")
    depth_map = None
    if depth and first.get("depth", ""):
        depth_map = read_input(root, first["depth"], "depth", allow_roots=allow_roots)
    metadata = {c: str(v) for c, v in first.items() if c not in _NON_METADATA and str(v)}
    try:
        sample = Sample(sample_id=sample_id, views=views, is_abnormal=LABELS.get(label),
                        defect_type=first.get("defect_type", "") or None, depth=depth_map, metadata=metadata)
    except ValueError as exc:
        raise ManifestError(f"{manifest_path}: {exc}") from None
    problem = site_problem(sample) if checks_targets else None
    if problem is not None:  # validate's per-site rules, for every command that loads the site
        raise SiteError(manifest_path, line_numbers[0], sample_id, problem)
    return sample


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

"""Check a dataset folder and report EVERY problem, each with its file and manifest row.

:func:`validate_dataset` never stops at the first problem: it reads the manifest leniently
(every cell as text), checks each row, each sample and every file it names, and returns a
:class:`ValidationReport` with the problems (``error`` fails the dataset, ``warning`` does not)
and counts of samples, views, labels, defect types, roles and splits.

Row numbers are manifest line numbers: the header is row 1, the first data row is row 2 (for a
Parquet manifest, the same numbering of its rows). The rules are listed in docs/data_format.md.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from seminspect.data.door import Kind, check_input, read_input
from seminspect.data.manifest import MANIFEST_NAMES, METADATA_COLUMNS, REQUIRED_COLUMNS
from seminspect.data.refusals import ImageReadError
from seminspect.data.sample import MAX_VIEWS, MAX_VIEWS_PER_ROLE, Role
from seminspect.data.taxonomy import Taxonomy, TaxonomyError
from seminspect.data.validation_report import KINDS, Problem, ValidationReport
from seminspect.utils import yaml_strict
from seminspect.utils.progress import track

__all__ = ["KINDS", "Problem", "ValidationReport", "validate_dataset"]

#: Columns whose value describes the whole sample, so all of a sample's rows must agree.
SAMPLE_LEVEL_COLUMNS = ("label", "defect_type", "depth", *METADATA_COLUMNS)
VALID_LABELS = ("normal", "abnormal")


# ----- the checks --------------------------------------------------------------------------------
class _Collector:
    def __init__(self, report: ValidationReport) -> None:
        self.report = report

    def add(self, kind: str, message: str, file: str | Path, row: int | None = None,
            sample_id: str | None = None, severity: str = "error") -> None:
        assert kind in KINDS, kind
        self.report.problems.append(Problem(kind, message, str(file), row, sample_id, severity))


def _load_taxonomy(root: Path, taxonomy: str | Taxonomy | None, out: _Collector) -> Taxonomy | None:
    """The taxonomy to check defect types against (argument wins over dataset.yaml)."""
    yaml_path = root / "dataset.yaml"
    spec: str | None = None
    if yaml_path.is_file():
        try:
            data = yaml_strict.read_text(yaml_path)
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            out.add("bad_dataset_yaml", f"not valid YAML ({type(exc).__name__}: {exc})".replace("\n", " "), yaml_path)
            data = None
        else:
            if data is None:
                data = {}
            if not isinstance(data, dict):
                out.add("bad_dataset_yaml", f"expected a mapping, got {type(data).__name__}", yaml_path)
            elif "taxonomy" in data:
                spec = str(data["taxonomy"])
                if spec.endswith((".yaml", ".yml")):
                    spec = str((root / spec).resolve())
    else:
        out.add("bad_dataset_yaml", "no dataset.yaml; defect types are checked against 'sem_default'",
                yaml_path, severity="warning")
    if isinstance(taxonomy, Taxonomy):
        return taxonomy
    if taxonomy is not None:
        spec = str(taxonomy)
    spec = spec or "sem_default"
    try:
        return Taxonomy.load(spec)
    except TaxonomyError as exc:
        out.add("bad_dataset_yaml", f"taxonomy {spec!r} cannot be loaded: {exc}",
                yaml_path if taxonomy is None else spec)
        return None


def _read_manifest_lenient(root: Path, out: _Collector) -> tuple[pd.DataFrame | None, Path | None]:
    present = [root / n for n in MANIFEST_NAMES if (root / n).is_file()]
    if not present:
        out.add("no_manifest", "no manifest.csv or manifest.parquet in the dataset folder", root)
        return None, None
    path = present[0]
    if len(present) > 1:
        out.add("no_manifest", f"both {MANIFEST_NAMES}; only {path.name} is used", root, severity="warning")
    try:
        if path.suffix == ".parquet":
            df = pd.read_parquet(path).astype(str).replace({"nan": "", "None": "", "<NA>": ""})
        else:
            df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:  # pandas raises many types for malformed files
        out.add("no_manifest", f"cannot read manifest ({type(exc).__name__}: {exc})".replace("\n", " "), path)
        return None, path
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        out.add("missing_column", f"missing required column(s) {missing}; have {list(df.columns)}", path)
        return None, path
    if df.empty:
        out.add("empty_manifest", "manifest has no rows", path)
        return None, path
    return df.fillna("").astype(str), path


def _check_file(root: Path, rel: str, kind: Kind, mpath: Path, row: int, sid: str, out: _Collector,
                decode: bool = True, allow_roots: Sequence[str | Path] | None = None) -> np.ndarray | None:
    """Read one file through the reader at the door; on a refusal record a problem and return None.

    ``decode`` False applies only the path rule and checks that the file exists (``--fast``).
    The problem kind is the refusal's (:mod:`seminspect.data.refusals`), its reason the reader's.
    """
    what = "image" if kind == "image" else kind
    try:
        if not decode:
            check_input(root, rel, kind, allow_roots)
            return None
        return read_input(root, rel, kind, allow_roots=allow_roots)
    except ImageReadError as exc:
        if exc.kind == "missing_file":
            message = f"{what} file {rel!r} not found"
        elif exc.kind == "corrupt_image":
            message = f"{what} file {rel!r} is unreadable: {exc.reason}"
        else:
            message = f"{what} file {rel!r}: {exc.reason}"
        out.add(exc.kind if exc.kind in KINDS else "corrupt_image", message, mpath, row, sid)
        return None


def validate_dataset(root: str | Path, taxonomy: str | Taxonomy | None = None,
                     check_images: bool = True, progress: bool = True,
                     allow_roots: Sequence[str | Path] | None = None) -> ValidationReport:
    """Check a dataset folder; return a report listing every problem found.

    Args:
        root: dataset folder (``manifest.csv`` or ``manifest.parquet``, ``dataset.yaml``, images).
        taxonomy: taxonomy name/path/object to check defect types against; default: the one
            named in ``dataset.yaml`` (``sem_default`` when absent).
        check_images: decode every image, mask and depth file (sizes, corruption). False checks
            only that the files exist (fast).
        progress: show a progress bar while reading files.
        allow_roots: folders besides ``root`` that manifest paths may lead into (docs/trust.md);
            ``$SEMINSPECT_EXTRA_ROOTS`` adds more.
    """
    root = Path(root)
    report = ValidationReport(root=str(root))
    out = _Collector(report)
    if not root.is_dir():
        out.add("no_manifest", "dataset folder not found", root)
        return report
    tax = _load_taxonomy(root, taxonomy, out)
    report.taxonomy = tax.name if tax is not None else None
    df, mpath = _read_manifest_lenient(root, out)
    report.manifest = None if mpath is None else str(mpath)
    if df is None or mpath is None:
        return report

    report.n_rows = report.n_views = len(df)
    rows = [r + 2 for r in range(len(df))]  # manifest line numbers (header = row 1)
    sids = df["sample_id"].str.strip().tolist()
    roles_raw = df["role"].tolist()
    index_raw = df["index"].tolist()
    # Paths and types are checked exactly as SampleDataset will use them (no stripping).
    paths = df["path"].tolist()
    masks = df["mask"].tolist() if "mask" in df.columns else [""] * len(df)

    # --- per-row structure -----------------------------------------------------------------
    roles: list[Role | None] = []
    indices: list[int | None] = []
    for i, row in enumerate(rows):
        sid = sids[i] or None
        for col in REQUIRED_COLUMNS:
            if not str(df[col].iat[i]).strip():
                out.add("empty_field", f"{col} is empty", mpath, row, sid)
        role = None
        if roles_raw[i].strip():
            try:
                role = Role.parse(roles_raw[i])
            except ValueError:
                out.add("bad_role", f"role {roles_raw[i]!r} is not one of target/reference/zoom", mpath, row, sid)
        roles.append(role)
        index = None
        raw = index_raw[i]
        if raw.strip():
            # Same rule as read_manifest: digits only (no sign, no spaces, no "3.0").
            if not re.fullmatch(r"\d+", raw):
                out.add("bad_index", f"index {raw!r} is not a whole number >= 0 (digits only)", mpath, row, sid)
            else:
                index = int(raw)
                if not 0 <= index < MAX_VIEWS_PER_ROLE:
                    out.add("index_out_of_range", f"index {index} is outside 0..{MAX_VIEWS_PER_ROLE - 1}",
                            mpath, row, sid)
        indices.append(index)

    # --- duplicates ----------------------------------------------------------------------------
    seen_view: dict[tuple[str, Role, int], int] = {}
    for i, row in enumerate(rows):
        if roles[i] is None or indices[i] is None or not sids[i]:
            continue
        key = (sids[i], roles[i], indices[i])
        if key in seen_view:
            out.add("duplicate_view", f"{roles[i].value} view {indices[i]} already given in row {seen_view[key]}",
                    mpath, row, sids[i])
        else:
            seen_view[key] = row
    raw_ids = df["sample_id"].tolist()
    by_norm: dict[str, set[str]] = {}
    first_row_of: dict[str, int] = {}
    for i, raw in enumerate(raw_ids):
        if raw.strip():
            by_norm.setdefault(raw.strip().casefold(), set()).add(raw)
            first_row_of.setdefault(raw, rows[i])
    for variants in by_norm.values():
        if len(variants) > 1:
            ordered = sorted(variants, key=lambda v: first_row_of[v])
            for v in ordered[1:]:
                out.add("duplicate_sample_id",
                        f"sample id {v!r} collides with {ordered[0]!r} (row {first_row_of[ordered[0]]}) "
                        "after ignoring case and spaces", mpath, first_row_of[v], v.strip())
    path_rows: dict[str, int] = {}
    for i, p in enumerate(paths):
        if not p:
            continue
        if p in path_rows:
            out.add("duplicate_path", f"image {p!r} is also used in row {path_rows[p]}", mpath, rows[i], sids[i],
                    severity="warning")
        else:
            path_rows[p] = rows[i]

    # --- per-sample fields -----------------------------------------------------------------------
    groups: dict[str, list[int]] = {}
    for i, sid in enumerate(sids):
        if sid:
            groups.setdefault(sid, []).append(i)
    report.n_samples = len(groups)
    label_counts: Counter[str] = Counter()
    type_counts: Counter[str] = Counter()
    split_counts: Counter[str] = Counter()
    for sid, members in groups.items():
        first = members[0]
        for col in SAMPLE_LEVEL_COLUMNS:
            if col not in df.columns:
                continue
            values = df[col].iloc[members].str.strip()
            if values.nunique() > 1:
                odd = next(m for m in members if df[col].iat[m].strip() != values.iat[0])
                out.add("inconsistent_sample",
                        f"{col} is {df[col].iat[odd].strip()!r} here but {values.iat[0]!r} in row {rows[first]}",
                        mpath, rows[odd], sid)
        label = df["label"].iat[first].strip().lower() if "label" in df.columns else ""
        dtype_ = df["defect_type"].iat[first] if "defect_type" in df.columns else ""
        label_counts[label] += 1
        if label and label not in VALID_LABELS:
            out.add("bad_label", f"label {label!r} is not 'normal' or 'abnormal' (leave empty if unlabelled)",
                    mpath, rows[first], sid)
        if dtype_:
            type_counts[dtype_] += 1
            if tax is not None and dtype_ not in tax:
                out.add("unknown_defect_type", f"defect_type {dtype_!r} is not in taxonomy {tax.name!r} "
                        f"(leaves: {', '.join(tax.leaves[:25])})", mpath, rows[first], sid)
            if label != "abnormal":
                out.add("type_on_normal",
                        f"defect_type {dtype_!r} given on a sample labelled {label or 'unlabelled'!r}; "
                        "only abnormal samples carry a type", mpath, rows[first], sid)
        if "split" in df.columns:
            split_counts[df["split"].iat[first].strip()] += 1
        member_roles = [roles[m] for m in members]
        if Role.TARGET not in member_roles and all(r is not None for r in member_roles):
            out.add("no_target", "sample has no target view (roles: "
                    f"{sorted({r.value for r in member_roles if r})})", mpath, rows[first], sid)
        if len(members) > MAX_VIEWS:
            out.add("too_many_views", f"{len(members)} views; at most {MAX_VIEWS} allowed", mpath, rows[first], sid)
    report.labels = dict(sorted(label_counts.items()))
    report.defect_types = dict(sorted(type_counts.items()))
    report.splits = dict(sorted(split_counts.items()))
    report.roles = dict(sorted(Counter(r.value for r in roles if r is not None).items()))
    report.views_per_sample = dict(sorted(Counter(len(m) for m in groups.values()).items()))

    # --- files -------------------------------------------------------------------------------------
    shapes: dict[int, tuple[int, ...]] = {}
    size_counts: Counter[str] = Counter()
    dtype_counts: Counter[str] = Counter()
    depth_col = df["depth"].tolist() if "depth" in df.columns else [""] * len(df)
    checked_depth: dict[str, tuple[int, ...] | None] = {}
    order = range(len(df))
    for i in track(order, "validating files") if progress else order:
        row, sid = rows[i], sids[i] or None
        if paths[i]:
            image = _check_file(root, paths[i], "image", mpath, row, sid or "", out, check_images, allow_roots)
            if image is not None:
                shapes[i] = image.shape
                size_counts[f"{image.shape[0]}x{image.shape[1]}"] += 1
                dtype_counts[str(image.dtype)] += 1
        if masks[i]:
            mask = _check_file(root, masks[i], "mask", mpath, row, sid or "", out, check_images, allow_roots)
            if mask is not None and i in shapes and mask.shape != shapes[i]:
                out.add("mask_size_mismatch", f"mask {masks[i]!r} is {mask.shape[0]}x{mask.shape[1]}, "
                        f"image is {shapes[i][0]}x{shapes[i][1]}", mpath, row, sid)
        dpath = depth_col[i]
        if dpath and dpath not in checked_depth:
            depth = _check_file(root, dpath, "depth", mpath, row, sid or "", out, check_images, allow_roots)
            checked_depth[dpath] = None if depth is None else depth.shape
    report.image_sizes = dict(size_counts.most_common(10))
    report.dtypes = dict(sorted(dtype_counts.items()))

    # --- sizes within a sample --------------------------------------------------------------------
    for sid, members in groups.items():
        by_key = {(roles[m], indices[m]): m for m in members if roles[m] is not None and indices[m] is not None}
        for (role, index), m in by_key.items():
            if role != Role.REFERENCE or (Role.TARGET, index) not in by_key:
                continue
            t = by_key[(Role.TARGET, index)]
            if t in shapes and m in shapes and shapes[t] != shapes[m]:
                out.add("size_mismatch", f"reference view {index} is {shapes[m][0]}x{shapes[m][1]} but target "
                        f"view {index} (row {rows[t]}) is {shapes[t][0]}x{shapes[t][1]}", mpath, rows[m], sid)
        dpath = depth_col[members[0]]
        dshape = checked_depth.get(dpath) if dpath else None
        target_shapes = {shapes[m] for m in members if roles[m] == Role.TARGET and m in shapes}
        if dshape is not None and target_shapes and dshape not in target_shapes:
            out.add("depth_size_mismatch", f"depth map {dpath!r} is {dshape[0]}x{dshape[1]}, target views are "
                    f"{', '.join(f'{h}x{w}' for h, w in sorted(target_shapes))}", mpath, rows[members[0]], sid,
                    severity="warning")
    report.problems.sort(key=lambda p: (p.file, p.row if p.row is not None else 0))
    return report

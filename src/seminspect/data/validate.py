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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from seminspect.data.dataset import read_depth
from seminspect.data.imageio import ImageReadError, read_image
from seminspect.data.manifest import MANIFEST_NAMES, METADATA_COLUMNS, REQUIRED_COLUMNS
from seminspect.data.sample import MAX_VIEWS, MAX_VIEWS_PER_ROLE, Role
from seminspect.data.taxonomy import Taxonomy, TaxonomyError
from seminspect.utils.io import atomic_write_json
from seminspect.utils.progress import track

#: Columns whose value describes the whole sample, so all of a sample's rows must agree.
SAMPLE_LEVEL_COLUMNS = ("label", "defect_type", "depth", *METADATA_COLUMNS)
VALID_LABELS = ("normal", "abnormal")

# Problem kinds (stable names: tests and JSON consumers match on them).
KINDS = {
    "bad_dataset_yaml": "dataset.yaml is unreadable or names an unknown taxonomy",
    "no_manifest": "no manifest.csv / manifest.parquet, or it cannot be read",
    "missing_column": "a required manifest column is absent",
    "empty_manifest": "the manifest has no rows",
    "empty_field": "a required cell (sample_id, role, index, path) is empty",
    "bad_role": "role is not target / reference / zoom",
    "bad_index": "index is not a whole number",
    "index_out_of_range": f"index outside 0..{MAX_VIEWS_PER_ROLE - 1}",
    "missing_file": "an image, mask or depth file does not exist",
    "corrupt_image": "a file exists but cannot be decoded as an 8/16-bit grayscale image",
    "mask_size_mismatch": "a mask's size differs from its image",
    "size_mismatch": "target view i and reference view i differ in size",
    "depth_size_mismatch": "the depth map's size differs from the target views (warning)",
    "duplicate_view": "two rows share the same (sample_id, role, index)",
    "duplicate_sample_id": "sample ids that differ only in case or surrounding spaces",
    "duplicate_path": "one image file is used by two rows (warning)",
    "inconsistent_sample": "a sample-level field differs between the rows of one sample",
    "bad_label": "label is not normal / abnormal (or empty for unlabelled)",
    "unknown_defect_type": "defect_type is not a leaf of the taxonomy",
    "type_on_normal": "a normal (or unlabelled) sample carries a defect type",
    "no_target": "a sample has no target view",
    "too_many_views": f"a sample has more than {MAX_VIEWS} views",
}


@dataclass
class Problem:
    """One problem: ``kind`` (see :data:`KINDS`), the file it concerns, the manifest row (or None)."""

    kind: str
    message: str
    file: str
    row: int | None = None
    sample_id: str | None = None
    severity: str = "error"

    def __str__(self) -> str:
        where = self.file + (f": row {self.row}" if self.row is not None else "")
        who = f" (sample {self.sample_id!r})" if self.sample_id else ""
        return f"{where}{who}: {self.message}"


@dataclass
class ValidationReport:
    """Outcome of :func:`validate_dataset`: problems plus what the dataset holds."""

    root: str
    manifest: str | None = None
    taxonomy: str | None = None
    n_rows: int = 0
    n_samples: int = 0
    n_views: int = 0
    labels: dict[str, int] = field(default_factory=dict)
    defect_types: dict[str, int] = field(default_factory=dict)
    roles: dict[str, int] = field(default_factory=dict)
    views_per_sample: dict[int, int] = field(default_factory=dict)
    splits: dict[str, int] = field(default_factory=dict)
    image_sizes: dict[str, int] = field(default_factory=dict)
    dtypes: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    # ----- queries ---------------------------------------------------------------------------
    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        """True when there is no error (warnings allowed)."""
        return not self.errors

    def kinds(self) -> Counter[str]:
        """How many problems of each kind (errors and warnings)."""
        return Counter(p.kind for p in self.problems)

    def summary(self) -> str:
        """One paragraph: verdict, counts, and the problem kinds."""
        verdict = "OK" if self.ok else "FAILED"
        lines = [
            f"{verdict}: {self.root}: {self.n_samples} samples, {self.n_views} views "
            f"({len(self.errors)} errors, {len(self.warnings)} warnings)",
        ]
        if self.labels:
            lines.append("labels: " + ", ".join(f"{k or 'unlabelled'}={v}" for k, v in self.labels.items()))
        if self.defect_types:
            lines.append("defect types: " + ", ".join(f"{k}={v}" for k, v in self.defect_types.items()))
        if self.splits:
            lines.append("splits: " + ", ".join(f"{k or '(none)'}={v}" for k, v in self.splits.items()))
        if self.problems:
            lines.append("problems: " + ", ".join(f"{k}={v}" for k, v in sorted(self.kinds().items())))
        return "\n".join(lines)

    # ----- output ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        data["n_errors"] = len(self.errors)
        data["n_warnings"] = len(self.warnings)
        data["views_per_sample"] = {str(k): v for k, v in self.views_per_sample.items()}
        return data

    def save_json(self, path: str | Path) -> None:
        atomic_write_json(path, self.to_dict())

    def print(self, console: Any = None, max_problems: int = 50) -> None:
        """Print the counts and (up to ``max_problems``) problems as rich tables."""
        from rich.console import Console
        from rich.table import Table

        console = console or Console()
        counts = Table(title=f"dataset {self.root}", show_header=True)
        counts.add_column("what")
        counts.add_column("count", justify="right")
        counts.add_row("samples", str(self.n_samples))
        counts.add_row("views (rows)", str(self.n_views))
        for name, table in (("role", self.roles), ("label", self.labels), ("type", self.defect_types),
                            ("split", self.splits), ("size", self.image_sizes), ("dtype", self.dtypes)):
            for key, value in table.items():
                counts.add_row(f"{name}: {key or '(empty)'}", str(value))
        for key, value in self.views_per_sample.items():
            counts.add_row(f"samples with {key} views", str(value))
        console.print(counts)
        if self.problems:
            table = Table(title=f"{len(self.problems)} problems", show_header=True)
            for col in ("severity", "kind", "file", "row", "sample", "message"):
                table.add_column(col, overflow="fold")
            for p in self.problems[:max_problems]:
                table.add_row(p.severity, p.kind, p.file, "" if p.row is None else str(p.row),
                              p.sample_id or "", p.message)
            console.print(table)
            if len(self.problems) > max_problems:
                console.print(f"... and {len(self.problems) - max_problems} more (use --json for all)")
        console.print(self.summary(), highlight=False)


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
            data = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
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


def _check_file(root: Path, rel: str, what: str, mpath: Path, row: int, sid: str,
                out: _Collector) -> np.ndarray | None:
    """Decode an image file; on failure record a problem and return None."""
    path = root / rel
    if not path.is_file():
        out.add("missing_file", f"{what} file {rel!r} not found", mpath, row, sid)
        return None
    try:
        return read_image(path)
    except ImageReadError as exc:
        out.add("corrupt_image", f"{what} file {rel!r} is unreadable: {str(exc).removeprefix(str(path) + ': ')}",
                mpath, row, sid)
        return None


def validate_dataset(root: str | Path, taxonomy: str | Taxonomy | None = None,
                     check_images: bool = True, progress: bool = True) -> ValidationReport:
    """Check a dataset folder; return a report listing every problem found.

    Args:
        root: dataset folder (``manifest.csv`` or ``manifest.parquet``, ``dataset.yaml``, images).
        taxonomy: taxonomy name/path/object to check defect types against; default: the one
            named in ``dataset.yaml`` (``sem_default`` when absent).
        check_images: decode every image, mask and depth file (sizes, corruption). False checks
            only that the files exist (fast).
        progress: show a progress bar while reading files.
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
            if check_images:
                image = _check_file(root, paths[i], "image", mpath, row, sid or "", out)
                if image is not None:
                    shapes[i] = image.shape
                    size_counts[f"{image.shape[0]}x{image.shape[1]}"] += 1
                    dtype_counts[str(image.dtype)] += 1
            elif not (root / paths[i]).is_file():
                out.add("missing_file", f"image file {paths[i]!r} not found", mpath, row, sid)
        if masks[i]:
            if check_images:
                mask = _check_file(root, masks[i], "mask", mpath, row, sid or "", out)
                if mask is not None and i in shapes and mask.shape != shapes[i]:
                    out.add("mask_size_mismatch", f"mask {masks[i]!r} is {mask.shape[0]}x{mask.shape[1]}, "
                            f"image is {shapes[i][0]}x{shapes[i][1]}", mpath, row, sid)
            elif not (root / masks[i]).is_file():
                out.add("missing_file", f"mask file {masks[i]!r} not found", mpath, row, sid)
        dpath = depth_col[i]
        if dpath and dpath not in checked_depth:
            checked_depth[dpath] = None
            if not (root / dpath).is_file():
                out.add("missing_file", f"depth file {dpath!r} not found", mpath, row, sid)
            elif check_images:
                try:
                    checked_depth[dpath] = read_depth(root / dpath).shape
                except ImageReadError as exc:
                    out.add("corrupt_image", f"depth file {dpath!r} is unreadable: "
                            f"{str(exc).removeprefix(str(root / dpath) + ': ')}", mpath, row, sid)
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

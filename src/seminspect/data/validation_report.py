"""What ``seminspect validate`` reports: the problem kinds, one :class:`Problem`, the :class:`ValidationReport`.

The checks themselves are in :mod:`seminspect.data.validate`; the kinds of refusal made by the
reader at the door (:mod:`seminspect.data.refusals`) are problem kinds here under the same names.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from seminspect.data.limits import ENV_MAX_PIXELS
from seminspect.data.sample import MAX_VIEWS, MAX_VIEWS_PER_ROLE
from seminspect.utils.io import atomic_write_json

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
    "outside_root": "an image, mask or depth path leads outside the dataset folder (absolute, '..', symlink)",
    "too_many_pixels": f"a file's header declares more pixels than the limit (${ENV_MAX_PIXELS})",
    "corrupt_image": "a file exists but cannot be decoded as an 8/16-bit grayscale image",
    "non_finite": "a depth map holds NaN or Inf values",
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

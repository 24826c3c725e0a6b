"""The per-site rules ``seminspect validate`` applies, enforced wherever a site is loaded.

A site (one sample) is usable when it has a target view, each reference view has the size of the
target view of the same index, and each mask has the size of its image. :func:`site_problem`
says what is wrong with a loaded site; :class:`SiteError` is the refusal, naming the manifest row.
"""

from __future__ import annotations

from pathlib import Path

from seminspect.data.manifest import ManifestError
from seminspect.data.sample import Sample


class SiteError(ManifestError):
    """One site breaks a per-site rule: ``file`` is ``"MANIFEST: row N"``, ``reason`` the problem."""

    def __init__(self, manifest_path: str | Path, line: int, sample_id: str, reason: str) -> None:
        super().__init__(str(manifest_path), line, sample_id, reason)  # args rebuild it when unpickled
        self.file = f"{manifest_path}: row {line}"
        self.sample_id = sample_id
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.file} (sample {self.sample_id!r}): {self.reason}"


def site_problem(sample: Sample) -> str | None:
    """What makes a loaded site unusable for the judges (``validate``'s per-site checks), else None."""
    if not sample.targets:
        return f"no target view (roles: {sorted({v.role.value for v in sample.views})})"
    for t, r in sample.pairs():
        if r is not None and r.image.shape != t.image.shape:
            return (f"reference view {t.index} is {r.image.shape[0]}x{r.image.shape[1]} but target view "
                    f"{t.index} is {t.image.shape[0]}x{t.image.shape[1]}")
    return None

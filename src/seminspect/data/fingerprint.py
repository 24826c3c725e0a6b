"""What a dataset's sites are made of, in three cheap digests: their layout, their labels, their files.

Caches and checkpoints built from a dataset keep these digests and compare them when they are
reused, so that a fixed label, a replaced image or a changed split is never trained past::

    fp = dataset_fingerprint(ds)
    # {"sites": ..., "labels": ..., "image files": ...}
    changed(old_fp, fp)          # -> ["labels"] after a label was corrected in the manifest

* ``sites``: the sample ids in order and each kept view's manifest row (role, index, path, mask, depth);
* ``labels``: each site's ``label``, ``defect_type`` and ``split``;
* ``image files``: the identity of every image, mask and depth file those rows name -- its size
  and modification time in nanoseconds (``os.stat``: no file is read, so this costs about as
  much as listing the folder). A file rewritten in place with the same size within the file
  system's time resolution goes unnoticed; anything else that changes a file changes this.

Only the views a dataset keeps (``SampleDataset(roles=...)``) count.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["changed", "dataset_fingerprint", "file_identity"]

_ROW_FIELDS = ("role", "index", "path", "mask", "depth")
_LABEL_FIELDS = ("label", "defect_type", "split")
_FILE_FIELDS = ("path", "mask", "depth")


def file_identity(path: str | Path) -> str:
    """``"size:mtime_ns"`` of ``path`` (following links), or ``"missing"`` / ``"unreadable"``."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "missing"
    except (OSError, ValueError):
        return "unreadable"
    return f"{st.st_size}:{st.st_mtime_ns}"


def _digest(lines: Iterable[str]) -> str:
    h = hashlib.sha256()
    for line in lines:
        h.update(line.encode("utf-8", "surrogatepass"))
        h.update(b"\n")
    return h.hexdigest()[:16]


def dataset_fingerprint(ds: Any) -> dict[str, str]:
    """``{"sites", "labels", "image files"}`` digests of a :class:`~seminspect.data.dataset.SampleDataset`."""
    manifest = ds.manifest
    roles = None if ds.roles is None else {r.value for r in ds.roles}
    root = Path(ds.root)
    groups = manifest.groupby("sample_id", sort=False).indices
    cols = {
        c: manifest[c].astype(str).tolist() if c in manifest.columns else None for c in (*_ROW_FIELDS, *_LABEL_FIELDS)
    }

    def value(col: str, i: int) -> str:
        values = cols[col]
        return "" if values is None else values[i]

    sites, labels, files = [], [], []
    seen: set[str] = set()
    for sid in ds.sample_ids:
        rows = groups[sid]
        labels.append("\t".join([sid, *(value(c, int(rows[0])) for c in _LABEL_FIELDS)]))
        for i in rows:
            i = int(i)
            if roles is not None and value("role", i) not in roles:
                continue
            sites.append("\t".join([sid, *(value(c, i) for c in _ROW_FIELDS)]))
            for c in _FILE_FIELDS:
                rel = value(c, i).strip()
                if rel and rel not in seen:
                    seen.add(rel)
                    files.append(f"{rel}\t{file_identity(root / rel)}")
    return {"sites": _digest(sites), "labels": _digest(labels), "image files": _digest(files)}


def changed(old: Mapping[str, str] | None, new: Mapping[str, str]) -> list[str]:
    """The parts of ``new`` that differ from ``old`` (every part when ``old`` is not a mapping)."""
    if not isinstance(old, Mapping):
        return list(new)
    return [k for k in new if old.get(k) != new[k]]

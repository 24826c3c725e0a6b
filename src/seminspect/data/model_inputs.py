"""What a model was trained on, and the check that data given to it later is of the same kind.

``train`` records the view layout (the ``(role, index)`` pairs of its sites) and the range of raw
view sizes in the artefact's ``inspection.json`` under ``inputs`` (:func:`describe_dataset`).
``evaluate`` and ``predict`` describe their data the same way and refuse, in one line naming both,
data whose sites hold views the model never saw or whose views are more than :data:`SIZE_FACTOR`
times larger or smaller than the training views (:func:`check_inputs`); a dataset whose
``dataset.yaml`` names another taxonomy is refused too (:func:`check_taxonomy`).

Fewer views than trained on (a site with no reference, two angles of four) are accepted: the model
handles missing views. An artefact written before ``inputs`` existed is accepted with a note.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from seminspect.data.sample import Role, Sample
from seminspect.errors import SeminspectError

#: views more than this many times larger or smaller (either axis) than the training views are refused
SIZE_FACTOR = 2.0
#: sites whose images are read to measure view sizes (spread evenly over the sites)
SIZE_SITES = 32
_ROLE_ORDER = {r.value: k for k, r in enumerate(Role)}


class InputMismatchError(SeminspectError):
    """The data's views (layout, size) or taxonomy do not match what the model was trained on."""


def _pairs(views: Iterable[tuple[str, int]]) -> list[list[Any]]:
    return [[r, int(i)] for r, i in sorted(set(views), key=lambda v: (_ROLE_ORDER.get(v[0], 9), v[0], v[1]))]


def view_sizes(samples: Iterable[Sample]) -> dict[str, list[int]] | None:
    """``{"min": [h, w], "max": [h, w]}`` over every view of ``samples`` (None when there is none)."""
    shapes = [v.image.shape[:2] for s in samples for v in s.views]
    if not shapes:
        return None
    arr = np.asarray(shapes, dtype=np.int64)
    return {"min": arr.min(axis=0).tolist(), "max": arr.max(axis=0).tolist()}


def describe(views: Iterable[tuple[str, int]], samples: list[Sample]) -> dict[str, Any]:
    """The ``inputs`` record: view layout and raw view size range (of ``samples``)."""
    return {"views": _pairs(views), "view_size": view_sizes(samples), "sites_measured": len(samples),
            "size_factor": SIZE_FACTOR}


def spread(n: int, k: int = SIZE_SITES) -> list[int]:
    """Up to ``k`` positions spread evenly over ``range(n)``."""
    return sorted(set(np.linspace(0, n - 1, num=min(n, k)).round().astype(int).tolist())) if n else []


def describe_dataset(datasets: Sequence[Any]) -> dict[str, Any]:
    """:func:`describe` of one or more :class:`~seminspect.data.dataset.SampleDataset` (their kept roles only).

    The layout comes from the manifest rows (no image read); sizes from up to :data:`SIZE_SITES`
    sites spread over each dataset (their images are read through the reader at the door).
    """
    views: set[tuple[str, int]] = set()
    samples: list[Sample] = []
    for ds in datasets:
        if ds is None or len(ds) == 0:
            continue
        rows = ds.manifest.iloc[np.concatenate([ds._rows[s] for s in ds.sample_ids])]
        kept = rows if ds.roles is None else rows[rows["role"].isin({r.value for r in ds.roles})]
        views.update(zip(kept["role"].astype(str), kept["index"].astype(int), strict=True))
        samples.extend(ds.load(ds.sample_ids[i]) for i in spread(len(ds)))
    return describe(views, samples)


def describe_stream(data: str | Path) -> dict[str, Any]:
    """:func:`describe` of a dataset read as a stream (``predict``): the layout of every site's rows, the
    sizes of the first :data:`SIZE_SITES` sites that load (a site that does not is left to the caller)."""
    from seminspect.data.stream import iter_site_rows, load_site

    views: set[tuple[str, int]] = set()
    samples: list[Sample] = []
    for rows in iter_site_rows(data):
        for row in rows.rows:
            try:
                views.add((Role.parse(row["role"]).value, int(row["index"])))
            except ValueError:  # a bad role or index: that site's error, reported when it is judged
                continue
        if len(samples) < SIZE_SITES and rows.error is None:
            site = load_site(data, rows)
            if site.sample is not None:
                samples.append(site.sample)
    return describe(views, samples)


def _ranges(indices: list[int]) -> str:
    out: list[str] = []
    for i in sorted(indices):
        if out and out[-1][1] == i - 1:
            out[-1] = (out[-1][0], i)
        else:
            out.append((i, i))  # type: ignore[arg-type]
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in out)  # type: ignore[misc]


def format_views(views: Iterable[Sequence[Any]]) -> str:
    """``target 0-4, reference 0-4``: roles in their usual order, indices as ranges."""
    by_role: dict[str, list[int]] = {}
    for role, index in views:
        by_role.setdefault(str(role), []).append(int(index))
    order = sorted(by_role, key=lambda r: (_ROLE_ORDER.get(r, 9), r))
    return ", ".join(f"{r} {_ranges(by_role[r])}" for r in order) or "none"


def _hw(size: Sequence[int]) -> str:
    return f"{int(size[0])}x{int(size[1])}"


def _size_text(size: dict[str, list[int]]) -> str:
    lo, hi = size["min"], size["max"]
    return f"{_hw(lo)} px" if list(lo) == list(hi) else f"{_hw(lo)} to {_hw(hi)} px"


def check_inputs(trained: dict[str, Any] | None, seen: dict[str, Any], data: str | Path,
                 artefact: str | Path) -> str | None:
    """Refuse ``seen`` (:func:`describe` of the data) that the model did not train on; a note or None.

    ``trained``: the artefact manifest's ``inputs`` (None for an artefact written before it existed:
    accepted, the returned note says so). ``data``: the manifest named in the message;
    ``artefact``: the ``inspection.json`` named in it.
    """
    if not trained:
        return (f"{artefact}: written before seminspect recorded what a model was trained on; the view layout "
                f"and size of {data} are not checked (re-train to have them checked)")
    t_views = {(str(r), int(i)) for r, i in trained.get("views") or []}
    s_views = {(str(r), int(i)) for r, i in seen.get("views") or []}
    new = s_views - t_views
    if t_views and new:
        raise InputMismatchError(f"{data}: sites have views {format_views(_pairs(new))} that the model never saw "
                                 f"(trained on {format_views(_pairs(t_views))}; {artefact})")
    t_size, s_size = trained.get("view_size"), seen.get("view_size")
    if not t_size or not s_size:
        return None
    factor = float(trained.get("size_factor") or SIZE_FACTOR)
    too_big = any(s > factor * t for s, t in zip(s_size["max"], t_size["max"], strict=True))
    too_small = any(s * factor < t for s, t in zip(s_size["min"], t_size["min"], strict=True))
    if too_big or too_small:
        how = "larger" if too_big else "smaller"
        raise InputMismatchError(
            f"{data}: views are {_size_text(s_size)} (HxW, {seen.get('sites_measured', 0)} sites measured), more than "
            f"{factor:g}x {how} than the {_size_text(t_size)} the model was trained on ({artefact}); "
            "resample the images or train on views of this size")
    return None


def check_taxonomy(leaves: Sequence[str], taxonomy_file: str | Path, root: str | Path) -> None:
    """DATA whose ``dataset.yaml`` names a taxonomy must name the artefact's (same leaves, same order)."""
    from seminspect.data.manifest import DatasetInfo
    from seminspect.data.taxonomy import Taxonomy

    root = Path(root)
    if not (root / "dataset.yaml").is_file():
        return
    info = DatasetInfo.read(root)
    try:
        tax = Taxonomy.load(info.taxonomy_spec(root))
    except SeminspectError as exc:
        raise InputMismatchError(f"{root / 'dataset.yaml'}: {exc}") from None
    if tuple(tax.leaves) != tuple(leaves):
        raise InputMismatchError(f"{root / 'dataset.yaml'}: taxonomy {info.taxonomy!r} ({tax.num_leaves} types) is "
                                 f"not the artefact's ({taxonomy_file}, {len(leaves)} types), which the model "
                                 "was trained on")


__all__ = ["SIZE_FACTOR", "SIZE_SITES", "InputMismatchError", "check_inputs", "check_taxonomy", "describe",
           "describe_dataset", "describe_stream", "format_views", "spread", "view_sizes"]

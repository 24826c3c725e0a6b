"""Samsung SEM depth-estimation sites (``../shared/data/samsung_sem_depth/train.npz``) into the format.

Source arrays: ``sem`` uint8 ``(N, 4, 66, 45)`` = 4 simulated SEM acquisitions of the same site,
``depth`` uint8 ``(N, 66, 45)`` = ground-truth depth map (the challenge's 0-255 code, not nm),
``name`` ``(N,)`` str. Each site is one sample with 4 TARGET views (index 0..3 = acquisition) and
the depth map (stored as float32 TIFF, same values); no reference die, no labels.

Split: the in-memory loader's default split (``seminspect.data.depth_split``, rule ``group``):
whole groups of twin sites (the same depth map, or near-identical SEM stacks) go to ``val`` until it
holds ``val_fraction`` (default 0.1) of the N sites, in an order drawn with ``seed`` (default 0); so no
depth map is on both sides, and ``limit`` does not change anyone's split. The rest is ``train``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from seminspect.data.adapters._common import AdapterError, prepare_output, require
from seminspect.data.manifest import DatasetInfo, DatasetWriter
from seminspect.data.sample import Sample, View
from seminspect.utils.progress import track


def import_samsung_depth(source: str | Path, out: str | Path, limit: int | None = None, seed: int = 0,
                         val_fraction: float = 0.1, overwrite: bool = False) -> Path:
    """Convert ``train.npz`` (or a folder holding it) into a dataset folder at ``out``."""
    source = Path(source)
    path = source / "train.npz" if source.is_dir() else source
    require(path, "Samsung SEM depth file")
    try:
        data = np.load(path, allow_pickle=False)
        sem, depth, names = data["sem"], data["depth"], data["name"]
    except (OSError, ValueError, KeyError) as exc:
        raise AdapterError(f"{path}: cannot read arrays sem/depth/name ({type(exc).__name__}: {exc})") from None
    if sem.ndim != 4 or depth.ndim != 3 or sem.shape[0] != depth.shape[0] or sem.shape[2:] != depth.shape[1:]:
        raise AdapterError(f"{path}: expected sem (N, V, H, W) and depth (N, H, W), got {sem.shape} and {depth.shape}")
    if sem.shape[1] > 5:
        raise AdapterError(f"{path}: {sem.shape[1]} acquisitions per site; the format allows 5 target views")
    n = sem.shape[0]
    ids = [f"site{i:05d}" for i in range(n)]
    from seminspect.data.depth_split import split_indices

    _, val_idx = split_indices(sem, depth, [str(x) for x in names], "group", val_fraction, seed)
    splits = np.full(n, "train", dtype=object)
    splits[val_idx] = "val"
    count = n if limit is None else min(max(int(limit), 0), n)
    out = prepare_output(out, overwrite)
    info = DatasetInfo(
        taxonomy="sem_default",
        description="Samsung AI Challenge 2022 (3D Metrology) SEM depth sites, research use: 4 simulated SEM "
                    "acquisitions of one site as target views 0..3, depth map as ground truth; unlabelled.",
        depth_units="challenge depth code 0-255 (uint8 in the source), not calibrated nm",
        extra={"source": str(path), "seed": seed, "split_rule": "group",
               "split_fractions": {"train": 1.0 - val_fraction, "val": val_fraction}},
    )
    with DatasetWriter(out, info) as writer:
        for i in track(range(count), "importing Samsung SEM depth sites"):
            views = [View("target", v, np.ascontiguousarray(sem[i, v])) for v in range(sem.shape[1])]
            writer.add(Sample(sample_id=ids[i], views=views, depth=depth[i].astype(np.float32),
                              metadata={"name": str(names[i]), "split": splits[i], "source_index": str(i)}))
    return out

"""DeepPCB (Tang et al., arXiv:1902.06197) into the seminspect format.

Source layout (``../shared/data/deeppcb``): ``trainval.txt`` lists ``groupG/N/NNNNNNNN.jpg
groupG/N_not/NNNNNNNN.txt``; the image path stands for a pair ``NNNNNNNN_test.jpg`` (tested board)
and ``NNNNNNNN_temp.jpg`` (aligned defect-free template), 640x640 8-bit binarised scans; each
annotation line is ``x1 y1 x2 y2 type`` (type 1 open, 2 short, 3 mousebite, 4 spur, 5 spurious
copper, 6 pin-hole), taxonomy ``deeppcb``.

Two modes, both mapping a pair honestly onto ONE target view (test) + ONE reference view
(template), index 0:

* ``patches``: a ``patch_size`` square crop around each box (random offset that keeps the box
  inside; boxes bigger than the patch get a larger square crop) is a typed abnormal sample whose
  mask is every annotated box inside the crop; ``normals_per_image`` crops that touch no box
  (8 px margin) are normal samples.
* ``pairs``: each whole pair is one abnormal sample with the union of its boxes as the mask; the
  type is the most frequent box type of the image (ties: lowest type id) and ``all_types`` keeps
  every box type.

Splits are by image (all crops of one pair share a split), drawn with ``seed`` over the whole
pair list (so ``--limit`` does not change anyone's split): train 0.6 / calib 0.2 / test 0.2, or
every pair in one split with ``split_as``. The list is ``trainval.txt`` unless ``list_file`` names
another (``test.txt``, the official test split). With ``skip_bad`` an unreadable pair is recorded in
``import_skipped.csv`` and passed over. Metadata keep the source file, its group, the box and crop
coordinates.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from seminspect.data.adapters._common import AdapterError, SkipLog, group_split, prepare_output, require
from seminspect.data.imageio import ImageReadError, read_image
from seminspect.data.manifest import DatasetInfo, DatasetWriter
from seminspect.data.sample import Sample, View
from seminspect.utils.progress import track

TYPE_NAMES = {1: "open", 2: "short", 3: "mousebite", 4: "spur", 5: "spurious_copper", 6: "pin_hole"}
SPLITS = {"train": 0.6, "calib": 0.2, "test": 0.2}
NORMAL_MARGIN = 8  # px kept between a normal crop and any annotated box
DEFAULT_LIST = "trainval.txt"


def list_path(source: Path, list_file: str | Path | None = None) -> Path:
    """The pair list to read: ``list_file`` (relative to ``source`` unless absolute), default ``trainval.txt``."""
    name = Path(list_file) if list_file is not None else Path(DEFAULT_LIST)
    return require(name if name.is_absolute() else source / name, f"DeepPCB pair list {name}")


def read_pairs(source: Path, list_file: str | Path | None = None,
               skips: SkipLog | None = None) -> list[tuple[str, Path, Path, Path]]:
    """``(image_id, test.jpg, temp.jpg, boxes.txt)`` for each line of the pair list, in file order.

    The list is ``trainval.txt`` unless ``list_file`` names another (``test.txt``). A malformed line
    stops the import, or with ``skips`` (``--skip-bad``) is recorded and passed over.
    """
    listing = list_path(source, list_file)
    try:
        text = listing.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AdapterError(f"{listing}: cannot read the pair list ({type(exc).__name__}: {exc})") from None
    pairs = []
    for line_no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            error = AdapterError(f"{listing}: line {line_no}: expected 'image.jpg boxes.txt', got {line!r}")
            if skips is None:
                raise error
            skips.skip(f"line {line_no}", error, listing)
            continue
        stem = (source / parts[0]).with_suffix("")
        pairs.append((stem.name, stem.with_name(stem.name + "_test.jpg"), stem.with_name(stem.name + "_temp.jpg"),
                      source / parts[1]))
    if not pairs:
        raise AdapterError(f"{listing}: no pairs listed")
    return pairs


def read_boxes(path: Path) -> np.ndarray:
    """``(n, 5)`` int64 rows ``x1 y1 x2 y2 type`` (commas or spaces accepted)."""
    require(path, "DeepPCB annotation file")
    rows = []
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.replace(",", " ").split()
        try:
            values = [int(float(p)) for p in parts]
        except ValueError:
            raise AdapterError(f"{path}: line {line_no}: not numbers: {line!r}") from None
        if len(values) != 5 or values[4] not in TYPE_NAMES or values[2] <= values[0] or values[3] <= values[1]:
            raise AdapterError(f"{path}: line {line_no}: expected 'x1 y1 x2 y2 type' with type 1..6, got {line!r}")
        rows.append(values)
    return np.array(rows, dtype=np.int64).reshape(-1, 5)


def _box_mask(shape: tuple[int, int], boxes: np.ndarray, y0: int = 0, x0: int = 0) -> np.ndarray:
    """Union of boxes (image coordinates, x2/y2 exclusive) inside the window at ``(y0, x0)``."""
    mask = np.zeros(shape, dtype=bool)
    for x1, y1, x2, y2, _ in boxes:
        ya, yb = max(y1 - y0, 0), min(y2 - y0, shape[0])
        xa, xb = max(x1 - x0, 0), min(x2 - x0, shape[1])
        if ya < yb and xa < xb:
            mask[ya:yb, xa:xb] = True
    return mask


def _crop_origin(lo: int, hi: int, side: int, size: int, rng: np.random.Generator) -> int:
    """Start of a window of ``side`` px containing [lo, hi) when possible, randomly placed, in the image."""
    start_min = max(hi - side, 0)
    start_max = min(lo, size - side)
    if start_min > start_max:  # box larger than the window: centre on it
        return int(np.clip((lo + hi - side) // 2, 0, size - side))
    return int(rng.integers(start_min, start_max + 1))


def import_deeppcb(source: str | Path, out: str | Path, mode: str = "patches", patch_size: int = 96,
                   normals_per_image: int = 2, limit: int | None = None, seed: int = 0,
                   overwrite: bool = False, list_file: str | Path | None = None, split_as: str | None = None,
                   skip_bad: bool = False, log: Callable[[str], None] | None = None) -> Path:
    """Convert DeepPCB into a dataset folder at ``out``; returns ``out``. See the module docstring.

    ``list_file``: the pair list to read (default ``trainval.txt``; the official test split is
    ``test.txt``). ``split_as``: put every pair in this split instead of drawing train/calib/test.
    ``skip_bad``: a pair that cannot be read (missing or undecodable image, colour image, size
    mismatch, bad annotation) is recorded in ``out/import_skipped.csv`` and passed over instead of
    stopping the import; ``log`` receives the one-line summary.
    """
    source = require(Path(source), "DeepPCB folder")
    if mode not in ("patches", "pairs"):
        raise AdapterError(f"deeppcb mode must be 'patches' or 'pairs', not {mode!r}")
    if patch_size < 16:
        raise AdapterError(f"patch size {patch_size} is too small (>= 16)")
    listing = list_path(source, list_file)
    skips = SkipLog(out, skip_bad)
    pairs = read_pairs(source, list_file, skips if skip_bad else None)
    ids = [p[0] for p in pairs]
    splits = dict(zip(ids, [split_as] * len(ids) if split_as else group_split(ids, SPLITS, seed), strict=True))
    if limit is not None:
        pairs = pairs[: max(int(limit), 0)]
    out = prepare_output(out, overwrite)
    info = DatasetInfo(
        taxonomy="deeppcb",
        description=f"DeepPCB {listing.name} ({mode}), imported by seminspect; 1 target (test) + 1 reference "
                    "(template) view per sample. Tang et al., arXiv:1902.06197; research use only.",
        extra={"source": str(source), "list": listing.name, "mode": mode,
               "patch_size": patch_size if mode == "patches" else None, "seed": seed,
               "split_fractions": {split_as: 1.0} if split_as else SPLITS, "split_unit": "source image pair"},
    )
    with DatasetWriter(out, info) as writer:
        for image_id, test_path, temp_path, box_path in track(pairs, f"importing DeepPCB {mode}"):
            try:
                test, temp = read_image(require(test_path, "test image")), read_image(require(temp_path, "template"))
                if test.shape != temp.shape:
                    raise AdapterError(f"{test_path}: size {test.shape} differs from its template {temp.shape}")
                if mode == "patches" and patch_size > min(test.shape):
                    raise AdapterError(f"{test_path}: the {test.shape[0]}x{test.shape[1]} image is smaller than "
                                       f"the patch size {patch_size}; lower --patch-size")
                boxes = read_boxes(box_path)
            except (AdapterError, ImageReadError) as exc:
                skips.skip(image_id, exc, test_path)
                continue
            group = test_path.parent.parent.name
            meta = {"product": "pcb", "split": splits[image_id], "group": group, "image_id": image_id,
                    "source": str(test_path.relative_to(source)), "template": str(temp_path.relative_to(source))}
            # One generator per image, seeded from (seed, image id): deterministic and limit-independent.
            rng = np.random.default_rng([seed, int(image_id) if image_id.isdigit() else zlib.crc32(image_id.encode())])
            if mode == "pairs":
                writer.add(_pair_sample(image_id, test, temp, boxes, meta, str(test_path)))
            else:
                for sample in _patch_samples(image_id, test, temp, boxes, meta, patch_size, normals_per_image, rng):
                    writer.add(sample)
        summary = skips.finish(len(pairs) + sum(r["item"].startswith("line ") for r in skips.rows), "pairs")
        if summary is not None:
            writer.info.extra["skipped"] = f"{len(skips.rows)} unreadable item(s), listed in {skips.path.name}"
            if log is not None:
                log(summary)
    return out


def _pair_sample(image_id: str, test: np.ndarray, temp: np.ndarray, boxes: np.ndarray, meta: dict[str, str],
                 src: str) -> Sample:
    counts = Counter(int(t) for t in boxes[:, 4])
    main = min(counts, key=lambda t: (-counts[t], t)) if counts else None
    mask = _box_mask(test.shape, boxes)
    return Sample(
        sample_id=image_id,
        views=[View("target", 0, test, mask, source=src), View("reference", 0, temp)],
        is_abnormal=bool(len(boxes)),
        defect_type=TYPE_NAMES[main] if main else None,
        metadata={**meta, "n_boxes": str(len(boxes)),
                  "all_types": ";".join(TYPE_NAMES[int(t)] for t in boxes[:, 4])},
    )


def _patch_samples(image_id: str, test: np.ndarray, temp: np.ndarray, boxes: np.ndarray, meta: dict[str, str],
                   patch: int, n_normals: int, rng: np.random.Generator) -> list[Sample]:
    h, w = test.shape
    samples = []
    for j, (x1, y1, x2, y2, t) in enumerate(boxes):
        side = min(max(patch, int(max(x2 - x1, y2 - y1)) + 16), h, w)
        y0 = _crop_origin(int(y1), int(y2), side, h, rng)
        x0 = _crop_origin(int(x1), int(x2), side, w, rng)
        window = (slice(y0, y0 + side), slice(x0, x0 + side))
        mask = _box_mask((side, side), boxes, y0, x0)
        inside = [int(b[4]) for b in boxes if b[0] < x0 + side and b[2] > x0 and b[1] < y0 + side and b[3] > y0]
        samples.append(Sample(
            sample_id=f"{image_id}_b{j:02d}",
            views=[View("target", 0, test[window].copy(), mask), View("reference", 0, temp[window].copy())],
            is_abnormal=True,
            defect_type=TYPE_NAMES[int(t)],
            metadata={**meta, "box": f"{x1},{y1},{x2},{y2}", "crop_yx": f"{y0},{x0}", "crop_size": str(side),
                      "n_boxes_in_crop": str(len(inside))},
        ))
    # Box-free crops: the boxes dilated by NORMAL_MARGIN must not touch the window.
    blocked = _box_mask((h, w), boxes + np.array([-NORMAL_MARGIN, -NORMAL_MARGIN, NORMAL_MARGIN, NORMAL_MARGIN, 0]))
    integral = np.pad(blocked.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    found = 0
    for _ in range(200):
        if found >= n_normals:
            break
        y0, x0 = int(rng.integers(0, h - patch + 1)), int(rng.integers(0, w - patch + 1))
        hits = (integral[y0 + patch, x0 + patch] - integral[y0, x0 + patch] - integral[y0 + patch, x0]
                + integral[y0, x0])
        if hits:
            continue
        window = (slice(y0, y0 + patch), slice(x0, x0 + patch))
        samples.append(Sample(
            sample_id=f"{image_id}_n{found}",
            views=[View("target", 0, test[window].copy()), View("reference", 0, temp[window].copy())],
            is_abnormal=False,
            metadata={**meta, "crop_yx": f"{y0},{x0}", "crop_size": str(patch)},
        ))
        blocked[max(y0 - NORMAL_MARGIN, 0): y0 + patch + NORMAL_MARGIN,
                max(x0 - NORMAL_MARGIN, 0): x0 + patch + NORMAL_MARGIN] = True  # no overlapping normals
        integral = np.pad(blocked.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        found += 1
    return samples

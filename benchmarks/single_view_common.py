"""Shared set-up of the single-view anomaly benchmarks (issue [single-view]): data splits and one run.

Data roots are arguments; nothing is baked in. Each loader returns ``(train_normals, test)`` lists
of single-view :class:`~seminspect.data.sample.Sample` (one target view, no reference):

- ELPV (an imported folder, ``seminspect import elpv - OUT``): defect-free cells sorted by file name,
  shuffled with ``random.Random(0)``, the first 70 % train; test = the rest + every cell of defect
  probability >= 2/3 (the split anomalib 2.7 was measured on: image AUROC 0.888).
- DeepPCB whole images without the template: the templates are normal images, the tested images
  (with defects) are anomalies, boxes are the masks. Split by board group (no group on both sides):
  the groups sorted by name, every third group (from the second) is test. Training normals are the
  templates of the train groups; test = templates and tested images of the test groups.
- Virtual fab without references: the target views of a generated fab folder (references dropped).
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from seminspect.data.imageio import read_image
from seminspect.data.sample import Role, Sample, View

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_env  # noqa: E402


def elpv_split(root: str | Path) -> tuple[list[Sample], list[Sample]]:
    """The ELPV split above, from an imported ELPV folder (``manifest.csv`` with probability/source)."""
    from seminspect.data.dataset import SampleDataset

    ds = SampleDataset(root)
    prob = [float(p) for p in ds.metadata_column("probability")]
    source = ds.metadata_column("source")
    normal_ids = sorted((src, sid) for sid, src, p in zip(ds.sample_ids, source, prob, strict=True) if p == 0)
    names = [sid for _, sid in normal_ids]
    random.Random(0).shuffle(names)
    n_train = int(0.7 * len(names))
    train_ids = names[:n_train]
    test_ids = names[n_train:] + [sid for sid, p in zip(ds.sample_ids, prob, strict=True) if p >= 2 / 3]
    return _single(ds.subset(train_ids)), _single(ds.subset(test_ids))


def _single(ds: Any) -> list[Sample]:
    out = []
    for s in ds:
        t = s.targets[0]
        out.append(Sample(s.sample_id, [View(Role.TARGET, 0, t.image, mask=t.mask)], is_abnormal=s.is_abnormal,
                          defect_type=s.defect_type, metadata=dict(s.metadata)))
    return out


def deeppcb_split(root: str | Path) -> tuple[list[Sample], list[Sample]]:
    """DeepPCB whole 640x640 images without the template, split by board group (see module docstring)."""
    root = Path(root)
    lines = [ln.split() for ln in (root / "trainval.txt").read_text().splitlines() if ln.strip()]
    groups = sorted({Path(img).parts[0] for img, _ in lines})
    test_groups = set(groups[1::3])
    train, test = [], []
    for img_rel, box_rel in sorted(lines):
        img = root / img_rel
        group = Path(img_rel).parts[0]
        tested, template = img.with_name(f"{img.stem}_test.jpg"), img.with_name(f"{img.stem}_temp.jpg")
        boxes = np.loadtxt(root / box_rel, ndmin=2, dtype=np.int64).reshape(-1, 5) \
            if (root / box_rel).is_file() else np.zeros((0, 5), np.int64)
        temp = read_image(template)
        normal = Sample(f"{img.stem}_temp", [View(Role.TARGET, 0, temp, mask=np.zeros(temp.shape, bool))],
                        is_abnormal=False, metadata={"group": group})
        if group not in test_groups:
            train.append(normal)
            continue
        t = read_image(tested)
        mask = np.zeros(t.shape, bool)
        for x1, y1, x2, y2, _ in boxes:
            mask[max(0, y1):y2, max(0, x1):x2] = True
        test += [normal, Sample(f"{img.stem}_test", [View(Role.TARGET, 0, t, mask=mask)], is_abnormal=True,
                                defect_type="pcb", metadata={"group": group})]
    return train, test


def fab_split(root: str | Path, train_split: str = "train", test_split: str = "test",
              limit: int | None = None) -> tuple[list[Sample], list[Sample]]:
    """Target view 0 of each site of a generated virtual-fab folder, references dropped."""
    from seminspect.data.dataset import SampleDataset

    ds = SampleDataset(root)

    def first(name: str) -> list[Sample]:
        part = ds.split(name)
        ids = part.sample_ids[:limit] if limit else part.sample_ids
        return _single(part.subset(ids))

    return [s for s in first(train_split) if s.is_abnormal is False], first(test_split)


LOADERS: dict[str, Callable[[str], tuple[list[Sample], list[Sample]]]] = {
    "elpv": elpv_split, "deeppcb": deeppcb_split, "fab": fab_split}


def fit_and_score(settings: dict[str, Any], train: list[Sample], test: list[Sample]) -> dict[str, Any]:
    """Fit an anomaly detector with ``settings`` on ``train``, score ``test``: metrics, times, the preset chosen."""
    from seminspect.evaluation.anomaly_metrics import anomaly_metrics
    from seminspect.models.anomaly import AnomalyDetector

    det = AnomalyDetector({"calib_fraction": 0.0, **settings})  # held-out normals only where settings ask
    t0 = time.perf_counter()
    det.fit(train)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = det.score(test, progress=False)
    pred_s = time.perf_counter() - t0
    has_masks = res.masks is not None and any(bool(m.any()) for m in res.masks)
    m = anomaly_metrics(res.scores, res.labels, res.maps if has_masks else None, res.masks if has_masks else None)
    return {"n_train": len(train), "n_test": len(test), "n_abnormal": int(res.labels.sum()),
            "preset": det.history.get("preset"), "image_auroc": m["image_auroc"], "pixel_auroc": m.get("pixel_auroc"),
            "image_auroc_raw": None if res.raw_scores is None
            else anomaly_metrics(res.raw_scores, res.labels)["image_auroc"],
            "score_groups": det.score_groups,
            "fit_s": fit_s, "predict_img_s": len(test) / pred_s, "bank": det.history.get("bank_patches")}


def peak_rss_mib() -> float:
    """This process's peak resident set size so far (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine_line() -> str:
    """CPU model, core count, load average and date for a result file's header."""
    return f"{bench_env.machine()}, load average {bench_env.load()}, {bench_env.now()}"


def set_threads(n: int | None) -> None:
    import torch

    if n:
        torch.set_num_threads(n)


def start_run(ap: argparse.ArgumentParser) -> tuple[argparse.Namespace, str, float]:
    """Add ``--threads`` and ``--out`` to ``ap``, parse, set the threads; the machine line and the start time."""
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    set_threads(args.threads)
    return args, machine_line(), time.perf_counter()


def result_header(title: str, machine: str, start: float) -> list[str]:
    """A result file's first lines: title, the command as run, machine / load / date at start, load and wall at end."""
    wall = time.perf_counter() - start
    return [f"# {title}", "", f"- command: `python {' '.join(sys.argv)}`", f"- machine, load at start, date: {machine}",
            f"- load at end: {Path('/proc/loadavg').read_text().split()[:3]}; wall time {wall:.0f} s"]

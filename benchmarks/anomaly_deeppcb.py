"""DeepPCB anomaly benchmark: template-conditioned vs unconditioned PatchCore (and STPM).

Data: ``--data``, the DeepPCB root (../shared/data/deeppcb here: 1,000 test/template pairs, 640x640,
boxes). Our own split by pair: the first ``--train-pairs`` pairs (sorted by name) give normal training crops, the next
``--test-pairs`` pairs the test crops. Crops are ``--crop`` px at native resolution:

- normal = grid crops that touch no defect box (target = tested image, reference = template);
- abnormal = a crop around each box (random offset up to a quarter crop), mask = the boxes in it.

Boxes are coarser than the defects, so pixel AUROC is a lower bound of the true pixel AUROC.

    nice -n 10 python benchmarks/anomaly_deeppcb.py --data ../shared/data/deeppcb \\
        --out benchmarks/results/anomaly_deeppcb.md
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
from single_view_common import machine_line, result_header  # noqa: E402  (benchmarks/ is on sys.path)

from seminspect.data.imageio import read_image
from seminspect.data.sample import Sample, View
from seminspect.evaluation.anomaly_metrics import anomaly_metrics
from seminspect.models.anomaly import AnomalyDetector
from seminspect.utils.io import atomic_write_text


def load_pairs(root: Path) -> list[tuple[Path, Path, np.ndarray]]:
    pairs = []
    for line in sorted((root / "trainval.txt").read_text().split("\n")):
        if not line.strip():
            continue
        img_rel, box_rel = line.split()
        img = root / img_rel
        stem = img.stem
        test = img.with_name(f"{stem}_test.jpg")
        temp = img.with_name(f"{stem}_temp.jpg")
        boxes = np.loadtxt(root / box_rel, ndmin=2, dtype=np.int64).reshape(-1, 5) if (root / box_rel).is_file() \
            else np.zeros((0, 5), np.int64)
        pairs.append((test, temp, boxes))
    return pairs


def box_mask(shape: tuple[int, int], boxes: np.ndarray) -> np.ndarray:
    m = np.zeros(shape, bool)
    for x1, y1, x2, y2, _ in boxes:
        m[max(0, y1):y2, max(0, x1):x2] = True
    return m


def crops(pairs, crop: int, rng: np.random.Generator, abnormal: bool, tag: str) -> list[Sample]:
    out = []
    for p_i, (test_p, temp_p, boxes) in enumerate(pairs):
        t, r = read_image(test_p), read_image(temp_p)
        h, w = t.shape
        m = box_mask((h, w), boxes)
        for y in range(0, h - crop + 1, crop):
            for x in range(0, w - crop + 1, crop):
                if not m[max(0, y - 8):y + crop + 8, max(0, x - 8):x + crop + 8].any():
                    out.append(Sample(f"{tag}{p_i}_n{y}_{x}", [
                        View("target", 0, t[y:y + crop, x:x + crop], mask=np.zeros((crop, crop), bool)),
                        View("reference", 0, r[y:y + crop, x:x + crop])], is_abnormal=False))
        if abnormal:
            for b_i, (x1, y1, x2, y2, kind) in enumerate(boxes):
                cy, cx = (y1 + y2) // 2, (x1 + x2) // 2
                cy += int(rng.integers(-crop // 4, crop // 4 + 1))
                cx += int(rng.integers(-crop // 4, crop // 4 + 1))
                y = int(np.clip(cy - crop // 2, 0, h - crop))
                x = int(np.clip(cx - crop // 2, 0, w - crop))
                out.append(Sample(f"{tag}{p_i}_a{b_i}", [
                    View("target", 0, t[y:y + crop, x:x + crop], mask=m[y:y + crop, x:x + crop]),
                    View("reference", 0, r[y:y + crop, x:x + crop])], is_abnormal=True, defect_type=str(kind)))
    return out


def fit_and_test_crops(pairs, train_pairs: int, test_pairs: int, crop: int, max_test: int,
                       rng: np.random.Generator, normals: str = "random") -> tuple[list[Sample], list[Sample]]:
    """Box-free fit crops of the first ``train_pairs`` pairs; ``max_test`` test crops (half around boxes, half
    box-free) of the next ``test_pairs``. One place, so every DeepPCB anomaly script measures the same crops."""
    train = crops(pairs[:train_pairs], crop, rng, abnormal=False, tag="tr")
    test = crops(pairs[train_pairs: train_pairs + test_pairs], crop, rng, True, "te")
    return train, balanced_selection(test, max_test, rng, normals)


NORMAL_DRAWS = ("random", "first")


def balanced_selection(samples: list[Sample], n: int, rng: np.random.Generator,
                       normals: str = "random") -> list[Sample]:
    """``n // 2`` abnormal crops drawn at random, then ``n // 2`` normal ones, each kept in order.

    ``normals="random"`` draws the normal crops with ``rng`` too (after the abnormal draw, which is therefore the
    same either way), so they come from every pair; ``"first"`` takes the first ``n // 2``, which come from the
    first few pairs only: what the tables published before 2026-12-07 used (``--normal-draw first`` reproduces them).
    """
    if normals not in NORMAL_DRAWS:
        raise ValueError(f"normals must be one of {NORMAL_DRAWS}, got {normals!r}")
    ab = [s for s in samples if s.is_abnormal]
    no = [s for s in samples if not s.is_abnormal]
    k = n // 2
    sel = rng.permutation(len(ab))[:k]
    picked = sorted(rng.permutation(len(no))[:k]) if normals == "random" else range(min(k, len(no)))
    return [ab[i] for i in sorted(sel)] + [no[i] for i in picked]


def add_normal_draw(ap: argparse.ArgumentParser) -> None:
    """The ``--normal-draw`` option every DeepPCB anomaly script takes (see :func:`balanced_selection`)."""
    ap.add_argument("--normal-draw", choices=NORMAL_DRAWS, default="random",
                    help="how the normal test / validation crops are drawn (first: the tables published before "
                         "2026-12-07)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True, help="DeepPCB root (trainval.txt, group*/)")
    ap.add_argument("--train-pairs", type=int, default=40)
    ap.add_argument("--test-pairs", type=int, default=30)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--max-test", type=int, default=300)
    ap.add_argument("--stpm-epochs", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", default="none,reference", help="comma list: none,reference,difference,stpm")
    ap.add_argument("--append", action="store_true", help="append rows to an existing --out table")
    add_normal_draw(ap)
    ap.add_argument("--stpm-lr", type=float, default=1e-3)
    ap.add_argument("--date", default=time.strftime("%Y-%m-%d", time.gmtime()),
                    help="date written into the result (default: today, UTC)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/anomaly_deeppcb.md"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    machine, t_start = machine_line(), time.perf_counter()
    rng = np.random.default_rng(0)
    pairs = load_pairs(args.data)
    train, test = fit_and_test_crops(pairs, args.train_pairs, args.test_pairs, args.crop, args.max_test, rng,
                                     args.normal_draw)
    print(f"train normal crops {len(train)}, test {sum(s.is_abnormal for s in test)} abnormal + "
          f"{sum(not s.is_abnormal for s in test)} normal", flush=True)
    base = dict(backbone="mobilenetv2", out_indices=[1, 2, 3], layers=[0, 1], registration="phase", max_shift=4,
                max_bank_patches=10000, max_pool_patches=60000, coreset_proj_dim=64, sigma=4.0,
                calib_fraction=0.2, batch_size=16,
                # the 2026-11-22 rows ran with these (then default) settings; kept so their keys mean the same
                match_radius=1, fill_border=False)
    all_runs = {
        "none": ("patchcore, unconditioned", dict(base, conditioning="none")),
        "reference": ("patchcore, template-conditioned [f_t, f_t - f_r]", dict(base, conditioning="reference")),
        "difference": ("patchcore, template-conditioned difference f_t - f_r", dict(base, conditioning="difference")),
        "difference_same_place": ("patchcore, difference, same-place match, fill border, pool 1",
                                  dict(base, conditioning="difference", match_radius=0, fill_border=True, pool=1)),
        "difference_same_place_pool3": ("patchcore, difference, same-place match, fill border, pool 3",
                                        dict(base, conditioning="difference", match_radius=0, fill_border=True)),
    }
    stpm = dict(base, model="stpm", epochs=args.stpm_epochs or 5, lr=args.stpm_lr, layer_weights=[1, 1, 1])
    all_runs["stpm_classic"] = (f"stpm classic ({stpm['epochs']} epochs)", dict(stpm, stpm_mode="classic"))
    all_runs["stpm_template"] = (f"stpm template-conditioned ({stpm['epochs']} epochs)",
                                 dict(stpm, stpm_mode="template"))
    runs = dict(all_runs[k] for k in args.runs.split(","))
    rows = []
    for name, cfg in runs.items():
        t0 = time.perf_counter()
        det = AnomalyDetector(cfg).fit(train)
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = det.score(test)
        pred_s = time.perf_counter() - t0
        m = anomaly_metrics(res.scores, res.labels, res.maps, res.masks, det.threshold["threshold"])
        rows.append({"run": name, **{k: m[k] for k in ("image_auroc", "image_ap", "pixel_auroc", "aupro",
                                                         "false_alarm_rate", "recall")},
                     "fit_s": fit_s, "predict_img_per_s": len(test) / pred_s,
                     "threshold_far_bound": det.threshold["false_alarm_upper_bound"]})
        print(json.dumps(rows[-1]), flush=True)
        if args.append and args.out.is_file():
            _append_rows(args, rows[-1:], first=len(rows) == 1)
    if args.append and args.out.is_file():
        _append_rows(args, [], first=False, done=True)
        return
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lines = [
        *result_header("Anomaly detection on DeepPCB (template-conditioned vs unconditioned)", machine, t_start),
        f"- date: {args.date}; no GPU, torch threads {args.threads}; normal test crops drawn '{args.normal_draw}'",
        f"- data: ../shared/data/deeppcb, pairs sorted by name; first {args.train_pairs} pairs -> "
        f"{len(train)} box-free normal crops of {args.crop} px (20 % held out for the threshold); next "
        f"{args.test_pairs} pairs -> {len(test)} test crops (abnormal = around a box, mask = boxes; normal = "
        "box-free grid crops). Box masks are coarser than the defects: pixel AUROC is a lower bound.",
        "- backbone: MobileNetV2 ImageNet (layers at reductions 4 and 8), bank <= 10,000 patches.",
        f"- peak RSS of the whole script: {peak:.0f} MiB",
        "",
        "| run | image AUROC | image AP | pixel AUROC | AUPRO | false-alarm rate @thr | recall @thr | fit s | "
        "predict img/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['run']} | {r['image_auroc']:.4f} | {r['image_ap']:.4f} | {r['pixel_auroc']:.4f} | "
                     f"{r['aupro']:.4f} | {r['false_alarm_rate']:.3f} | {r['recall']:.3f} | {r['fit_s']:.0f} | "
                     f"{r['predict_img_per_s']:.1f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _append_rows(args: argparse.Namespace, rows: list[dict], first: bool, done: bool = False) -> None:
    """Append rows to an existing table as each run finishes (a later failure keeps what was measured)."""
    text = args.out.read_text()
    if first:
        text += (f"\nRows below added on {args.date} by: `python {' '.join(sys.argv)}` (same data and split; torch "
                 f"threads {args.threads}; {machine_line()})\n\n"
                 "| run | image AUROC | image AP | pixel AUROC | AUPRO | false-alarm rate @thr | recall @thr | "
                 "fit s | predict img/s |\n|---|---|---|---|---|---|---|---|---|\n")
    for r in rows:
        text += (f"| {r['run']} | {r['image_auroc']:.4f} | {r['image_ap']:.4f} | {r['pixel_auroc']:.4f} | "
                 f"{r['aupro']:.4f} | {r['false_alarm_rate']:.3f} | {r['recall']:.3f} | {r['fit_s']:.0f} | "
                 f"{r['predict_img_per_s']:.1f} |\n")
    if done:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        text += (f"\nLoad average at end {os.getloadavg()[0]:.2f}; peak RSS of the script {peak:.0f} MiB.\n")
    atomic_write_text(args.out, text)


if __name__ == "__main__":
    main()

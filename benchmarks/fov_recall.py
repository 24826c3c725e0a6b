"""Whole field of view: recall at 99 % precision when the defect is off centre, and int8 against fp32.

    python benchmarks/fov_recall.py --artefact centre=runs/demo/adc --artefact difference=runs/fov/adc_diff \
        --data centred_test=runs/demo/data:test --data centred=runs/fov/centred --data offcentre=runs/fov/offcentre

Every artefact judges every data set through the inspector (ONNX Runtime fp32, as ``predict``),
and, for an artefact with an int8 graph (``seminspect optimise``), int8 too; with ``--bf16``,
OpenVINO bf16 as well (where the CPU offers it). Per row: image
AUROC, recall at 99 % precision (threshold chosen on the set itself: the usual optimistic figure)
with its 95 % interval, type macro-F1, the share of sites the artefact's calibrated triage
automates and the precision of its automatic decisions; for int8, the share of sites whose route
is the same as fp32's (with ``--checked``, also with the fp32 check of sites near a threshold); and the
recall, at the same threshold, of the defects whose centre lies beyond where a window clamped inside
the field can centre (more than (size - crop) / 2 - max_shift px from the centre along an axis: 158 px
for a 128 px crop of a 460 px view): the sites whose defect lies off the window's centre even when the
window is placed on it.
No setting is chosen here: each artefact was trained and calibrated on its
own training and calibration splits. Writes ``benchmarks/results/fov_recall.md`` (or ``--result``).
The two fresh sets come from ``python benchmarks/fov_recall.py --make ROOT`` (seed 5000, 600 sites
each, ``site_offset`` 0.08 as the main job and 0.4: anywhere in the inner 80 % of the field); a
validation pair to choose settings on: ``--make ROOT --make-n 300 --make-seed 6000``; the 2,000-site sets
of ``results/fov_recall_zoom.md``: ``--make ROOT --make-n 2000 --make-seed 7000``. Off-centre sets made before
2026-12-07's fix of the virtual fab's zoom views (docs/virtual_fab.md) had zooms not centred on defects near
the edge, and every result file written on them understates off-centre recall (docs/fast.md).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from predict_common import header, load  # noqa: E402

from seminspect.utils.io import atomic_write_text  # noqa: E402


def make_sets(root: Path, n: int = 600, seed: int = 5000) -> None:
    from seminspect.data.synth import FabConfig, generate_dataset

    for name, offset in (("centred", 0.08), ("offcentre", 0.4)):
        fab = FabConfig(image_size=460, n_angles=5, n_zooms=2, difficulty="medium", site_offset=offset)
        generate_dataset(root / name, n, fab, abnormal_fraction=0.5, seed=seed, workers=None, splits={"test": 1.0})


def beyond_reach(samples: list, crop: int | None, max_shift: float) -> np.ndarray:
    """Per site: True where the defect mask's centre (all target views) lies beyond a clamped window's reach."""
    from seminspect.data.locate import window_room
    from seminspect.data.sample import Role

    out = np.zeros(len(samples), bool)
    for k, s in enumerate(samples):
        masks = [v.mask for v in s.views if v.role == Role.TARGET and v.mask is not None and v.mask.any()]
        if not masks or crop is None:
            continue
        ys, xs = np.nonzero(np.logical_or.reduce(masks))
        h, w = masks[0].shape
        room_y, room_x = window_room((h, w), crop, int(np.ceil(max_shift)))  # where the inspector can move it
        out[k] = abs(ys.mean() - h / 2) > room_y or abs(xs.mean() - w / 2) > room_x
    return out


def judge(artefact: Path, data: str, precision: str,
          check: bool = False) -> tuple[object, np.ndarray, np.ndarray, str, np.ndarray]:
    """The inspector's judgement of ``data`` (``FOLDER[:SPLIT]``), with abnormal and type labels; ``check``:
    bf16 / int8 sites near a threshold judged again in fp32 (the margins of `seminspect optimise --precision`),
    whose note comes fourth (empty without it); last, the sites whose defect is beyond a clamped window's reach."""
    from seminspect.data.dataset import SampleDataset
    from seminspect.inference.inspector import Inspector

    root, _, split = data.partition(":")
    ds = SampleDataset(root)
    if split:
        ds = ds.split(split)
    insp = Inspector.load(artefact, backend="openvino" if precision == "bf16" else "onnxruntime", precision=precision,
                          fp32_check=check if precision != "fp32" else None)
    tax = insp.artefact.taxonomy
    samples = list(ds)
    y = np.array([int(bool(s.is_abnormal)) for s in samples])
    ti = np.array([tax.leaf_index(s.defect_type) if s.is_abnormal and s.defect_type in tax else -1 for s in samples])
    res = insp.inspect(samples, progress=f"{artefact.name} {precision} {Path(root).name}")
    im = insp.artefact.image
    far = beyond_reach(samples, im.crop, im.max_shift)
    return res, y, ti, insp.runtime.note() if check else "", far


def row(name: str, data: str, precision: str, res, y: np.ndarray, ti: np.ndarray, same: float | None,
        far: np.ndarray) -> str:
    from sklearn.metrics import f1_score, roc_auc_score

    from seminspect.evaluation.metrics import recall_at_precision

    r = recall_at_precision(y, res.abnormal, 0.99)
    typed = (y == 1) & (ti >= 0)
    f1 = f1_score(ti[typed], res.types[typed].argmax(1), labels=np.unique(ti[typed]), average="macro",
                  zero_division=0)
    route = res.route
    auto = route != "review"
    right = ((route == "auto_abnormal") & (y == 1)) | ((route == "auto_normal") & (y == 0))
    lo, hi = r.recall_ci
    edge = (y == 1) & far
    edge_recall = f"{(res.abnormal[edge] >= r.threshold).mean():.3f} of {int(edge.sum())}" if edge.any() else "-"
    return (f"| {name} | {data} | {precision} | {len(y)} | {roc_auc_score(y, res.abnormal):.4f} | "
            f"{r.recall:.3f} ({lo:.3f}-{hi:.3f}) | {f1:.3f} | {auto.mean():.3f} | "
            f"{right[auto].mean() if auto.any() else float('nan'):.4f} | "
            f"{'' if same is None else f'{same:.4f}'} | {edge_recall} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--make", type=Path, help="only generate the two fresh sets under this folder")
    ap.add_argument("--make-n", type=int, default=600, help="sites per generated set")
    ap.add_argument("--make-seed", type=int, default=5000, help="generator seed of the sets (another seed: "
                    "a validation pair to choose settings on, e.g. 6000)")
    ap.add_argument("--artefact", action="append", default=[], help="NAME=FOLDER")
    ap.add_argument("--data", action="append", default=[], help="NAME=FOLDER[:SPLIT]")
    ap.add_argument("--result", type=Path, default=Path(__file__).parent / "results" / "fov_recall.md")
    ap.add_argument("--bf16", action="store_true", help="also OpenVINO bf16 (needs seminspect[openvino])")
    ap.add_argument("--checked", action="store_true", help="also int8 / bf16 with the fp32 check near a threshold "
                    "(needs `seminspect optimise --precision` first)")
    a = ap.parse_args()
    if a.make:
        make_sets(a.make, a.make_n, a.make_seed)
        return
    t0 = time.perf_counter()
    lines = header("Whole field of view: recall at 99 % precision, centred and off-centre defects", sys.argv)
    lines += ["| artefact | data | precision | sites | AUROC | recall at 99 % precision (95 % CI) | type macro-F1 "
              "| automated | correct among automated | routes as fp32 | recall beyond a clamped window's reach |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for spec in a.artefact:
        name, _, folder = spec.partition("=")
        art = Path(folder)
        has_int8 = any((art / "runtime").glob("*-int8.onnx"))
        for dspec in a.data:
            dname, _, data = dspec.partition("=")
            fp, y, ti, _, far = judge(art, data, "fp32")
            lines.append(row(name, dname, "fp32", fp, y, ti, None, far))
            print(lines[-1], flush=True)
            for low in (["int8"] if has_int8 else []) + (["bf16"] if a.bf16 else []):
                checks = [False, True] if a.checked else [False]
                for check in checks:
                    q, _, _, note, _ = judge(art, data, low, check)
                    label = ("bf16 (OpenVINO)" if low == "bf16" else low) + (
                        f", {note.split(' (')[0]}" if check else "")
                    lines.append(row(name, dname, label, q, y, ti, float((q.route == fp.route).mean()), far))
                    print(lines[-1], flush=True)
    lines += ["", f"Load average at the end: {load()}; whole run {time.perf_counter() - t0:.0f} s."]
    atomic_write_text(a.result, "\n".join(lines) + "\n")
    print(f"-> {a.result}")


if __name__ == "__main__":
    main()

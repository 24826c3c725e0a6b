"""The user's STPM study as one benchmark on DeepPCB pairs: each dimension a row, our figure beside the study's.

Rows (each one template-conditioned STPM fit unless the row says otherwise; MobileNetV2 ImageNet teacher,
MobileNetV2 student from scratch, maps at reductions 4 / 8 / 16 = the study's layers 1 / 2 / 3):

- ``base``: template -> teacher, image -> student; l2; reflect padding; layers 1/2/3 weighted equally
- ``reverse``: image -> teacher, template -> student (``stpm_mode: template_student``)
- ``huber`` / ``cosine``: the loss; ``zeros``: zero padding in the student
- ``layer2``: layer 2 main, 1 and 3 as help (weights 0.5 / 1 / 0.5)
- ``reg_off``, ``shift2`` / ``shift4`` / ``shift8``: registration off, and every reference (fit, validation
  and test alike, as from a tool that places the template with that error) shifted by 0 / 2 / 4 / 8 px
  right and 0 / 2 / 4 / 8 px down, edges repeated
- ``mixed_lite0`` / ``mixed_simple``: a student of another architecture (EfficientNet-Lite0 / the plain
  ``simple_cnn``, from scratch; 1x1 adapters onto the teacher's channels, ``student_backbone``)
- ``mismatch4`` / ``mismatch8`` / ``mismatch8_huber``: 4 % / 8 % of the fit crops get the template of
  another, randomly drawn fit crop (a wrong pair: another location or board), l2 / l2 / Huber; validation
  and test pairs stay correct
- ``teacher_ft`` / ``teacher_ft_rcz``: the teacher fine-tuned on the fit images first (pseudo-defect heads,
  ``teacher_finetune_epochs: 2``, layer 1 frozen), on the reference row / on the reverse + cosine + zeros row

Split (pairs sorted by name, as ``anomaly_deeppcb.py``): the test crops are the identical 300 crops of
PatchCore's benchmark (pairs 40-69, same seed and call order). The training pairs 0-39 are split:
box-free crops of pairs ``0..--fit-pairs-1`` train the student; pairs ``--fit-pairs..39`` are the
VALIDATION split (their box crops = abnormal, their box-free crops = normal, own seed). Chosen on
validation only, per row: the epoch (validation image AUROC after each epoch of ``--epochs``, maps at
sigma 4, no window; the student of the best epoch is kept), then the map post-processing (window,
sigma) as in ``anomaly_deeppcb_postproc.py`` (highest validation pixel AUROC among settings within 0.005
of the best validation image AUROC). The test crops are scored once, with those choices.

``--fab DIR``: the same rows on the virtual fab's products data set of ``drift_transfer.py`` (4 layout
families, 128 px, 1 target + 1 reference; generated into DIR if absent): fit = the train split's normal
sites, validation = the calib split, test = the test split; results in ``stpm_study_fab.json`` / ``.md``.

"NaN seen": the training loop checks every step's loss and gradients; it raises on the first
non-finite one (caught here: the row says yes) and otherwise states ``non_finite_steps: 0``.

    OMP_NUM_THREADS=1 nice -n 15 python benchmarks/stpm_study.py --rows base,reverse \\
        --json benchmarks/results/stpm_study.json --md benchmarks/results/stpm_study.md
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from anomaly_deeppcb import add_normal_draw, crops, fit_and_test_crops, load_pairs  # noqa: E402
from anomaly_deeppcb_postproc import post  # noqa: E402
from stpm_study_rows import BASE, ORDER, ROWS, verdict  # noqa: E402

from seminspect.evaluation.anomaly_metrics import anomaly_metrics  # noqa: E402
from seminspect.models.anomaly import AnomalyConfigError, AnomalyDetector  # noqa: E402
from seminspect.utils.io import atomic_write_json, atomic_write_text  # noqa: E402

WINDOWS = (0, 9, 17, 25)
SIGMAS = (2.0, 4.0, 8.0)


def split_train_val(train: list, pairs: list, fit_pairs: int, train_pairs: int, crop: int,
                    seed: int) -> tuple[list, list]:
    """Fit crops of pairs < fit_pairs; validation = box + box-free crops of pairs fit_pairs..train_pairs-1."""
    fit = [s for s in train if int(s.sample_id[2:].split("_")[0]) < fit_pairs]
    val = crops(pairs[fit_pairs:train_pairs], crop, np.random.default_rng(seed), abnormal=True, tag="va")
    return fit, val


def fab_splits(root: Path, n: int, size: int, threads: int) -> tuple[list, list, list]:
    """The products fab of ``drift_transfer.py`` (made if absent): fit = train-split normals, val = calib, test."""
    from drift_transfer import make_fab

    from seminspect.data.dataset import SampleDataset

    make_fab(root, n, size, threads)
    data = SampleDataset(root)
    split = data.metadata_column("split")
    part = {name: [data[i] for i, s in enumerate(split) if s == name] for name in ("train", "calib", "test")}
    return [s for s in part["train"] if not s.is_abnormal], part["calib"], part["test"]


def shifted(samples: list, k: int) -> list:
    """Copies whose reference view is shifted ``k`` px right and ``k`` px down (edges repeated)."""
    if k == 0:
        return samples
    def moved(v):
        img = np.pad(v.image, ((k, 0), (k, 0)), mode="edge")[:v.image.shape[0], :v.image.shape[1]]
        return dataclasses.replace(v, image=np.ascontiguousarray(img))

    return [dataclasses.replace(smp, views=[moved(v) if v.role == "reference" else v for v in smp.views])
            for smp in samples]


def mismatched(samples: list, frac: float, seed: int) -> list:
    """Copies in which ``frac`` of the samples carry the reference view of another, randomly drawn sample."""
    rng = np.random.default_rng(seed)
    n = len(samples)
    wrong = set(rng.permutation(n)[:round(frac * n)].tolist())
    out = []
    for i, smp in enumerate(samples):
        if i in wrong:
            j = int(rng.integers(n - 1))
            j += j >= i  # never its own template
            ref = next(v for v in samples[j].views if v.role == "reference")
            smp = dataclasses.replace(smp, views=[ref if v.role == "reference" else v for v in smp.views])
        out.append(smp)
    return out


def raw_result(det: AnomalyDetector, samples: list):
    res = det.score(samples, progress=False)
    return res.maps.astype(np.float32), res.labels, res.masks


def image_auroc(maps: np.ndarray, labels: np.ndarray, window: int, sigma: float) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, post(maps, window, sigma).reshape(len(maps), -1).max(1)))


def run_row(key: str, args: argparse.Namespace, fit: list, val: list, test: list) -> dict:
    label, change, dimension, finding = ROWS[key]
    change = dict(change)
    epochs = [int(e) for e in str(change.pop("_epochs", args.epochs)).split(",")]
    k = change.pop("_shift", 0)
    fit, val, test = shifted(fit, k), shifted(val, k), shifted(test, k)
    fit = mismatched(fit, change.pop("_mismatch", 0.0), seed=2) if "_mismatch" in change else fit
    cfg = {**BASE, **change}
    ckpt = Path(tempfile.mkdtemp(prefix=f"stpm_study_{key}_"))
    row: dict = {"row": key, "label": label, "dimension": dimension, "study": finding, "config": cfg,
                 "load_start": os.getloadavg()[0], "per_epoch": []}
    best = (-1.0, 0, None, 0.0)  # (val image AUROC, epoch, student state, train s to that epoch)
    train_s = 0.0
    t_row = time.perf_counter()
    try:
        for e in epochs:
            det = AnomalyDetector({**cfg, "epochs": e}).fit(fit, calib=[], checkpoint_dir=ckpt)
            train_s += det.history["fit_seconds"]
            maps, labels, _ = raw_result(det, val)
            auc = image_auroc(maps, labels, 0, 4.0)
            row["per_epoch"].append({"epoch": e, "val_image_auroc": auc, "train_s": train_s,
                                     "loss": det.history["losses"][-1], "load": os.getloadavg()[0]})
            print(json.dumps({"row": key, **row["per_epoch"][-1]}), flush=True)
            if auc > best[0]:
                best = (auc, e, copy.deepcopy(det.model.student.state_dict()), train_s)
        row["nan_seen"] = "no" if det.history.get("non_finite_steps") == 0 else "unknown"
    except AnomalyConfigError as exc:  # the loop's non-finite guard: report, do not hide
        row["nan_seen"] = "yes"
        row["error"] = str(exc)
        if best[2] is None:
            return row
    finally:
        shutil.rmtree(ckpt, ignore_errors=True)
    det.model.student.load_state_dict(best[2])
    row.update(epoch=best[1], val_image_auroc_at_epoch=best[0], train_min=best[3] / 60,
               train_min_all_epochs=train_s / 60)
    # post-processing on validation at the chosen epoch
    vmaps, vlabels, vmasks = raw_result(det, val)
    grid = []
    for w in WINDOWS:
        for s in SIGMAS:
            pm = post(vmaps, w, s)
            m = anomaly_metrics(pm.reshape(len(pm), -1).max(1), vlabels, pm, vmasks)
            grid.append({"window": w, "sigma": s, "val_image_auroc": m["image_auroc"],
                         "val_pixel_auroc": m["pixel_auroc"]})
    top = max(g["val_image_auroc"] for g in grid)
    chosen = max((g for g in grid if g["val_image_auroc"] >= top - 0.005), key=lambda g: g["val_pixel_auroc"])
    row.update(grid=grid, window=chosen["window"], sigma=chosen["sigma"], val_image_auroc=chosen["val_image_auroc"],
               val_pixel_auroc=chosen["val_pixel_auroc"])
    tmaps, tlabels, tmasks = raw_result(det, test)
    pm = post(tmaps, chosen["window"], chosen["sigma"])
    m = anomaly_metrics(pm.reshape(len(pm), -1).max(1), tlabels, pm, tmasks)
    row.update({f"test_{k}": m[k] for k in ("image_auroc", "image_ap", "pixel_auroc", "aupro")})
    row["wall_min"] = (time.perf_counter() - t_row) / 60
    row["load_end"] = os.getloadavg()[0]
    return row


def write_md(path: Path, rows: dict, meta: dict) -> None:
    on = "the virtual fab" if meta.get("fab") else "DeepPCB"
    data_line = (
        f"- data: the products fab of `drift_transfer.py` (`{meta.get('fab')}`: 4 layout families, 128 px, 1 target + "
        f"1 reference, half the sites defective of 19 types, seed 0). Fit: the train split's {meta['n_fit']} normal "
        f"sites. Validation: the calib split ({meta['n_val_abnormal']} abnormal + {meta['n_val_normal']} normal). "
        f"Test: the test split ({meta.get('n_test')} sites), scored once. Epoch (validation scored after epochs "
        f"{meta['epochs']}, or those in the row's label) and map post-processing (window, sigma) chosen per row on "
        "validation; lr 1e-3 unless the row says otherwise, batch 16." if meta.get("fab") else
        "- data: ../shared/data/deeppcb, pairs sorted by name. Test: the identical 300 crops (128 px) of "
        "`anomaly_deeppcb.py` (pairs 40-69), PatchCore's split; normal test crops drawn "
        f"'{meta.get('normal_draw', 'first')}' (`--normal-draw`). Fit: box-free crops of pairs "
        f"0-{meta['fit_pairs'] - 1} ({meta['n_fit']} crops). Validation, drawn from the training pairs "
        f"{meta['fit_pairs']}-{meta['train_pairs'] - 1}: {meta['n_val_abnormal']} box crops + "
        f"{meta['n_val_normal']} box-free crops. Epoch (validation scored after epochs {meta['epochs']}, or "
        "those in the row's label) and map post-processing (window, sigma) "
        "chosen per row on validation; lr 1e-3 unless the row says otherwise (the lr rows: the learning rate chosen "
        "on validation like any other setting), batch 16. Box masks are coarser than the "
        "defects: pixel AUROC is a lower bound.")
    lines = [
        f"# The STPM study on {on} (template-conditioned STPM, one row per dimension of the user's study)",
        "",
        "- commands (rows were measured in batches; every batch adds its rows to the same JSON):",
        *[f"  - {c['date']}: `{c['command']}`" for c in meta["commands"]],
        f"- machine: {meta['machine']}; batches whose command has no `--threads`: torch threads 1, `nice -n 15`, "
        "the 2 cores shared with the lead's and another helper's jobs (never idle); batches with `--threads 2`: "
        "alone on the machine. Load average per row below",
        f"- wall time of the measured rows: {meta['wall_min']:.1f} min",
        data_line,
        "- model: MobileNetV2 teacher (ImageNet, frozen) and MobileNetV2 student from scratch (same registry "
        "backbone), maps at reductions 4 / 8 / 16 (the study's layers 1 / 2 / 3; layer 4 not used).",
        *([] if meta.get("fab") else [
            "- PatchCore on the same test crops (`anomaly_deeppcb.md`, post-processing chosen on validation): image "
            "AUROC 1.000, pixel AUROC 0.981."]),
        "",
        "| dimension | row | epoch | window / sigma | val image AUROC | test image AUROC | test pixel AUROC | "
        "test image AP | train min (to the epoch / all) | load start-end | NaN seen | study's finding | "
        "agree / disagree |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key in ORDER:
        label, _, dimension, finding = ROWS[key]
        r = rows.get(key)
        if r is None or "test_image_auroc" not in r:
            nan = r.get("nan_seen", "-") if r else "-"
            lines.append(f"| {dimension} | {label} | not measured | | | | | | | | {nan} | {finding} | not measured |")
            continue
        lines.append(
            f"| {dimension} | {label} | {r['epoch']} | {r['window']} / {r['sigma']:g} | {r['val_image_auroc']:.4f} | "
            f"{r['test_image_auroc']:.4f} | {r['test_pixel_auroc']:.4f} | {r['test_image_ap']:.4f} | "
            f"{r['train_min']:.1f} / {r['train_min_all_epochs']:.1f} | {r['load_start']:.2f}-{r['load_end']:.2f} | "
            f"{r['nan_seen']} | {finding} | {verdict(key, rows)} |")
    done = {k: r for k, r in rows.items()  # settings, not repeats with another seed
            if "test_image_auroc" in r and r.get("nan_seen") == "no" and "seed" not in ROWS[k][1]}
    if done:
        k = max(done, key=lambda k: (done[k]["val_image_auroc"], done[k]["val_pixel_auroc"]))
        r = done[k]
        lines += ["", f"Recommended, chosen on validation among the measured rows (highest validation image AUROC, "
                  f"then pixel AUROC): **{ROWS[k][0]}**, epoch {r['epoch']}, window {r['window']}, sigma "
                  f"{r['sigma']:g}: test image AUROC {r['test_image_auroc']:.4f} (target 0.98: "
                  f"{'met' if r['test_image_auroc'] >= 0.98 else 'not met'}), pixel AUROC {r['test_pixel_auroc']:.4f} "
                  f"(target 0.97: {'met' if r['test_pixel_auroc'] >= 0.97 else 'not met'}), trained in "
                  f"{r['train_min']:.1f} min (target 30)."]
    lines += ["", "Train minutes are the summed `fit_seconds` of the resumed fits up to the chosen epoch (each resume "
              "also re-registers the fit crops, a few seconds); they depend on the batch's threads and load."]
    marker = "<!-- reading: kept across reruns -->"
    old = path.read_text() if path.is_file() else ""
    notes = old[old.index(marker):] if marker in old else marker + "\n"
    atomic_write_text(path, "\n".join(lines) + "\n\n" + notes)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, default=None, help="DeepPCB root (trainval.txt, group*/): without --fab")
    ap.add_argument("--rows", default="base,reverse,zeros,layer2,huber,cosine")
    ap.add_argument("--train-pairs", type=int, default=40)
    ap.add_argument("--fit-pairs", type=int, default=32)
    ap.add_argument("--test-pairs", type=int, default=30)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--max-test", type=int, default=300)
    ap.add_argument("--epochs", default="4,8,12,16", help="validation is scored after each of these epochs")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--fab", type=Path, help="run on the virtual products fab in this folder (made if absent) "
                    "instead of DeepPCB")
    ap.add_argument("--fab-n", type=int, default=3200, help="sites of a generated --fab")
    ap.add_argument("--json", type=Path, help="default: benchmarks/results/stpm_study.json (stpm_study_fab.json)")
    ap.add_argument("--md", type=Path, help="default: benchmarks/results/stpm_study.md (stpm_study_fab.md)")
    ap.add_argument("--render", action="store_true", help="only rewrite --md from --json (no training)")
    add_normal_draw(ap)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    stem = "stpm_study_fab" if args.fab else "stpm_study"
    args.json = args.json or Path(f"benchmarks/results/{stem}.json")
    args.md = args.md or Path(f"benchmarks/results/{stem}.md")
    if args.fab:
        fit, val, test = fab_splits(args.fab, args.fab_n, args.crop, args.threads)
    else:
        if args.root is None:
            ap.error("--root (the DeepPCB root) is needed without --fab")
        pairs = load_pairs(args.root)
        train, test = fit_and_test_crops(pairs, args.train_pairs, args.test_pairs, args.crop, args.max_test,
                                         np.random.default_rng(0), args.normal_draw)
        fit, val = split_train_val(train, pairs, args.fit_pairs, args.train_pairs, args.crop, seed=1)
    n_ab = sum(bool(s.is_abnormal) for s in val)
    print(f"fit {len(fit)}, val {n_ab} abnormal + {len(val) - n_ab} normal, test {len(test)}", flush=True)
    state = json.loads(args.json.read_text()) if args.json.is_file() else {"rows": {}, "wall_s": 0.0}
    state.setdefault("commands", [])
    drawn = state.setdefault("normal_draw", "first" if state["rows"] and not args.fab else args.normal_draw)
    if not args.fab and not args.render and drawn != args.normal_draw:  # rows of one table share one test set
        ap.error(f"{args.json} holds rows whose normal test crops were drawn '{drawn}': pass --normal-draw {drawn} "
                 "or a new --json")
    command = "python benchmarks/stpm_study.py " + " ".join(sys.argv[1:])
    if args.threads == 1:
        command = "OMP_NUM_THREADS=1 nice -n 15 " + command
    if not args.render:
        state["commands"].append({"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "command": command})
    meta = {"commands": state["commands"], "machine": f"{platform.machine()} {os.cpu_count()}-core CPU, no GPU",
            "fit_pairs": args.fit_pairs, "train_pairs": args.train_pairs, "n_fit": len(fit),
            "n_val_abnormal": n_ab, "n_val_normal": len(val) - n_ab, "epochs": args.epochs,
            "fab": str(args.fab) if args.fab else None, "n_test": len(test), "normal_draw": state["normal_draw"]}
    if args.render:
        write_md(args.md, state["rows"], {**meta, "wall_min": state["wall_s"] / 60})
        return
    t0 = time.perf_counter()
    for key in args.rows.split(","):
        state["rows"][key] = run_row(key, args, fit, val, test)
        state["wall_s"] = state.get("wall_s", 0.0) + (time.perf_counter() - t0)
        t0 = time.perf_counter()
        print(json.dumps({k: v for k, v in state["rows"][key].items() if k not in ("grid", "config")}), flush=True)
        atomic_write_json(args.json, state)
        write_md(args.md, state["rows"], {**meta, "wall_min": state["wall_s"] / 60})


if __name__ == "__main__":
    main()

"""PatchCore prediction per runtime (issue [fast]): img/s and AUROC on torch / ONNX Runtime / OpenVINO, fp32/bf16/int8.

    python benchmarks/patchcore_runtime.py --elpv runs/elpv --deeppcb ../shared/data/deeppcb \
        --threads 2 --settings '{"preset": "auto", "image_size": 256}' --out benchmarks/results/patchcore_runtime.md

Per set, one detector is fitted with ``--settings`` (default ``preset: auto``: native size) on the
training normals (the single-view benchmark's splits, benchmarks/single_view_common.py; nothing chosen on a test split)
and saved; every row loads it, is set to its runtime (seminspect.inference.anomaly_runtime), scores
a few test images to warm up, then scores the whole test split once, alone in this process. The
first row is the search as it was before blocking (one 4,096 x 65,536 distance block, torch fp32),
side by side; "max |score - torch fp32|" shows what each row changes.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from single_view_common import LOADERS, peak_rss_mib, result_header, start_run  # noqa: E402

from seminspect.evaluation.anomaly_metrics import anomaly_metrics  # noqa: E402
from seminspect.inference.anomaly_runtime import use_runtime  # noqa: E402
from seminspect.inference.runtime import BackendError  # noqa: E402
from seminspect.models.anomaly import AnomalyDetector  # noqa: E402
from seminspect.models.anomaly.search import bank_blocks  # noqa: E402
from seminspect.utils.io import atomic_write_text  # noqa: E402

ROWS = [("torch, one 4096 x 65536 block (before)", "torch", "fp32"), ("torch", "torch", "fp32"),
        ("torch", "torch", "bf16"), ("onnxruntime", "onnxruntime", "fp32"), ("onnxruntime", "onnxruntime", "bf16"),
        ("openvino", "openvino", "fp32"), ("openvino", "openvino", "bf16"), ("torch", "torch", "int8"),
        ("onnxruntime", "onnxruntime", "int8")]


def score_row(folder: Path, test: list, label: str, backend: str, precision: str, threads: int | None) -> dict:
    det = AnomalyDetector.load(folder)
    where = use_runtime(det, folder, backend, precision, threads)
    if label.endswith("(before)"):
        blocks = bank_blocks(det.model.bank, "fp32", 65536)
        det.model.bank_blocks = lambda: blocks  # the previous search: one big block
        det.model.query_chunk = 4096
    det.score(test[:4], progress=False)  # warm-up: graph opened, first-call allocations
    t0 = time.perf_counter()
    res = det.score(test, progress=False)
    seconds = time.perf_counter() - t0
    has_masks = res.masks is not None and any(bool(m.any()) for m in res.masks)
    m = anomaly_metrics(res.scores, res.labels, res.maps if has_masks else None, res.masks if has_masks else None)
    return {"row": label, "where": where, "img_s": len(test) / seconds, "image_auroc": m["image_auroc"],
            "pixel_auroc": m.get("pixel_auroc"), "scores": res.scores}


def run(name: str, root: str, threads: int | None, settings: dict, picked: list[int]) -> list[dict]:
    train, test = LOADERS[name](root)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        det = AnomalyDetector({**settings, "calib_fraction": 0.0})
        t0 = time.perf_counter()
        det.fit(train)
        fit_s = time.perf_counter() - t0
        det.save(folder)
        bank = tuple(det.model.bank.shape)
        rows, refused = [], []
        for label, backend, precision in (ROWS[i] for i in picked):
            try:
                rows.append(score_row(folder, test, label, backend, precision, threads))
            except BackendError as err:  # bf16 on a CPU without it: said in the result, not a crash
                refused.append({"set": name, "row": f"{backend} {precision}", "refused": str(err),
                                "n_test": len(test), "fit_s": fit_s, "bank": bank})
                print(json.dumps(refused[-1]), flush=True)
    ref = next(r["scores"] for r in rows if r["row"] == "torch" and r["where"].startswith("torch (fp32"))
    for r in rows:
        r.update(set=name, n_test=len(test), fit_s=fit_s, bank=bank,
                 max_score_diff=float(np.abs(r.pop("scores") - ref).max()), ref_scale=float(np.abs(ref).max()))
        print(json.dumps(r, default=str), flush=True)
    return rows + refused


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--elpv", help="imported ELPV folder (seminspect import elpv - OUT)")
    ap.add_argument("--deeppcb", help="DeepPCB root (trainval.txt)")
    ap.add_argument("--fab", help="generated virtual-fab folder (references dropped)")
    ap.add_argument("--settings", default='{"preset": "auto"}',
                    help="AnomalyConfig fields as JSON (default: preset auto, which keeps native size; the 256 px "
                    'table: \'{"preset": "auto", "image_size": 256}\')')
    ap.add_argument("--rows", default="", help="comma list of row numbers (default: all; 1, torch fp32, is always "
                    "run: the reference): " + "; ".join(f"{i} {b} {p}{' (before)' if 'before' in lab else ''}"
                                                       for i, (lab, b, p) in enumerate(ROWS)))
    args, machine, start = start_run(ap)
    settings = json.loads(args.settings)
    picked = sorted({1, *(int(x) for x in args.rows.split(",") if x)}) if args.rows else list(range(len(ROWS)))
    rows = [r for name in ("elpv", "deeppcb", "fab") if getattr(args, name)
            for r in run(name, getattr(args, name), args.threads, settings, picked)]
    lines = [*result_header("PatchCore prediction per runtime: speed and AUROC", machine, start),
             f"- settings: `{json.dumps(settings)}`; peak RSS of the run: {peak_rss_mib():.0f} MiB", "",
             "| set | runtime (embedding, search) | predict img/s | image AUROC | pixel AUROC | "
             "max abs score difference from torch fp32 (largest score) |", "|---|---|---|---|---|---|"]
    for r in rows:
        if "refused" in r:
            lines.append(f"| {r['set']} | {r['row']}: refused ({r['refused']}) | - | - | - | - |")
            continue
        px = "-" if r["pixel_auroc"] is None else f"{r['pixel_auroc']:.4f}"
        where = r["where"] if not r["row"].endswith("(before)") else r["row"]
        lines.append(f"| {r['set']} ({r['n_test']} test, bank {r['bank'][0]:,} x {r['bank'][1]}) | {where} | "
                     f"{r['img_s']:.1f} | {r['image_auroc']:.4f} | {px} | {r['max_score_diff']:.2e} "
                     f"({r['ref_scale']:.3g}) |")
    lines += ["", "```json", json.dumps(rows, indent=1, default=str), "```", ""]
    atomic_write_text(Path(args.out), "\n".join(lines))
    print("\n".join(lines[: 8 + len(rows)]))


if __name__ == "__main__":
    main()

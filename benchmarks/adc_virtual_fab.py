"""Benchmark (a) of issue 3: multi-view ADC on a large virtual fab, with and without the references.

    nice -n 10 python benchmarks/adc_virtual_fab.py configs/adc_virtual_fab.yaml /tmp/fabh/run \
        --test 2000 --calib 1000 --train-chunk 500 --train-max 3000 --stop-train-at 03:50

The product's sample (as in the README's main job): 460 x 460 px at 2 nm/px, 5 target + 5
reference views and 2 zooms, default "medium" difficulty, half of the sites abnormal with the 19
types of ``sem_default`` cycled (so every type is in every part).

The fab is generated in independent parts, each a complete dataset folder under RUN/data with its
own fixed seed (test: 2027, calib: 2028, train chunk k: 2030 + k): test first, then calib, then
training chunks of ``--train-chunk`` sites until ``--train-max`` or the wall-clock time
``--stop-train-at`` (UTC, HH:MM) -- on a shared 2-core machine the amount of training data is
what the CPU allows, and the test set (>= 2,000 sites, never seen in training) must not be what
is cut. Each part is encoded by the frozen backbone right after it is generated (features cached
under RUN/cache). Then: heads trained on the training chunks (15 % stratified validation carved
out, checkpoint after every epoch), thresholds calibrated on calib (``PrecisionThreshold`` 99 % /
95 %, ``TriagePolicy``), every metric on test, the HTML report, and the variants on the same
cached features: the same model with the reference views removed at test (re-calibrated on calib
without them, as a deployment without references would be), a model trained and tested without
references, optionally one without zooms. Every stage is timed (wall and CPU seconds, load
average). Re-running the same command resumes (generation, encoding and head training all do).
Writes RUN/summary.json and RUN/rows.md; the result file is written by hand from these.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from adc_common import fit_heads  # noqa: E402
from bench_env import load  # noqa: E402

from seminspect.data.dataset import SampleDataset  # noqa: E402
from seminspect.data.synth import FabConfig, generate_dataset  # noqa: E402
from seminspect.decision import PrecisionThreshold, clopper_pearson_lower  # noqa: E402
from seminspect.evaluation.adc_metrics import compute_metrics, policy_triage_metrics  # noqa: E402
from seminspect.training.adc_trainer import (  # noqa: E402
    build_model,
    calibrate,
    features_for,
    predict_features,
    save_artefact,
    split_validation,
    train_heads,
)
from seminspect.training.config import ADCConfig  # noqa: E402
from seminspect.training.feature_cache import FeatureSet  # noqa: E402
from seminspect.utils.io import atomic_write_json, atomic_write_text  # noqa: E402

ROLE = {"ref": 1, "zoom": 2}
SEEDS = {"test": 2027, "calib": 2028}
TRAIN_SEED0 = 2030


class Clock:
    """Wall and CPU seconds (this process and its finished children) and the load at the end."""

    def __init__(self) -> None:
        self.w, self.t = time.perf_counter(), os.times()

    def done(self, **extra: Any) -> dict[str, Any]:
        t = os.times()
        cpu = sum(getattr(t, k) - getattr(self.t, k) for k in ("user", "system", "children_user", "children_system"))
        return {"wall_s": round(time.perf_counter() - self.w, 1), "cpu_s": round(cpu, 1), "load_at_end": load(),
                "utc_end": time.strftime("%H:%M:%S", time.gmtime()), **extra}


def concat(parts: list[tuple[str, FeatureSet]]) -> FeatureSet:
    """One FeatureSet from several parts (same views and ops); sample ids get the part's name."""
    fs = [f for _, f in parts]
    return FeatureSet(torch.cat([f.feats for f in fs], 1), torch.cat([f.roles for f in fs]),
                      torch.cat([f.indices for f in fs]), torch.cat([f.view_mask for f in fs]),
                      torch.cat([f.is_abnormal for f in fs]), torch.cat([f.type_index for f in fs]),
                      [f"{n}/{s}" for n, f in parts for s in f.sample_ids], list(fs[0].ops))


def _labels(fs: FeatureSet) -> tuple[np.ndarray, np.ndarray]:
    return fs.is_abnormal.numpy(), fs.type_index.numpy()


def evaluate_calibrated(model: Any, cfg: ADCConfig, tax: Any, calib: FeatureSet, test: FeatureSet,
                        train_counts: np.ndarray) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Thresholds / triage fitted on ``calib`` predictions, then every metric on ``test``.

    Also a second operating point, calibrated so that the 95 % lower bound of precision is >= 98 %
    (the issue's "lower confidence bound >= 98 %"), applied to test. Returns (metrics, thresholds, test preds).
    """
    pc = predict_features(model, calib)
    yc = calib.is_abnormal.numpy()
    th = calibrate(pc["abnormal"], yc, pc["types"], calib.type_index.numpy(), train_counts, cfg, tax.leaves)
    pt = predict_features(model, test)
    m = compute_metrics(pt, _labels(test), tax, th, cfg.triage.target_precision)
    tri = policy_triage_metrics(th, pt, test.is_abnormal.numpy(), test.type_index.numpy())
    if tri is not None:
        m["triage"] = tri
    p98 = PrecisionThreshold(target_precision=0.98, confidence=cfg.triage.confidence).fit(pc["abnormal"], yc)
    y = test.is_abnormal.numpy()
    flag = pt["abnormal"] >= p98.threshold_
    tp, fp = int((flag & (y == 1)).sum()), int((flag & (y == 0)).sum())
    m["calibrated_lb98"] = {"threshold": float(p98.threshold_), "calib_recall": float(p98.recall_),
                            "calib_precision_lower_bound": float(p98.precision_lower_bound_), "tp": tp, "fp": fp,
                            "recall": tp / max(1, int((y == 1).sum())), "precision": tp / max(1, tp + fp),
                            "precision_lower_95": float(clopper_pearson_lower(tp, tp + fp, 0.95)) if tp + fp else 0.0}
    m["calibration_fit"] = th.get("precision_threshold", {}).get("fitted")  # on calib: recall, bound, reason
    return m, th, pt


def headline(m: dict[str, Any]) -> dict[str, Any]:
    keep = ("n", "n_abnormal", "auroc", "recall_at_precision", "recall_at_precision_bound", "calibrated",
            "calibrated_lb98", "calibration_fit", "type_macro_f1", "type_accuracy", "type_top3", "level_accuracy",
            "type_f1", "triage", "triage_error")
    return {k: m[k] for k in keep if k in m}


def _f(x: Any, fmt: str = ".3f") -> str:
    return "-" if x is None else format(x, fmt)


def row(name: str, m: dict[str, Any], secs: float | None) -> str:
    rap, rb = m.get("recall_at_precision", {}), m.get("recall_at_precision_bound", {})
    cal, c98 = m.get("calibrated", {}), m.get("calibrated_lb98", {})
    tri = m.get("triage", {})
    lo, hi = rap.get("recall_ci", (None, None))
    lv = m.get("level_accuracy", {})
    return (f"| {name} | {_f(m.get('auroc'), '.4f')} | {_f(rap.get('recall'))} [{_f(lo)}, {_f(hi)}] | "
            f"{_f(rap.get('precision_lower_bound'))} | {_f(rb.get('recall'))} | "
            f"{_f(cal.get('recall'))} / {_f(cal.get('precision'), '.4f')} / {_f(cal.get('precision_lower_95'), '.4f')} "
            f"({cal.get('tp', '-')} TP, {cal.get('fp', '-')} FP) | "
            f"{_f(c98.get('recall'))} / {_f(c98.get('precision'), '.4f')} / {_f(c98.get('precision_lower_95'), '.4f')} "
            f"({c98.get('tp', '-')} TP, {c98.get('fp', '-')} FP) | {_f(m.get('type_macro_f1'))} | "
            f"{_f(lv.get('group'))} / {_f(lv.get('family'))} / {_f(lv.get('type'))} | "
            f"{_f(tri.get('automation_rate'))} / {_f(tri.get('error_rate_automated'), '.4f')} | "
            f"{'' if secs is None else f'{secs:.0f}'} |")


HEADER = ("| model (test split) | AUROC | recall @ P >= 99 % chosen on test [95 % CI] | precision lower bound (95 %) "
          "there | recall where the test lower bound >= 99 % | threshold calibrated on calib (99 % / 95 %), on test: "
          "recall / precision / lower bound | threshold calibrated on calib for lower bound >= 98 %, on test | "
          "type macro-F1 | accuracy group / family / type | automation rate / error among automated | "
          "head training s |\n|---|---|---|---|---|---|---|---|---|---|---|")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("out")
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--calib", type=int, default=1000)
    ap.add_argument("--train-chunk", type=int, default=500)
    ap.add_argument("--train-max", type=int, default=3000)
    ap.add_argument("--stop-train-at", default=None, help="UTC HH:MM after which no new training chunk starts")
    ap.add_argument("--workers", type=int, default=2, help="generation processes")
    ap.add_argument("--zooms", type=int, default=2)
    ap.add_argument("--image-size", type=int, default=460, help="460 = the product sample; smaller for smoke tests")
    ap.add_argument("--extra-train", action="append", default=[], metavar="DATA[=CACHE]",
                    help="an existing dataset generated with the same FabConfig (e.g. the README main job's "
                         "760 sites, seed 0): all its splits are added to the training data; CACHE: its feature cache")
    ap.add_argument("--test-cache", default=None, metavar="DIR:N",
                    help="reuse test features that adc_fab_eval.py encoded in N shards under DIR")
    ap.add_argument("--variants", default="noref_test,noref_trained")
    ap.add_argument("--threads-after", type=int, default=2, help="torch threads once generation has ended")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    summary_path = out / "summary.json"
    summary: dict[str, Any] = {"argv": sys.argv, "load_at_start": load(),
                               "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), "stages": {}}
    if summary_path.is_file():  # a resumed run keeps the first run's stage timings (resumed stages add "_resumed")
        previous = json.loads(summary_path.read_text())
        summary["previous_runs"] = [*previous.get("previous_runs", []), {k: previous.get(k) for k in (
            "argv", "load_at_start", "started_utc")}]
        summary["stages"] = previous.get("stages", {})

    def save() -> None:
        atomic_write_json(summary_path, summary)

    cfg = ADCConfig.from_yaml(a.config)
    cfg.output = str(out)
    torch.set_num_threads(cfg.threads or 1)
    fab = FabConfig(image_size=a.image_size, n_angles=5, n_zooms=a.zooms, difficulty="medium")
    summary["fab"] = fab.model_dump()

    model: Any = None
    feats: dict[str, FeatureSet] = {}
    sets: dict[str, SampleDataset] = {}

    plan = [("test", "test", a.test, SEEDS["test"]), ("calib", "calib", a.calib, SEEDS["calib"])]
    plan += [(f"train{k}", "train", a.train_chunk, TRAIN_SEED0 + k) for k in range(-(-a.train_max // a.train_chunk))]

    def generate(name: str, split: str, n: int, seed: int, workers: int) -> None:
        root = out / "data" / name
        if (root / "generation_timing.json").is_file():  # complete from an earlier run: keep its timing
            return
        clk = Clock()
        generate_dataset(root, n, fab, abnormal_fraction=0.5, seed=seed, workers=workers, splits={split: 1.0})
        atomic_write_json(root / "generation_timing.json", clk.done(sites=n, seed=seed, workers=workers))

    # The test part is generated first with every allowed worker (nothing to encode yet); the rest
    # by one background process while this process encodes what is ready (2 threads in all).
    generate(*plan[0], workers=a.workers)
    import multiprocessing as mp

    def background() -> None:
        torch.set_num_threads(1)
        for p in plan[1:]:
            if p[0].startswith("train") and p[0] != "train0" and a.stop_train_at and \
                    time.strftime("%H:%M", time.gmtime()) >= a.stop_train_at:
                return
            generate(*p, workers=1)

    bg = mp.get_context("fork").Process(target=background, daemon=True)
    bg.start()

    def ensure_model(ds: SampleDataset) -> Any:
        nonlocal model
        if model is None:
            cfg.data.path = str(out / "data" / "test")
            model = build_model(cfg, ds.taxonomy)
        return model

    def encode(name: str, root: Path | SampleDataset, cache: Path, **extra: Any) -> None:
        ds = SampleDataset(root) if not isinstance(root, SampleDataset) else root
        ensure_model(ds)
        clk = Clock()
        feats[name] = features_for(model, ds, cfg, [0], cache, f"encoding {name}")
        sets[name] = ds
        key = f"encode_{name}" + ("_resumed" if f"encode_{name}" in summary["stages"] else "")
        summary["stages"][key] = clk.done(sites=len(ds), views_per_site=len(ds[0].views), **extra)
        print(f"encoded {name}: {summary['stages'][key]}", flush=True)
        save()

    for name, *_ in plan:
        root = out / "data" / name
        while not (root / "generation_timing.json").is_file() and bg.is_alive():
            time.sleep(5)
        if not (root / "generation_timing.json").is_file():
            summary["train_chunks_stopped"] = f"no new training chunk started after {a.stop_train_at} UTC"
            break
        key = f"generate_{name}" + ("_resumed" if f"generate_{name}" in summary["stages"] else "")
        summary["stages"][key] = json.loads((root / "generation_timing.json").read_text())
        if name == "test" and a.test_cache:
            cdir, _, n_sh = a.test_cache.rpartition(":")
            ds_all = SampleDataset(root)
            clk = Clock()
            ensure_model(ds_all)
            shards = [ds_all.subset(ds_all.sample_ids[i::int(n_sh)]) for i in range(int(n_sh))]
            feats[name] = concat([(f"s{i}", features_for(model, sh, cfg, [0], Path(cdir), f"test shard {i}"))
                                  for i, sh in enumerate(shards)])
            sets[name] = ds_all.subset([sid for sh in shards for sid in sh.sample_ids])
            summary["stages"]["encode_test_from_shard_cache"] = clk.done(sites=len(ds_all), cache=cdir)
            save()
        else:
            encode(name, root, out / "cache")
        if name == "calib":
            for j, spec in enumerate(a.extra_train):
                eroot, _, cache = spec.partition("=")
                gen = json.loads((Path(eroot) / "generation.json").read_text())
                if gen["config"] != json.loads(json.dumps(fab.model_dump())):
                    raise SystemExit(f"{eroot}: generated with another FabConfig ({gen['config']}); not the same fab")
                eds = SampleDataset(eroot)
                for split in sorted(set(eds.metadata_column("split"))):
                    encode(f"train_extra{j}_{split}", eds.split(split), Path(cache) if cache else out / "cache",
                           data=eroot, generation_seed=gen["seed"])
    bg.join()
    torch.set_num_threads(a.threads_after)
    tax = sets["test"].taxonomy
    train_all = concat([(n, f) for n, f in feats.items() if n.startswith("train")])
    tr, va = split_validation(train_all, cfg.data.val_fraction, cfg.seed)
    y, t = _labels(tr)
    counts = np.bincount(t[(y == 1) & (t >= 0)], minlength=tax.num_leaves)
    summary["train_sites"], summary["val_sites"] = len(tr), len(va)
    summary["train_sites_per_type"] = {tax.leaves[i]: int(c) for i, c in enumerate(counts)}
    # Heads on the cached features (checkpointed: a killed run resumes).
    clk = Clock()
    torch.manual_seed(cfg.seed)
    hist = train_heads(model, tr, va, cfg, checkpoint=out / "checkpoint.pt", log=print)
    summary["stages"]["train_heads"] = clk.done(epochs_run=len(hist.epochs), best_epoch=hist.best_epoch,
                                                head_seconds=round(hist.seconds, 1))
    clk = Clock()
    m, th, pt = evaluate_calibrated(model, cfg, tax, feats["calib"], feats["test"], counts)
    th["type_train_counts"] = counts.tolist()
    save_artefact(model, cfg, out, tax, th)  # the HTML report: `seminspect evaluate OUT DATA --split test`
    summary["stages"]["calibrate_evaluate"] = clk.done()
    summary["plain"] = headline(m)
    rows = [row(f"plain model: 5 target + 5 reference views + {a.zooms} zooms", m, hist.seconds)]
    save()
    atomic_write_text(out / "rows.md", HEADER + "\n" + "\n".join(rows) + "\n")
    # Inference throughput, one thread: the whole path (read 12 PNGs, register, crop, backbone, heads).
    ds_t = sets["test"]
    n_t = min(48, len(ds_t))
    sub = ds_t.subset(ds_t.sample_ids[:n_t])
    clk = Clock()
    fs_live = features_for(model, sub, cfg, [0], None, "throughput")
    predict_features(model, fs_live)
    st = clk.done(sites=n_t)
    st["sites_per_s_wall"] = round(n_t / st["wall_s"], 2)
    st["cpu_s_per_site"] = round(st["cpu_s"] / n_t, 3)
    summary["stages"]["inference_throughput"] = st
    save()
    # Variants on the same cached features.
    summary["variants"] = {}
    for v in [x for x in a.variants.split(",") if x]:
        what, how = v.split("_")
        code = ROLE[what[2:]]
        clk = Clock()
        if how == "test":
            mv, _, _ = evaluate_calibrated(model, cfg, tax, feats["calib"].drop_role(code),
                                           feats["test"].drop_role(code), counts)
            name, secs = f"same model, {what[2:]} views removed at test (re-calibrated on calib without them)", None
        else:
            mdl, secs = fit_heads(cfg, tax, tr.drop_role(code), va.drop_role(code), seed=cfg.seed)
            mv, _, _ = evaluate_calibrated(mdl, cfg, tax, feats["calib"].drop_role(code),
                                           feats["test"].drop_role(code), counts)
            name = f"trained and tested without {what[2:]} views"
        summary["variants"][v] = {**headline(mv), "stage": clk.done(), "head_seconds": secs}
        rows.append(row(name, mv, secs))
        print(rows[-1], flush=True)
        save()
        atomic_write_text(out / "rows.md", HEADER + "\n" + "\n".join(rows) + "\n")
    summary["load_at_end"] = load()
    summary["finished_utc"] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    save()
    print(HEADER + "\n" + "\n".join(rows))


if __name__ == "__main__":
    main()

"""Unseen defect types on the virtual fab: ADC triage with and without the anomaly rule (issue #4, item 7).

Some defect types are HELD OUT of the ADC's training and calibration data (they stand for new
types that appear in production). Then, on the test split:

- the ADC (multi-view MobileNetV2 heads on cached frozen features, the fast path of
  ``seminspect.training.adc_trainer``) is trained on the remaining types and normals;
  ``TriagePolicy`` is calibrated on the calib split without the held-out types;
- PatchCore (reference difference conditioning + centre prior) is fitted on the normal train
  samples; its threshold comes from the normal calib scores only (``NormalQuantileThreshold``);
- the same policy is fitted again with ``anomaly_threshold=`` that threshold (a sample above it
  is never auto-normal).

Reported per group (held-out types, seen types, normals): the share routed auto-normal (for a
defect: missed), review, auto-abnormal. The rule's cost is the share of normals it takes out of
auto-normal.

    nice -n 10 python benchmarks/anomaly_unseen_types.py --out benchmarks/results/anomaly_unseen_types.md
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from longtail_common import cached_anomaly_scores, first_of_each_family  # noqa: E402
from predict_common import machine, now  # noqa: E402

from seminspect.data.dataset import SampleDataset
from seminspect.decision import TriagePolicy
from seminspect.models.anomaly.threshold import fit_normal_threshold
from seminspect.training.adc_trainer import (
    _stratified_holdout,
    build_model,
    features_for,
    predict_features,
    train_heads,
)
from seminspect.training.config import ADCConfig
from seminspect.training.sampler import class_keys
from seminspect.utils.io import atomic_write_text

ROUTES = ("auto_normal", "review", "auto_abnormal")


def route_shares(route: np.ndarray, sel: np.ndarray) -> dict[str, float]:
    n = int(sel.sum())
    return {"n": n, **{r: float(np.mean(route[sel] == r)) if n else float("nan") for r in ROUTES}}


def auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    return float(roc_auc_score(y, np.r_[pos, neg]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=Path("/tmp/seminspect_bench/fab_unseen"))
    ap.add_argument("--n", type=int, default=1200)
    ap.add_argument("--size", type=int, default=144)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--held-out", default="", help="comma list of types; default: first type of each family")
    ap.add_argument("--miss-rate", default="0.02,0.1,0.2", help="TriagePolicy normal_miss_rate values (comma list)")
    ap.add_argument("--coverages", default="0.5,0.8", help="fixed ADC auto-normal coverages of calib normals")
    ap.add_argument("--far", default="0.01,0.05", help="anomaly-rule false-alarm targets (normal scores only)")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--bank", type=int, default=5000)
    ap.add_argument("--work", type=Path, default=Path("/tmp/seminspect_bench/unseen_work"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/anomaly_unseen_types.md"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    load_start = os.getloadavg()
    t_all = time.perf_counter()
    from seminspect.data.synth import FabConfig, generate_dataset

    t0 = time.perf_counter()
    generate_dataset(args.data, args.n, FabConfig(image_size=args.size, n_angles=1, n_references=1),
                     abnormal_fraction=0.5, seed=1, workers=1, splits={"train": 0.4, "calib": 0.3, "test": 0.3})
    gen_s = time.perf_counter() - t0
    ds = SampleDataset(args.data)
    tax = ds.taxonomy
    held = [t for t in args.held_out.split(",") if t] or first_of_each_family(tax)
    split = np.array(ds.metadata_column("split"))
    lab = ds.is_abnormal
    types = np.array([t or "" for t in ds.defect_types], dtype=object)
    ids = np.array(ds.sample_ids)
    unseen = np.isin(types, held) & (lab == 1)
    train_ids = ids[(split == "train") & ~unseen].tolist()
    calib_ids = ids[(split == "calib") & ~unseen].tolist()
    test_ids = ids[split == "test"].tolist()
    print(f"generated in {gen_s:.0f} s; held out {held}; train {len(train_ids)}, calib {len(calib_ids)}, "
          f"test {len(test_ids)}", flush=True)

    # ---- ADC on the seen types ------------------------------------------------------------------
    cfg = ADCConfig(
        data={"path": str(args.data)}, image={"crop": args.crop, "max_shift": 8},
        model={"backbone": "mobilenetv2", "pretrained": True, "grid": 4, "pool": "avgmax", "dim": 96,
               "fusion": "attention"},
        train={"epochs": args.epochs, "batch_size": 32, "lr": 0.003, "patience": 10},
        triage={"min_train_samples": 10}, seed=0, threads=1, output=str(args.work))
    torch.manual_seed(0)
    model = build_model(cfg, tax)
    cache = args.work / "cache"
    t0 = time.perf_counter()
    tr_all = features_for(model, ds.subset(train_ids), cfg, [0], cache, "train")
    cal_fs = features_for(model, ds.subset(calib_ids), cfg, [0], cache, "calib")
    te_fs = features_for(model, ds.subset(test_ids), cfg, [0], cache, "test")
    enc_s = time.perf_counter() - t0
    keys = class_keys(tr_all.is_abnormal.numpy(), tr_all.type_index.numpy())
    a, b = _stratified_holdout(keys, cfg.data.val_fraction, cfg.seed)
    t0 = time.perf_counter()
    train_heads(model, tr_all.subset(a), tr_all.subset(b), cfg)
    head_s = time.perf_counter() - t0
    p_cal, p_te = predict_features(model, cal_fs), predict_features(model, te_fs)
    n_leaves = len(tax.leaves)
    tti = tr_all.type_index.numpy()
    train_counts = np.bincount(tti[tti >= 0], minlength=n_leaves).astype(np.int64)
    assert all(train_counts[tax.leaf_index(t)] == 0 for t in held)

    # ---- PatchCore on the normal train samples --------------------------------------------------
    pc_cfg = dict(backbone="mobilenetv2", out_indices=[1, 2, 3], layers=[0, 1], conditioning="difference",
                  centre_sigma=0.2, crop=args.crop, max_bank_patches=args.bank, max_pool_patches=60000,
                  coreset_proj_dim=64, sigma=4.0, batch_size=16)
    train_normal = [i for i in train_ids if lab[ds.sample_ids.index(i)] == 0]
    cal_scores, te_scores, pc_fit_s, pc_pred_s = cached_anomaly_scores(pc_cfg, ds, train_normal, cal_fs.sample_ids,
                                                                       te_fs.sample_ids, args.data, args.work)

    # ---- triage with and without the anomaly rule -----------------------------------------------
    y_cal = cal_fs.is_abnormal.numpy()
    y_te = te_fs.is_abnormal.numpy()
    t_te = np.array([types[ds.sample_ids.index(i)] for i in te_fs.sample_ids], dtype=object)
    is_unseen = (y_te == 1) & np.isin(t_te, held)
    is_seen = (y_te == 1) & ~is_unseen
    is_normal = y_te == 0
    fit_kw = dict(type_probs=p_cal["types"], type_labels=cal_fs.type_index.numpy(), type_train_counts=train_counts,
                  type_names=list(tax.leaves))
    normal_cal_scores = cal_scores[y_cal == 0]
    rules = [(float(x), fit_normal_threshold(normal_cal_scores, float(x), 0.95)) for x in args.far.split(",")]
    rows = []

    def add(name: str, route: np.ndarray, thr: dict | None, extra: dict) -> None:
        row = {"variant": name, "unseen": route_shares(route, is_unseen), "seen": route_shares(route, is_seen),
               "normal": route_shares(route, is_normal),
               "per_type": {t: route_shares(route, is_unseen & (t_te == t)) for t in held}, **extra}
        if thr is not None:
            row["anomaly_threshold"] = thr
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "per_type"}, default=str), flush=True)

    # (a) TriagePolicy at its calibrated bounds, for several auto-normal miss-rate targets
    for miss in [float(x) for x in args.miss_rate.split(",")]:
        common = dict(abnormal_precision=0.99, normal_miss_rate=miss, confidence=0.95, min_train_samples=10)
        pol = TriagePolicy(**common).fit(p_cal["abnormal"], y_cal, **fit_kw)
        res = pol.predict(p_te["abnormal"], type_probs=p_te["types"])
        add(f"TriagePolicy(normal_miss_rate={miss:g}) alone", res.route, None,
            {"normal_threshold": pol.normal_threshold_, "abnormal_threshold": pol.abnormal_threshold_})
        for far, thr in rules:
            pol = TriagePolicy(**common, anomaly_threshold=float(thr["threshold"])).fit(
                p_cal["abnormal"], y_cal, anomaly_scores=cal_scores, **fit_kw)
            res = pol.predict(p_te["abnormal"], type_probs=p_te["types"], anomaly_scores=te_scores)
            add(f"TriagePolicy(normal_miss_rate={miss:g}) + anomaly rule (false-alarm target {far:g})", res.route,
                thr, {"normal_threshold": pol.normal_threshold_, "abnormal_threshold": pol.abnormal_threshold_})
    # (b) fixed ADC auto-normal coverage: the ADC threshold is the q-quantile of the calib normals' ADC
    # scores (no bound needed, so it exists however weak the ADC is); the rule applied on top, as in
    # TriagePolicy.predict (auto-normal only when the anomaly score is <= the rule's threshold).
    for q in [float(x) for x in args.coverages.split(",")]:
        thr_adc = float(np.quantile(p_cal["abnormal"][y_cal == 0], q))
        base_route = np.where(p_te["abnormal"] <= thr_adc, "auto_normal", "review")
        add(f"ADC auto-normal below the {q:.0%} quantile of calib-normal ADC scores, alone", base_route, None,
            {"adc_threshold": thr_adc})
        for far, thr in rules:
            route = np.where((p_te["abnormal"] <= thr_adc) & (te_scores <= thr["threshold"]), "auto_normal", "review")
            add(f"same + anomaly rule (false-alarm target {far:g})", route, thr, {"adc_threshold": thr_adc})
    ctx = {
        "adc_auroc_unseen_vs_normal": auroc(p_te["abnormal"][is_unseen], p_te["abnormal"][is_normal]),
        "adc_auroc_seen_vs_normal": auroc(p_te["abnormal"][is_seen], p_te["abnormal"][is_normal]),
        "anomaly_auroc_unseen_vs_normal": auroc(te_scores[is_unseen], te_scores[is_normal]),
        "anomaly_auroc_seen_vs_normal": auroc(te_scores[is_seen], te_scores[is_normal]),
    }
    print(json.dumps(ctx), flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    load_end = os.getloadavg()
    total_s = time.perf_counter() - t_all
    write_report(args, held, gen_s, enc_s, head_s, pc_fit_s, pc_pred_s, total_s, peak, load_start, load_end,
                 rows, ctx, len(train_ids), len(calib_ids), int((y_cal == 0).sum()), len(train_normal))


def _pct(x: float) -> str:
    return "n/a" if not np.isfinite(x) else f"{100 * x:.1f} %"


def write_report(args, held, gen_s, enc_s, head_s, pc_fit_s, pc_pred_s, total_s, peak, load_start, load_end, rows,
                 ctx, n_train, n_calib, n_cal_normal, n_train_normal) -> None:
    u, s, n = rows[0]["unseen"]["n"], rows[0]["seen"]["n"], rows[0]["normal"]["n"]
    lines = [
        "# Unseen defect types: ADC triage with and without the anomaly rule (virtual fab)",
        "",
        f"- date: {now()}; machine: {machine()}, torch 1 thread; "
        f"load average at start {load_start[0]:.2f} / end {load_end[0]:.2f} (1 min).",
        f"- command: `python {' '.join(sys.argv)}`; wall time {total_s:.0f} s, peak RSS {peak:.0f} MiB.",
        f"- data: `generate_dataset(n={args.n}, FabConfig(image_size={args.size}, n_angles=1, n_references=1), "
        f"abnormal_fraction=0.5, seed=1, splits train 0.4 / calib 0.3 / test 0.3)`, default difficulty (medium); "
        f"generated in {gen_s:.0f} s.",
        f"- held out of ADC training AND calibration (rule: the first type of every family): {', '.join(held)}. "
        f"ADC trained on {n_train} train samples (13 seen types + normals; 15 % of them for early stopping), "
        f"triage calibrated on {n_calib} calib samples (seen types + normals).",
        f"- ADC: MobileNetV2 (frozen, cached features, {args.crop} px centre crop, integer registration), "
        f"attention fusion of target + reference, heads trained {args.epochs} epochs max (encode {enc_s:.0f} s, "
        f"heads {head_s:.0f} s). TriagePolicy(abnormal_precision=0.99, normal_miss_rate in "
        f"{{{args.miss_rate}}}, confidence=0.95, min_train_samples=10).",
        f"- anomaly model: PatchCore, MobileNetV2 maps at reductions 4 and 8, reference difference conditioning + "
        f"centre prior 0.2, phase registration, {args.crop} px crop, bank <= {args.bank}; fitted on the "
        f"{n_train_normal} normal train samples in {pc_fit_s:.0f} s; calib + test scored in {pc_pred_s:.0f} s. "
        f"Rule threshold: `NormalQuantileThreshold` on the {n_cal_normal} normal calib scores only (no defect "
        "of any type used).",
        f"- test split: {u} defects of held-out (unseen) types, {s} of seen types, {n} normals.",
        "",
        "## Routes on the test split",
        "",
        "| variant | unseen: auto-normal (missed) | unseen: review | unseen: auto-abnormal | unseen caught | "
        "seen: auto-normal | seen caught | normal: auto-normal | normal: review | normal: auto-abnormal |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        uu, ss, nn = r["unseen"], r["seen"], r["normal"]
        lines.append(
            f"| {r['variant']} | {_pct(uu['auto_normal'])} | {_pct(uu['review'])} | {_pct(uu['auto_abnormal'])} | "
            f"**{_pct(1 - uu['auto_normal'])}** | {_pct(ss['auto_normal'])} | {_pct(1 - ss['auto_normal'])} | "
            f"{_pct(nn['auto_normal'])} | {_pct(nn['review'])} | {_pct(nn['auto_abnormal'])} |")
    lines += ["", "Rule thresholds (fitted on normal calib scores only):", ""]
    seen_far = set()
    for r in rows:
        t = r.get("anomaly_threshold")
        if t is None or t["false_alarm_rate"] in seen_far:
            continue
        seen_far.add(t["false_alarm_rate"])
        note = f" (note: {t['warning']})" if "warning" in t else ""
        lines.append(f"- false-alarm target {t['false_alarm_rate']:g}: threshold {t['threshold']:.4f}, upper 95 % "
                     f"bound of the false-alarm rate {t['false_alarm_upper_bound']:.3f} from n = {t['n']}{note}")
    lines += ["", "Per held-out type: share of its test defects missed (routed auto-normal):", "",
              "| variant | " + " | ".join(f"{t} (n={rows[0]['per_type'][t]['n']})" for t in held) + " |",
              "|---|" + "---|" * len(held)]
    for r in rows:
        lines.append(f"| {r['variant']} | " + " | ".join(_pct(r["per_type"][t]["auto_normal"]) for t in held) + " |")
    lines += ["",
              "Separation on test (AUROC against the test normals): ADC abnormal score "
              f"unseen {ctx['adc_auroc_unseen_vs_normal']:.3f}, seen {ctx['adc_auroc_seen_vs_normal']:.3f}; "
              f"anomaly score unseen {ctx['anomaly_auroc_unseen_vs_normal']:.3f}, seen "
              f"{ctx['anomaly_auroc_seen_vs_normal']:.3f}.", ""]
    atomic_write_text(args.out, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

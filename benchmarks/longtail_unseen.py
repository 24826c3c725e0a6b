"""Unseen defect types on the main job's kind of site: how many are routed auto-normal (issue [long-tail]).

    python benchmarks/longtail_unseen.py --fab balanced --data /tmp/balanced_fab460 --work /tmp/balanced_work460 \
        --n 4000 --size 460 --zooms 2 --crop-centre difference --seeds 3 --out benchmarks/results/longtail_unseen.md

Some defect types are kept out of the ADC's training AND calibration: they stand for types that
first appear in production. By default the first type of every family (``--held-out`` names
others); on the long-tail fab the types its generator keeps for the test split are unseen as well.
The ADC (frozen backbone, cached features, the main job's model settings; set-up shared with the
other long-tail benchmarks in ``longtail_common.py``) is trained on the rest, once per seed;
``TriagePolicy`` (99 % precision, 95 % confidence) is calibrated on the calib split without the
held-out types at each auto-normal miss-rate target (``--miss-rates``; the main job's is 0.01).
Reported on the test split: the share of unseen-type defects routed auto-normal (missed) with its
95 % Clopper-Pearson upper bound, beside the share of normals routed auto-normal, and per held-out
type. A fixed auto-normal coverage of calib normals (``--coverages``, not certified: the product's
``triage.normal_coverage``, ``TriagePolicy(normal_coverage=q)``) is shown beside it. With ``--anomaly CONFIG``
(an ``AnomalyConfig`` YAML, e.g. configs/anomaly_fab.yaml; ``--anomaly-set key=value`` overrides) an anomaly
model is fitted on ``--anomaly-fit`` normal train sites and scores the calib and test sites (scores cached under
``--work`` by content); its threshold comes from the calib normals' scores alone
(``NormalQuantileThreshold`` at each ``--far`` false-alarm target), and every variant is repeated
with the rule: a site above it is never auto-normal. Nothing is chosen on the test split.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from longtail_common import (  # noqa: E402
    MIN_TRAIN,
    add_args,
    cached_anomaly_scores,
    first_of_each_family,
    leaf_counts,
    prepare,
)
from predict_common import header, load  # noqa: E402

from seminspect.decision import AUTO_NORMAL, TriagePolicy, clopper_pearson_upper  # noqa: E402
from seminspect.training.adc_trainer import (  # noqa: E402
    _stratified_holdout,
    build_model,
    predict_features,
    train_heads,
)
from seminspect.training.sampler import class_keys  # noqa: E402
from seminspect.utils.io import atomic_write_text  # noqa: E402


def shares(route: np.ndarray, sel: np.ndarray) -> dict[str, float]:
    """Count and share of ``sel`` routed auto-normal, with the share's 95 % upper bound."""
    n, k = int(sel.sum()), int(((route == AUTO_NORMAL) & sel).sum())
    return {"n": n, "auto_normal": k, "share": k / n if n else float("nan"),
            "upper": float(clopper_pearson_upper(k, n, 0.95)) if n else float("nan")}


def route_test_split(fit: tuple, p_te: dict, rule: dict | None, **params: float) -> tuple[np.ndarray, float]:
    """``TriagePolicy(**params)`` (99 % precision, 95 % confidence, the anomaly rule when given) fitted on the
    calib split ``fit`` = (probabilities, is_abnormal, type index, training counts per type, type names): the
    test split's routes and the auto-normal threshold."""
    p_cal, y_cal, t_cal, counts, names = fit
    pol = TriagePolicy(abnormal_precision=0.99, confidence=0.95, min_train_samples=MIN_TRAIN,
                       anomaly_threshold=None if rule is None else rule["threshold"], **params).fit(
        p_cal["abnormal"], y_cal, type_probs=p_cal["types"], type_labels=t_cal, type_train_counts=counts,
        type_names=names, anomaly_scores=None if rule is None else rule["calib"])
    route = pol.predict(p_te["abnormal"], type_probs=p_te["types"],
                        anomaly_scores=None if rule is None else rule["test"]).route
    return route, float(pol.normal_threshold_)


def anomaly_rules(args: argparse.Namespace, ds, tr, cal, te) -> list[tuple[float, dict]]:  # noqa: ANN001
    """Fit the anomaly model on normal train sites (of the kept types' split), score calib and test
    (cached by content), and one threshold per ``--far`` from the calib normals' scores alone."""
    from seminspect.models.anomaly.config import load_anomaly_config
    from seminspect.models.anomaly.threshold import fit_normal_threshold

    cfg = load_anomaly_config(args.anomaly, args.anomaly_set)
    fit_ids = [i for i, y in zip(tr.sample_ids, tr.is_abnormal.numpy(), strict=True) if y == 0][: args.anomaly_fit]
    cal_s, te_s, fit_s, score_s = cached_anomaly_scores(cfg, ds, fit_ids, cal.sample_ids, te.sample_ids, args.data,
                                                        args.work)
    from sklearn.metrics import roc_auc_score

    y = te.is_abnormal.numpy()
    auc = float(roc_auc_score(y, te_s))
    normal_cal = cal_s[cal.is_abnormal.numpy() == 0]
    out = []
    for far in [float(x) for x in args.far.split(",") if x]:
        t = fit_normal_threshold(normal_cal, far, 0.95)
        text = (f"`{args.anomaly}` {' '.join(args.anomaly_set)}, {cfg.model} fitted on {len(fit_ids)} normal train "
                f"sites in {fit_s:.0f} s, calib + test scored in {score_s:.0f} s; test image AUROC {auc:.4f}; "
                f"threshold {t['threshold']:.4g} from {len(normal_cal)} calib normals (false-alarm upper bound "
                f"{t['false_alarm_upper_bound']:.3f})")
        out.append((far, {"threshold": float(t["threshold"]), "calib": cal_s, "test": te_s, "describe": text}))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_args(ap)
    ap.add_argument("--held-out", default="", help="comma list of leaf types; default: first type of each family")
    ap.add_argument("--miss-rates", default="0.01,0.02", help="TriagePolicy normal_miss_rate targets")
    ap.add_argument("--coverages", default="0.5", help="fixed ADC auto-normal coverages of calib normals")
    ap.add_argument("--seeds", type=int, default=3, help="head seeds 0..N-1")
    ap.add_argument("--anomaly", type=Path, default=None, help="AnomalyConfig YAML: add the anomaly rule")
    ap.add_argument("--anomaly-set", action="append", default=[], help="key=value override, as `anomaly fit --set`")
    ap.add_argument("--anomaly-fit", type=int, default=400, help="normal train sites the anomaly model fits on")
    ap.add_argument("--far", default="0.01", help="anomaly-rule false-alarm targets (normal calib scores only)")
    args = ap.parse_args()
    lines = header("Unseen defect types on the main job's kind of site: how many are routed auto-normal", sys.argv)
    t_all = time.perf_counter()
    setup = prepare(args)
    ds, cfg, fs = setup["ds"], setup["cfg"], setup["fs"]
    tax = ds.taxonomy
    counts_all = setup["counts"]
    held = [t for t in args.held_out.split(",") if t] or first_of_each_family(tax)
    unknown = sorted(set(held) - set(tax.leaves))
    if unknown:
        raise SystemExit(f"--held-out: not leaf types of {args.data}: {', '.join(unknown)}")
    held_idx = np.array([tax.leaf_index(t) for t in held])
    never = [tax.leaves[i] for i in np.flatnonzero(counts_all == 0)]  # the fab's own test-only types
    unseen_idx = np.union1d(held_idx, [tax.leaf_index(t) for t in never]).astype(int)

    def keep(split: str):  # noqa: ANN202
        t = fs[split].type_index.numpy()
        return fs[split].subset(np.flatnonzero(~np.isin(t, unseen_idx)))

    tr, cal, te = keep("train"), keep("calib"), fs["test"]
    counts = leaf_counts(tr.type_index.numpy(), len(tax.leaves))
    assert counts[unseen_idx].sum() == 0
    y_cal, t_cal = cal.is_abnormal.numpy(), cal.type_index.numpy()
    y_te, t_te = te.is_abnormal.numpy(), te.type_index.numpy()
    is_unseen = (y_te == 1) & np.isin(t_te, unseen_idx)
    groups = {"unseen-type defects": is_unseen, "seen-type defects": (y_te == 1) & ~is_unseen, "normals": y_te == 0}
    rules = anomaly_rules(args, ds, tr, cal, te) if args.anomaly else []
    rows, head_s = [], 0.0
    from sklearn.metrics import roc_auc_score

    for seed in range(args.seeds):
        scfg = cfg.model_copy(update={"seed": seed})
        torch.manual_seed(seed)
        model = build_model(scfg, tax)
        keys = class_keys(tr.is_abnormal.numpy(), tr.type_index.numpy())
        a, b = _stratified_holdout(keys, scfg.data.val_fraction, seed)
        t0 = time.perf_counter()
        train_heads(model, tr.subset(a), tr.subset(b), scfg)
        head_s += time.perf_counter() - t0
        p_cal, p_te = predict_features(model, cal), predict_features(model, te)
        sep = {g: float(roc_auc_score(np.r_[np.ones(s.sum()), np.zeros(groups["normals"].sum())],
                                      np.r_[p_te["abnormal"][s], p_te["abnormal"][groups["normals"]]]))
               for g, s in groups.items() if g != "normals"}
        variants, fit = [], (p_cal, y_cal, t_cal, counts, list(tax.leaves))
        for far, rule in [(None, None), *rules]:
            with_rule = "" if rule is None else f" + anomaly rule (false alarms <= {far:g})"
            for miss in [float(x) for x in args.miss_rates.split(",") if x]:
                variants.append((f"TriagePolicy, auto-normal miss rate <= {miss:g} (certified){with_rule}",
                                 *route_test_split(fit, p_te, rule, normal_miss_rate=miss)))
            for q in [float(x) for x in args.coverages.split(",") if x]:  # the product's triage.normal_coverage
                variants.append((f"auto-normal below the {q:.0%} quantile of calib-normal scores (not certified)"
                                 f"{with_rule}",
                                 *route_test_split(fit, p_te, rule, normal_miss_rate=0.01, normal_coverage=q)))
        for name, route, thr in variants:
            row = {"variant": name, "seed": seed, "normal_threshold": thr, "auroc": sep,
                   **{g: shares(route, s) for g, s in groups.items()},
                   "per_type": {tax.leaves[i]: shares(route, is_unseen & (t_te == i)) for i in unseen_idx}}
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "per_type"}), flush=True)

    def cell(s: dict) -> str:
        return f"{100 * s['share']:.1f} % ({s['auto_normal']}/{s['n']}; <= {100 * s['upper']:.1f} %)"

    u = rows[0]["unseen-type defects"]["n"]
    lines += [f"- data: `{args.data}` ({args.fab} fab), {len(ds)} sites of {args.size} px, {len(tax.leaves)} leaf "
              f"types; held out of training and calibration: {', '.join(tax.leaves[i] for i in unseen_idx)} "
              f"({len(held)} by the hold-out rule, {len(never)} never in the fab's training split)",
              f"- ADC trained on {len(tr)} train sites, triage calibrated on {len(cal)} calib sites "
              f"({int((y_cal == 0).sum())} normals), without the held-out types; test split: {u} unseen-type "
              f"defects, {int(groups['seen-type defects'].sum())} seen-type defects, {int(groups['normals'].sum())} "
              "normals (all of it, scored once per seed)",
              *[f"- anomaly rule (false alarms <= {far:g}): {r['describe']}" for far, r in rules],
              f"- times: generation {setup['generate_s']:.0f} s, feature encoding {setup['encode_s']:.0f} s, heads "
              f"{head_s:.0f} s ({args.seeds} seeds), whole run {time.perf_counter() - t_all:.0f} s; load average at "
              f"the end {load()}", "",
              "Routed auto-normal on the test split: share (count; 95 % Clopper-Pearson upper bound). For a defect "
              "this is a miss; for a normal it is the automation the route buys.", "",
              "| variant | seed | unseen-type defects | seen-type defects | normals | "
              "ADC AUROC unseen / seen vs normals |",
              "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['seed']} | {cell(r['unseen-type defects'])} | "
                     f"{cell(r['seen-type defects'])} | {cell(r['normals'])} | "
                     f"{r['auroc']['unseen-type defects']:.4f} / {r['auroc']['seen-type defects']:.4f} |")
    names = [tax.leaves[i] for i in unseen_idx]
    lines += ["", "Per held-out type, share of its test defects routed auto-normal:", "",
              "| variant | seed | " + " | ".join(f"{t} (n={rows[0]['per_type'][t]['n']})" for t in names) + " |",
              "|---|---|" + "---|" * len(names)]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['seed']} | "
                     + " | ".join(f"{100 * r['per_type'][t]['share']:.1f} %" for t in names) + " |")
    anomaly = [{"far": far, "threshold": r["threshold"], "describe": r["describe"]} for far, r in rules]
    lines += ["", "```json", json.dumps({"rows": rows, "held_out": names, "anomaly": anomaly}), "```", ""]
    atomic_write_text(args.out, "\n".join(lines))
    print("\n".join(lines[:-4]))


if __name__ == "__main__":
    main()

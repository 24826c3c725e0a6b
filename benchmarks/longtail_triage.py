"""Triage on the long tail (issue [long-tail] items 3-4): automation and errors per type-frequency band.

    python benchmarks/longtail_triage.py --data /tmp/longtail_fab --work /tmp/longtail_work \
        --out benchmarks/results/longtail_triage.md

A long-tail virtual fab (``FabConfig(long_tail=True, n_holdout=6)``: 55 leaf types drawn with a Zipf
law, 6 of the rarer half only in the test split; 5 detector angles, target + reference each) is
generated once (seed 0, splits train 0.45 / calib 0.35 / test 0.2). The ADC (frozen MobileNetV2,
cached features, attention fusion of the views, the main job's model settings on the fast path
of ``training.adc_trainer``) is trained on the train split;
``TriagePolicy`` (precision 0.99 at 95 % confidence, ``min_train_samples`` 80: a type with fewer
training examples is never auto-classified) is calibrated on the calib split;
``OpenSetTypeRule`` (max-softmax, 5 % of known-type calib defects given up) is fitted on the calib
defects' type probabilities. Test sites are grouped by how many training examples their true
type had: frequent (>= 80), rare (1-79), unseen (0), and normals. Nothing is chosen on the test split.
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
from longtail_common import MIN_TRAIN, add_args, prepare  # noqa: E402
from predict_common import header, load  # noqa: E402

from seminspect.decision import AUTO_ABNORMAL, AUTO_NORMAL, OpenSetTypeRule, TriagePolicy  # noqa: E402
from seminspect.training.adc_trainer import (  # noqa: E402
    _stratified_holdout,
    build_model,
    predict_features,
    train_heads,
)
from seminspect.training.sampler import class_keys  # noqa: E402
from seminspect.utils.io import atomic_write_text  # noqa: E402


def band_rows(name: str, res, y: np.ndarray, true_type: np.ndarray, counts: np.ndarray) -> list[dict]:  # noqa: ANN001
    """One row per band: automation, errors among automated decisions, unseen sites given a known type."""
    tc = np.where(true_type >= 0, counts[np.maximum(true_type, 0)], -1)
    bands = {"frequent (>= 80 training examples)": (y == 1) & (tc >= MIN_TRAIN),
             "rare (1-79)": (y == 1) & (tc >= 1) & (tc < MIN_TRAIN), "unseen (0)": (y == 1) & (tc == 0),
             "normal": y == 0, "all sites": np.ones_like(y, dtype=bool)}
    auto = res.route != "review"
    binary_wrong = ((res.route == AUTO_NORMAL) & (y == 1)) | ((res.route == AUTO_ABNORMAL) & (y == 0))
    typed = res.type_decision >= 0
    type_wrong = typed & (res.type_decision != true_type)
    rows = []
    for band, sel in bands.items():
        n = int(sel.sum())
        n_auto, n_typed = int((auto & sel).sum()), int((typed & sel).sum())
        rows.append({"variant": name, "band": band, "sites": n,
                     "types in band": int(len(np.unique(true_type[sel & (true_type >= 0)]))),
                     "binary automated": n_auto / n if n else float("nan"),
                     "binary errors among automated": int((binary_wrong & sel).sum()), "n_auto": n_auto,
                     "type automated": n_typed / n if n else float("nan"),
                     "type errors among typed": int((type_wrong & sel).sum()), "n_typed": n_typed,
                     "fully automated": float(res.fully_automated[sel].mean()) if n else float("nan")})
    return rows


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def openset_scores(p_tr: dict, t_tr: np.ndarray, p: dict, mahalanobis: OpenSetTypeRule) -> dict[str, np.ndarray]:
    """Candidate "known type" scores (higher = more like a type seen in training) of sites ``p``.

    From the type head: max-softmax over leaves and over each tree level. From the site embedding
    (the trunk's output, before the heads, unit length), against the training split's defects
    ``t_tr >= 0``: cosine similarity to the nearest leaf prototype (mean of unit embeddings), to
    the nearest training defect, and the library's ``OpenSetTypeRule(score="mahalanobis")`` score.
    """
    out = {"max-softmax (leaf)": p["types"].max(1)}
    for level, probs in p["levels"].items():
        out[f"max-softmax ({level})"] = probs.max(1)
    keep = t_tr >= 0
    e_tr, t_k, e = _unit(p_tr["embedding"][keep]), t_tr[keep], _unit(p["embedding"])
    protos = _unit(np.stack([e_tr[t_k == t].mean(0) for t in np.unique(t_k)]))
    out["prototype cosine"] = (e @ protos.T).max(1)
    out["nearest training defect cosine"] = (e @ e_tr.T).max(1)
    out["- Mahalanobis to nearest leaf mean (OpenSetTypeRule)"] = mahalanobis.scores(p["embedding"])
    return out


def openset_rows(p_tr: dict, t_tr: np.ndarray, p_cal: dict, cal_known: np.ndarray, p_te: dict,
                 unseen: np.ndarray, seen: np.ndarray, rate: float = 0.05) -> list[str]:
    """Per candidate score: test AUROC (unseen vs seen-type defects), and with the threshold set on the
    calib split's known-type defects (``rate`` of them given up) the share of test defects flagged."""
    from sklearn.metrics import roc_auc_score

    rule = OpenSetTypeRule(rejection_rate=rate, score="mahalanobis").fit(
        p_cal["embedding"][cal_known], train_embeddings=p_tr["embedding"], train_types=t_tr)  # it scales to unit
    cal, te = openset_scores(p_tr, t_tr, p_cal, rule), openset_scores(p_tr, t_tr, p_te, rule)
    rows = []
    for name in cal:
        thr = np.quantile(cal[name][cal_known], rate, method="lower")
        auroc = roc_auc_score(np.r_[np.ones(unseen.sum()), np.zeros(seen.sum())],
                              np.r_[-te[name][unseen], -te[name][seen]])
        rows.append(f"| {name} | {auroc:.3f} | {np.mean(te[name][unseen] < thr):.3f} | "
                    f"{np.mean(te[name][seen] < thr):.3f} |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_args(ap)
    args = ap.parse_args()
    lines = header("Triage on the long tail: automation and errors per type-frequency band", sys.argv)
    t_all = time.perf_counter()
    setup = prepare(args)
    ds, cfg, fs, counts = setup["ds"], setup["cfg"], setup["fs"], setup["counts"]
    gen_s, enc_s = setup["generate_s"], setup["encode_s"]
    tax = ds.taxonomy
    torch.manual_seed(0)
    model = build_model(cfg, tax)
    keys = class_keys(fs["train"].is_abnormal.numpy(), fs["train"].type_index.numpy())
    a, b = _stratified_holdout(keys, cfg.data.val_fraction, cfg.seed)
    t0 = time.perf_counter()
    train_heads(model, fs["train"].subset(a), fs["train"].subset(b), cfg)
    head_s = time.perf_counter() - t0
    p_tr, p_cal, p_te = (predict_features(model, fs[k]) for k in ("train", "calib", "test"))
    y_cal, t_cal = fs["calib"].is_abnormal.numpy(), fs["calib"].type_index.numpy()
    y_te, t_te = fs["test"].is_abnormal.numpy(), fs["test"].type_index.numpy()
    policy = TriagePolicy(abnormal_precision=0.99, confidence=0.95, min_train_samples=MIN_TRAIN).fit(
        p_cal["abnormal"], y_cal, type_probs=p_cal["types"], type_labels=t_cal, type_train_counts=counts,
        type_names=list(tax.leaves))
    alone = policy.predict(p_te["abnormal"], type_probs=p_te["types"])
    known = (y_cal == 1) & (t_cal >= 0)
    rule = OpenSetTypeRule(rejection_rate=0.05).fit(p_cal["types"][known])
    with_rule, _ = rule.apply(alone, p_te["types"])
    rows = band_rows("TriagePolicy", alone, y_te, t_te, counts) + band_rows("+ open-set rule", with_rule, y_te, t_te,
                                                                            counts)
    from sklearn.metrics import roc_auc_score

    unseen = (y_te == 1) & (t_te >= 0) & (counts[np.maximum(t_te, 0)] == 0)
    seen = (y_te == 1) & (t_te >= 0) & (counts[np.maximum(t_te, 0)] > 0)
    s_te = rule.scores(p_te["types"])
    ood_auroc = roc_auc_score(np.r_[np.ones(unseen.sum()), np.zeros(seen.sum())], np.r_[-s_te[unseen], -s_te[seen]])
    n_freq = int((counts >= MIN_TRAIN).sum())
    bin_auroc = roc_auc_score(y_te, p_te["abnormal"])
    order = np.argsort(-p_te["types"], axis=1)
    known_te = (y_te == 1) & (t_te >= 0) & (counts[np.maximum(t_te, 0)] > 0)
    topk = {k: float(np.mean([t in order[i, :k] for i, t in zip(np.flatnonzero(known_te), t_te[known_te],
                                                                 strict=True)])) for k in (1, 3, 5)}
    lines += [f"- data: `{args.data}`, {len(ds)} sites of {args.size} px, {len(tax.leaves)} leaf types; training "
              f"split: {int((counts > 0).sum())} types seen, {n_freq} with >= {MIN_TRAIN} examples (counts "
              f"{sorted(counts[counts > 0].tolist(), reverse=True)[:8]} ...), {int((counts == 0).sum())} never seen",
              f"- times: generation {gen_s:.0f} s, feature encoding {enc_s:.0f} s, heads {head_s:.0f} s, whole run "
              f"{time.perf_counter() - t_all:.0f} s; load average at the end {load()}",
              f"- triage: abnormal threshold {policy.abnormal_threshold_:.4g}, normal threshold "
              f"{policy.normal_threshold_:.4g}; open-set rule threshold {rule.threshold_:.4g} (max-softmax), "
              f"{rule.known_rejection_rate_:.3f} of {int(known.sum())} known-type calib defects below it",
              f"- ADC on the test split: abnormal-vs-normal AUROC {bin_auroc:.4f}; type accuracy on defects of "
              f"seen types top-1 {topk[1]:.3f}, top-3 {topk[3]:.3f}, top-5 {topk[5]:.3f}",
              f"- open-set detection on the test defects (unseen vs seen types), AUROC of 1 - max-softmax: "
              f"{ood_auroc:.3f}", "",
              "| variant | band | sites (types) | binary automated | errors among binary-automated | type automated | "
              "errors among type-automated | fully automated |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        be = f"{r['binary errors among automated']}/{r['n_auto']}"
        te = f"{r['type errors among typed']}/{r['n_typed']}"
        lines.append(f"| {r['variant']} | {r['band']} | {r['sites']} ({r['types in band']}) | "
                     f"{r['binary automated']:.3f} | {be} | {r['type automated']:.3f} | {te} | "
                     f"{r['fully automated']:.3f} |")
    lines += ["", "Open-set scores for types, each threshold set on the calib split's known-type defects "
              "(5 % of them given up), read on the test split's defects (nothing chosen on test):", "",
              "| score | AUROC unseen vs seen types | unseen-type defects flagged | seen-type defects flagged |",
              "|---|---|---|---|",
              *openset_rows(p_tr, fs["train"].type_index.numpy(), p_cal, known, p_te, unseen, seen)]
    lines += ["", "```json", json.dumps({"rows": rows, "train_counts": counts.tolist(), "ood_auroc": ood_auroc,
                                         "binary_auroc": bin_auroc, "type_topk": topk}),
              "```", ""]
    atomic_write_text(args.out, "\n".join(lines))
    print("\n".join(lines[:-4]))


if __name__ == "__main__":
    main()

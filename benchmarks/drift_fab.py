"""Drift benchmark on the virtual fab: p-values for a dose change and a pattern-family change, and the
false-positive rate over repeated random splits of one set.

    nice -n 10 python benchmarks/drift_fab.py --out benchmarks/results/drift_fab.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from seminspect.drift import dataset_embeddings, drift_test

sys.path.insert(0, str(Path(__file__).resolve().parent))
from predict_common import header, load  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, default=Path("/tmp/seminspect_bench/drift"))
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--splits", type=int, default=40)
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--perms", type=int, default=200)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/drift_fab.md"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    head = header("Drift detection on the virtual fab (sliced Wasserstein + permutation test)", sys.argv)
    from seminspect.data.synth import FabConfig, generate_dataset

    base = dict(image_size=args.size, n_angles=1, n_references=0)
    sets = {
        "A (medium, dose 120, all families)": (FabConfig(**base), 1),
        "A' (same settings, other seed)": (FabConfig(**base), 2),
        "dose 60 (was 120)": (FabConfig(**base, dose=60.0), 3),
        "line_space only": (FabConfig(**base, pattern_families=["line_space"]), 4),
    }
    t0 = time.perf_counter()
    emb = {}
    for i, (name, (cfg, seed)) in enumerate(sets.items()):
        root = generate_dataset(args.root / f"set{i}", args.n, cfg, abnormal_fraction=0.0, seed=seed, workers=1)
        emb[name] = dataset_embeddings(root, backbone="mobilenetv2", image_size=args.size)
    prep_s = time.perf_counter() - t0
    names = list(sets)
    a = emb[names[0]]
    rows = []
    t0 = time.perf_counter()
    for other in names[1:]:
        r = drift_test(a, emb[other], n_permutations=args.perms, seed=0)
        rows.append((other, r))
        print(other, r, flush=True)
    pvals = []
    for k in range(args.splits):
        perm = np.random.default_rng(1000 + k).permutation(len(a))
        half = len(a) // 2
        pvals.append(drift_test(a[perm[:half]], a[perm[half:]], n_permutations=100, seed=k).p_value)
    test_s = time.perf_counter() - t0
    pvals = np.array(pvals)
    fpr = float(np.mean(pvals < args.alpha))
    lines = head[:-1] + [
        f"- torch 1 thread; load average at the end {load()}",
        f"- data: {args.n} normal samples per set, `FabConfig(image_size={args.size}, n_angles=1, n_references=0)`, "
        "difficulty medium; embeddings = MobileNetV2 ImageNet maps (reductions 4, 8, 16) global-average-pooled and "
        "concatenated (152-D), standardised on the pooled set; SWD with 64 projections (seed 0).",
        f"- generation + embeddings {prep_s:.0f} s; tests {test_s:.0f} s.",
        "",
        f"| set B vs set A ({names[0]}) | SWD | null mean | null 95 % | p-value ({args.perms} permutations) |",
        "|---|---|---|---|---|",
    ]
    for name, r in rows:
        lines.append(f"| {name} | {r.distance:.4f} | {r.null_mean:.4f} | {r.null_q95:.4f} | {r.p_value:.4g} |")
    lines += [
        "",
        f"False-positive rate: {args.splits} seeded random half/half splits of set A ({len(a) // 2} vs "
        f"{len(a) - len(a) // 2}, 100 permutations each): {int((pvals < args.alpha).sum())}/{args.splits} = "
        f"{fpr:.3f} below alpha = {args.alpha} (target <= {1.5 * args.alpha:.3f}); mean p = {pvals.mean():.3f}, "
        f"p-value deciles {np.round(np.quantile(pvals, np.linspace(0.1, 0.9, 9)), 2).tolist()}.",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

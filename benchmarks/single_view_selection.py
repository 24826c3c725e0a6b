"""How well choosing on pseudo-defects (normal images alone) ranks single-view configurations against real labels.

For each candidate: the proxy figure (``seminspect.evaluation.anomaly_select.select_config`` on the TRAIN
normals: 25 % held out, a perlin/cutpaste pseudo-defect painted into a copy of each; the first candidate,
the preset, is left only for one whose proxy gain over it is significant by paired bootstrap) and the
real test figure (fitted on every train normal, scored on the test split with its real labels). The
proxy's choice is compared with the best real figure; the real figures choose nothing.

    python benchmarks/single_view_selection.py --set elpv --root runs/elpv \
        --out benchmarks/results/single_view_selection.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from single_view_common import LOADERS, fit_and_score, result_header, start_run  # noqa: E402

from seminspect.evaluation.anomaly_select import select_config  # noqa: E402
from seminspect.models.anomaly.presets import choose  # noqa: E402
from seminspect.utils.io import atomic_write_text  # noqa: E402

CANDIDATES = {  # each overrides the single-view preset chosen for the train set (native size); one run
    "layers r8+r16, native size (preset)": {},
    "layers r8+r16, 256 px": {"image_size": 256},
    "layers r4+r8+r16": {"layers": [0, 1, 2]},
    "layers r8+r16, sigma 8": {"sigma": 8.0},
    "layers r8+r16, bank 4096": {"max_bank_patches": 4096},
    "layers r8+r16, projected to 64 dims": {"embed_dim": 64},
    "EfficientNet-Lite0, layers r8+r16": {"backbone": "efficientnet_lite0"},
    "EfficientNet-Lite2, layers r8+r16": {"backbone": "efficientnet_lite2"},
    "layers r8+r16, position weight 1": {"position_weight": 1.0},
    "layers r8+r16, position weight 3": {"position_weight": 3.0},
    "layers r16+r32": {"out_indices": [2, 3, 4], "layers": [1, 2]},
    "layers r8+r16, image score = mean of the top 100 map pixels": {"top_k": 100},
    "layers r8+r16, one memory bank per group (needs score_groups)": {"bank_per_group": True},
    "layers r8+r16, coreset distances in int8": {"coreset_precision": "int8"},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", required=True, choices=sorted(LOADERS))
    ap.add_argument("--root", required=True)
    ap.add_argument("--candidates", default="", help="comma list of candidate numbers (0 = the preset, always "
                    "run; default: all): " + "; ".join(f"{i} {k}" for i, k in enumerate(CANDIDATES)))
    ap.add_argument("--settings", default="{}", help="AnomalyConfig fields as JSON added to every candidate, "
                    'e.g. \'{"score_groups": "cell_type", "calib_fraction": 0.2}\' (fixed in advance)')
    args, header, start = start_run(ap)
    common = json.loads(args.settings)
    train, test = LOADERS[args.set](args.root)
    names = list(CANDIDATES)
    picked = sorted({0, *(int(x) for x in args.candidates.split(",") if x)}) if args.candidates else range(len(names))
    preset = choose(train)[1]
    cands = {names[i]: {**preset, **common, **CANDIDATES[names[i]]} for i in picked}
    chosen, rows = select_config(train, cands, seed=0)
    for row in rows:
        real = fit_and_score(cands[row["candidate"]], train, test)
        row.update(real_image_auroc=real["image_auroc"], real_pixel_auroc=real["pixel_auroc"], fit_s=real["fit_s"],
                   predict_img_s=real["predict_img_s"])
        print(json.dumps(row), flush=True)
    best_real = max(r["real_image_auroc"] for r in rows)
    got = next(r for r in rows if r["candidate"] == chosen)["real_image_auroc"]
    lines = [*result_header(f"Single-view configuration chosen on pseudo-defects vs real labels: {args.set}", header,
                            start),
             "- proxy: train normals only (25 % held out, perlin + cutpaste pseudo-defects, seed 0); real: test split "
             "(benchmarks/single_view_common.py), used for this comparison only",
             "- fit s / predict img/s: the real fit (every train normal) and the test scoring, one process, "
             "candidates one after another",
             "- proxy gain: proxy image AUROC minus the preset's, with the 5 % quantile of its paired bootstrap "
             "(> 0: significant, the only way to leave the preset)",
             f"- the preset for this train set: `{json.dumps(preset)}`; added to every candidate: "
             f"`{json.dumps(common)}`",
             "",
             "| candidate | proxy image AUROC | proxy pixel AUROC | proxy gain (5 % q.) | real image AUROC | "
             "real pixel AUROC | fit s | predict img/s |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        px = "-" if r["real_pixel_auroc"] is None else f"{r['real_pixel_auroc']:.3f}"
        mark = " (proxy's choice)" if r["candidate"] == chosen else ""
        lines.append(f"| {r['candidate']}{mark} | {r['proxy_image_auroc']:.3f} | {r['proxy_pixel_auroc']:.3f} | "
                     f"{r['gain_over_default']:+.3f} ({r['gain_q05']:+.3f}) | {r['real_image_auroc']:.3f} | {px} | "
                     f"{r['fit_s']:.0f} | {r['predict_img_s']:.1f} |")
    lines += ["", f"Proxy's choice: **{chosen}**, real image AUROC {got:.3f}; best real {best_real:.3f} "
              f"(gap {100 * (best_real - got):.1f} points; target: within 1 point).", ""]
    atomic_write_text(Path(args.out), "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

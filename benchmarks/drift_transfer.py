"""Cross-product transfer on the virtual fab (issue [stpm-study] item 3-4): a model per product and one on all
products, tested on each; AUROC / AP / false alarms per cell, SWD beside each pair, distance vs loss, thresholds.

    python benchmarks/drift_transfer.py --data /tmp/transfer_fab --n 1600 --out benchmarks/results/drift_transfer.md

Products are the generator's layout families (metadata ``product``). The dataset is generated once
into ``--data`` (seed 0, splits train 0.4 / calib 0.2 / test 0.4, half the sites defective); each
model is fitted on its product's training normals (abnormal training sites are skipped), its
threshold set on the product's calib normals alone (normal quantile, false-alarm rate 1 % at 95 %
confidence), then scored on every product's test split. No setting was chosen on any split here:
the model is the virtual fab's recommended 128 px PatchCore (docs/anomaly.md), or, with ``--config``
(and ``--set key=value``), the model a config file describes, e.g. the shipped STPM:

    python benchmarks/drift_transfer.py --data /tmp/transfer_fab3200 --n 3200 --config configs/anomaly_stpm.yaml \
        --set crop=null --out benchmarks/results/drift_transfer_stpm.md
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
from predict_common import header, load  # noqa: E402

from seminspect.transfer import distance_vs_loss, threshold_stability, transfer_markdown, transfer_matrix  # noqa: E402
from seminspect.utils.io import atomic_write_text  # noqa: E402

CONFIG = dict(backbone="mobilenetv2", out_indices=[1, 2, 3], layers=[0, 1], conditioning="difference",
              centre_sigma=0.2, max_bank_patches=2000, max_pool_patches=40000, coreset_proj_dim=64)

LOSSES = {"auroc": "the test product's own-model AUROC minus the cell's",
          "false_alarms": "the cell's false-alarm rate minus that of the test product's own model"}


def make_fab(root: Path, n: int, size: int, workers: int) -> None:
    """Generate the products fab into ``root`` unless it is there (seed 0; splits train 0.4 / calib 0.2 / test 0.4)."""
    if (root / "manifest.csv").is_file():
        return
    from seminspect.data.synth import FabConfig, generate_dataset

    generate_dataset(root, n, FabConfig(image_size=size, n_angles=1, n_references=1), abnormal_fraction=0.5,
                     seed=0, workers=workers, splits={"train": 0.4, "calib": 0.2, "test": 0.4})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="where the generated fab is (made if absent)")
    ap.add_argument("--n", type=int, default=1600)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--group-by", default="product")
    ap.add_argument("--permutations", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--config", type=Path, help="anomaly config YAML (default: the 128 px PatchCore above)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a --config field (repeatable)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    config = CONFIG
    if args.config is not None:
        from seminspect.models.anomaly.config import load_anomaly_config

        config = load_anomaly_config(args.config, args.overrides).model_dump()
    name = str(config.get("model", "patchcore"))
    described = config if args.config is None else {"config": str(args.config), "set": args.overrides}
    lines = header(f"Cross-{args.group_by} transfer on the virtual fab", sys.argv)
    t0 = time.perf_counter()
    make_fab(args.data, args.n, args.size, args.threads)
    gen_s = time.perf_counter() - t0
    m = transfer_matrix(args.data, group_by=args.group_by, config=config, n_permutations=args.permutations,
                        embedding_kwargs={"image_size": args.size})
    rels = [distance_vs_loss(m, loss) for loss in ("auroc", "false_alarms")]
    stab = threshold_stability(m)
    cells = len(m["groups"]) * (len(m["groups"]) - 1)
    wall = time.perf_counter() - t0
    lines += [f"- data: `{args.data}`, {args.n} sites of {args.size} px (1 target + 1 reference), generated in "
              f"{gen_s:.0f} s; wall time {wall:.0f} s; load average at the end {load()}",
              f"- model ({name}): `{json.dumps(described)}`; threshold: normal quantile on the fitting product's "
              "calib normals (1 % false alarms at 95 % confidence)", "", transfer_markdown(m),
              f"Does the distance predict the transfer loss? Spearman correlation over the {cells} off-diagonal cells, "
              "one-sided permutation p (9,999 pairings; the cells share products, so these p are optimistic):", "",
              *(f"- {r['loss']} loss ({LOSSES[r['loss']]}): **{r['spearman']:.3f}**, p = {r['p_value']:.3g}"
                for r in rels), "",
              "Threshold stability: false alarms on each product's test normals at its own model's threshold and "
              "at the all-products model's one threshold (one-sided 95 % Clopper-Pearson upper bound):", "",
              "| product | own: threshold | own: false alarms | own: upper bound | all: threshold | "
              "all: false alarms | all: upper bound |", "|---|---|---|---|---|---|---|"]
    for r in stab:
        o, a = r["own"], r["all"]
        lines.append(f"| {r['group']} | {o['threshold']:.4g} | {o['false_alarms']}/{o['normals']} ({o['rate']:.3f}) "
                     f"| {o['upper']:.3f} | {a['threshold']:.4g} | {a['false_alarms']}/{a['normals']} "
                     f"({a['rate']:.3f}) | {a['upper']:.3f} |")
    m.update(distance_vs_loss=rels, threshold_stability=stab)
    lines += ["", "```json", json.dumps(m, default=lambda x: float(x) if isinstance(x, np.floating) else str(x)),
              "```", ""]
    atomic_write_text(args.out, "\n".join(lines))
    print("\n".join(lines[:-4]))


if __name__ == "__main__":
    main()

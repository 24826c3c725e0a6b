"""Views/s of the ADC's feature encoding against the number of sites per backbone call (``train.encode_batch``).

    python benchmarks/adc_encode_batch.py [--config src/seminspect/configs/demo.yaml --sizes 1 4 8 32]

Builds the config's model (packaged ImageNet weights), feeds random 12-view sites at the config's
crop size through ``encode_views`` with 1 .. 32 sites per call, the sizes interleaved over
``--rounds`` rounds so that drift of the machine's speed hits every size alike, and reports the
median views/s per size. The demo config's ``encode_batch: 1`` cites this table. Writes
``benchmarks/results/encode_batch.md`` (or ``--result``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from predict_common import header  # noqa: E402

from seminspect.utils.io import atomic_write_text  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=Path("src/seminspect/configs/demo.yaml"))
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 8, 32])
    ap.add_argument("--views", type=int, default=12)
    ap.add_argument("--views-total", type=int, default=384, help="views encoded per size per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--result", type=Path, default=Path(__file__).parent / "results" / "encode_batch.md")
    a = ap.parse_args()
    from seminspect.data.taxonomy import Taxonomy
    from seminspect.models.adc_features import resize_batch
    from seminspect.training.adc_trainer import build_model
    from seminspect.training.config import ADCConfig

    cfg = ADCConfig.from_yaml(a.config)
    model = build_model(cfg, Taxonomy.load("sem_default")).eval()
    size = cfg.image.crop or 128
    g = torch.Generator().manual_seed(0)
    rates: dict[int, list[float]] = {b: [] for b in a.sizes}
    with torch.no_grad():
        for _ in range(a.rounds):
            for b in a.sizes:
                images = torch.rand(b, a.views, 1, size, size, generator=g)
                mask = torch.ones(b, a.views, dtype=torch.bool)
                model.encode_views(resize_batch(images, cfg.image.resize), mask)  # warm-up of this shape
                calls = max(1, a.views_total // (b * a.views))
                t0 = time.perf_counter()
                for _ in range(calls):
                    model.encode_views(resize_batch(images, cfg.image.resize), mask)
                rates[b].append(calls * b * a.views / (time.perf_counter() - t0))
    lines = header("ADC feature encoding: views/s against sites per backbone call", sys.argv)
    lines += [f"Config `{a.config}` (backbone {cfg.model.backbone}, out_indices {cfg.model.out_indices}), "
              f"{a.views} views of {size} px per site, torch {torch.__version__}, {torch.get_num_threads()} threads; "
              f"median of {a.rounds} interleaved rounds of {a.views_total} views per size.", "",
              "| sites per call | views per call | views/s (median) | all rounds |", "|---|---|---|---|"]
    for b in a.sizes:
        lines.append(f"| {b} | {b * a.views} | {statistics.median(rates[b]):.0f} | "
                     f"{', '.join(f'{r:.0f}' for r in rates[b])} |")
    atomic_write_text(a.result, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

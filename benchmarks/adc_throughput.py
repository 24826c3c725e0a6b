"""Throughput of the ADC model on one 10-view (5 target + 5 reference) 460 x 460 site: torch vs ONNX Runtime.

    nice -n 10 python benchmarks/adc_throughput.py [backbone ...]

For each backbone, two input policies: the whole 460 px views, and the 128 px centre crop the
benchmarks train on. The backbone (>95 % of the cost) is exported to
ONNX; grid pooling and the small heads stay in torch in both columns. Also records the peak RSS.
Writes benchmarks/results/adc_throughput.md.
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from adc_common import machine  # noqa: E402

from seminspect.data.taxonomy import Taxonomy  # noqa: E402
from seminspect.models.adc import MultiViewADC  # noqa: E402


class Encoder(nn.Module):
    def __init__(self, model: MultiViewADC) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model.backbone(x)


def time_it(fn, repeats: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def main(backbones: list[str]) -> None:
    from seminspect.export import export_onnx, onnx_session

    torch.set_num_threads(2)
    tax = Taxonomy.builtin("sem_default")
    rows = []
    roles = torch.tensor([[0] * 5 + [1] * 5])
    idx = torch.tensor([list(range(5)) * 2])
    vm = torch.ones(1, 10, dtype=torch.bool)
    for name in backbones:
        model = MultiViewADC(name, pretrained=name != "simple_cnn", taxonomy=tax, grid=4, dim=128).eval()
        for size in (460, 128):
            x = torch.rand(1, 10, 1, size, size)
            with torch.no_grad():
                t_torch = time_it(lambda x=x, model=model: model(x, roles, idx, vm), 3 if size == 460 else 10)
                with tempfile.TemporaryDirectory() as tmp:
                    n_out = len(model.backbone.feature_info)
                    path = export_onnx(Encoder(model), torch.rand(10, 1, size, size), Path(tmp) / "enc.onnx",
                                       input_names=("image",), output_names=tuple(f"map{i}" for i in range(n_out)),
                                       dynamo=False)
                    sess = onnx_session(path, threads=2)

                    def run_onnx_fast(x=x, sess=sess, model=model):
                        f = model.features_from_maps([torch.from_numpy(a) for a in sess(x[0].numpy())], vm, roles, idx)
                        return model.forward_features(f, roles, idx, vm)

                    t_onnx = time_it(run_onnx_fast, 3 if size == 460 else 10)
                    a = model(x, roles, idx, vm)["abnormal_logit"]
                    b = run_onnx_fast()["abnormal_logit"]
                    diff = float((a - b).abs().max())
            rows.append(f"| {name} | {size} | {1 / t_torch:.2f} | {1 / t_onnx:.2f} | {diff:.1e} |")
            print(rows[-1], flush=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    text = f"""# ADC throughput: one 10-view site (5 target + 5 reference), batch 1

- command: `nice -n 10 python benchmarks/adc_throughput.py {' '.join(backbones)}`
- date: {datetime.now(UTC):%Y-%m-%d %H:%M UTC}; machine: {machine()}; torch 2 threads, ONNX Runtime 2 intra-op threads
- the backbone is exported to ONNX; grid pooling and the heads run in torch in both columns
- peak RSS of the process: {rss:.0f} MB

| backbone | view size px | torch sites/s | ONNX Runtime sites/s | max abs logit diff |
|---|---|---|---|---|
{chr(10).join(rows)}

Numbers are from a machine shared with other jobs: expect +-30-40 % run to run (see ../shared/STACK.md).
"""
    dest = Path(__file__).parent / "results" / "adc_throughput.md"
    dest.write_text(text)
    print(text)


if __name__ == "__main__":
    main(sys.argv[1:] or ["mobilenetv2", "efficientnet_lite0", "simple_cnn"])

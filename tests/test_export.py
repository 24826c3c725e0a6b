"""ONNX export and ONNX Runtime inference: Torch-vs-ONNX parity for every registered backbone."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from torch import nn

from seminspect.errors import SeminspectError
from seminspect.export import (
    ExportError,
    OnnxModule,
    assert_parity,
    compare_outputs,
    export_backbone,
    export_onnx,
    max_abs_diff,
    onnx_session,
)
from seminspect.models.backbones import create_backbone, get_backbone_cfg, list_backbones, weights_available


@pytest.mark.parametrize("name", list_backbones(all=True))
def test_backbone_parity_dynamic_batch_and_size(name, tmp_path):
    """Exported once at 2x1x64x64; run at other batch sizes and odd image sizes; matches torch."""
    pretrained = weights_available(get_backbone_cfg(name))  # real weights where installed, else random
    torch.manual_seed(0)
    net = create_backbone(name, pretrained=pretrained, in_chans=1, out_indices=(0, 1, 2, 3, 4))
    path = export_backbone(net, tmp_path / f"{name}.onnx")
    run = onnx_session(path, threads=1)
    assert run.input_names == ["image"]
    assert run.output_names == [f"feat{i}" for i in range(5)]
    gen = torch.Generator().manual_seed(1)
    for shape in [(2, 1, 64, 64), (3, 1, 65, 47), (1, 1, 96, 130)]:
        x = torch.rand(*shape, generator=gen)
        report = compare_outputs(net, run, x)
        assert report.shapes_match, shape
        with torch.no_grad():
            peak = max(float(f.abs().max()) for f in net(x))
        # Float32 round-off grows with activation size: EfficientNet-Lite reaches |a| ~ 50, where torch's own
        # float32 result already differs from float64 by ~6e-5. Hence absolute AND relative bounds.
        assert report.worst < 2e-4, (shape, report)
        assert report.worst / max(peak, 1.0) < 4e-6, (shape, report, peak)
        if name in ("mobilenetv2", "simple_cnn"):
            assert report.worst < 1e-4, (shape, report)


class _TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = torch.relu(self.conv(x))
        return f, self.fc(f.mean((2, 3)))


def test_export_generic_module_dynamic_batch(tmp_path):
    torch.manual_seed(0)
    m = _TwoHeads()
    path = export_onnx(
        m,
        torch.rand(2, 1, 16, 16),
        tmp_path / "sub" / "m.onnx",
        input_names=["image"],
        output_names=["feat", "logits"],
        dynamic_axes={"image": {0: "batch"}, "feat": {0: "batch"}, "logits": {0: "batch"}},
    )
    assert path.is_file()
    assert [p.name for p in path.parent.iterdir()] == ["m.onnx"]  # no temporary files left behind
    run = OnnxModule(path, threads=1)
    x = torch.rand(5, 1, 16, 16)
    feat, logits = run(x.numpy())
    assert feat.shape == (5, 4, 16, 16) and logits.shape == (5, 3)
    assert max_abs_diff(m, run, x) < 1e-5
    assert_parity(m, path, x, atol=1e-5)
    # A changed module no longer matches: the parity check must be able to fail.
    with torch.no_grad():
        m.fc.bias.add_(1.0)
    with pytest.raises(ExportError, match="disagrees"):
        assert_parity(m, run, x)


def test_failed_export_keeps_previous_file(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"previous")

    class Unexportable(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    with pytest.raises(ExportError, match="boom"):
        export_onnx(Unexportable(), torch.rand(1, 1, 4, 4), path)
    assert path.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
    assert issubclass(ExportError, SeminspectError)


def test_runner_errors(tmp_path):
    with pytest.raises(ExportError, match="not found"):
        OnnxModule(tmp_path / "absent.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    with pytest.raises(ExportError, match="cannot load"):
        OnnxModule(tmp_path / "junk.onnx")
    m = nn.Conv2d(1, 2, 3)
    path = export_onnx(m, torch.rand(1, 1, 8, 8), tmp_path / "c.onnx")
    with pytest.raises(ExportError, match="expects 1 inputs"):
        OnnxModule(path)(np.zeros((1, 1, 8, 8), np.float32), np.zeros(1, np.float32))


@pytest.mark.skipif(importlib.util.find_spec("onnxscript") is not None, reason="onnxscript installed")
def test_forced_dynamo_without_onnxscript_is_a_clear_error(tmp_path):
    with pytest.raises(ExportError, match="dynamo exporter"):
        export_onnx(nn.Conv2d(1, 2, 3), torch.rand(1, 1, 8, 8), tmp_path / "c.onnx", dynamo=True)


def test_export_restores_each_submodule_mode(tmp_path):
    """Exporting a fresh (training-mode) wrapper must not flip the wrapped eval model into training
    mode: BatchNorm would then use batch statistics and drift, and Torch would disagree with ONNX."""
    from torch import nn

    from seminspect.export import export_onnx

    inner = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5)).eval()

    class Wrapper(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x)

    wrapper = Wrapper()
    assert wrapper.training and not inner.training
    export_onnx(wrapper, torch.rand(2, 1, 16, 16), tmp_path / "w.onnx", input_names=("x",), output_names=("y",),
                dynamo=False)
    assert wrapper.training, "the wrapper's own mode is restored"
    assert not any(m.training for m in inner.modules()), "the wrapped model stays in eval mode"


def test_adc_logits_torch_vs_onnx_backbone(tmp_path):
    """End to end: the ADC model on an exported ONNX backbone gives the Torch logits."""
    from torch import nn

    from seminspect.data.taxonomy import Taxonomy
    from seminspect.export import export_onnx, onnx_session
    from seminspect.models.adc import MultiViewADC

    torch.manual_seed(0)
    model = MultiViewADC("simple_cnn", pretrained=False, taxonomy=Taxonomy.builtin(), grid=2, dim=16).eval()
    roles = torch.tensor([[0, 0, 1, 1]])
    idx = torch.tensor([[0, 1, 0, 1]])
    vm = torch.ones(1, 4, dtype=torch.bool)
    x = torch.rand(1, 4, 1, 48, 48)

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = model.backbone

        def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
            return self.backbone(images)

    names = tuple(f"map{i}" for i in range(len(model.backbone.feature_info)))
    path = export_onnx(Encoder(), torch.rand(4, 1, 48, 48), tmp_path / "enc.onnx", input_names=("image",),
                       output_names=names, dynamo=False)
    sess = onnx_session(path, threads=1)
    with torch.no_grad():
        ref = model(x, roles, idx, vm)["abnormal_logit"]
        feats = model.features_from_maps([torch.from_numpy(a) for a in sess(x[0].numpy())], vm, roles, idx)
        got = model.forward_features(feats, roles, idx, vm)["abnormal_logit"]
        again = model(x, roles, idx, vm)["abnormal_logit"]
    assert torch.equal(ref, again)
    assert float((ref - got).abs().max()) < 1e-4

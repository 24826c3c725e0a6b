"""The depth U-Net on a backend: the exported graph equals torch, is cached by model content, refusals are one line."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from seminspect.inference.depth_runtime import DepthRuntime
from seminspect.inference.runtime import BackendError
from seminspect.models.depth import UNet
from seminspect.training.depth import DepthPredictor, Normaliser

BACKENDS = ["onnxruntime"] + (["openvino"] if importlib.util.find_spec("openvino") else [])


def _predictor(tmp_path: Path, seed: int = 0, channels: int = 4) -> tuple[DepthPredictor, Path]:
    torch.manual_seed(seed)
    p = DepthPredictor(UNet(channels, 1, 2, 4, global_context=True), Normaliser(0.5, 0.2, 100.0, 30.0))
    path = tmp_path / f"m{seed}" / "best.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    p.save(path)
    return p, path


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("h", "w"), [(66, 45), (14, 11)])
def test_runtime_equals_torch(tmp_path: Path, backend: str, h: int, w: int) -> None:
    p, path = _predictor(tmp_path)
    x = torch.rand(7, 4, h, w, generator=torch.Generator().manual_seed(1))
    got = DepthRuntime(p, path, backend, threads=1).predict(x, batch_size=3)  # batches of 3, 3, 1
    ref = p.predict(x)
    assert got.shape == ref.shape == (7, h, w) and got.dtype == np.float32
    assert np.abs(got - ref).max() < 1e-3  # depth units; the spread of this model's output is ~30


def test_graph_is_cached_by_model_content(tmp_path: Path) -> None:
    p, path = _predictor(tmp_path)
    x = np.random.default_rng(0).random((2, 4, 14, 11), dtype=np.float32)
    DepthRuntime(p, path, "onnxruntime").predict(x)
    graphs = list((path.parent / "runtime").glob("depth-*-14x11-fp32.onnx"))
    assert len(graphs) == 1
    stamp = graphs[0].stat().st_mtime_ns
    DepthRuntime(p, path, "onnxruntime").predict(x)  # the same model: the same file, not exported again
    assert graphs[0].stat().st_mtime_ns == stamp
    q, _ = _predictor(tmp_path, seed=1)  # a retrained model in the same place never meets the old graph
    q.save(path)
    got = DepthRuntime(q, path, "onnxruntime").predict(x)
    assert len(list((path.parent / "runtime").glob("depth-*-14x11-fp32.onnx"))) == 2
    assert np.abs(got - q.predict(x)).max() < 1e-3


def test_torch_backend_is_the_predictor(tmp_path: Path) -> None:
    p, path = _predictor(tmp_path)
    x = torch.rand(3, 4, 14, 11)
    run = DepthRuntime(p, path, "torch")
    np.testing.assert_array_equal(run.predict(x), p.predict(x))
    assert run.describe() == "torch (fp32)" and not (path.parent / "runtime").exists()


@pytest.mark.parametrize(("backend", "precision", "says"), [
    ("onnxruntime", "int8", "int8 is not calibrated"), ("onnxruntime", "bf16", "openvino only"),
    ("torch", "bf16", "fp32 only"), ("tensorrt", "fp32", "is not one of"), ("onnxruntime", "fp8", "is not one of"),
])
def test_refusals_are_one_line(tmp_path: Path, backend: str, precision: str, says: str) -> None:
    p, path = _predictor(tmp_path)
    with pytest.raises(BackendError, match=says) as err:
        DepthRuntime(p, path, backend, precision)
    assert "\n" not in str(err.value)


def test_cli_backend_choice(tmp_path: Path) -> None:
    import tifffile
    from typer.testing import CliRunner

    from seminspect.cli import app
    from seminspect.data.manifest import DatasetInfo, DatasetWriter
    from seminspect.data.sample import Sample, View

    rng = np.random.default_rng(0)
    data = tmp_path / "ds"
    with DatasetWriter(data, DatasetInfo(depth_units="nm")) as wr:
        for i in range(3):
            views = [View("target", j, rng.integers(0, 255, (14, 11), dtype=np.uint8)) for j in range(4)]
            wr.add(Sample(f"s{i}", views, depth=rng.random((14, 11), dtype=np.float32)))
    _, model = _predictor(tmp_path)
    runner = CliRunner()
    outs = {}
    for backend in ("torch", "onnxruntime"):
        r = runner.invoke(app, ["depth", "predict", "-m", str(model), "--data", str(data), "-o",
                                str(tmp_path / backend), "--backend", backend, "--threads", "1"])
        assert r.exit_code == 0, r.output
        assert f"U-Net on {backend}" in " ".join(r.output.split())
        outs[backend] = np.stack([tifffile.imread(f) for f in sorted((tmp_path / backend).glob("*.tiff"))])
    assert outs["torch"].shape == (3, 14, 11) and np.abs(outs["torch"] - outs["onnxruntime"]).max() < 1e-3
    r = runner.invoke(app, ["depth", "predict", "-m", str(model), "--data", str(data), "-o", str(tmp_path / "x"),
                            "--backend", "nope"])
    assert isinstance(r.exception, BackendError) and "backend 'nope' is not one of" in str(r.exception)

"""The ADC as one exported graph in ONNX Runtime (fp32, int8) against the torch model it came from."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from seminspect.cli import app
from seminspect.data.dataset import SampleDataset
from seminspect.data.taxonomy import Taxonomy
from seminspect.export import onnx_session
from seminspect.export.adc_graph import ADCGraph, example_inputs, export_adc, grid_pool
from seminspect.inference.inspector import Inspector
from seminspect.inference.runtime import BackendError, graph_path
from seminspect.models.adc import MultiViewADC
from seminspect.models.backbones import list_backbones
from test_inference import make_shifted_dataset, tiny_config

runner = CliRunner()


def _inputs(view_size: int) -> tuple[torch.Tensor, ...]:
    images, roles, indices, mask = example_inputs(view_size, n_sites=3)
    mask[1, 7] = False  # a site whose reference of detector 2 is missing
    mask[2, 0] = False  # a site whose target of detector 0 is missing
    return images, roles, indices, mask


@pytest.mark.parametrize("size", [8, 15, 29])
@pytest.mark.parametrize("kind", ["avg", "max"])
def test_grid_pool_equals_adaptive_pooling(size, kind):
    x = torch.randn(2, 3, size, size + 3)
    pool = torch.nn.functional.adaptive_avg_pool2d if kind == "avg" else torch.nn.functional.adaptive_max_pool2d
    ref = pool(x, 4)
    assert torch.allclose(grid_pool(x, 4, kind), ref, atol=1e-6)


@pytest.mark.parametrize("backbone", ["tiny", *list_backbones()])
def test_graph_equals_the_model_and_onnx_runtime_equals_the_graph(backbone, tmp_path):
    torch.manual_seed(0)
    model = MultiViewADC(backbone, pretrained=False, taxonomy=Taxonomy.builtin("sem_default"), grid=4, dim=32).eval()
    x = _inputs(64)
    with torch.no_grad():
        feats = model.encode_views(x[0], x[3], x[1], x[2]).to(torch.float16).float()
        ref = model.forward_features(feats, x[1], x[2], x[3])
        ab, ty, emb = ADCGraph(model)(*x)
    assert torch.equal(ab, ref["abnormal_logit"]) and torch.equal(ty, ref["type_logits"])
    assert torch.equal(emb, ref["embedding"])
    run = onnx_session(export_adc(model, tmp_path / "adc.onnx", 64), threads=1)
    for n_views in (12, 10, 7):  # any number of views and sites through one graph
        sub = tuple(t[:, :n_views] for t in x)
        with torch.no_grad():
            want = [t.numpy() for t in ADCGraph(model)(*sub)]
        got = run(*sub)
        assert max(float(np.abs(a - b).max()) for a, b in zip(want, got, strict=True)) < 1e-3


def test_graph_parity_with_independent_level_features_and_cbam(tmp_path):
    torch.manual_seed(0)
    model = MultiViewADC("tiny", pretrained=False, taxonomy=Taxonomy.builtin("sem_default"), grid=4, dim=32,
                         level_features="independent", attention="cbam").eval()
    x = _inputs(64)
    with torch.no_grad():
        ref = model.forward_features(model.encode_views(x[0], x[3], x[1], x[2]).to(torch.float16).float(),
                                     x[1], x[2], x[3])
        want = [t.numpy() for t in ADCGraph(model)(*x)]
    np.testing.assert_array_equal(want[1], ref["type_logits"].numpy())
    got = onnx_session(export_adc(model, tmp_path / "adc.onnx", 64), threads=1)(*x)
    assert max(float(np.abs(a - b).max()) for a, b in zip(want, got, strict=True)) < 1e-3


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from seminspect.workflow import train_and_evaluate

    root = tmp_path_factory.mktemp("runtime")
    ds = make_shifted_dataset(root / "ds", n=72)
    train_and_evaluate(tiny_config(ds, root / "art"), log=None, report=False)
    return ds, root / "art"


def test_backends_judge_alike_and_the_graph_is_cached_by_model_version(trained):
    ds, art = trained
    samples = list(SampleDataset(ds))
    a = Inspector.load(art, backend="torch").inspect(samples)
    ort = Inspector.load(art, backend="onnxruntime")
    b = ort.inspect(samples)
    assert np.abs(a.abnormal - b.abnormal).max() < 1e-4 and np.abs(a.types - b.types).max() < 1e-4
    assert (a.route == b.route).all()
    assert "onnxruntime" in ort.runtime_note()
    graphs = list((art / "runtime").glob("adc-*-fp32.onnx"))
    assert [g.name for g in graphs] == [f"adc-{ort.model_version}-48x48-fp32.onnx"]


def test_openvino_runs_the_same_graph(trained):
    pytest.importorskip("openvino", reason="the openvino extra is not installed")
    from seminspect.export._openvino import cpu_offers

    ds, art = trained
    samples = list(SampleDataset(ds))
    ref = Inspector.load(art, backend="onnxruntime").inspect(samples)
    ov = Inspector.load(art, backend="openvino").inspect(samples)
    assert np.abs(ref.abnormal - ov.abnormal).max() < 1e-4 and (ref.route == ov.route).all()
    if cpu_offers("BF16"):
        bf = Inspector.load(art, backend="openvino", precision="bf16").inspect(samples)
        assert np.abs(ref.abnormal - bf.abnormal).max() < 0.05  # bf16 keeps ~3 significant digits
    else:
        with pytest.raises(BackendError, match="no bf16"):
            Inspector.load(art, backend="openvino", precision="bf16")


def test_int8_needs_optimise_first_then_runs(trained, tmp_path):
    ds, art = trained
    out = tmp_path / "d.parquet"
    res = runner.invoke(app, ["predict", str(art), str(ds), "-o", str(out), "--precision", "int8"])
    assert isinstance(res.exception, BackendError) and "seminspect optimise" in str(res.exception)
    assert "\n" not in str(res.exception)  # one line (main() prints it and exits 2)
    res = runner.invoke(app, ["optimise", str(art), "--data", str(ds), "--split", "all", "--sites", "24",
                              "--check", "12"])
    assert res.exit_code == 0, res.output
    assert "top type agrees" in " ".join(res.output.split())
    report = json.loads(next((art / "runtime").glob("adc-*-int8.json")).read_text())
    assert 0.0 <= report["route_agreement"] <= 1.0 and 0.0 <= report["type_decision_agreement"] <= 1.0
    assert report["check_sites"] == 12
    res = runner.invoke(app, ["predict", str(art), str(ds), "-o", str(out), "--precision", "int8"])
    assert res.exit_code == 0, res.output
    assert "ADC on onnxruntime (int8" in " ".join(res.output.split())


def test_unknown_backend_or_precision_is_one_line(trained):
    _, art = trained
    with pytest.raises(BackendError, match="not one of"):
        Inspector.load(art, backend="tensorrt")
    with pytest.raises(BackendError, match="fp32 only"):
        Inspector.load(art, backend="torch", precision="int8")
    with pytest.raises(BackendError, match="openvino only"):
        Inspector.load(art, backend="onnxruntime", precision="bf16")
    assert graph_path(Inspector.load(art, backend="torch").artefact, 64, 64, "int8").name.endswith("-int8.onnx")


def test_a_read_only_artefact_exports_to_the_user_cache(trained, tmp_path, monkeypatch):
    import shutil

    import seminspect.inference.runtime as runtime

    ds, art = trained
    ro = tmp_path / "ro"
    shutil.copytree(art, ro, ignore=shutil.ignore_patterns("runtime"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    # the artefact folder reads as not writable (chmod alone does not stop root, who runs CI)
    monkeypatch.setattr(runtime.os, "access", lambda path, mode: not str(path).startswith(str(ro)))
    insp = Inspector.load(ro, backend="onnxruntime")
    assert not list(ro.glob("runtime/*.onnx"))
    assert list((tmp_path / "cache" / "seminspect" / "runtime").glob("adc-*-fp32.onnx"))
    assert len(insp.inspect(list(SampleDataset(ds))[:3])) == 3
    assert Inspector.load(ro, backend="onnxruntime").runtime.session(48, 48)  # found in the cache next time


def test_int8_and_bf16_are_checked_in_fp32_near_a_threshold(trained):
    """The plumbing (test_guard.py checks the decisions: this tiny artefact automates nothing)."""
    from seminspect.export._openvino import cpu_offers
    from seminspect.inference.guard import CheckedRuntime, check_report_path

    ds, art = trained
    samples = list(SampleDataset(ds))
    if not any((art / "runtime").glob("adc-*-int8.json")):
        runner.invoke(app, ["optimise", str(art), "--data", str(ds), "--split", "all", "--sites", "24",
                            "--check", "12"])
    ref = Inspector.load(art).inspect(samples)
    checked = Inspector.load(art, precision="int8")
    assert isinstance(checked.runtime, CheckedRuntime)  # optimise measured the margins: checked by default
    got = checked.inspect(samples)
    assert (got.route == ref.route).all() and (got.triage.type_decision == ref.triage.type_decision).all()
    assert checked.runtime.judged == len(samples) and "fp32 check:" in checked.runtime_note()
    assert not isinstance(Inspector.load(art, precision="int8", fp32_check=False).runtime, CheckedRuntime)
    if not cpu_offers("BF16"):
        pytest.skip("this CPU has no bf16: the bf16 half of the check cannot run")
    loaded = checked.artefact
    size = loaded.image.resize or loaded.image.crop
    report = check_report_path(loaded, size, size, "bf16")
    report.unlink(missing_ok=True)
    with pytest.raises(BackendError, match="optimise .*--precision bf16"):
        Inspector.load(art, backend="openvino", precision="bf16", fp32_check=True)
    assert not isinstance(Inspector.load(art, backend="openvino", precision="bf16").runtime, CheckedRuntime)
    res = runner.invoke(app, ["optimise", str(art), "--data", str(ds), "--split", "all", "--check", "12",
                              "--precision", "bf16"])
    assert res.exit_code == 0, res.output
    bf = Inspector.load(art, backend="openvino", precision="bf16")
    assert isinstance(bf.runtime, CheckedRuntime) and (bf.inspect(samples).route == ref.route).all()

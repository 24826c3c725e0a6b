"""PatchCore on a runtime: blocked, bf16 and int8 bank search, the exported embedding equals torch, refusals."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from seminspect.inference.anomaly_runtime import use_runtime
from seminspect.inference.runtime import BackendError
from seminspect.models.anomaly import AnomalyDetector
from seminspect.models.anomaly.search import bank_blocks, bf16_is_fast, int8_is_fast, min_distance

BACKENDS = ["onnxruntime"] + (["openvino"] if importlib.util.find_spec("openvino") else [])


# ----- the search -------------------------------------------------------------------------------
@pytest.mark.parametrize(("chunk", "bank_chunk"), [(7, 11), (1024, 2048), (5000, 3)])
def test_fp32_search_is_exact(chunk: int, bank_chunk: int) -> None:
    g = torch.Generator().manual_seed(0)
    q, b = torch.randn(300, 24, generator=g), torch.randn(157, 24, generator=g)
    got = min_distance(q, b, bank_blocks(b, "fp32", bank_chunk), "fp32", chunk)
    assert torch.allclose(got, torch.cdist(q, b).min(1).values, atol=1e-4)


def test_bf16_search_measures_a_real_row_in_fp32() -> None:
    g = torch.Generator().manual_seed(1)
    q, b = torch.randn(2000, 64, generator=g), torch.randn(3000, 64, generator=g)
    exact = torch.cdist(q, b).min(1).values
    got = min_distance(q, b, bank_blocks(b, "bf16", 512), "bf16", 256)
    assert (got >= exact - 1e-4).all()  # the distance to some bank row: never below the nearest
    assert ((got - exact).abs() < 1e-4).float().mean() > 0.9  # and the nearest row itself nearly always
    assert ((got - exact) / exact).max() < 0.02
    a_query_on_a_row = min_distance(b[:5], b, search="bf16")
    assert torch.allclose(a_query_on_a_row, torch.zeros(5), atol=1e-3)
    with pytest.raises(ValueError, match="search must be one of"):
        min_distance(q, b, search="int4")


@pytest.mark.parametrize(("chunk", "bank_chunk"), [(256, 512), (1024, 2048), (7, 5)])
def test_int8_search_measures_a_real_row_in_fp32(chunk: int, bank_chunk: int) -> None:
    g = torch.Generator().manual_seed(2)
    centres = 3 * torch.randn(40, 64, generator=g)  # clustered, as patch features are: near-ties are common
    b = centres[torch.randint(0, 40, (3000,), generator=g)] + torch.randn(3000, 64, generator=g)
    q = centres[torch.randint(0, 40, (2000,), generator=g)] + torch.randn(2000, 64, generator=g)
    exact = torch.cdist(q, b).min(1).values
    got = min_distance(q, b, bank_blocks(b, "int8", bank_chunk), "int8", chunk)
    assert (got >= exact - 1e-4).all()  # the distance to some bank row: never below the nearest
    assert ((got - exact).abs() < 1e-4).float().mean() > 0.8  # and the nearest row itself most of the time
    assert ((got - exact) / exact).max() < 0.05
    assert torch.allclose(min_distance(b[:5], b, search="int8"), torch.zeros(5), atol=1e-3)  # a row finds itself
    far = 10 * (b[:5] + 1.0)  # far from every row: near-ties, within rounding
    assert torch.allclose(min_distance(far, b, search="int8"), torch.cdist(far, b).min(1).values, rtol=1e-3)
    zero = torch.zeros(3, 64)  # int8 has no scale for them: the exact search answers
    assert torch.allclose(min_distance(zero, b, search="int8"), torch.cdist(zero, b).min(1).values, atol=1e-4)


# ----- PatchCore on a backend -----------------------------------------------------------------
@pytest.fixture(scope="module")
def fab(tmp_path_factory):
    synth = pytest.importorskip("seminspect.data.synth")
    root = tmp_path_factory.mktemp("fab") / "ds"
    synth.generate_dataset(root, 16, synth.FabConfig(image_size=64, n_angles=1, n_references=1),
                           abnormal_fraction=0.5, seed=0, workers=1, splits={"train": 0.5, "test": 0.5})
    return root


def _fitted(tmp_path, fab, conditioning: str, model: str = "patchcore"):  # noqa: ANN001, ANN202
    from seminspect.data.dataset import SampleDataset

    cfg = {"model": model, "backbone": "tiny", "pretrained": False, "out_indices": [0, 1, 2], "layers": [0, 1],
           "conditioning": conditioning, "max_bank_patches": 300, "sigma": 2.0, "calib_fraction": 0.0}
    if model == "stpm":
        cfg = {**cfg, "conditioning": "none", "epochs": 1, "layers": [0, 1, 2]}
        cfg.pop("max_bank_patches")
    ds = SampleDataset(fab)
    det = AnomalyDetector(cfg).fit(ds.split("train"))
    det.save(tmp_path / model)
    return tmp_path / model, ds.split("test")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("conditioning", ["none", "reference", "difference"])
def test_embedding_graph_scores_as_torch(tmp_path, fab, backend: str, conditioning: str) -> None:
    folder, test = _fitted(tmp_path, fab, conditioning)
    ref = AnomalyDetector.load(folder).score(test, progress=False)
    det = AnomalyDetector.load(folder)
    assert use_runtime(det, folder, backend, "fp32", 1) == f"{backend} (fp32 search, 1 thread)"
    got = det.score(test, progress=False)
    np.testing.assert_allclose(got.scores, ref.scores, rtol=1e-4, atol=1e-5)
    assert max(float(np.abs(a - b).max()) for a, b in zip(got.maps, ref.maps, strict=True)) < 1e-3
    assert len(list((folder / "runtime").glob("patchcore-embed-*-fp32.onnx"))) == 1


def test_single_view_at_native_odd_sizes_scores_as_torch(tmp_path) -> None:
    """The single-view preset keeps images at their native long side (here 75 px, not a multiple of the
    backbone's stride): the graph exported at 64 x 64 gives torch's scores and native-size maps."""
    from seminspect.data.sample import Sample, View

    rng = np.random.default_rng(4)
    y, x = np.mgrid[0:75, 0:75]
    base = (0.5 + 0.2 * np.sin(x / 3.0) * np.cos(y / 5.0)).astype(np.float32)
    shapes = [(75, 53), (61, 75), (75, 75)]
    samples = [Sample(f"s{i}", [View("target", 0, np.clip(base[:h, :w] + rng.normal(0, 0.02, (h, w)), 0, 1)
                                     .astype(np.float32))], is_abnormal=False) for i, (h, w) in enumerate(shapes * 3)]
    cfg = {"preset": "auto", "backbone": "tiny", "pretrained": False, "out_indices": [0, 1, 2],
           "max_bank_patches": 300, "calib_fraction": 0.0}
    det = AnomalyDetector(cfg).fit(samples[:6])
    assert det.config.image_size == 75 and det.config.resize == "keep_aspect"
    det.save(tmp_path / "sv")
    ref = AnomalyDetector.load(tmp_path / "sv").score(samples[6:], progress=False)
    fast = AnomalyDetector.load(tmp_path / "sv")
    use_runtime(fast, tmp_path / "sv", "onnxruntime", "fp32", 1)
    got = fast.score(samples[6:], progress=False)
    np.testing.assert_allclose(got.scores, ref.scores, rtol=1e-4, atol=1e-5)
    assert [m.shape for m in got.maps] == shapes
    assert max(float(np.abs(a - b).max()) for a, b in zip(got.maps, ref.maps, strict=True)) < 1e-3


@pytest.mark.skipif(not bf16_is_fast(), reason="this CPU has no native bf16 (AVX512-BF16 or AMX)")
def test_bf16_search_keeps_the_ranking(tmp_path, fab) -> None:
    folder, test = _fitted(tmp_path, fab, "reference")
    ref = AnomalyDetector.load(folder).score(test, progress=False).scores
    det = AnomalyDetector.load(folder)
    use_runtime(det, folder, "torch", "bf16")
    got = det.score(test, progress=False).scores
    assert (got >= ref - 1e-5).all() and np.abs(got - ref).max() < 0.02 * np.abs(ref).max()


@pytest.mark.skipif(not int8_is_fast(), reason="this CPU has no int8 dot products that torch reports (AVX512-VNNI)")
def test_int8_search_keeps_the_ranking(tmp_path, fab) -> None:
    folder, test = _fitted(tmp_path, fab, "reference")
    ref = AnomalyDetector.load(folder).score(test, progress=False)
    det = AnomalyDetector.load(folder)
    assert use_runtime(det, folder, "onnxruntime", "int8", 1).startswith("onnxruntime (int8 search")
    got = det.score(test, progress=False)
    assert (got.scores >= ref.scores - 1e-4).all()  # never below the exact distance
    assert np.abs(got.scores - ref.scores).max() < 0.02 * np.abs(ref.scores).max()
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(got.labels, got.scores) == pytest.approx(roc_auc_score(ref.labels, ref.scores), abs=0.01)


def test_int8_refused_without_vnni(tmp_path, fab, monkeypatch) -> None:
    import seminspect.inference.anomaly_runtime as runtime

    folder, _ = _fitted(tmp_path, fab, "none")
    monkeypatch.setattr(runtime, "int8_is_fast", lambda: False)
    with pytest.raises(BackendError, match="no int8 dot products") as err:
        use_runtime(AnomalyDetector.load(folder), folder, "torch", "int8")
    assert "\n" not in str(err.value)


def test_refusals_and_stpm_stays_in_torch(tmp_path, fab) -> None:
    folder, _ = _fitted(tmp_path, fab, "none")
    det = AnomalyDetector.load(folder)
    for backend, precision, says in [("onnxruntime", "int4", "fp32, bf16 or int8"),
                                     ("tensorrt", "fp32", "is not one of")]:
        with pytest.raises(BackendError, match=says) as err:
            use_runtime(det, folder, backend, precision)
        assert "\n" not in str(err.value)
    stpm, _ = _fitted(tmp_path, fab, "none", model="stpm")
    det = AnomalyDetector.load(stpm)
    assert use_runtime(det, stpm) == "torch (fp32)"  # no backend asked: STPM runs in torch
    with pytest.raises(BackendError, match="only PatchCore"):
        use_runtime(det, stpm, "onnxruntime")


def test_cli_backend_choice(tmp_path, fab) -> None:
    import pandas as pd

    from seminspect.cli import app

    folder, _ = _fitted(tmp_path, fab, "reference")
    runner = CliRunner()
    scores = {}
    for backend in ("torch", "onnxruntime"):
        out = tmp_path / f"{backend}.csv"
        res = runner.invoke(app, ["anomaly", "predict", str(folder), str(fab), "-o", str(out), "--split", "test",
                                  "--backend", backend, "--threads", "1"])
        assert res.exit_code == 0, res.output
        assert f"embedding on {backend}" in " ".join(res.output.split())
        scores[backend] = pd.read_csv(out)["score"].to_numpy()
    np.testing.assert_allclose(scores["onnxruntime"], scores["torch"], rtol=1e-4, atol=1e-5)
    res = runner.invoke(app, ["anomaly", "predict", str(folder), str(fab), "-o", str(tmp_path / "x.csv"),
                              "--precision", "int4"])
    assert isinstance(res.exception, BackendError) and "int4" in str(res.exception)

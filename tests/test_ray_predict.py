"""``predict --ray`` on a real local Ray with 2 inspector actors: the same decisions as one process.

Skipped with a reason when Ray (the ``seminspect[ray]`` extra) is not installed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from seminspect.inference.predict import predict
from test_inference import make_shifted_dataset, tiny_config
from test_predict import _damaged_copy

pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'seminspect[ray]'")

FLOATS = ("abnormal_prob", "top1_prob", "top2_prob", "top3_prob", "reg_residual_max", "reg_dy_0", "reg_dx_0")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    from seminspect.workflow import train_and_evaluate

    root = tmp_path_factory.mktemp("ray")
    ds = make_shifted_dataset(root / "ds", n=48)
    train_and_evaluate(tiny_config(ds, root / "art"), log=None, report=False)
    return _damaged_copy(ds, root / "bad"), root / "art"


def test_ray_with_two_workers_gives_the_single_process_decisions(trained, tmp_path):
    from seminspect.inference.ray_predict import predict_ray

    ds, art = trained
    one = predict(art, ds, tmp_path / "one.parquet", part_size=7, log=None, threads=1)
    two = predict_ray(art, ds, tmp_path / "ray.parquet", workers=2, part_size=7, batch_size=3, log=None)
    assert two.n_sites == one.n_sites == 48 and two.n_failed == one.n_failed == 4
    assert two.routes == one.routes
    a, b = pd.read_parquet(tmp_path / "one.parquet"), pd.read_parquet(tmp_path / "ray.parquet")
    assert list(b["site"]) == list(a["site"]) == sorted(a["site"])  # input order, nothing lost or duplicated
    assert list(a.columns) == list(b.columns)
    for c in FLOATS:
        np.testing.assert_allclose(b[c].to_numpy(float), a[c].to_numpy(float), rtol=0, atol=1e-6, err_msg=c)
    for c in ("sample_id", "route", "route_reason", "type", "top1_type", "top2_type", "top3_type", "model_version"):
        assert (a[c].fillna("") == b[c].fillna("")).all(), c
    ea, eb = pd.read_parquet(tmp_path / "one.errors.parquet"), pd.read_parquet(tmp_path / "ray.errors.parquet")
    pd.testing.assert_frame_equal(ea, eb)
    summary = json.loads((tmp_path / "ray.summary.json").read_text())
    assert summary["fingerprint"]["runner"] == "ray" and not (tmp_path / "ray.parquet.parts").exists()
    # the same command again finds the finished run and does nothing
    again = predict_ray(art, ds, tmp_path / "ray.parquet", workers=2, part_size=7, log=None)
    assert again.n_decided == two.n_decided


def test_ray_refuses_to_mix_with_a_single_process_run(trained, tmp_path):
    from seminspect.inference.predict import PredictError
    from seminspect.inference.ray_predict import predict_ray

    ds, art = trained
    predict(art, ds, tmp_path / "d.parquet", log=None)
    with pytest.raises(PredictError, match="other inputs"):
        predict_ray(art, ds, tmp_path / "d.parquet", workers=1, log=None)

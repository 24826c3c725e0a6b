"""Per-group score normalisation (``score_groups``): arithmetic, refusals, a detector fitted on two products."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from seminspect.data.sample import Role, Sample, View
from seminspect.models.anomaly import AnomalyDetector
from seminspect.models.anomaly.features import AnomalyConfigError
from seminspect.models.anomaly.score_groups import fit_groups, normalise

TINY = {"backbone": "tiny", "pretrained": False, "max_bank_patches": 512, "max_pool_patches": 4000,
        "batch_size": 8, "conditioning": "none", "crop": None, "registration": "off", "image_size": 32}


def test_each_group_gets_median_zero_and_unit_iqr() -> None:
    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.normal(1.0, 0.1, 40), rng.normal(5.0, 2.0, 40)])
    meta = [{"product": "a"}] * 40 + [{"product": "b"}] * 40
    fitted = fit_groups(scores, meta, "product")
    assert set(fitted["groups"]) == {"a", "b"} and fitted["groups"]["b"]["n"] == 40
    z = normalise(scores, meta, fitted)
    for sl in (slice(0, 40), slice(40, 80)):
        q25, q50, q75 = np.percentile(z[sl], [25, 50, 75])
        assert abs(q50) < 1e-9 and abs((q75 - q25) - 1.0) < 1e-9


def test_refusals_name_the_sample_and_the_group() -> None:
    meta = [{"product": "a"}] * 12
    fitted = fit_groups(np.arange(12.0), meta, "product")
    with pytest.raises(AnomalyConfigError, match=r"'s9'.*product='c' was not among the groups fitted \(a\)"):
        normalise(np.ones(1), [{"product": "c"}], fitted, ["s9"])
    with pytest.raises(AnomalyConfigError, match="sample 's1' has no metadata 'product'"):
        normalise(np.ones(1), [{}], fitted, ["s1"])
    with pytest.raises(AnomalyConfigError, match="group product='b' has 3 held-out normal samples, at least 10"):
        fit_groups(np.arange(15.0), meta + [{"product": "b"}] * 3, "product")


def _site(sid: str, rng: np.random.Generator, noise: float, product: str, defect: bool = False) -> Sample:
    y, x = np.mgrid[0:32, 0:32]
    img = 0.5 + 0.15 * np.sin(x / 2.5) * np.cos(y / 3.5) + rng.normal(0, noise, (32, 32))
    if defect:
        img[12:20, 12:20] -= 0.12
    return Sample(sid, [View(Role.TARGET, 0, np.clip(img, 0, 1).astype(np.float32))], is_abnormal=defect,
                  metadata={"product": product})


def _products(seed: int, n: int, defect: bool = False) -> list[Sample]:
    rng = np.random.default_rng(seed)
    return [_site(f"{p}{seed}_{i}", rng, noise, p, defect) for i in range(n) for p, noise in (("smooth", 0.01),
                                                                                              ("grainy", 0.08))]


def test_detector_on_two_products_ranks_better_with_groups_and_round_trips(tmp_path) -> None:
    fit = _products(1, 30)
    test = _products(2, 12) + _products(3, 12, defect=True)
    y = np.array([s.is_abnormal for s in test])
    plain = AnomalyDetector({**TINY, "calib_fraction": 0.4}).fit(fit)
    grouped = AnomalyDetector({**TINY, "calib_fraction": 0.4, "score_groups": "product"}).fit(fit)
    raw, res = plain.score(test, progress=False), grouped.score(test, progress=False)
    np.testing.assert_allclose(res.raw_scores, raw.scores, rtol=1e-6)  # the same bank: only the scale differs
    auc_raw, auc_grouped = roc_auc_score(y, raw.scores), roc_auc_score(y, res.scores)
    assert auc_raw < 0.95 and auc_grouped > auc_raw + 0.05, (auc_raw, auc_grouped)
    assert set(grouped.score_groups["groups"]) == {"smooth", "grainy"}
    # the threshold was fitted on normalised held-out scores: one threshold for both products
    flagged = grouped.decide(res.scores)
    assert 0 < grouped.threshold["threshold"] < 20 and flagged[~y].mean() <= 0.1 and flagged[y].any()
    grouped.save(tmp_path / "m")
    again = AnomalyDetector.load(tmp_path / "m")
    assert again.score_groups == grouped.score_groups
    np.testing.assert_allclose(again.score(test, progress=False).scores, res.scores, rtol=1e-5)


def _grain_defect(sid: str, rng: np.random.Generator) -> Sample:
    """A smooth-product site with a patch of the grainy product's noise: normal texture, wrong product."""
    s = _site(sid, rng, 0.01, "smooth")
    img = s.targets[0].image.copy()
    img[10:22, 10:22] += rng.normal(0, 0.08, (12, 12)).astype(np.float32)
    return Sample(sid, [View(Role.TARGET, 0, np.clip(img, 0, 1))], is_abnormal=True, metadata={"product": "smooth"})


def test_one_bank_per_group_finds_another_groups_normal_texture_and_round_trips(tmp_path) -> None:
    fit = _products(1, 30)
    rng = np.random.default_rng(4)
    test = [s for s in _products(2, 12) if s.metadata["product"] == "smooth"] + \
        [_grain_defect(f"g{i}", rng) for i in range(12)]
    y = np.array([s.is_abnormal for s in test])
    settings = {**TINY, "calib_fraction": 0.4, "score_groups": "product"}
    shared = AnomalyDetector(settings).fit(fit)
    own = AnomalyDetector({**settings, "bank_per_group": True}).fit(fit)
    assert own.bank_groups.names == ["grainy", "smooth"] and own.bank_groups.bounds[1][1] == len(own.model.bank)
    auc_shared = roc_auc_score(y, shared.score(test, progress=False).scores)
    res = own.score(test, progress=False)
    auc_own = roc_auc_score(y, res.scores)
    assert auc_own > 0.95 and auc_own > auc_shared + 0.1, (auc_shared, auc_own)
    own.save(tmp_path / "m")
    again = AnomalyDetector.load(tmp_path / "m")
    assert again.bank_groups == own.bank_groups
    np.testing.assert_allclose(again.score(test, progress=False).scores, res.scores, rtol=1e-5)
    stranger = _site("x1", rng, 0.01, "shiny")
    with pytest.raises(AnomalyConfigError, match=r"'x1': product='shiny' has no memory bank \(fitted: grainy, "
                                                 r"smooth\)"):
        own.score([stranger], progress=False)
    with pytest.raises(ValueError, match="bank_per_group applies to model: patchcore with score_groups"):
        AnomalyDetector({**TINY, "bank_per_group": True})


def test_score_groups_without_held_out_normals_is_refused_before_fitting(monkeypatch) -> None:
    def no_fit(*_a: object, **_k: object) -> None:
        raise AssertionError("fitted before the refusal")

    monkeypatch.setattr(AnomalyDetector, "_fit_patchcore", no_fit)
    with pytest.raises(AnomalyConfigError, match="score_groups needs held-out normal samples"):
        AnomalyDetector({**TINY, "calib_fraction": 0.0, "score_groups": "product"}).fit(_products(1, 6))
    with pytest.raises(AnomalyConfigError, match="has no metadata 'line'"):
        AnomalyDetector({**TINY, "calib_fraction": 0.5, "score_groups": "line"}).fit(_products(1, 20))


def test_cli_fit_and_predict_with_score_groups(tmp_path) -> None:
    """Through `anomaly fit --set score_groups=...` and `anomaly predict`: a raw_score column beside the
    scaled score; too few held-out normals of a group are refused in one line."""
    import json

    import pandas as pd
    from typer.testing import CliRunner

    from seminspect.cli import app

    synth = pytest.importorskip("seminspect.data.synth")
    fab = tmp_path / "ds"
    synth.generate_dataset(fab, 48, synth.FabConfig(image_size=64, n_angles=1, n_references=1),
                           abnormal_fraction=0.5, seed=0, workers=1, splits={"train": 1.0})
    sets = ["backbone=tiny", "pretrained=false", "out_indices=[0,1,2]", "layers=[0,1]", "conditioning=reference",
            "max_bank_patches=300", "calib_fraction=0.5"]
    args = ["anomaly", "fit", str(fab), "-o", str(tmp_path / "m"), *[x for s in sets for x in ("--set", s)]]
    runner = CliRunner()
    res = runner.invoke(app, [*args, "--set", "score_groups=difficulty"])
    assert res.exit_code == 0, res.output
    assert "scores scaled per difficulty: medium (median" in res.output
    groups = json.loads((tmp_path / "m" / "config.json").read_text())["score_groups"]
    assert groups["key"] == "difficulty" and groups["groups"]["medium"]["n"] >= 10
    res = runner.invoke(app, ["anomaly", "predict", str(tmp_path / "m"), str(fab), "-o", str(tmp_path / "s.csv")])
    assert res.exit_code == 0, res.output
    df = pd.read_csv(tmp_path / "s.csv")
    g = groups["groups"]["medium"]
    np.testing.assert_allclose(df["score"], (df["raw_score"] - g["median"]) / g["iqr"], rtol=1e-6)
    res = runner.invoke(app, [*args, "--set", "score_groups=difficulty", "--set", "bank_per_group=true"])
    assert res.exit_code == 0, res.output
    assert "one memory bank per difficulty: medium (" in res.output
    res = runner.invoke(app, [*args, "--set", "score_groups=lot"])  # 12 lots: a few normals each
    assert res.exit_code != 0 and "held-out normal samples, at least 10 are needed" in str(res.exception)

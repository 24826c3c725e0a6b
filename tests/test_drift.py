"""Drift: sliced Wasserstein permutation test (size under the null, power under a shift), CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from seminspect.drift import DriftError, drift_test, sliced_wasserstein


def test_same_distribution_false_positive_rate() -> None:
    """Repeated random splits of one set: rejections at alpha stay within 1.5x alpha."""
    rng = np.random.default_rng(0)
    pool = rng.normal(size=(400, 8)) @ rng.normal(size=(8, 8))
    alpha, reps = 0.2, 30
    pvals = []
    for r in range(reps):
        idx = np.random.default_rng(100 + r).permutation(len(pool))
        pvals.append(drift_test(pool[idx[:30]], pool[idx[30:60]], n_permutations=40, n_projections=32,
                                seed=r).p_value)
    pvals = np.array(pvals)
    assert np.mean(pvals < alpha) <= 1.5 * alpha
    assert 0.3 < np.mean(pvals) < 0.7  # roughly uniform


def test_shift_detected() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(size=(50, 8))
    b = rng.normal(size=(50, 8)) + np.r_[1.2, np.zeros(7)]
    res = drift_test(a, b, n_permutations=200, n_projections=64, seed=0)
    assert res.p_value < 0.01
    assert res.distance > res.null_q95
    same = drift_test(a[:25], a[25:], n_permutations=100, seed=0)
    assert same.p_value > 0.05


def test_swd_deterministic_and_errors() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(20, 4)), rng.normal(size=(20, 4)) + 1
    assert sliced_wasserstein(a, b, seed=3) == sliced_wasserstein(a, b, seed=3)
    assert sliced_wasserstein(a, a) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(DriftError):
        drift_test(a, b[:, :3])
    with pytest.raises(DriftError):
        drift_test(a[:1], b)


def test_cli_drift(tmp_path) -> None:
    from typer.testing import CliRunner

    from seminspect.cli import app
    from seminspect.data.imageio import to_uint
    from seminspect.data.manifest import DatasetWriter

    def write(root, offset: float, seed: int) -> None:
        rng = np.random.default_rng(seed)
        with DatasetWriter(root) as w:
            for i in range(12):
                img = np.clip(rng.normal(0.4 + offset, 0.1, (32, 32)), 0, 1)
                from seminspect.data.sample import Sample, View

                w.add(Sample(f"s{i}", [View("target", 0, to_uint(img))], is_abnormal=False))

    write(tmp_path / "a", 0.0, 0)
    write(tmp_path / "b", 0.3, 1)
    res = CliRunner().invoke(app, ["drift", str(tmp_path / "a"), str(tmp_path / "b"), "--backbone", "tiny",
                                   "--image-size", "32", "--n-permutations", "50", "-o", str(tmp_path / "d.json")])
    assert res.exit_code == 0, res.output
    out = json.loads((tmp_path / "d.json").read_text())
    assert out["p_value"] < 0.05

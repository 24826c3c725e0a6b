"""Helpers the benchmark scripts share (``benchmarks/`` is not a package: imported by path)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
anomaly_deeppcb = pytest.importorskip("anomaly_deeppcb")

from seminspect.data.sample import Sample, View  # noqa: E402


def _crops(n_pairs: int = 10, per_pair: int = 20) -> list[Sample]:
    img = np.zeros((8, 8), np.uint8)
    return [Sample(f"te{p}_{'a' if k % 5 == 0 else 'n'}{k}", [View("target", 0, img)], is_abnormal=k % 5 == 0)
            for p in range(n_pairs) for k in range(per_pair)]


def test_random_normals_come_from_every_pair_and_keep_the_abnormal_draw() -> None:
    crops = _crops()
    first = anomaly_deeppcb.balanced_selection(crops, 40, np.random.default_rng(0), "first")
    rand = anomaly_deeppcb.balanced_selection(crops, 40, np.random.default_rng(0), "random")
    assert [s.sample_id for s in first[:20]] == [s.sample_id for s in rand[:20]]  # abnormal half unchanged
    assert all(s.is_abnormal for s in rand[:20]) and not any(s.is_abnormal for s in rand[20:])
    pairs_first = {s.sample_id.split("_")[0] for s in first[20:]}
    pairs_rand = {s.sample_id.split("_")[0] for s in rand[20:]}
    assert pairs_first == {"te0", "te1"}  # the first 20 normals: 16 per pair, from two pairs only
    assert len(pairs_rand) >= 6
    again = anomaly_deeppcb.balanced_selection(crops, 40, np.random.default_rng(0))
    assert [s.sample_id for s in again] == [s.sample_id for s in rand]  # seeded: the same draw
    with pytest.raises(ValueError, match="normals must be one of"):
        anomaly_deeppcb.balanced_selection(crops, 40, np.random.default_rng(0), "last")


def test_no_benchmark_script_writes_a_fixed_date_into_its_result() -> None:
    """Result files carry the day they ran (bench_env.now), never a date literal in a header line."""
    import re
    from datetime import UTC, datetime

    import bench_env

    literal = re.compile(r"""(?i)["'`(]\s*-?\s*date:\s*20\d\d-\d\d-\d\d|dt\.date\(20\d\d""")
    offenders = [p.name for p in sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py"))
                 if literal.search(p.read_text())]
    assert offenders == []
    assert bench_env.now().startswith(datetime.now(UTC).strftime("%Y-%m-%d"))
    assert bench_env.cpu_model() and "cores" in bench_env.machine()

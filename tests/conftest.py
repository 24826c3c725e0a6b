"""Test fixtures shared by the suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Any hub lookup must fail at once, never wait on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("SEMINSPECT_PROGRESS", "0")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_data(sub: str) -> Path:
    """Path under ../shared/data, or skip the test with a reason when it is absent."""
    path = SHARED_DATA / sub
    if not path.exists():
        pytest.skip(f"real data not available: {path} is absent (it sits beside the repository in CI)")
    return path


def stripe_pair(i: int, size: int, box: slice, abnormal: bool = False):
    """A target/reference pair of seeded noisy stripes (period 6-8 px); an abnormal target is bright over
    ``box`` x ``box`` and carries that mask. Shared by the small STPM tests."""
    import numpy as np

    from seminspect.data.imageio import to_uint
    from seminspect.data.sample import Sample, View

    rng = np.random.default_rng(i)
    xx = np.arange(size)[None, :].repeat(size, 0)
    base = 0.5 + 0.25 * np.sign(np.sin(2 * np.pi * xx / rng.uniform(6, 8) + rng.uniform(0, 6)))
    target = base + rng.normal(0, 0.02, base.shape)
    mask = np.zeros_like(base, bool)
    if abnormal:
        mask[box, box] = True
        target = np.where(mask, 0.95, target)
    ref = base + rng.normal(0, 0.02, base.shape)
    return Sample(f"s{i}", [View("target", 0, to_uint(np.clip(target, 0, 1)), mask=mask),
                            View("reference", 0, to_uint(np.clip(ref, 0, 1)))], is_abnormal=abnormal)


@pytest.fixture(autouse=True)
def _few_threads():
    import torch

    torch.set_num_threads(1)
    yield

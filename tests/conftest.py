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


STPM64 = 64  # side of the MobileNetV2 STPM test pairs


def stpm64_sample(i: int, abnormal: bool = False):
    """A 64 px stripe pair (defect box 26-38) for the MobileNetV2 STPM tests (mixed pairs, teacher tuning)."""
    return stripe_pair(i, STPM64, slice(26, 38), abnormal)


def stpm64_config(**kw):
    """The small MobileNetV2 STPM config those tests share (untrained weights, 2 epochs), with ``kw`` over it."""
    from seminspect.models.anomaly import AnomalyConfig

    base = dict(model="stpm", backbone="mobilenetv2", pretrained=False, out_indices=[1, 2, 3],
                layer_weights=[1, 1, 1], sigma=1.0, batch_size=4, epochs=2, lr=3e-3)
    return AnomalyConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def stpm64_train():
    """Six normal :func:`stpm64_sample` pairs."""
    return [stpm64_sample(i) for i in range(6)]


@pytest.fixture(autouse=True)
def _few_threads():
    import torch

    torch.set_num_threads(1)
    yield

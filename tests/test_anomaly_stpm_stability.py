"""STPM training stays finite on binarised, partly flat images (the DeepPCB NaN regression).

Root cause of the old divergence: an epoch's last batch held one or two flat (all-black or
all-white) crops; train-mode BatchNorm normalised their rounding-noise variance, multiplying the
backward gradient by ~1/sqrt(eps) per layer until it overflowed, and Adam wrote NaN into the
student. These tests fail on that code.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seminspect.data.sample import Sample, View
from seminspect.models.anomaly import AnomalyDetector
from seminspect.models.anomaly.stpm_fit import stpm_batches


def _flat(i: int, value: int, size: int = 64) -> Sample:
    img = np.full((size, size), value, np.uint8)
    return Sample(f"flat{i}", [View("target", 0, img), View("reference", 0, img.copy())], is_abnormal=False)


def test_stpm_batches_never_leave_a_short_remainder() -> None:
    order = torch.arange(17)
    batches = stpm_batches(order, 16)
    assert [len(b) for b in batches] == [17]
    assert torch.equal(torch.cat(batches), order)  # every sample once, order kept
    assert [len(b) for b in stpm_batches(torch.arange(36), 16)] == [16, 20]
    assert [len(b) for b in stpm_batches(torch.arange(40), 16)] == [16, 16, 8]
    assert [len(b) for b in stpm_batches(torch.arange(40), 8)] == [8, 8, 8, 8, 8]
    assert [len(b) for b in stpm_batches(torch.arange(1), 16)] == [1]
    assert stpm_batches(torch.arange(0), 16) == []


@pytest.mark.parametrize("mode", ["template", "classic"])
def test_stpm_on_binarised_flat_crops_stays_finite(mode: str) -> None:
    try:
        det = AnomalyDetector(dict(model="stpm", stpm_mode=mode, backbone="mobilenetv2", pretrained=True,
                                   out_indices=[1, 2, 3], epochs=3, batch_size=16, lr=1e-3,
                                   registration="off", sigma=2.0))
    except Exception as exc:  # noqa: BLE001 - the pretrained weights package is optional
        pytest.skip(f"MobileNetV2 weights not available: {exc}")
    # 17 binarised crops, half black, half white: 16 + a remainder of 1, as on DeepPCB
    samples = [_flat(i, 255 * (i % 2)) for i in range(17)]
    det.fit(samples, calib=samples[:4])
    losses = det.history["losses"]
    assert len(losses) == 3 and np.isfinite(losses).all()
    assert all(torch.isfinite(p).all() for p in det.model.student.parameters())
    scores, maps = det.predict(samples[:4])
    assert np.isfinite(scores).all() and np.isfinite(maps).all()


def test_stpm_skips_a_batch_of_one_flat_grey() -> None:
    from seminspect.models.anomaly import TinyConvBackbone

    det = AnomalyDetector(dict(model="stpm", stpm_mode="classic", backbone="tiny", pretrained=False,
                               out_indices=[0, 1, 2], epochs=2, batch_size=4, registration="off", sigma=2.0),
                          backbone=TinyConvBackbone(out_indices=[0, 1, 2]))
    samples = [_flat(i, 128) for i in range(4)]  # one batch, all the same flat grey: nothing to learn
    det.fit(samples, calib=samples[:2])
    assert det.history["skipped_featureless_batches"] == 2
    assert np.isfinite(det.predict(samples[:2])[0]).all()


def test_every_trained_model_refuses_a_step_on_a_non_finite_loss() -> None:
    """``checked_step``: the DRAEM, diffusion (denoiser and student) and teacher fine-tuning loops' optimiser step."""
    from seminspect.models.anomaly.features import AnomalyConfigError
    from seminspect.models.anomaly.train_state import checked_step

    lin = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    before = lin.weight.detach().clone()
    with pytest.raises(AnomalyConfigError, match=r"^diffusion student training diverged \(non-finite loss\) in "
                                                 r"epoch 3; lower lr$"):
        checked_step(opt, lin(torch.full((2, 3), float("nan"))).sum(), "diffusion student training", 3)
    assert torch.equal(lin.weight, before)  # no step taken
    value = checked_step(opt, lin(torch.ones(2, 3)).sum(), "DRAEM training", 1)
    assert np.isfinite(value) and not torch.equal(lin.weight, before)

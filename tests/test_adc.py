"""Multi-view ADC model and losses: shapes, masking, hand-computed losses."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from seminspect.data.batch import collate
from seminspect.data.manifest import DatasetInfo, DatasetWriter
from seminspect.data.sample import Role, Sample, View
from seminspect.data.taxonomy import Taxonomy
from seminspect.models.adc import MultiViewADC, TinyBackbone, reference_slots
from seminspect.training.losses import focal_loss, hierarchical_loss, type_loss

TAX = Taxonomy.builtin("deeppcb")  # 2 families, 6 types


# ----- a tiny, easy synthetic task shared with test_training ------------------------------------
def make_sample(i: int, rng: np.random.Generator, size: int = 64, n_angles: int = 2, n_refs: int | None = None,
                n_zooms: int = 0, split: str = "train") -> Sample:
    """Background texture identical in target and reference; abnormal targets carry a blob whose
    shape encodes the type (leaf ``i % 6``)."""
    n_refs = n_angles if n_refs is None else n_refs
    abnormal = i % 2 == 1
    leaf = TAX.leaves[(i // 2) % TAX.num_leaves] if abnormal else None
    base = (rng.random((size, size)) * 60 + 60).astype(np.uint8)
    views = []
    for a in range(n_angles):
        img = base.copy()
        if abnormal:
            k = TAX.leaf_index(leaf)
            c = size // 2
            if k < 3:
                img[c - 2 - 2 * k:c + 3 + 2 * k, c - 2:c + 3] = 250  # vertical bar, length by type
            else:
                img[c - 2:c + 3, c - 2 - 2 * (k - 3):c + 3 + 2 * (k - 3)] = 10  # dark horizontal bar
        views.append(View(Role.TARGET, a, img))
    for a in range(n_refs):
        views.append(View(Role.REFERENCE, a, base.copy()))
    for z in range(n_zooms):
        views.append(View(Role.ZOOM, z, base.copy()))
    return Sample(f"s{i:04d}", views, is_abnormal=abnormal, defect_type=leaf, metadata={"split": split})


def make_dataset(root: Path, n: int = 96, seed: int = 0, **kw) -> Path:
    rng = np.random.default_rng(seed)
    splits = ["train", "train", "calib", "test"]
    with DatasetWriter(root, DatasetInfo(taxonomy="deeppcb")) as w:
        for i in range(n):
            w.add(make_sample(i, rng, split=splits[(i // 2) % 4], **kw))
    return root


def tiny_model(fusion: str = "attention", **kw) -> MultiViewADC:
    torch.manual_seed(0)
    return MultiViewADC(backbone=TinyBackbone(), taxonomy=TAX, grid=4, dim=16, fusion=fusion, **kw)


# ----- shapes --------------------------------------------------------------------------------------
@pytest.mark.parametrize("fusion", ["mean", "attention", "gru"])
def test_forward_shapes_for_view_configurations(fusion):
    rng = np.random.default_rng(0)
    samples = [
        make_sample(1, rng, n_angles=1, n_refs=0),           # one target only
        make_sample(3, rng, n_angles=1, n_refs=1),           # target + reference
        make_sample(5, rng, n_angles=5, n_refs=5, n_zooms=2),  # 5 + 5 + 2
    ]
    model = tiny_model(fusion).eval()
    batch = collate(samples, TAX)  # mixed configurations in one batch
    assert batch.images.shape[:2] == (3, 12)
    out = model(batch)
    assert out["abnormal_logit"].shape == (3,)
    assert out["type_logits"].shape == (3, 6)
    assert out["level_logits"]["family"].shape == (3, 2)
    assert torch.isfinite(out["abnormal_logit"]).all()
    # Each sample alone gives the same result as inside the mixed batch (padding has no effect).
    for i, s in enumerate(samples):
        alone = model(collate([s], TAX))
        torch.testing.assert_close(alone["abnormal_logit"][0], out["abnormal_logit"][i], atol=1e-5, rtol=1e-4)
    proba = model.predict_proba(out)
    torch.testing.assert_close(proba["levels"]["family"].sum(1), torch.ones(3))


def test_padded_views_pixels_do_not_matter_and_zoom_stream_is_masked():
    rng = np.random.default_rng(1)
    model = tiny_model().eval()
    batch = collate([make_sample(1, rng, n_angles=2), make_sample(3, rng, n_angles=2, n_zooms=2)], TAX)
    out1 = model(batch)
    images = batch.images.clone()
    images[~batch.view_mask] = torch.rand_like(images[~batch.view_mask])  # garbage in padded slots
    out2 = model(images, batch.roles, batch.indices, batch.view_mask)
    torch.testing.assert_close(out1["abnormal_logit"], out2["abnormal_logit"])
    # Masking the zoom views out makes the sample equal to one that never had zooms.
    vm = batch.view_mask.clone()
    vm[batch.roles == Role.ZOOM.code] = False
    masked = model(batch.images, batch.roles, batch.indices, vm)
    torch.testing.assert_close(masked["abnormal_logit"][0], out1["abnormal_logit"][0])  # sample 0 had no zooms
    with_zoom = make_sample(3, np.random.default_rng(5), n_angles=2, n_zooms=2)
    without = Sample(with_zoom.sample_id, [v for v in with_zoom.views if v.role != Role.ZOOM])
    b_z = collate([with_zoom], TAX)
    vm_z = b_z.view_mask & (b_z.roles != Role.ZOOM.code)
    torch.testing.assert_close(model(b_z.images, b_z.roles, b_z.indices, vm_z)["abnormal_logit"],
                               model(collate([without], TAX))["abnormal_logit"], atol=1e-5, rtol=1e-4)
    # Zoom pixels matter when zooms are present (the stream is live) ...
    images3 = batch.images.clone()
    images3[batch.roles == Role.ZOOM.code] = 1.0
    out3 = model(images3, batch.roles, batch.indices, batch.view_mask)
    assert not torch.allclose(out3["abnormal_logit"][1], out1["abnormal_logit"][1])
    # ... and not at all once masked out.
    out4 = model(images3, batch.roles, batch.indices, vm)
    torch.testing.assert_close(out4["abnormal_logit"], masked["abnormal_logit"])


def test_reference_slots_pair_same_index():
    roles = torch.tensor([[0, 0, 1, 1, 2], [0, 1, -1, -1, -1]])
    idx = torch.tensor([[0, 3, 3, 0, 0], [2, 5, -1, -1, -1]])
    assert reference_slots(roles, idx).tolist() == [[3, 2, -1, -1, -1], [-1, -1, -1, -1, -1]]


def test_missing_reference_uses_learned_embedding():
    rng = np.random.default_rng(2)
    model = tiny_model().eval()
    with_ref = model(collate([make_sample(1, rng, n_angles=1, n_refs=1)], TAX))
    s = make_sample(1, np.random.default_rng(2), n_angles=1, n_refs=0)
    before = model(collate([s], TAX))["abnormal_logit"]
    with torch.no_grad():
        model.no_reference.add_(1.0)
    after = model(collate([s], TAX))["abnormal_logit"]
    assert not torch.allclose(before, after)
    assert with_ref["abnormal_logit"].shape == (1,)



def test_independent_level_features_give_each_type_head_its_own_trunk():
    rng = np.random.default_rng(3)
    batch = collate([make_sample(1, rng, n_angles=2), make_sample(3, rng, n_angles=2, n_zooms=1)], TAX)
    shared = tiny_model().eval()
    out = shared(batch)
    assert not hasattr(shared, "level_trunks")  # shared: every head reads the one embedding
    torch.testing.assert_close(shared.type_head(out["embedding"]), out["type_logits"])
    torch.testing.assert_close(shared.abnormal_head(out["embedding"]).squeeze(1), out["abnormal_logit"])
    model = tiny_model(level_features="independent").eval()
    assert len(model.level_trunks) == 2  # leaf types + the family level of the deeppcb tree
    before = model(batch)
    assert before["type_logits"].shape == (2, 6) and before["level_logits"]["family"].shape == (2, 2)
    with torch.no_grad():  # the family head's own trunk moves the family logits only
        model.level_trunks[1][0].bias.add_(1.0)
    after = model(batch)
    assert not torch.allclose(after["level_logits"]["family"], before["level_logits"]["family"])
    torch.testing.assert_close(after["type_logits"], before["type_logits"])
    torch.testing.assert_close(after["abnormal_logit"], before["abnormal_logit"])
    with torch.no_grad():  # and the leaf trunk moves the type logits and the embedding, not the abnormal logit
        model.level_trunks[0][0].bias.add_(1.0)
    moved = model(batch)
    assert not torch.allclose(moved["type_logits"], after["type_logits"])
    assert not torch.allclose(moved["embedding"], after["embedding"])
    torch.testing.assert_close(moved["abnormal_logit"], after["abnormal_logit"])
    with pytest.raises(ValueError, match="level_features"):
        tiny_model(level_features="separate")


def test_cbam_gates_the_grid_and_keeps_padding_inert():
    from seminspect.models.cbam import GridCBAM

    torch.manual_seed(0)
    cbam = GridCBAM(16)
    h = torch.randn(2, 3, 4, 4, 16)
    g = cbam(h)
    assert g.shape == h.shape
    ratio = g / h  # every cell and channel scaled by a product of two sigmoids
    assert bool(((ratio > 0) & (ratio < 1)).all())
    with pytest.raises(ValueError, match="odd"):
        GridCBAM(16, kernel=4)
    rng = np.random.default_rng(4)
    model = tiny_model(attention="cbam").eval()
    batch = collate([make_sample(1, rng, n_angles=1), make_sample(3, rng, n_angles=3)], TAX)
    out = model(batch)
    images = batch.images.clone()
    images[~batch.view_mask] = torch.rand_like(images[~batch.view_mask])
    torch.testing.assert_close(model(images, batch.roles, batch.indices, batch.view_mask)["type_logits"],
                               out["type_logits"])
    with torch.no_grad():
        model.cbam.spatial.bias.add_(2.0)
    assert not torch.allclose(model(batch)["type_logits"], out["type_logits"])
    with pytest.raises(ValueError, match="attention"):
        tiny_model(attention="se")

# ----- losses against hand-computed values -----------------------------------------------------------
def test_focal_loss_hand_computed():
    logits = torch.tensor([0.0, 2.0, -1.0])
    y = torch.tensor([1, 0, 0])
    # p = [0.5, 0.8808, 0.2689]; p_t = [0.5, 0.1192, 0.7311]
    pt = [0.5, 1 - 1 / (1 + math.exp(-2.0)), 1 - 1 / (1 + math.exp(1.0))]
    expect = sum(-0.5 * (1 - p) ** 2 * math.log(p) for p in pt) / 3
    assert float(focal_loss(logits, y, gamma=2.0, alpha=0.5)) == pytest.approx(expect, rel=1e-5)
    # gamma = 0, alpha = 0.5 is half the plain BCE
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, y.float())
    assert float(focal_loss(logits, y, gamma=0.0)) == pytest.approx(0.5 * float(bce), rel=1e-6)


def test_type_loss_only_on_typed_samples():
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    idx = torch.tensor([0, -1])
    expect = -math.log(math.exp(2) / (math.exp(2) + 1))
    assert float(type_loss(logits, idx, smoothing=0.0)) == pytest.approx(expect, rel=1e-6)
    assert float(type_loss(logits, torch.tensor([-1, -1]))) == 0.0


def test_hierarchical_loss_hand_computed():
    # 3 leaves: {a, b} under node 0, {c} under node 1.
    m = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    logits = torch.log(torch.tensor([[0.2, 0.3, 0.5]]))
    # leaf b (index 1): ancestor node 0 with summed probability 0.5
    val = hierarchical_loss(logits, torch.tensor([1]), {"family": m}, None)
    assert float(val) == pytest.approx(-math.log(0.5), rel=1e-5)
    # with a level head: + CE(head) + consistency * KL(q || head)
    head = torch.log(torch.tensor([[0.25, 0.75]]))
    q = np.array([0.5, 0.5])
    kl = float((q * np.log(q / np.array([0.25, 0.75]))).sum())
    val2 = hierarchical_loss(logits, torch.tensor([1]), {"family": m}, {"family": head}, consistency=0.5)
    assert float(val2) == pytest.approx(-math.log(0.5) - math.log(0.25) + 0.5 * kl, rel=1e-5)

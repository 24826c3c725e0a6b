"""Sample, manifest round trip, taxonomy and collate."""

from __future__ import annotations

import numpy as np
import pytest

from seminspect.data import (
    DatasetInfo,
    DatasetWriter,
    ImageReadError,
    ManifestError,
    Role,
    Sample,
    SampleDataset,
    Taxonomy,
    TaxonomyError,
    View,
    collate,
    read_image,
    write_image,
)


def _sample(sid: str, n_angles: int = 2, zooms: int = 0, bits: int = 8, abnormal: bool = True) -> Sample:
    rng = np.random.default_rng(0)
    dtype = np.uint8 if bits == 8 else np.uint16
    top = 255 if bits == 8 else 65535
    views = []
    for i in range(n_angles):
        views.append(View(Role.TARGET, i, rng.integers(0, top, (32, 40), dtype=dtype),
                          mask=np.eye(32, 40, dtype=bool)))
        views.append(View(Role.REFERENCE, i, rng.integers(0, top, (32, 40), dtype=dtype)))
    for z in range(zooms):
        views.append(View(Role.ZOOM, z, rng.integers(0, top, (32, 40), dtype=dtype)))
    return Sample(sid, views, is_abnormal=abnormal, defect_type="bridge" if abnormal else None,
                  depth=rng.random((32, 40)).astype(np.float32), metadata={"lot": "L1", "tool": "T7"})


def test_views_sorted_and_paired():
    s = _sample("a", n_angles=3, zooms=1)
    assert [v.role for v in s.views[:3]] == [Role.TARGET] * 3
    pairs = s.pairs()
    assert len(pairs) == 3 and all(r is not None and r.index == t.index for t, r in pairs)
    assert s.defect_mask is not None and s.defect_mask.sum() == 32


def test_sample_rejects_bad_structure():
    img = np.zeros((4, 4), np.uint8)
    with pytest.raises(ValueError, match="no views"):
        Sample("x", [])
    with pytest.raises(ValueError, match="same role and index"):
        Sample("x", [View("target", 0, img), View("target", 0, img)])
    with pytest.raises(ValueError, match="at most 15"):
        Sample("x", [View("zoom", i, img) for i in range(16)])
    with pytest.raises(ValueError, match="unknown view role"):
        View("sideways", 0, img)


@pytest.mark.parametrize("bits,fmt", [(8, "png"), (16, "png"), (16, "tiff"), (8, "tiff")])
def test_image_round_trip_is_exact(tmp_path, bits, fmt):
    rng = np.random.default_rng(1)
    img = rng.integers(0, 2**bits - 1, (17, 23), dtype=np.uint8 if bits == 8 else np.uint16)
    write_image(tmp_path / f"x.{fmt}", img)
    back = read_image(tmp_path / f"x.{fmt}")
    assert back.dtype == img.dtype and np.array_equal(back, img)


def test_read_image_errors_name_the_file(tmp_path):
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(ImageReadError, match="corrupt.png"):
        read_image(bad)
    with pytest.raises(ImageReadError, match="missing.tif.*not found"):
        read_image(tmp_path / "missing.tif")


@pytest.mark.parametrize("manifest_format", ["csv", "parquet"])
def test_dataset_round_trip(tmp_path, manifest_format):
    samples = [_sample("s0"), _sample("s1", n_angles=1, zooms=2, bits=16, abnormal=False)]
    with DatasetWriter(tmp_path, DatasetInfo(taxonomy="sem_default"), manifest_format=manifest_format) as w:
        for s in samples:
            w.add(s)
    ds = SampleDataset(tmp_path)
    assert len(ds) == 2
    assert ds.is_abnormal.tolist() == [1, 0]
    assert ds.defect_types == ["bridge", None]
    for orig in samples:
        got = ds.load(orig.sample_id)
        assert [v.key for v in got.views] == [v.key for v in orig.views]
        for a, b in zip(got.views, orig.views, strict=True):
            assert a.image.dtype == b.image.dtype and np.array_equal(a.image, b.image)
        assert np.allclose(got.depth, orig.depth)
        assert got.metadata["lot"] == "L1"
    targets_only = SampleDataset(tmp_path, roles=["target"])
    assert all(v.role == Role.TARGET for v in targets_only[0].views)


def test_manifest_missing_column(tmp_path):
    (tmp_path / "manifest.csv").write_text("sample_id,role,path\na,target,x.png\n")
    with pytest.raises(ManifestError, match="manifest.csv.*missing required column.*index"):
        SampleDataset(tmp_path)


def test_collate_pads_views_and_pairs_reference():
    batch = collate([_sample("a", n_angles=2, zooms=1), _sample("b", n_angles=1, abnormal=False)], Taxonomy.builtin())
    assert batch.images.shape == (2, 5, 1, 32, 40)
    assert batch.view_mask.tolist() == [[True] * 5, [True, True, False, False, False]]
    ref = batch.reference_slot()
    # sample a: slots target0, target1, ref0, ref1, zoom0
    assert ref[0].tolist() == [2, 3, -1, -1, -1]
    assert ref[1].tolist() == [1, -1, -1, -1, -1]
    assert batch.type_index.tolist() == [Taxonomy.builtin().leaf_index("bridge"), -1]
    assert batch.images.dtype.is_floating_point and float(batch.images.max()) <= 1.0


def test_default_taxonomy_shape():
    tax = Taxonomy.builtin("sem_default")
    assert len(tax.nodes("group")) == 2 and len(tax.nodes("family")) == 6 and tax.num_leaves == 19
    assert tax.path("scratch") == ("foreign", "damage", "scratch")
    m = tax.membership("family")
    assert m.shape == (6, 19) and np.all(m.sum(0) == 1)
    assert Taxonomy.from_dict(tax.to_dict()) == tax
    with pytest.raises(TaxonomyError, match="not in taxonomy"):
        tax.leaf_index("alien")


def test_taxonomy_yaml_errors(tmp_path):
    p = tmp_path / "t.yaml"
    p.write_text("name: t\nlevels: [a, b]\ntree:\n  x: [u, v]\n  y: [u]\n")
    with pytest.raises(TaxonomyError, match="unique"):
        Taxonomy.from_yaml(p)
    p.write_text("name: t\nlevels: [a, b, c]\ntree:\n  x: [u]\n")
    with pytest.raises(TaxonomyError, match="depth"):
        Taxonomy.from_yaml(p)

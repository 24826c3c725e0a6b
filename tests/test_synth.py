"""Virtual fab: determinism, every defect type, view layouts, nuisances, datasets and the CLI."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from seminspect.data.dataset import SampleDataset
from seminspect.data.imageio import read_image
from seminspect.data.sample import Role
from seminspect.data.synth import DEFECT_TYPES, FabConfig, FabConfigError, generate_dataset, generate_sample
from seminspect.data.taxonomy import Taxonomy

SMALL = {"image_size": 64}


def _cfg(**kw: object) -> FabConfig:
    return FabConfig(**{**SMALL, **kw})


def test_taxonomy_and_injectors_agree():
    assert set(DEFECT_TYPES) == set(Taxonomy.builtin("sem_default").leaves)


def test_same_seed_same_sample_other_seed_differs():
    cfg = _cfg(n_angles=2, n_zooms=1)
    a = generate_sample(cfg, "bridge", 7, "a")
    b = generate_sample(cfg, "bridge", 7, "a")
    c = generate_sample(cfg, "bridge", 8, "a")
    for va, vb in zip(a.views, b.views, strict=True):
        assert np.array_equal(va.image, vb.image)
    assert np.array_equal(a.depth, b.depth)
    assert a.metadata == b.metadata
    assert not np.array_equal(a.views[0].image, c.views[0].image)


@pytest.mark.parametrize("defect_type", DEFECT_TYPES)
def test_every_type_injects_a_mask_inside_the_image(defect_type):
    cfg = _cfg(n_angles=2, n_references=1, n_zooms=1, difficulty="hard")
    for seed in (0, 1):
        s = generate_sample(cfg, defect_type, seed, "x")
        assert s.is_abnormal is True and s.defect_type == defect_type
        mask = s.defect_mask
        assert mask is not None and mask.shape == (64, 64)
        assert 0 < mask.sum() < mask.size * 0.9
        # Same mask on every target view (the defect is physical, seen by all detectors).
        assert all(np.array_equal(v.mask, mask) for v in s.targets)
        assert s.zooms[0].mask is not None and s.zooms[0].mask.any()
        assert all(v.mask is None for v in s.references)
        # The defect changes the image: target differs from the defect-free target inside the mask.
        assert s.depth is not None and s.depth.dtype == np.float32


def test_defect_is_visible_in_depth_at_easy():
    """A large particle raises the height map inside its mask by tens of nm."""
    cfg = _cfg(n_angles=1, n_references=0, difficulty="easy")
    s = generate_sample(cfg, "large_particle", 3, "x")
    n = generate_sample(cfg, None, 3, "x")  # same seed: same layout stream up to the defect
    assert s.depth[s.defect_mask].max() > 20.0
    assert n.defect_mask is None


def test_normal_samples_have_no_mask_and_zooms_centre_on_site():
    s = generate_sample(_cfg(n_zooms=2), None, 5, "n")
    assert s.is_abnormal is False and s.defect_type is None
    assert s.defect_mask is None and all(v.mask is None for v in s.views)
    assert abs(float(s.metadata["site_y"]) - 32) <= 0.08 * 64 + 1
    assert s.metadata["zoom_mags"] == "2,4"


def test_zooms_centre_on_a_defect_near_the_field_edge():
    """With the defect anywhere in the inner 80 % of the field, each zoom is still centred on it (a
    review SEM centres its zoom on the located defect): the canvas grows, the zoom is not clamped.
    With the canvas of the default offset, far defects sat up to ~37 px off the zoom's centre."""
    cfg = _cfg(image_size=128, n_angles=1, n_zooms=2, site_offset=0.4)
    far = 0
    for seed in range(12):
        s = generate_sample(cfg, "small_particle", seed, "x")
        far += max(abs(float(s.metadata["site_y"]) - 64), abs(float(s.metadata["site_x"]) - 64)) > 32 + 5
        for z in s.zooms:
            ys, xs = np.nonzero(z.mask)
            assert max(abs(ys.mean() - 64), abs(xs.mean() - 64)) < 6, (seed, z.index)
    assert far >= 3  # the check saw defects whose 2x zoom window would have left the old canvas (margin 5)


@pytest.mark.parametrize(
    ("kw", "roles"),
    [
        ({}, {"target": 5, "reference": 5, "zoom": 0}),
        ({"n_references": 0, "n_zooms": 0}, {"target": 5, "reference": 0, "zoom": 0}),
        ({"n_angles": 1, "n_zooms": 3}, {"target": 1, "reference": 1, "zoom": 3}),
        ({"n_angles": 1, "n_references": 0}, {"target": 1, "reference": 0, "zoom": 0}),
        ({"n_angles": 0, "n_references": 2, "n_zooms": 1}, {"target": 0, "reference": 2, "zoom": 1}),
    ],
)
def test_view_counts_and_roles(kw, roles):
    s = generate_sample(_cfg(**kw), "small_particle", 1, "v")
    got = {r.value: len(s.by_role(r)) for r in Role}
    assert got == roles
    for v in s.views:
        assert v.image.shape == (64, 64) and v.image.dtype == np.uint8
    assert [v.index for v in s.targets] == list(range(roles["target"]))


def test_config_rejects_bad_settings():
    with pytest.raises(FabConfigError):
        FabConfig.make(n_angles=0, n_references=0, n_zooms=0)
    with pytest.raises(FabConfigError):
        FabConfig.make(pattern_families=["hexagons"])
    with pytest.raises(FabConfigError):
        FabConfig.make(n_angles=6)
    with pytest.raises(FabConfigError):
        generate_sample(_cfg(), "not_a_type", 0, "x")


def test_reference_is_misaligned_within_bounds_and_registers_back():
    """The recorded shift is within the bound, and undoing it aligns reference and target."""
    cfg = _cfg(image_size=96, n_angles=1, n_references=1, max_misalignment_px=3.0, difficulty="easy")
    shifts = []
    for seed in range(6):
        s = generate_sample(cfg, None, seed, "r")
        dy, dx = float(s.metadata["ref_dy"]), float(s.metadata["ref_dx"])
        assert abs(dy) <= 3.0 and abs(dx) <= 3.0
        shifts.append((dy, dx))
        t = s.targets[0].image.astype(np.float64)
        r = s.references[0].image.astype(np.float64)
        # reference(y, x) shows target(y + dy, x + dx): the best integer shift of the reference is ~(dy, dx)
        best, err = None, np.inf
        for sy in range(-4, 5):
            for sx in range(-4, 5):
                a = t[8 + sy:88 + sy, 8 + sx:88 + sx]
                b = r[8:88, 8:88]
                e = np.mean((a - a.mean() - (b - b.mean())) ** 2)
                if e < err:
                    best, err = (sy, sx), e
        assert abs(best[0] - dy) <= 1.0 and abs(best[1] - dx) <= 1.0, (best, dy, dx)
    assert len(set(shifts)) == len(shifts)


def test_16_bit_output_uses_the_range():
    s = generate_sample(_cfg(n_angles=1, n_references=1, bits=16), "residue", 2, "b")
    img = s.targets[0].image
    assert img.dtype == np.uint16
    assert img.max() > 4096  # not 8-bit values stored in 16-bit
    assert len(np.unique(img)) > 256


def test_difficulty_changes_noise():
    """Hard images are noisier (lower dose) than easy ones of the same site."""
    def noise(d: str) -> float:
        s = generate_sample(_cfg(image_size=96, n_angles=1, n_references=0, difficulty=d), None, 4, "d")
        a = s.targets[0].image.astype(np.float64)
        return float(np.std(a[1:, :] - a[:-1, :]))

    assert noise("hard") > noise("easy") * 1.3


def test_generate_dataset_splits_hold_every_type_and_resume(tmp_path):
    cfg = _cfg(n_angles=1, n_references=1)
    n = 2 * len(DEFECT_TYPES) * 3 // 2 * 2  # 114 samples: 57 abnormal = 3 per type
    root = generate_dataset(tmp_path / "ds", n, cfg, abnormal_fraction=0.5, seed=3, workers=1)
    ds = SampleDataset(root)
    assert len(ds) == n
    assert set(ds.metadata_column("split")) == {"train", "calib", "test"}
    for split in ("train", "calib", "test"):
        sub = ds.split(split)
        types = {t for t in sub.defect_types if t}
        assert types == set(DEFECT_TYPES), split
        assert (sub.is_abnormal == 0).any()
    s = ds[0]
    assert s.depth is not None and s.metadata["product"]
    assert ds.info.depth_units == "nm"
    # Resume: delete one sample's completion marker and the manifest; the rest is reused unchanged.
    first = read_image(root / "images" / "s000001" / "target0.png")
    (root / "manifest.csv").unlink()
    (root / "images" / "s000000" / "rows.json").unlink()
    mtime = (root / "images" / "s000001" / "target0.png").stat().st_mtime_ns
    generate_dataset(root, n, cfg, abnormal_fraction=0.5, seed=3, workers=1)
    assert (root / "images" / "s000001" / "target0.png").stat().st_mtime_ns == mtime
    assert np.array_equal(read_image(root / "images" / "s000001" / "target0.png"), first)
    assert len(SampleDataset(root)) == n
    # Other settings into the same folder are refused.
    from seminspect.errors import SeminspectError

    with pytest.raises(SeminspectError, match="other settings"):
        generate_dataset(root, n, cfg, seed=4, workers=1)


def test_generate_dataset_parallel_matches_serial(tmp_path):
    cfg = _cfg(n_angles=1, n_references=0)
    a = generate_dataset(tmp_path / "a", 6, cfg, seed=1, workers=1)
    b = generate_dataset(tmp_path / "b", 6, cfg, seed=1, workers=2)
    da, db = SampleDataset(a), SampleDataset(b)
    assert da.sample_ids == db.sample_ids
    for i in range(6):
        assert np.array_equal(da[i].views[0].image, db[i].views[0].image)


def test_cli_generate_and_show(tmp_path):
    from seminspect.cli import app

    runner = CliRunner()
    out = tmp_path / "cli_ds"
    res = runner.invoke(app, ["generate", str(out), "--n", "6", "--size", "64", "--angles", "2", "--zooms", "1",
                              "--difficulty", "easy", "--seed", "1", "--workers", "1", "--bits", "16"])
    assert res.exit_code == 0, res.output
    ds = SampleDataset(out)
    assert len(ds) == 6
    assert ds[0].views[0].image.dtype == np.uint16
    assert {v.role for v in ds[0].views} == {Role.TARGET, Role.REFERENCE, Role.ZOOM}
    sheet = tmp_path / "sheet.png"
    res = runner.invoke(app, ["show", str(out), "--out", str(sheet), "--n", "3"])
    assert res.exit_code == 0, res.output
    from PIL import Image

    with Image.open(sheet) as im:  # an RGB figure: three rows of five cells
        assert im.size[0] > 300 and im.size[1] > 200
    res = runner.invoke(app, ["generate", str(tmp_path / "bad"), "--n", "2", "--difficulty", "extreme"])
    assert res.exit_code != 0


def test_show_works_with_a_target_only_dataset(tmp_path):
    """``show`` handles any dataset folder, e.g. one view per sample and no masks."""
    from PIL import Image

    from seminspect.cli import app

    root = generate_dataset(tmp_path / "t", 3, _cfg(n_angles=1, n_references=0), seed=0, workers=1)
    sheet = tmp_path / "t.png"
    res = CliRunner().invoke(app, ["show", str(root), "--out", str(sheet), "--ids", "s000001"])
    assert res.exit_code == 0, res.output
    with Image.open(sheet) as im:
        assert im.size[0] > 100


@pytest.mark.parametrize("n", [20, 60, 200, 761])
def test_split_quotas_hold_for_defects_and_normals(n):
    """Per-type rounding must not starve the small splits of defects (60 sites once gave test 0 defects)."""
    from collections import Counter

    from seminspect.data.synth.dataset import plan_dataset

    fractions = {"train": 0.6, "calib": 0.2, "test": 0.2}
    plan = plan_dataset(n, 0.5, 0, fractions)
    for subset in ([p for p in plan if p[1] is not None], [p for p in plan if p[1] is None], plan):
        counts = Counter(split for *_, split in subset)
        for split, frac in fractions.items():
            assert abs(counts[split] - frac * len(subset)) <= 1.0, (n, split, counts)

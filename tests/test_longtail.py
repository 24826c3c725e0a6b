"""[long-tail] The long-tail virtual fab: the 55-leaf tree, Zipf counts, held-out types, a tiny dataset."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from typer.testing import CliRunner

from seminspect.data.dataset import SampleDataset
from seminspect.data.manifest import DatasetInfo
from seminspect.data.synth import INJECTORS, FabConfig, FabConfigError, generate_dataset, generate_sample
from seminspect.data.synth.longtail import (
    VARIANTS,
    _move_site,
    draw_type_counts,
    families_for,
    longtail_types,
    pick_holdout,
    plan_longtail_dataset,
)
from seminspect.data.taxonomy import Taxonomy
from seminspect.data.validate import validate_dataset

SPLITS = {"train": 0.6, "calib": 0.2, "test": 0.2}


def test_tree_has_40_to_60_leaves_every_one_injectable_under_its_base_family():
    tax = Taxonomy.builtin("sem_longtail")
    default = Taxonomy.builtin("sem_default")
    assert 40 <= tax.num_leaves <= 60
    assert set(tax.leaves) == set(INJECTORS) | set(VARIANTS)
    assert tax.levels == default.levels
    for name, variant in VARIANTS.items():
        assert variant.base in INJECTORS
        assert tax.path(name)[:-1] == default.path(variant.base)[:-1], name
        assert set(families_for(name)) <= set(families_for(variant.base))


def test_seeded_counts_are_heavy_tailed():
    types = longtail_types()
    counts = draw_type_counts(3000, types, exponent=1.0, seed=0)
    assert counts == draw_type_counts(3000, types, exponent=1.0, seed=0)
    assert counts != draw_type_counts(3000, types, exponent=1.0, seed=1)
    assert sum(counts.values()) == 3000 and set(counts) == set(types)
    values = sorted(counts.values(), reverse=True)
    assert list(counts.values())[0] == values[0]  # most frequent first
    assert min(values) >= 1
    assert sum(v >= 100 for v in values) >= 4  # a handful with hundreds ...
    assert values[0] >= 400
    assert sum(v < 80 for v in values) >= 40  # ... and many below the 80-sample training minimum
    # the top 10 % of types hold about half of the defects
    assert sum(values[: len(values) // 10]) > 0.4 * 3000
    # a steeper law: even heavier head
    steep = sorted(draw_type_counts(3000, types, exponent=1.5, seed=0).values(), reverse=True)
    assert steep[0] > values[0]
    with pytest.raises(ValueError, match="n_defects"):
        draw_type_counts(-1, types)


def test_holdout_picks_rare_types_and_keeps_explicit_ones():
    types = longtail_types()
    held = pick_holdout(types, 4, ["bridge"], seed=2)
    assert held[0] == "bridge" and len(held) == 5 and len(set(held)) == 5
    counts = draw_type_counts(3000, types, seed=2)
    median = sorted(counts.values())[len(counts) // 2]
    assert all(counts[t] <= median for t in held[1:])


@pytest.mark.parametrize("n", [12, 300, 4000])
def test_held_out_types_only_in_test(n):
    types = longtail_types()
    held = pick_holdout(types, 5, [], seed=4)
    plan = plan_longtail_dataset(n, 0.75, 4, SPLITS, 1.0, held)
    assert len(plan) == n
    seen = {s: {t for _, t, _, split in plan if split == s and t} for s in SPLITS}
    assert not (seen["train"] | seen["calib"]) & set(held)
    if n >= 300:
        assert set(held) <= seen["test"]  # the test split has types absent from training
        normals = Counter(split for _, t, _, split in plan if t is None)
        assert abs(normals["train"] - 0.6 * sum(normals.values())) <= 1
    with pytest.raises(ValueError, match="'test' split"):
        plan_longtail_dataset(n, 0.5, 4, {"train": 0.8, "calib": 0.2}, 1.0, held)


def test_variants_change_what_they_say():
    cfg = FabConfig(image_size=96, n_angles=1, n_references=0, difficulty="easy")
    for name in VARIANTS:
        s = generate_sample(cfg, name, 0, "x")
        assert s.defect_type == name and s.defect_mask is not None and s.defect_mask.any(), name
    # material: same seed = same layout, site and strength; the dark particle is darker in its mask
    bright, dark = (generate_sample(cfg, t, 5, "x") for t in ("large_particle", "large_particle_dark"))
    mb, md = bright.defect_mask, dark.defect_mask
    assert dark.views[0].image[md].mean() < bright.views[0].image[mb].mean()
    flat = generate_sample(cfg, "large_particle_flat", 5, "x")
    assert flat.depth.max() - 60.0 < 0.5 * (bright.depth.max() - 60.0)  # above the 60 nm lines
    # location: the family restriction holds
    assert all(generate_sample(cfg, "stain_contacts", k, "x").metadata["product"] == "contact_array"
               for k in range(3))


def test_move_site_lands_on_pattern_or_space():
    from seminspect.data.synth.defects import DefectContext
    from seminspect.data.synth.die import DieState
    from seminspect.data.synth.layout import make_layout

    rng = np.random.default_rng(0)
    layout = make_layout("line_space", 120, 1.0, rng)
    die = DieState.from_binary(layout.binary, np.zeros(layout.binary.shape, np.float32))
    ctx = DefectContext(layout, 60.0, 60.0, 0.5, rng, 1.0, 110, 60.0, 2.0)
    on, off = _move_site(die, ctx, True), _move_site(die, ctx, False)
    assert die.binary[int(on.cy), int(on.cx)] and not die.binary[int(off.cy), int(off.cx)]


def test_config_refuses_holdout_without_long_tail_and_unknown_names():
    with pytest.raises(FabConfigError, match="long_tail"):
        FabConfig.make(n_holdout=2)
    with pytest.raises(FabConfigError, match="holdout_types"):
        FabConfig.make(long_tail=True, holdout_types=["no_such_type"])
    # off by default, and then the settings of older datasets stay the same
    assert FabConfig().long_tail_settings() == {}


def test_tiny_long_tail_dataset_validates(tmp_path):
    cfg = FabConfig(image_size=48, n_angles=1, n_references=1, long_tail=True, holdout_types=["crack_on_pattern"])
    root = generate_dataset(tmp_path / "lt", 12, cfg, abnormal_fraction=0.75, seed=1, workers=1)
    info = DatasetInfo.read(root)
    assert info.taxonomy == "sem_longtail"
    assert info.extra["long_tail"]["holdout_types"] == ["crack_on_pattern"]
    report = validate_dataset(root)
    assert report.ok, report
    ds = SampleDataset(root)
    assert len(ds) == 12 and set(ds.metadata_column("split")) <= set(SPLITS)
    tax = Taxonomy.builtin("sem_longtail")
    assert all(t in tax for t in ds.defect_types if t)
    for split, t in zip(ds.metadata_column("split"), ds.defect_types, strict=True):
        assert t != "crack_on_pattern" or split == "test"


def test_cli_long_tail(tmp_path):
    from seminspect.cli import app

    runner = CliRunner()
    out = tmp_path / "cli_lt"
    res = runner.invoke(app, ["generate", str(out), "--n", "4", "--size", "40", "--angles", "1", "--zooms", "0",
                              "--seed", "2", "--workers", "1", "--long-tail", "--holdout", "2"])
    assert res.exit_code == 0, res.output
    info = DatasetInfo.read(out)
    assert info.taxonomy == "sem_longtail" and len(info.extra["long_tail"]["holdout_types"]) == 2
    res = runner.invoke(app, ["generate", str(tmp_path / "bad"), "--n", "2", "--holdout", "2"])
    assert res.exit_code != 0 and "long_tail" in str(res.exception)

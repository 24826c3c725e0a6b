"""Real-data importers: small subsets import, validate clean, and carry the right labels and splits."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import shared_data
from seminspect.data.adapters import (
    AdapterError,
    group_split,
    import_deeppcb,
    import_elpv,
    import_samsung_depth,
    import_sem_pairs,
)
from seminspect.data.dataset import SampleDataset
from seminspect.data.manifest import read_manifest
from seminspect.data.validate import validate_dataset


def _clean(root):
    rep = validate_dataset(root, progress=False)
    assert rep.problems == [], [str(p) for p in rep.problems]
    return rep


def test_group_split_is_group_aware_stratified_and_deterministic():
    groups = [f"g{i // 3}" for i in range(300)]  # 100 groups of 3 items
    strata = [("a" if int(g[1:]) % 4 else "b") for g in groups]
    s1 = group_split(groups, {"train": 0.6, "calib": 0.2, "test": 0.2}, seed=1, strata=strata)
    s2 = group_split(list(reversed(groups)), {"train": 0.6, "calib": 0.2, "test": 0.2}, seed=1,
                     strata=list(reversed(strata)))
    assert s1 == list(reversed(s2))  # order-independent
    by_group = {}
    for g, s in zip(groups, s1, strict=True):
        by_group.setdefault(g, set()).add(s)
    assert all(len(v) == 1 for v in by_group.values())  # never straddles
    for stratum, n in (("a", 75), ("b", 25)):
        names = [next(iter(by_group[g])) for g in by_group if ("a" if int(g[1:]) % 4 else "b") == stratum]
        assert len(names) == n
        assert abs(names.count("train") - 0.6 * n) <= 1 and abs(names.count("test") - 0.2 * n) <= 1
    assert group_split(groups, {"train": 0.6, "calib": 0.2, "test": 0.2}, seed=2) != s1


def test_deeppcb_patches(tmp_path):
    src = shared_data("deeppcb")
    root = import_deeppcb(src, tmp_path / "dp", mode="patches", patch_size=64, normals_per_image=2, limit=4)
    rep = _clean(root)
    from seminspect.data.adapters.deeppcb import read_boxes, read_pairs

    boxes = sum(len(read_boxes(p[3])) for p in read_pairs(src)[:4])
    ds = SampleDataset(root)
    assert int((ds.is_abnormal == 1).sum()) == boxes > 0  # one abnormal sample per box
    assert int((ds.is_abnormal == 0).sum()) == 8
    assert rep.views_per_sample == {2: len(ds)} and rep.roles == {"reference": len(ds), "target": len(ds)}
    assert set(rep.defect_types) <= {"open", "short", "mousebite", "spur", "spurious_copper", "pin_hole"}
    assert ds.taxonomy.name == "deeppcb"
    # each image's crops share one split; the mask marks the box
    df = read_manifest(root)
    assert (df.groupby("image_id")["split"].nunique() == 1).all()
    s = ds[0]
    x1, y1, x2, y2 = map(int, s.metadata["box"].split(","))
    y0, x0 = map(int, s.metadata["crop_yx"].split(","))
    assert s.targets[0].mask[y1 - y0 : y2 - y0, x1 - x0 : x2 - x0].all()
    assert s.targets[0].image.shape[0] >= 64 and s.metadata["source"].endswith("_test.jpg")
    normal = ds[[i for i, a in enumerate(ds.is_abnormal) if a == 0][0]]
    assert normal.targets[0].mask is None and normal.defect_type is None
    # deterministic: same call, same manifest
    again = import_deeppcb(src, tmp_path / "dp2", mode="patches", patch_size=64, normals_per_image=2, limit=4)
    assert (root / "manifest.csv").read_text() == (again / "manifest.csv").read_text()


def test_deeppcb_pairs_and_overwrite(tmp_path):
    src = shared_data("deeppcb")
    root = import_deeppcb(src, tmp_path / "dp", mode="pairs", limit=2)
    rep = _clean(root)
    assert rep.n_samples == 2 and rep.image_sizes == {"640x640": 4} and rep.labels == {"abnormal": 2}
    s = SampleDataset(root)[0]
    assert s.targets[0].mask.any() and len(s.metadata["all_types"].split(";")) == int(s.metadata["n_boxes"])
    with pytest.raises(AdapterError, match="--overwrite"):
        import_deeppcb(src, root, mode="pairs", limit=1)
    import_deeppcb(src, root, mode="pairs", limit=1, overwrite=True)
    assert len(SampleDataset(root)) == 1
    with pytest.raises(AdapterError, match="mode"):
        import_deeppcb(src, tmp_path / "x", mode="bad")


def test_sem_pairs(tmp_path):
    root = import_sem_pairs(shared_data("sem_pairs"), tmp_path / "sp")
    rep = _clean(root)
    assert rep.n_samples == 3 and rep.labels == {"abnormal": 2, "normal": 1}
    assert rep.defect_types == {"large_particle": 1, "small_particle": 1}
    ds = SampleDataset(root)
    shapes = {s.sample_id: s.targets[0].image.shape for s in ds}
    assert shapes == {"case1": (480, 340), "case2": (369, 480), "case3": (480, 480)}
    assert ds[0].metadata["type_source"] == "by eye" and ds[2].is_abnormal is False


def test_elpv_small(tmp_path):
    root = import_elpv(None, tmp_path / "el", limit=40)
    rep = _clean(root)
    assert rep.n_samples == 40 and rep.image_sizes == {"300x300": 40}
    ds = SampleDataset(root)
    probs = np.array([float(p) for p in ds.metadata_column("probability")])
    assert not ((probs > 0) & (probs < 0.5)).any()  # 1/3 cells excluded by default
    assert ((probs >= 0.5) == (ds.is_abnormal == 1)).all() and ((probs == 0) == (ds.is_abnormal == 0)).all()
    assert set(ds.metadata_column("cell_type")) <= {"mono", "poly"}
    assert set(ds.metadata_column("split")) <= {"train", "test"}
    unl = import_elpv(None, tmp_path / "el2", uncertain="unlabelled", limit=60)  # cell 58 is a 1/3 cell
    ds2 = SampleDataset(unl)
    assert (ds2.is_abnormal == -1).sum() == 1 and ds2.sample_ids.index("cell0058") == 57
    # split of a cell does not depend on limit / uncertain option
    split1 = dict(zip(ds.sample_ids, ds.metadata_column("split"), strict=True))
    split2 = dict(zip(ds2.sample_ids, ds2.metadata_column("split"), strict=True))
    assert all(split2[k] == v for k, v in split1.items() if k in split2)


def test_elpv_full_split_is_stratified_75_25():
    from seminspect.data.adapters.elpv import SPLITS, package_data_dir, read_labels

    rows = read_labels(package_data_dir())
    assert len(rows) == 2624
    strata = [f"{p:.3f}/{t}" for _, p, t in rows]
    splits = group_split([r[0] for r in rows], SPLITS, 0, strata=strata)
    assert abs(splits.count("test") / len(rows) - 0.25) < 0.005
    for s in set(strata):
        idx = [i for i, x in enumerate(strata) if x == s]
        assert abs(sum(splits[i] == "test" for i in idx) - 0.25 * len(idx)) <= 1


def test_samsung_depth(tmp_path):
    root = import_samsung_depth(shared_data("samsung_sem_depth"), tmp_path / "sd", limit=12)
    rep = _clean(root)
    assert rep.n_samples == 12 and rep.views_per_sample == {4: 12} and rep.roles == {"target": 48}
    assert rep.labels == {"": 12} and rep.image_sizes == {"66x45": 48}
    s = SampleDataset(root)[3]
    data = np.load(shared_data("samsung_sem_depth") / "train.npz")
    assert np.array_equal(s.depth, data["depth"][3].astype(np.float32))
    assert np.array_equal(s.view("target", 2).image, data["sem"][3, 2])
    assert s.metadata["name"] == str(data["name"][3]) and s.metadata["split"] in {"train", "val"}


def test_cli_import_and_errors(tmp_path):
    from seminspect.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["import", "sem-pairs", str(shared_data("sem_pairs")), str(tmp_path / "sp")])
    assert res.exit_code == 0, res.output
    assert runner.invoke(app, ["validate", str(tmp_path / "sp")]).exit_code == 0
    res = runner.invoke(app, ["import", "deeppcb", str(tmp_path / "nowhere"), str(tmp_path / "x")])
    assert isinstance(res.exception, AdapterError) and "not found" in str(res.exception)

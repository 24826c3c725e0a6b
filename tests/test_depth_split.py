"""The honest depth split: no depth map (or near-identical SEM stack) on both sides; split by acquisition."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tests.conftest import shared_data

from seminspect.data.depth_split import (
    acquisition_keys,
    shared_depth_maps,
    site_groups,
    split_indices,
)
from seminspect.training.depth import DepthConfig, load_data, load_samsung_npz


def _planted(n_unique: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Sites with planted twins: every third structure occurs 2-4 times (SEM +-1 grey level, other name),
    plus one pair with different depth maps but the same SEM stack."""
    rng = np.random.default_rng(seed)
    sem, depth, names = [], [], []
    for k in range(n_unique):
        d = rng.integers(0, 200, (12, 9), dtype=np.uint8)
        s = rng.integers(2, 250, (4, 12, 9)).astype(np.uint8)
        copies = 1 + (k % 3 == 0) * int(rng.integers(1, 4))
        acq = f"2020100{k % 5}_12000{k % 5}_LOT{k % 5}"
        for c in range(copies):
            noise = rng.integers(-1, 2, s.shape)
            sem.append((s.astype(int) + noise).clip(0, 255).astype(np.uint8))
            depth.append(d.copy())
            names.append(f"{acq}_RAE01_1_S01_M{k:04d}-{c:02d}MS_{c}")
    sem.append(sem[1].copy())  # same SEM stack, a different depth map
    depth.append((depth[1].astype(int) + 1).astype(np.uint8))
    names.append("20201001_120001_LOT1_RAE01_1_S01_M9999-01MS_0")
    return np.stack(sem), np.stack(depth), names


def _npz(path: Path) -> Path:
    sem, depth, names = _planted()
    np.savez(path, sem=sem, depth=depth, name=np.array(names))
    return path


def test_groups_join_twins_and_near_identical_stacks() -> None:
    sem, depth, _ = _planted()
    g = site_groups(sem, depth)
    assert g[-1] == g[1]  # different depth maps, same SEM stack
    assert len(np.unique(site_groups(sem, depth, sem_tol=None))) == len({d.tobytes() for d in depth})
    for i in range(len(depth)):
        for j in range(i + 1, len(depth)):
            if np.array_equal(depth[i], depth[j]):
                assert g[i] == g[j]


def test_default_split_shares_no_depth_map_and_random_does(tmp_path: Path) -> None:
    path = _npz(tmp_path / "train.npz")
    sem, depth, names = _planted()
    cfg = DepthConfig().with_options(**{"data.path": str(path)})
    assert cfg.data.split == "group"
    train, val = load_data(cfg.data)
    assert not set(train.ids) & set(val.ids) and len(train) + len(val) == len(depth)
    assert 0.05 * len(depth) <= len(val) <= 0.2 * len(depth)
    maps = {y.numpy().tobytes() for y in train.y}
    assert not any(y.numpy().tobytes() in maps for y in val.y)
    tr, va = split_indices(sem, depth, names, "random", 0.3, 0)
    assert shared_depth_maps(depth, tr, va) > 0  # the old split leaks the planted twins


def test_acquisition_split_keeps_acquisitions_whole() -> None:
    sem, depth, names = _planted()
    assert acquisition_keys(names[:1]) == ["20201000_120000_LOT0"] and acquisition_keys(["site1"]) == ["site1"]
    tr, va = split_indices(sem, depth, names, "acquisition", 0.2, 0)
    acq = np.array(acquisition_keys(names))
    assert not set(acq[tr]) & set(acq[va]) and shared_depth_maps(depth, tr, va) == 0
    assert len(va) > 0 and len(tr) > 0


def test_split_is_fixed_for_a_seed_and_the_config_can_select_the_old_one(tmp_path: Path) -> None:
    path = _npz(tmp_path / "train.npz")
    a = load_samsung_npz(path, 0.2, 3)
    b = load_samsung_npz(path, 0.2, 3)
    assert a[1].ids == b[1].ids
    with pytest.raises(Exception, match="data.split"):
        DepthConfig().with_options(**{"data.split": "shuffled"})
    _, val = load_samsung_npz(path, 0.2, 0, split="random")
    perm = np.random.default_rng(0).permutation(len(_planted()[1]))
    assert sorted(val.ids) == sorted(np.array(_planted()[2])[perm[-len(val):]].tolist())


@pytest.mark.shared
def test_real_file_default_split_shares_no_depth_map() -> None:
    path = shared_data("samsung_sem_depth") / "train.npz"
    for rule in ("group", "acquisition"):
        train, val = load_samsung_npz(path, split=rule)
        assert 450 <= len(val) <= 560 and len(train) + len(val) == 5000
        maps = {y.numpy().tobytes() for y in train.y}
        assert sum(y.numpy().tobytes() in maps for y in val.y) == 0, rule
    train, val = load_samsung_npz(path, split="random")
    maps = {y.numpy().tobytes() for y in train.y}
    assert sum(y.numpy().tobytes() in maps for y in val.y) == 256  # the leak the issue measured

"""Mask pixels count as defect from half of full scale (not "anything nonzero"), or from dataset.yaml's
``mask_threshold``; ``anomaly evaluate`` says which rule it used (FINDINGS, anomaly section)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from seminspect.data.dataset import SampleDataset
from seminspect.data.manifest import ManifestError
from seminspect.data.masks import binarise_mask
from trust_fixtures import TINY_ANOMALY, run_main, strict_json, write_tiny_dataset, write_yaml


def test_binarise_rules():
    edge = np.array([[0, 60, 127, 128, 255]], np.uint8)  # anti-aliased edge around a 255 defect
    assert binarise_mask(edge).tolist() == [[False, False, False, True, True]]
    assert binarise_mask(np.array([[0, 1, 1]], np.uint8)).tolist() == [[False, True, True]]  # a 0/1 label mask
    assert binarise_mask(np.array([[0, 20000, 40000]], np.uint16)).tolist() == [[False, False, True]]
    assert binarise_mask(np.array([[0.2, 0.5]], np.float32)).tolist() == [[False, True]]
    assert binarise_mask(edge, threshold=1).tolist() == [[False, True, True, True, True]]


def _with_soft_mask(tmp_path, mask_threshold=None):
    root = write_tiny_dataset(tmp_path / "ds", n_normal=2, test_normal=0, test_abnormal=1)
    df = pd.read_csv(root / "manifest.csv", keep_default_na=False)
    rel = df.loc[df["mask"] != "", "mask"].iloc[0]
    soft = np.zeros((32, 32), np.uint8)
    soft[10:20, 10:20] = 255
    soft[9, 9:21] = 60  # the anti-aliased rim
    Image.fromarray(soft).save(root / rel)
    if mask_threshold is not None:
        info = yaml.safe_load((root / "dataset.yaml").read_text())
        (root / "dataset.yaml").write_text(yaml.safe_dump({**info, "mask_threshold": mask_threshold}))
    return root


def test_soft_mask_edges_are_not_defect_by_default(tmp_path):
    ds = SampleDataset(_with_soft_mask(tmp_path))
    mask = ds.split("test")[0].targets[0].mask
    assert int(mask.sum()) == 100 and not mask[9].any()
    assert "128" in ds.mask_rule


def test_dataset_yaml_mask_threshold(tmp_path):
    ds = SampleDataset(_with_soft_mask(tmp_path, mask_threshold=1))
    assert int(ds.split("test")[0].targets[0].mask.sum()) == 112 and ">= 1" in ds.mask_rule


@pytest.mark.parametrize("bad", [0, -3, "half", True])
def test_bad_mask_threshold_is_one_line(tmp_path, bad):
    with pytest.raises(ManifestError, match="mask_threshold") as info:
        SampleDataset(_with_soft_mask(tmp_path, mask_threshold=bad))
    assert "\n" not in str(info.value) and "dataset.yaml" in str(info.value)


def test_anomaly_evaluate_says_which_mask_rule(tmp_path, capsys, monkeypatch):
    root = write_tiny_dataset(tmp_path / "ds", n_normal=6, test_normal=2, test_abnormal=2)
    cfg = write_yaml(tmp_path / "a.yaml", {**TINY_ANOMALY, "calib_fraction": 0.34})
    code, stdout, stderr = run_main(
        ["anomaly", "fit", str(root), "-o", str(tmp_path / "m"), "-c", str(cfg)], capsys, monkeypatch
    )
    assert code == 0, stdout + stderr
    code, stdout, stderr = run_main(
        ["anomaly", "evaluate", str(tmp_path / "m"), str(root), "-o", str(tmp_path / "ev"), "--n-figures", "0"],
        capsys,
        monkeypatch,
    )
    assert code == 0, stdout + stderr
    assert "128" in strict_json(tmp_path / "ev" / "metrics.json")["mask_rule"]
    assert "masks: defect where >= 128" in stdout

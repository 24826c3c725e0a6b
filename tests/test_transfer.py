"""Cross-product transfer: the matrix with the all-products row, distance vs loss, threshold stability, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from seminspect.transfer import ALL, distance_vs_loss, threshold_stability, transfer_markdown, transfer_matrix

CFG = {"backbone": "tiny", "pretrained": False, "out_indices": [0, 1, 2], "layers": [0, 1],
       "conditioning": "difference", "max_bank_patches": 200, "sigma": 2.0}


@pytest.fixture(scope="module")
def fab(tmp_path_factory):
    synth = pytest.importorskip("seminspect.data.synth")
    root = tmp_path_factory.mktemp("fab") / "ds"
    synth.generate_dataset(root, 48, synth.FabConfig(image_size=48, n_angles=1, n_references=1),
                           abnormal_fraction=0.5, seed=0, workers=1, splits={"train": 0.4, "calib": 0.2, "test": 0.4})
    return root


def test_matrix_with_all_row_thresholds_and_false_alarms(fab) -> None:
    m = transfer_matrix(fab, config=CFG, n_permutations=9, embedding_kwargs={"backbone": "tiny", "pretrained": False,
                                                                             "image_size": 32})
    g = m["groups"]
    assert len(g) >= 2 and m["fits"] == [*g, ALL]
    auc = np.asarray(m["image_auroc"])
    assert auc.shape == (len(g) + 1, len(g))
    alarms = np.asarray(m["false_alarms"])
    assert alarms.shape == (len(g) + 1, len(g), 2)
    assert (alarms[..., 1] > 0).all() and ((alarms[..., 0] >= 0) & (alarms[..., 0] <= alarms[..., 1])).all()
    assert all(t is not None for t in m["threshold"])
    swd = np.asarray(m["swd"])
    assert np.allclose(swd, swd.T) and (np.diag(swd) == 0).all()
    rows = threshold_stability(m)
    assert [r["group"] for r in rows] == g
    for r in rows:
        for side in ("own", "all"):
            s = r[side]
            assert s["rate"] == s["false_alarms"] / s["normals"] and s["rate"] <= s["upper"] <= 1
    text = transfer_markdown(m)
    assert "| all |" in text and "SWD" not in text.split("Sliced")[0]  # distances in their own table
    json.dumps(m)  # the report's .json


def test_without_calibration_there_is_no_threshold(fab) -> None:
    m = transfer_matrix(fab, config=CFG, calib_split=None, n_permutations=9, with_all=False,
                        embedding_kwargs={"backbone": "tiny", "pretrained": False, "image_size": 32})
    assert m["threshold"] == [None] * len(m["groups"]) and (np.asarray(m["false_alarms"])[..., 0] == -1).all()
    assert "| - |" in transfer_markdown(m) or " / -" in transfer_markdown(m)
    with pytest.raises(Exception, match="all-groups model"):
        threshold_stability(m)


def test_distance_vs_loss_finds_a_planted_relation() -> None:
    rng = np.random.default_rng(0)
    pts = rng.random((5, 2)) * 3
    swd = np.linalg.norm(pts[:, None] - pts[None], axis=-1)
    auc = 0.99 - 0.05 * swd  # the farther the product, the larger the loss
    m = {"groups": list("abcde"), "image_auroc": auc.tolist(), "swd": swd.tolist()}
    r = distance_vs_loss(m, n_resamples=999)
    assert r["n_cells"] == 20 and r["spearman"] == pytest.approx(1.0) and r["p_value"] < 0.01
    noise = {**m, "image_auroc": (0.9 + 0.05 * rng.random((5, 5))).tolist()}
    assert distance_vs_loss(noise, n_resamples=999)["p_value"] > 0.01
    normals = np.full((5, 5), 100)
    alarms = np.rint(100 * np.clip(0.2 * swd - 0.05, 0, 1)).astype(int)  # false alarms grow with distance
    far = {**m, "false_alarms": np.stack([alarms, normals], axis=-1).tolist()}
    r = distance_vs_loss(far, "false_alarms", n_resamples=999)
    assert r["spearman"] > 0.9 and r["p_value"] < 0.01
    with pytest.raises(Exception, match="loss must be"):
        distance_vs_loss(m, "pixels")


def test_cli_drift_matrix(tmp_path, fab) -> None:
    import yaml
    from typer.testing import CliRunner

    from seminspect.cli import app

    cfg = tmp_path / "a.yaml"
    cfg.write_text(yaml.safe_dump(CFG))
    res = CliRunner().invoke(app, ["drift-matrix", str(fab), "-c", str(cfg), "--n-permutations", "9",
                                   "-o", str(tmp_path / "t.md")])
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "t.json").read_text())
    assert m["fits"][-1] == ALL and [r["loss"] for r in m["distance_vs_loss"]] == ["auroc", "false_alarms"]
    assert len(m["threshold_stability"]) == len(m["groups"])
    assert "Spearman correlation" in (tmp_path / "t.md").read_text()

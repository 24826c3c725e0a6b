"""[trust] strict configs: the anomaly config checked whole before any work, YAML 1.2 booleans, ``--set``.

Every refusal is one ``error:`` line naming the file (or the ``--set`` item) and each key, with exit
status 2 and no traceback; ``off``/``on``/``yes``/``no`` stay strings where a string is expected.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from seminspect.models.anomaly import AnomalyConfig, AnomalyConfigError, AnomalyDetector
from trust_fixtures import TINY_ANOMALY, error_lines, run_main, write_tiny_dataset, write_yaml


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("trust_cfg") / "ds")


def test_anomaly_config_every_problem_on_one_line_naming_file_before_any_work(tmp_path, capsys, monkeypatch):
    cfg = write_yaml(
        tmp_path / "bad.yaml",
        {**TINY_ANOMALY, "crop": 0, "pool": -2, "batch_size": 0, "false_alarm_rate": 1.5, "regstration": "phase"},
    )
    out = tmp_path / "model"
    # the data folder does not exist: a config refused before any work never gets to read it
    code, stdout, stderr = run_main(
        ["anomaly", "fit", str(tmp_path / "no_such_data"), "-o", str(out), "-c", str(cfg)], capsys, monkeypatch
    )
    assert code == 2, stdout + stderr
    assert "Traceback" not in stdout + stderr
    (line,) = error_lines(stderr)
    assert str(cfg) in line and "no_such_data" not in line
    for key in ("crop", "pool", "batch_size", "false_alarm_rate", "regstration"):
        assert f"{key}:" in line, (key, line)
    assert "did you mean 'registration'" in line
    assert not out.exists()


BAD_VALUES = [
    ("batch_size", 0),
    ("epochs", 0),
    ("lr", 0.0),
    ("false_alarm_rate", 1.5),
    ("confidence", 0.0),
    ("calib_fraction", 1.0),
    ("top_k", 0),
    ("seed", -1),
    ("crop", 4),
    ("image_size", 0),
    ("pool", 0),
    ("max_bank_patches", 0),
    ("max_pool_patches", 0),
    ("max_bank_bytes", 0),
    ("coreset_proj_dim", 0),
    ("embed_dim", 0),
    ("sigma", -1.0),
    ("centre_sigma", -0.5),
    ("reference_weight", -1.0),
    ("max_shift", -2.0),
    ("out_indices", []),
    ("layers", [-1]),
    ("layer_weights", [-1.0]),
    ("sigma", float("nan")),
    ("lr", float("inf")),
    ("backbone", ""),
]


@pytest.mark.parametrize(("key", "value"), BAD_VALUES, ids=[f"{k}={v}" for k, v in BAD_VALUES])
def test_anomaly_config_field_ranges(key, value):
    with pytest.raises(AnomalyConfigError) as info:
        AnomalyDetector({**TINY_ANOMALY, key: value})
    text = str(info.value)
    assert "\n" not in text and f"{key}" in text, text


def test_layers_beyond_out_indices_refused_at_load(tmp_path, capsys, monkeypatch):
    cfg = write_yaml(tmp_path / "layers.yaml", {**TINY_ANOMALY, "layers": [0, 3]})
    code, stdout, stderr = run_main(
        ["anomaly", "fit", str(tmp_path / "no_data"), "-o", str(tmp_path / "m"), "-c", str(cfg)], capsys, monkeypatch
    )
    assert code == 2 and "Traceback" not in stdout + stderr
    (line,) = error_lines(stderr)
    assert str(cfg) in line and "layers: index 3" in line


def test_saved_model_with_bad_config_is_one_line(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps({"format": "seminspect-anomaly", "version": 1, "config": {**TINY_ANOMALY, "top_k": 0, "bogus": 1}})
    )
    with pytest.raises(AnomalyConfigError) as info:
        AnomalyDetector.load(folder)
    text = str(info.value)
    assert "\n" not in text and str(folder / "config.json") in text and "top_k" in text and "bogus" in text


def test_yaml_off_on_yes_no_stay_strings(tmp_path):
    from seminspect.utils.io import read_yaml_mapping

    path = tmp_path / "c.yaml"
    path.write_text("a: off\nb: on\nc: yes\nd: no\ne: true\nf: False\ng: 1e-3\nh: 2026-12-04\ni: 0x10\nj: ~\n")
    assert read_yaml_mapping(path, ValueError) == {
        "a": "off",
        "b": "on",
        "c": "yes",
        "d": "no",
        "e": True,
        "f": False,
        "g": 0.001,
        "h": "2026-12-04",
        "i": 16,
        "j": None,
    }


def test_registration_off_from_file_and_from_set(tmp_path, tiny, capsys, monkeypatch):
    cfg = write_yaml(tmp_path / "a.yaml", TINY_ANOMALY)
    cfg.write_text(cfg.read_text() + "registration: off\npretrained: no\n")  # as a person writes it
    code, stdout, stderr = run_main(
        ["anomaly", "fit", str(tiny), "-o", str(tmp_path / "m1"), "-c", str(cfg)], capsys, monkeypatch
    )
    assert code == 0, stdout + stderr
    saved = json.loads((tmp_path / "m1" / "config.json").read_text())["config"]
    assert saved["registration"] == "off" and saved["pretrained"] is False  # a bool field still reads "no"

    cfg2 = write_yaml(tmp_path / "b.yaml", TINY_ANOMALY)
    code, stdout, stderr = run_main(
        [
            "anomaly",
            "fit",
            str(tiny),
            "-o",
            str(tmp_path / "m2"),
            "-c",
            str(cfg2),
            "--set",
            "registration=off",
            "--set",
            "conditioning=none",
        ],
        capsys,
        monkeypatch,
    )
    assert code == 0, stdout + stderr
    saved = json.loads((tmp_path / "m2" / "config.json").read_text())["config"]
    assert saved["registration"] == "off" and saved["conditioning"] == "none"


@pytest.mark.parametrize("item", ["x=!!python/object:os.system", "crop=!!python/name:os.system", "crop=[1,", "novalue"])
def test_set_value_with_a_tag_or_bad_yaml_is_one_line(tmp_path, item, capsys, monkeypatch):
    code, stdout, stderr = run_main(
        ["anomaly", "fit", str(tmp_path / "no_data"), "-o", str(tmp_path / "m"), "--set", item], capsys, monkeypatch
    )
    assert code == 2, stdout + stderr
    assert "Traceback" not in stdout + stderr
    (line,) = error_lines(stderr)
    assert "--set" in line and item.split("=")[0] in line


def test_set_errors_name_the_items_and_keys(tmp_path, capsys, monkeypatch):
    code, stdout, stderr = run_main(
        [
            "anomaly",
            "fit",
            str(tmp_path / "no_data"),
            "-o",
            str(tmp_path / "m"),
            "--set",
            "model=padim",
            "--set",
            "top_k=0",
        ],
        capsys,
        monkeypatch,
    )
    assert code == 2 and "Traceback" not in stdout + stderr
    (line,) = error_lines(stderr)
    assert "--set model=padim" in line and "model: " in line and "top_k: " in line


def test_drift_matrix_config_refused_before_work(tmp_path, capsys, monkeypatch):
    cfg = write_yaml(tmp_path / "d.yaml", {**TINY_ANOMALY, "batch_size": -1})
    code, stdout, stderr = run_main(
        ["drift-matrix", str(tmp_path / "no_data"), "-c", str(cfg), "-o", str(tmp_path / "t.md")], capsys, monkeypatch
    )
    assert code == 2 and "Traceback" not in stdout + stderr
    (line,) = error_lines(stderr)
    assert str(cfg) in line and "batch_size" in line


def _strip(h: int, w: int) -> list:
    from seminspect.data.sample import Role, Sample, View

    rng = np.random.default_rng(1)
    img = (rng.random((h, w)) * 200).astype(np.uint8)
    return [Sample(f"t{i}", [View(Role.TARGET, 0, img)], is_abnormal=False) for i in range(3)]


def test_crop_falling_back_to_the_short_side_warns_once():
    from seminspect.models.anomaly import AnomalyWarning

    det = AnomalyDetector({**TINY_ANOMALY, "conditioning": "none", "crop": 64, "registration": "off"})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        det.fit(_strip(160, 32), calib=[])  # a tall narrow 160x32 image: cut to 32x32, 20 % of it
    crop_warnings = [w for w in caught if issubclass(w.category, AnomalyWarning)]
    assert len(crop_warnings) == 1, [str(w.message) for w in caught]
    text = str(crop_warnings[0].message)
    assert "160x32" in text and "32x32" in text and "20%" in text and "\n" not in text

    det = AnomalyDetector({**TINY_ANOMALY, "conditioning": "none", "crop": 32, "registration": "off"})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        det.fit(_strip(64, 64), calib=[])  # the crop asked for on a square image: as intended, no warning
    assert not [w for w in caught if issubclass(w.category, AnomalyWarning)]


def test_crop_warning_is_one_line_on_the_command_line(tmp_path, capsys, monkeypatch):
    ds = write_tiny_dataset(tmp_path / "tall", n_normal=4, test_normal=0, shape=(96, 32))
    cfg = write_yaml(tmp_path / "c.yaml", {**TINY_ANOMALY, "crop": 64, "calib_fraction": 0.25})
    code, stdout, stderr = run_main(
        ["anomaly", "fit", str(ds), "-o", str(tmp_path / "m"), "-c", str(cfg)], capsys, monkeypatch
    )
    assert code == 0, stdout + stderr
    lines = [ln for ln in stderr.splitlines() if "crop 64" in ln]
    assert len(lines) == 1 and lines[0].startswith("warning:") and "96x32" in lines[0], stderr


def test_defaults_are_valid():
    AnomalyConfig()


def test_error_line_prints_brackets_as_written(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "cfg[x]"
    folder.mkdir()
    cfg = write_yaml(folder / "bad.yaml", {**TINY_ANOMALY, "top_k": 0})
    code, stdout, stderr = run_main(
        ["anomaly", "fit", str(tmp_path / "no_data"), "-o", str(tmp_path / "m"), "-c", str(cfg)], capsys, monkeypatch
    )
    assert code == 2
    (line,) = error_lines(stderr)
    assert str(cfg) in line  # not read as rich markup ("[x]" used to vanish)


def test_shipped_anomaly_configs_load():
    """Every configs/anomaly*.yaml passes the strict check (a key renamed in AnomalyConfig breaks it here)."""
    from pathlib import Path

    from seminspect.models.anomaly.config import load_anomaly_config

    paths = sorted((Path(__file__).resolve().parents[1] / "configs").glob("anomaly*.yaml"))
    assert len(paths) >= 6
    models = {load_anomaly_config(p).model for p in paths}
    assert {"patchcore", "stpm", "draem"} <= models

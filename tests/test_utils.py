"""Shared helpers: YAML reading with one-line errors, atomic writes."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from seminspect.cli import app
from seminspect.errors import SeminspectError
from seminspect.utils.io import atomic_write_json, read_yaml_mapping


class _Err(SeminspectError):
    pass


def test_read_yaml_mapping(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("a: 1\nb: [x, y]\n")
    assert read_yaml_mapping(good, _Err) == {"a": 1, "b": ["x", "y"]}
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert read_yaml_mapping(empty, _Err) == {}
    with pytest.raises(_Err, match=r"missing\.yaml: config file not found"):
        read_yaml_mapping(tmp_path / "missing.yaml", _Err)
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(_Err, match=r"bad\.yaml: not valid YAML") as info:
        read_yaml_mapping(bad, _Err)
    assert "\n" not in str(info.value)
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(_Err, match=r"list\.yaml: expected a mapping at the top level, got list"):
        read_yaml_mapping(listed, _Err)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(_Err, match=r"binary\.yaml: not valid YAML"):
        read_yaml_mapping(binary, _Err)


@pytest.mark.parametrize(
    "loader",
    [
        "seminspect.training.config:ADCConfig.from_yaml",
        "seminspect.training.depth:DepthConfig.load",
        "seminspect.data.taxonomy:Taxonomy.from_yaml",
    ],
)
def test_config_loaders_give_one_line_errors(tmp_path, loader):
    import importlib

    module, attr = loader.split(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    bad = tmp_path / "bad.yaml"
    bad.write_text("key: [unclosed\n")
    with pytest.raises(SeminspectError, match=r"bad\.yaml: not valid YAML"):
        obj(bad)
    with pytest.raises(SeminspectError, match=r"nope\.yaml: .*not found"):
        obj(tmp_path / "nope.yaml")


def test_drift_matrix_bad_config_is_a_clear_error(tmp_path):
    bad = tmp_path / "cfg.yaml"
    bad.write_text("- not\n- a mapping\n")
    result = CliRunner().invoke(app, ["drift-matrix", str(tmp_path), "--config", str(bad), "--out",
                                      str(tmp_path / "m.md")])
    assert result.exit_code != 0
    assert isinstance(result.exception, SeminspectError)
    assert "cfg.yaml: expected a mapping" in str(result.exception)


def test_atomic_write_leaves_no_temp_files(tmp_path):
    atomic_write_json(tmp_path / "x.json", {"a": 1})
    with pytest.raises(TypeError):
        atomic_write_json(tmp_path / "y.json", {"a": object()})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]


def test_atomic_writes_are_not_private(tmp_path, monkeypatch):
    """mkstemp files are 0600; results in a shared folder must follow the umask like open() does."""
    import seminspect.utils.io as io

    monkeypatch.setattr(io, "_UMASK", 0o022)
    atomic_write_json(tmp_path / "shared.json", {"a": 1})
    assert (tmp_path / "shared.json").stat().st_mode & 0o777 == 0o644
    monkeypatch.setattr(io, "_UMASK", 0o077)
    atomic_write_json(tmp_path / "private.json", {"a": 1})
    assert (tmp_path / "private.json").stat().st_mode & 0o777 == 0o600

"""The command line as a whole: every command group loads and every command has --help."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from seminspect.cli import LOAD_ERRORS, app


def test_every_command_group_loads():
    assert LOAD_ERRORS == {}


def _command_paths(group: typer.Typer, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [(*prefix, c.name or c.callback.__name__) for c in group.registered_commands]
    for sub in group.registered_groups:
        paths += _command_paths(sub.typer_instance, (*prefix, sub.name))
    return paths


@pytest.mark.parametrize("path", _command_paths(app), ids=" ".join)
def test_help(path):
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_user_error_is_one_line(tmp_path):
    result = CliRunner().invoke(app, ["taxonomy", str(tmp_path / "missing.yaml")])
    assert result.exit_code != 0
    assert "missing.yaml" in str(result.exception or result.output)

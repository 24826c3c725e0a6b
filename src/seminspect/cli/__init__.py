"""The ``seminspect`` command: a thin typer layer over the Python API.

Each module in this package (``data``, ``adc``, ``anomaly``, ...) defines ``register(app)`` and
adds its commands; this file discovers them, so command groups stay independent. Heavy imports
(torch, models) happen inside the commands, keeping ``seminspect --help`` fast.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import typer
from rich.console import Console
from rich.markup import escape

from seminspect.errors import SeminspectError

app = typer.Typer(
    name="seminspect",
    help="Review suspected defects in multi-view SEM images: generate, import, validate, train, triage.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


# Command groups that failed to import: the other groups still work, the failure is reported on
# stderr when the CLI runs, and tests/test_cli.py asserts this stays empty.
LOAD_ERRORS: dict[str, str] = {}


def _register_commands() -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        try:
            module = importlib.import_module(f"{__name__}.{info.name}")
            register = getattr(module, "register", None)
            if register is not None:
                register(app)
        except Exception as exc:  # a broken group must not take the whole CLI down
            LOAD_ERRORS[info.name] = f"{type(exc).__name__}: {exc}"


_register_commands()


def main() -> None:
    """Console entry point: user-facing errors become one clear line and exit status 2."""
    for name, error in LOAD_ERRORS.items():
        Console(stderr=True).print(f"[yellow]warning:[/] command group {name!r} failed to load ({error})")
    try:
        app()
    except SeminspectError as exc:
        # escape: a message is text, not rich markup ("[list]" or a path with brackets must print as written)
        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)

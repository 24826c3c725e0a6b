"""YAML read with the YAML 1.2 core schema: ``off``, ``on``, ``yes``, ``no`` stay strings.

PyYAML implements YAML 1.1, where ``off``/``on``/``yes``/``no``/``y``/``n`` are booleans, so
``registration: off`` (or ``--set registration=off``) became ``False`` and was then refused as
not one of ``'phase', 'ecc', 'off'``. :class:`StrictLoader` is ``yaml.SafeLoader`` (no Python
objects, ever) whose plain scalars resolve as the YAML 1.2 core schema does:

* booleans: ``true``/``false`` only (also ``True``, ``TRUE``, ``False``, ``FALSE``);
* integers: ``12``, ``-3``, ``0x1F``, ``0o17`` (no ``1_000``, no base 60: ``1:20`` is a string);
* floats: ``1.5``, ``1e-3`` (a string in YAML 1.1), ``.inf``, ``-.inf``, ``.nan``;
* null: ``null``, ``Null``, ``NULL``, ``~`` and an empty value;
* a date such as ``2026-12-04`` stays a string (an explicit ``!!timestamp`` still reads as a date).

A field that wants a bool still takes ``yes``/``on`` through pydantic, which reads those strings as
``True``; a field that wants a string now gets the string that was written.

Every seminspect config reader uses it: :func:`seminspect.utils.io.read_yaml_mapping` (training,
depth, anomaly and drift configs, taxonomies), ``dataset.yaml`` in ``validate``, and the
``--set key=value`` overrides (:func:`parse_override`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

__all__ = ["StrictLoader", "load", "parse_override", "apply_overrides"]


class StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with the YAML 1.2 core schema's booleans, integers and floats."""


def _core_resolvers() -> None:
    # Drop YAML 1.1's bool/int/float/timestamp/value resolvers inherited from SafeLoader (null and merge stay).
    dropped = {f"tag:yaml.org,2002:{t}" for t in ("bool", "int", "float", "timestamp", "value")}
    StrictLoader.yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag not in dropped]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    StrictLoader.add_implicit_resolver(
        "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
    )
    StrictLoader.add_implicit_resolver(
        "tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789")
    )
    StrictLoader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(
            r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
            r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
        ),
        list("-+.0123456789"),
    )


def _construct_int(loader: yaml.SafeLoader, node: yaml.Node) -> int:
    text = str(loader.construct_scalar(node))  # type: ignore[arg-type]
    if text.startswith("0o"):
        return int(text[2:], 8)
    if text.startswith("0x"):
        return int(text[2:], 16)
    return int(text, 10)  # core schema: a leading 0 is decimal, not octal


def _construct_bool(loader: yaml.SafeLoader, node: yaml.Node) -> bool:
    return str(loader.construct_scalar(node)).lower() == "true"  # type: ignore[arg-type]


_core_resolvers()
StrictLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)
StrictLoader.add_constructor("tag:yaml.org,2002:bool", _construct_bool)


def load(text: str) -> Any:
    """Parse YAML text with :class:`StrictLoader` (raises ``yaml.YAMLError`` on bad YAML or a Python tag)."""
    return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - StrictLoader is a SafeLoader


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def parse_override(item: str, error: type[Exception], option: str = "--set") -> tuple[str, Any]:
    """``"key=value"`` -> ``(key, value parsed as YAML)``; anything else raises ``error`` in one line.

    ``registration=off`` gives ``("registration", "off")``; ``x=!!python/object:os.system`` is
    refused (a tag that is not a plain YAML type), as is a value that is not valid YAML.
    """
    if "=" not in item:
        raise error(f"{option} {item!r}: use key=value, e.g. {option} conditioning=none")
    key, text = item.split("=", 1)
    key = key.strip()
    if not key:
        raise error(f"{option} {item!r}: the key before '=' is empty")
    try:
        value = load(text)
    except yaml.constructor.ConstructorError as exc:
        raise error(
            f"{option} {item!r}: {_one_line(exc.problem or exc)}; only plain values are read (number, "
            "string, true/false, null, list, mapping), never a Python object"
        ) from None
    except yaml.YAMLError as exc:
        raise error(
            f"{option} {item!r}: value is not valid YAML ({_one_line(getattr(exc, 'problem', None) or exc)})"
        ) from None
    return key, value


def apply_overrides(
    config: dict[str, Any], items: list[str], error: type[Exception], option: str = "--set"
) -> list[str]:
    """Apply ``key=value`` overrides to ``config`` (in place; ``a.b=1`` sets a nested key); returns the keys set."""
    keys = []
    for item in items:
        key, value = parse_override(item, error, option)
        node = config
        *parents, last = key.split(".")
        for part in parents:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise error(f"{option} {item!r}: {part!r} is not a section (it holds {child!r})")
            node = child
        node[last] = value
        keys.append(key)
    return keys


def read_text(path: Path) -> Any:
    """Parse a YAML file with :class:`StrictLoader` (raises ``yaml.YAMLError`` / ``UnicodeDecodeError``)."""
    return load(path.read_text(encoding="utf-8"))

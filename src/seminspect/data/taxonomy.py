"""Defect category trees defined in YAML: levels, leaves, and conversions between them.

A taxonomy file has ``name``, ``levels`` (root-most first, the last is the leaf level) and
``tree``: nested mappings whose innermost values are lists of leaf names. Leaf names are unique.
Built-in trees live in ``seminspect/data/taxonomies/`` (``sem_default``, ``deeppcb``, ``elpv``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from seminspect.errors import SeminspectError
from seminspect.utils import yaml_strict
from seminspect.utils.io import read_yaml_mapping


class TaxonomyError(SeminspectError, ValueError):
    """A taxonomy file is malformed, or a label is not in the taxonomy."""


@dataclass(frozen=True)
class Taxonomy:
    """A category tree. ``paths[i]`` is the root-to-leaf path of leaf ``i``."""

    name: str
    levels: tuple[str, ...]
    paths: tuple[tuple[str, ...], ...]

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> Taxonomy:
        for key in ("name", "levels", "tree"):
            if key not in data:
                raise TaxonomyError(f"{source}: taxonomy needs a {key!r} entry")
        levels = tuple(str(x) for x in data["levels"])
        if not levels:
            raise TaxonomyError(f"{source}: 'levels' is empty")
        paths: list[tuple[str, ...]] = []

        def walk(node: Any, prefix: tuple[str, ...]) -> None:
            depth = len(prefix)
            if isinstance(node, dict):
                if depth >= len(levels) - 1:
                    raise TaxonomyError(f"{source}: tree under {'/'.join(prefix)} is deeper than levels {levels}")
                for key, child in node.items():
                    walk(child, (*prefix, str(key)))
            elif isinstance(node, list):
                if depth != len(levels) - 1:
                    raise TaxonomyError(
                        f"{source}: leaves under {'/'.join(prefix) or 'root'} sit at depth {depth + 1}, "
                        f"levels {levels} need {len(levels)}"
                    )
                for leaf in node:
                    paths.append((*prefix, str(leaf)))
            else:
                raise TaxonomyError(f"{source}: unexpected {type(node).__name__} under {'/'.join(prefix)}")

        walk(data["tree"], ())
        leaves = [p[-1] for p in paths]
        dupes = sorted({x for x in leaves if leaves.count(x) > 1})
        if dupes:
            raise TaxonomyError(f"{source}: leaf names must be unique, repeated: {dupes}")
        if not paths:
            raise TaxonomyError(f"{source}: taxonomy has no leaves")
        return cls(name=str(data["name"]), levels=levels, paths=tuple(paths))

    @classmethod
    def from_yaml(cls, path: str | Path) -> Taxonomy:
        path = Path(path)
        return cls.from_dict(read_yaml_mapping(path, TaxonomyError, what="taxonomy"), source=str(path))

    @classmethod
    def builtin(cls, name: str = "sem_default") -> Taxonomy:
        """Load a taxonomy shipped with the package (``sem_default``, ``deeppcb``, ``elpv``)."""
        fname = name.replace("-", "_") + ".yaml"
        ref = resources.files("seminspect.data") / "taxonomies" / fname
        if not ref.is_file():
            raise TaxonomyError(f"no built-in taxonomy {name!r}; available: {builtin_taxonomies()}")
        return cls.from_dict(yaml_strict.load(ref.read_text(encoding="utf-8")), source=f"builtin:{fname}")

    @classmethod
    def load(cls, spec: str | Path) -> Taxonomy:
        """A built-in name or a path to a YAML file."""
        spec_str = str(spec)
        if spec_str.endswith((".yaml", ".yml")) or Path(spec_str).is_file():
            return cls.from_yaml(spec_str)
        return cls.builtin(spec_str)

    def to_dict(self) -> dict[str, Any]:
        tree: Any = {} if len(self.levels) > 1 else []
        for path in self.paths:
            if len(self.levels) == 1:
                tree.append(path[0])
                continue
            node = tree
            for i, part in enumerate(path[:-1]):
                last = i == len(path) - 2
                node = node.setdefault(part, [] if last else {})
            node.append(path[-1])
        return {"name": self.name, "levels": list(self.levels), "tree": tree}

    # ----- leaves ---------------------------------------------------------------------------
    @cached_property
    def leaves(self) -> tuple[str, ...]:
        return tuple(p[-1] for p in self.paths)

    @cached_property
    def _leaf_index(self) -> dict[str, int]:
        return {leaf: i for i, leaf in enumerate(self.leaves)}

    @property
    def num_leaves(self) -> int:
        return len(self.paths)

    def __contains__(self, leaf: object) -> bool:
        return leaf in self._leaf_index

    def leaf_index(self, leaf: str) -> int:
        try:
            return self._leaf_index[leaf]
        except KeyError:
            raise TaxonomyError(f"defect type {leaf!r} is not in taxonomy {self.name!r}") from None

    def path(self, leaf: str) -> tuple[str, ...]:
        return self.paths[self.leaf_index(leaf)]

    # ----- levels ---------------------------------------------------------------------------
    def nodes(self, level: int | str) -> tuple[str, ...]:
        """Distinct node names at a level, in first-seen order."""
        li = self._level(level)
        seen: dict[str, None] = {}
        for p in self.paths:
            seen.setdefault(p[li], None)
        return tuple(seen)

    def _level(self, level: int | str) -> int:
        if isinstance(level, str):
            if level not in self.levels:
                raise TaxonomyError(f"taxonomy {self.name!r} has no level {level!r}; levels: {self.levels}")
            return self.levels.index(level)
        if not -len(self.levels) <= level < len(self.levels):
            raise TaxonomyError(f"level {level} out of range for {len(self.levels)} levels")
        return level % len(self.levels)

    def level_index(self, leaf: str, level: int | str) -> int:
        """Index of the ancestor of ``leaf`` at ``level`` among :meth:`nodes` of that level."""
        li = self._level(level)
        return self.nodes(li).index(self.path(leaf)[li])

    def leaf_to_level(self, level: int | str) -> np.ndarray:
        """``(num_leaves,)`` int64: the index at ``level`` of each leaf's ancestor."""
        li = self._level(level)
        nodes = {n: i for i, n in enumerate(self.nodes(li))}
        return np.array([nodes[p[li]] for p in self.paths], dtype=np.int64)

    def membership(self, level: int | str) -> np.ndarray:
        """``(num_nodes_at_level, num_leaves)`` 0/1 matrix: leaf j lies under node i.

        Summing leaf probabilities through it gives consistent probabilities at that level.
        """
        idx = self.leaf_to_level(level)
        m = np.zeros((len(self.nodes(level)), self.num_leaves), dtype=np.float32)
        m[idx, np.arange(self.num_leaves)] = 1.0
        return m


def builtin_taxonomies() -> list[str]:
    folder = resources.files("seminspect.data") / "taxonomies"
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))

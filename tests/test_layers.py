"""Imports flow one way: data -> models -> training (writes artefacts) -> inference (reads them) -> evaluation.

Every ``import`` of a module, at the top or inside a function, is checked against the layer rules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "seminspect"

# package -> packages it must never import
FORBIDDEN = {
    "data": ("models", "training", "inference", "evaluation", "serve", "cli", "pipeline", "decision"),
    "decision": ("data", "models", "training", "inference", "evaluation", "serve", "cli", "pipeline"),
    "models": ("training", "inference", "evaluation", "serve", "cli", "pipeline"),
    "training": ("inference", "serve", "cli", "pipeline"),
    "inference": ("training", "evaluation", "serve", "cli", "pipeline"),
    "evaluation": ("training", "serve", "cli", "pipeline"),
    "serve": ("training", "evaluation", "cli", "pipeline"),  # a thin layer over inference
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m.startswith("seminspect.")}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_flow_one_way(package):
    bad = []
    for path in sorted((SRC / package).rglob("*.py")):
        for mod in _imports(path):
            top = mod.split(".")[1]
            if top in FORBIDDEN[package]:
                bad.append(f"{path.relative_to(SRC)} imports {mod}")
    assert not bad, "\n".join(bad)


def test_the_core_inference_path_does_not_import_ray_or_the_service():
    import subprocess
    import sys

    code = ("import sys, seminspect.inference, seminspect.inference.predict, seminspect.cli; "
            "print(sorted(m for m in ('ray', 'fastapi', 'sqlalchemy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_docs_list_every_output_column():
    from seminspect.inference.schema import DECISION_COLUMNS, ERROR_COLUMNS

    doc = (SRC.parents[1] / "docs" / "predict.md").read_text(encoding="utf-8")
    missing = [name for name, _, _ in (*DECISION_COLUMNS, *ERROR_COLUMNS) if f"| `{name}` |" not in doc]
    assert not missing, f"docs/predict.md lacks columns {missing}"

"""[trust] docs/trust.md is the "what seminspect refuses and why" page: every kind of refusal has its place."""

from __future__ import annotations

from pathlib import Path

from seminspect.data import refusals
from seminspect.data.validate import KINDS

DOC = Path(__file__).resolve().parents[1] / "docs" / "trust.md"


def test_trust_page_names_every_refusal_at_the_door_and_links_the_rest() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert text.startswith("# What seminspect refuses, and why")
    door = {c.kind for c in vars(refusals).values()
            if isinstance(c, type) and issubclass(c, refusals.ImageReadError)}
    per_site = {"size_mismatch", "no_target", "mask_size_mismatch"}
    assert door <= set(KINDS) and per_site <= set(KINDS)
    assert [k for k in sorted(door | per_site) if f"`{k}`" not in text] == []
    assert "data_format.md#what-seminspect-validate-checks" in text  # every other validate kind is listed there


def test_trust_page_has_a_section_for_each_kind_of_refusal() -> None:
    text = DOC.read_text(encoding="utf-8")
    sections = ["## The path rule", "## The pixel limit", "## Bit depth, channels and formats",
                "## Depth maps: NaN and Inf", "## The per-site rules", "## Data the model was not trained on",
                "## Strict configs", "## YAML booleans", "## Strict outputs", "## Caches and resumes keyed by content",
                "## Numerical guards in depth training", "## Killed runs: temporary files", "## Importers"]
    assert [s for s in sections if s not in text] == []

"""``seminspect demo``: the main job on the embedded default data (the virtual fab)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from seminspect.cli._common import console


def demo(
    out: Path = typer.Option(Path("runs/demo"), help="Output folder (re-running resumes)."),
    n_samples: int = typer.Option(760, "--n", min=40, help="Virtual-fab sites to generate."),
    size: int = typer.Option(460, help="Image size, px."),
    zooms: int = typer.Option(2, min=0, max=5, help="Zoom views per site."),
    difficulty: str = typer.Option("medium", help="easy | medium | hard."),
    seed: int = typer.Option(0, help="Seed for everything."),
    workers: int = typer.Option(0, help="Generator processes (0 = all cores)."),
) -> None:
    """The main job: generate, validate, contact sheet, train, calibrate, evaluate, report.

    Generates a virtual-fab dataset, validates it, renders a contact sheet, trains the multi-view
    classifier, calibrates its triage thresholds, evaluates on held-out sites and writes the report.
    """
    from seminspect.pipeline import run_demo

    result = run_demo(out, n_samples=n_samples, image_size=size, n_zooms=zooms, difficulty=difficulty,
                      seed=seed, workers=workers or None, log=console.print)
    console.print(f"\n[bold]report:[/] {result.report}")
    console.print(f"[bold]contact sheet:[/] {result.contact_sheet}")
    console.print("[bold]headline (held-out test split):[/]")
    console.print_json(json.dumps(result.headline, default=str))


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)

"""``seminspect demo``: the main job on the embedded default data (the virtual fab)."""

from __future__ import annotations

from pathlib import Path

import typer

from seminspect.cli._common import console
from seminspect.pipeline import DEMO_SITES


def demo(
    out: Path = typer.Option(Path("runs/demo"), help="Output folder (re-running resumes)."),
    n_samples: int = typer.Option(DEMO_SITES, "--n", min=40, help="Labelled virtual-fab sites to generate."),
    n_new: int = typer.Option(200, "--new", min=1, help="Fresh unlabelled sites judged by `predict` at the end."),
    size: int = typer.Option(460, help="Image size, px."),
    zooms: int = typer.Option(2, min=0, max=5, help="Zoom views per site."),
    difficulty: str = typer.Option("medium", help="easy | medium | hard."),
    seed: int = typer.Option(0, help="Seed for everything."),
    workers: int = typer.Option(0, help="Generator processes (0 = all cores)."),
) -> None:
    """The main job: generate, validate, contact sheet, train, calibrate, evaluate, report, predict new sites.

    Generates a labelled virtual-fab dataset, validates it, renders a contact sheet, trains the multi-view
    classifier, calibrates its triage on the calib split, evaluates the certified automation on held-out
    test sites and writes the report; then generates fresh unlabelled sites and judges them with `predict`.
    """
    from seminspect.pipeline import run_demo

    result = run_demo(out, n_samples=n_samples, image_size=size, n_zooms=zooms, difficulty=difficulty,
                      seed=seed, workers=workers or None, n_new=n_new,
                      log=lambda msg: console.print(msg, highlight=False))
    h = result.headline
    lv = " / ".join(f"{k} {v:.3f}" for k, v in h.get("level_accuracy", {}).items())
    console.print(f"\n[bold]held-out test split ({h.get('n')} sites):[/] AUROC {h.get('auroc', float('nan')):.3f}, "
                  f"type macro-F1 {h.get('type_macro_f1', float('nan')):.3f}, accuracy per level {lv}", highlight=False)
    console.print(f"[bold]report:[/] {result.report}", highlight=False)
    console.print(f"[bold]decisions on the new sites:[/] {result.decisions}", highlight=False)
    console.print(f"[bold]summary:[/] {result.out / 'summary.json'}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)

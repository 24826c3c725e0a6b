"""``seminspect validate`` and ``seminspect import``: check a dataset folder, convert real datasets."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer

from seminspect.cli._common import console, err_console


def validate(
    path: Path = typer.Argument(..., help="Dataset folder (manifest.csv/.parquet + dataset.yaml + images)."),
    taxonomy: str = typer.Option(None, "--taxonomy", "-t",
                                 help="Taxonomy name or YAML file to check defect types against "
                                      "(default: the one in dataset.yaml)."),
    json_out: Path = typer.Option(None, "--json", help="Also write the full report as JSON here."),
    fast: bool = typer.Option(False, "--fast", help="Only check that files exist; do not decode images."),
    max_problems: int = typer.Option(50, help="How many problems to print (all go to --json)."),
) -> None:
    """Check a dataset and list EVERY problem with its file and manifest row; exit 1 if any error."""
    from rich.markup import escape

    from seminspect.data.validate import validate_dataset

    report = validate_dataset(path, taxonomy=taxonomy, check_images=not fast)
    report.print(console, max_problems=max_problems)
    if json_out is not None:
        report.save_json(json_out)
        console.print(f"report written to {json_out}")
    if not report.ok:
        err_console.print(f"[bold red]validation failed:[/] {len(report.errors)} error(s) in {escape(str(path))}",
                          highlight=False)
        raise typer.Exit(1)


class ImportKind(StrEnum):
    deeppcb = "deeppcb"
    sem_pairs = "sem-pairs"
    elpv = "elpv"
    samsung_depth = "samsung-depth"


def import_dataset(
    kind: ImportKind = typer.Argument(..., help="Which dataset: deeppcb, sem-pairs, elpv, samsung-depth."),
    source: Path = typer.Argument(..., help="Source folder/file. For elpv: '-' (or 'elpv_dataset') reads the "
                                            "installed PyPI package elpv-dataset; a folder holding labels.csv and "
                                            "images/ also works."),
    out: Path = typer.Argument(..., help="Output dataset folder (created)."),
    mode: str = typer.Option("patches", help="deeppcb only: 'patches' (crops around boxes + box-free "
                                             "normal crops) or 'pairs' (whole 640x640 pairs with box masks)."),
    patch_size: int = typer.Option(96, help="deeppcb patches: crop side in pixels."),
    normals_per_image: int = typer.Option(2, help="deeppcb patches: box-free normal crops per image pair."),
    list_file: str = typer.Option(None, "--list", help="deeppcb only: the pair list to read, relative to SOURCE "
                                                       "(default trainval.txt; the official test split: test.txt)."),
    split_as: str = typer.Option(None, help="deeppcb only: put every pair in this split (e.g. --list test.txt "
                                            "--split-as test) instead of drawing train/calib/test 60/20/20."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="deeppcb, elpv, sem-pairs: record an unreadable item "
                                                            "in OUT/import_skipped.csv and go on, instead of "
                                                            "stopping at the first one."),
    uncertain: str = typer.Option("exclude", help="elpv only: what to do with probability-1/3 cells: "
                                                  "'exclude' or 'unlabelled'."),
    limit: int = typer.Option(None, help="Import at most this many source items (pairs, cells, sites)."),
    seed: int = typer.Option(0, help="Seed for crops and splits (the import is deterministic)."),
    overwrite: bool = typer.Option(False, help="Replace an existing manifest in OUT."),
) -> None:
    """Convert a public real dataset into the seminspect format (then run `seminspect validate OUT`)."""
    import time

    from seminspect.data import adapters

    if kind != ImportKind.deeppcb and (list_file is not None or split_as is not None):
        raise adapters.AdapterError(f"--list and --split-as apply to deeppcb only, not {kind.value}")
    if kind == ImportKind.samsung_depth and skip_bad:
        raise adapters.AdapterError("--skip-bad applies to deeppcb, elpv and sem-pairs (samsung-depth reads one "
                                    "array file, which is read whole or refused)")

    def log(line: str) -> None:
        err_console.print(f"[yellow]warning:[/] {line}", highlight=False, soft_wrap=True)

    t0 = time.perf_counter()
    if kind == ImportKind.deeppcb:
        root = adapters.import_deeppcb(source, out, mode=mode, patch_size=patch_size,
                                       normals_per_image=normals_per_image, limit=limit, seed=seed,
                                       overwrite=overwrite, list_file=list_file, split_as=split_as,
                                       skip_bad=skip_bad, log=log)
    elif kind == ImportKind.sem_pairs:
        root = adapters.import_sem_pairs(source, out, overwrite=overwrite, skip_bad=skip_bad, log=log)
    elif kind == ImportKind.elpv:
        root = adapters.import_elpv(source, out, uncertain=uncertain, limit=limit, seed=seed, overwrite=overwrite,
                                    skip_bad=skip_bad, log=log)
    else:
        root = adapters.import_samsung_depth(source, out, limit=limit, seed=seed, overwrite=overwrite)
    from seminspect.data.dataset import SampleDataset

    ds = SampleDataset(root)
    console.print(f"imported {len(ds)} samples into {root} in {time.perf_counter() - t0:.1f} s")


def register(app: typer.Typer) -> None:
    app.command("validate")(validate)
    app.command("import")(import_dataset)

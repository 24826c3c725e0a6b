"""``seminspect generate`` (virtual-fab dataset) and ``seminspect show`` (PNG contact sheet)."""

from __future__ import annotations

from pathlib import Path

import typer

from seminspect.cli._common import console


def generate(
    out: Path = typer.Argument(..., help="Output dataset folder (created; an interrupted run resumes)."),
    n: int = typer.Option(200, "--n", help="Number of samples (sites)."),
    size: int = typer.Option(460, "--size", help="Image height = width, px."),
    angles: int = typer.Option(5, "--angles", help="Target views (detectors), 0-5."),
    references: int = typer.Option(-1, "--references", help="Reference views, 0-5 (-1: same as --angles)."),
    zooms: int = typer.Option(2, "--zooms", help="Zoom views around the site, 0-5."),
    difficulty: str = typer.Option("medium", "--difficulty", help="easy | medium | hard."),
    dose: float = typer.Option(0.0, "--dose", help="Electrons / px at unit yield (0: per difficulty)."),
    families: str = typer.Option("", "--families",
                                 help="Comma-separated layouts: line_space,contact_array,turns,logic (default all)."),
    abnormal_fraction: float = typer.Option(0.5, "--abnormal-fraction", help="Share of samples with a defect."),
    seed: int = typer.Option(0, "--seed", help="Random seed (same seed = same dataset)."),
    workers: int = typer.Option(0, "--workers", help="Processes (0: all cores)."),
    bits: int = typer.Option(8, "--bits", help="8 or 16-bit images."),
    image_format: str = typer.Option("png", "--format", help="png | tiff."),
    long_tail: bool = typer.Option(False, "--long-tail",
                                   help="Types from the 55-leaf sem_longtail tree with Zipf-like frequencies."),
    tail_exponent: float = typer.Option(1.0, "--tail-exponent", help="Zipf exponent s (p ~ rank^-s), --long-tail."),
    holdout: int = typer.Option(0, "--holdout", help="Rare types kept out of train/calib (test only), --long-tail."),
    holdout_types: str = typer.Option("", "--holdout-types",
                                      help="Comma-separated types kept out of train/calib, --long-tail."),
) -> None:
    """Generate a synthetic multi-view SEM dataset (virtual fab) with masks, depth and train/calib/test splits."""
    from seminspect.data.synth import FabConfig, generate_dataset

    kwargs: dict[str, object] = {
        "image_size": size, "n_angles": angles, "n_zooms": zooms, "difficulty": difficulty, "bits": bits,
        "image_format": image_format,
    }
    if references >= 0:
        kwargs["n_references"] = references
    if dose > 0:
        kwargs["dose"] = dose
    if families:
        kwargs["pattern_families"] = [f.strip() for f in families.split(",") if f.strip()]
    if long_tail:
        kwargs.update(long_tail=True, tail_exponent=tail_exponent, n_holdout=holdout,
                      holdout_types=[t.strip() for t in holdout_types.split(",") if t.strip()])
    elif holdout or holdout_types:
        kwargs.update(n_holdout=holdout, holdout_types=[t.strip() for t in holdout_types.split(",") if t.strip()])
    config = FabConfig.make(**kwargs)
    root = generate_dataset(out, n, config, abnormal_fraction=abnormal_fraction, seed=seed,
                            workers=workers or None)
    console.print(f"wrote {n} samples to {root}")


def show(
    dataset: Path = typer.Argument(..., help="Dataset folder (manifest + images)."),
    out: Path = typer.Option(Path("contact_sheet.png"), "--out", help="PNG file to write."),
    ids: list[str] = typer.Option(None, "--ids", help="Sample ids to show (repeat the option)."),
    n: int = typer.Option(8, "--n", help="Number of samples when --ids is not given."),
    per_type: bool = typer.Option(False, "--per-type", help="One sample of each defect type (plus one normal)."),
    max_views: int = typer.Option(0, "--max-views", help="At most this many views per row (0: all)."),
    title: str = typer.Option("", "--title", help="Figure title (default: the dataset folder name)."),
) -> None:
    """Render samples of a dataset as a PNG contact sheet: views per row, mask outlines, labels."""
    from seminspect.data.dataset import SampleDataset
    from seminspect.evaluation.contact_sheet import render_contact_sheet

    ds = SampleDataset(dataset)
    if ids:
        chosen = list(ids)
        ds = ds.subset(chosen)
        samples = [ds[i] for i in range(len(ds))]
    else:
        if per_type:
            first: dict[str | None, int] = {}
            labels = ds.is_abnormal
            for i, t in enumerate(ds.defect_types):
                key = t if labels[i] == 1 else None
                first.setdefault(key, i)
            order = sorted(first.items(), key=lambda kv: (kv[0] is not None, kv[0] or ""))
            picks = [i for _, i in order]
        else:
            k = max(1, min(n, len(ds)))
            picks = sorted({int(round(x)) for x in [j * (len(ds) - 1) / max(k - 1, 1) for j in range(k)]})
        samples = [ds[i] for i in picks]
    path = render_contact_sheet(samples, out, title=title or Path(dataset).name, max_views=max_views or None)
    console.print(f"wrote {path} ({len(samples)} samples)")


def register(app: typer.Typer) -> None:
    app.command("generate")(generate)
    app.command("show")(show)

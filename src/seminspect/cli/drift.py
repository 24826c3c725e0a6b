"""``seminspect drift A B`` and ``seminspect drift-matrix DATA``: is this data still like that data?"""

from __future__ import annotations

from pathlib import Path

import typer

from seminspect.cli._common import console


def drift(
    a: Path = typer.Argument(..., help="Dataset folder A (e.g. the training data)."),
    b: Path = typer.Argument(..., help="Dataset folder B (e.g. this week's data)."),
    split_a: str | None = typer.Option(None, help="Only this split of A."),
    split_b: str | None = typer.Option(None, help="Only this split of B."),
    backbone: str = typer.Option("mobilenetv2", help="Backbone for the embeddings ('tiny' = random conv)."),
    image_size: int = typer.Option(128, help="Views are resized to this square size."),
    max_samples: int | None = typer.Option(300, help="Random subset per set (speed); 0 = all."),
    n_permutations: int = typer.Option(200, help="Permutations for the p-value."),
    seed: int = typer.Option(0),
    alpha: float = typer.Option(0.01, help="Report drift when p < alpha."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write the result as JSON."),
) -> None:
    """Sliced Wasserstein distance between pooled backbone embeddings of A and B, with a permutation p-value."""
    from seminspect.data.dataset import SampleDataset
    from seminspect.drift import dataset_embeddings, drift_test
    from seminspect.utils.io import atomic_write_json

    sets = []
    for root, split in ((a, split_a), (b, split_b)):
        ds = SampleDataset(root)
        sets.append(ds.split(split) if split else ds)
    kw = dict(backbone=backbone, pretrained=backbone != "tiny", image_size=image_size,
              max_samples=max_samples or None, seed=seed)
    ea, eb = (dataset_embeddings(s, **kw) for s in sets)
    res = drift_test(ea, eb, n_permutations=n_permutations, seed=seed)
    verdict = "[bold red]drift[/]" if res.p_value < alpha else "no significant drift"
    console.print(f"SWD {res.distance:.4f} (null mean {res.null_mean:.4f}, 95% {res.null_q95:.4f}), "
                  f"p = {res.p_value:.4g} with {res.n_a} vs {res.n_b} samples: {verdict}")
    if out is not None:
        atomic_write_json(out, {"a": str(a), "b": str(b), **res.to_dict(), "alpha": alpha, "backbone": backbone})


def drift_matrix(
    data: Path = typer.Argument(..., help="Dataset folder with a grouping column and train/calib/test splits."),
    group_by: str = typer.Option("product", help="Metadata column to group by (product, lot, tool)."),
    config: Path | None = typer.Option(None, "--config", "-c", help="Anomaly YAML config."),
    calib_split: str = typer.Option("calib", help="Held-out normals that set each model's threshold ('' = none)."),
    n_permutations: int = typer.Option(100),
    out: Path = typer.Option(..., "--out", "-o", help="Markdown report (a .json is written beside it)."),
) -> None:
    """Cross-group transfer: a model per group and one on all groups, tested on each; AUROC, AP, false alarms
    at the fitting model's threshold, the embedding distance beside each pair and whether it predicts the loss."""
    from seminspect.models.anomaly.config import load_anomaly_config
    from seminspect.transfer import distance_vs_loss, threshold_stability, transfer_markdown, transfer_matrix
    from seminspect.utils.io import atomic_write_json, atomic_write_text

    cfg = load_anomaly_config(config).model_dump(exclude_unset=True) if config else {}  # checked before any work
    m = transfer_matrix(data, group_by=group_by, config=cfg, calib_split=calib_split or None,
                        n_permutations=n_permutations)
    losses = ("auroc", "false_alarms") if calib_split else ("auroc",)
    m["distance_vs_loss"] = [distance_vs_loss(m, loss) for loss in losses]
    md = transfer_markdown(m) + "".join(
        f"\nSpearman correlation of distance with the {r['loss']} loss over {r['n_cells']} cells: {r['spearman']:.3f} "
        f"(one-sided permutation p = {r['p_value']:.3g})." for r in m["distance_vs_loss"]) + "\n"
    if calib_split:
        m["threshold_stability"] = threshold_stability(m)
    atomic_write_text(out, md)
    atomic_write_json(out.with_suffix(".json"), m)
    console.print(md)


def register(app: typer.Typer) -> None:
    app.command("drift")(drift)
    app.command("drift-matrix")(drift_matrix)

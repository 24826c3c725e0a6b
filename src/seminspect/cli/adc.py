"""``seminspect train`` and ``seminspect evaluate``: the multi-view ADC classifier from the command line.

``seminspect train`` also runs under ``torchrun`` (``torchrun --standalone --nproc_per_node=2 -m
seminspect train CONFIG``): every process trains its share, rank 0 alone evaluates the test split and
writes the artefact and report (docs/distributed.md).
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from seminspect.cli._common import console


def train(
    config: Path = typer.Argument(..., help="YAML training config (see configs/adc_*.yaml)."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Artefact folder (default: the config's output)."),
    threads: int | None = typer.Option(
        None, help="Torch threads per process (default: the config's, else torch's; under torchrun the CPUs "
                   "divided by the processes on the machine)."),
) -> None:
    """Train the ADC model, calibrate its thresholds on the calib split, evaluate on test; write one artefact.

    Also runs under torchrun: each process trains on its share of every batch (docs/distributed.md).
    """
    import torch

    from seminspect.training import distributed as dist
    from seminspect.training.adc_trainer import train as train_only
    from seminspect.training.config import ADCConfig
    from seminspect.workflow import train_and_evaluate

    cfg = ADCConfig.from_yaml(config)
    if threads:
        cfg.threads = threads
        torch.set_num_threads(threads)
    dist.init()
    try:
        if not dist.is_main():
            os.environ["SEMINSPECT_PROGRESS"] = "0"  # one set of progress bars: rank 0's
            train_only(cfg, output=output, log=None)  # the same collectives as rank 0's training
            dist.barrier()  # rank 0 evaluates and writes; leave together
            return
        result = train_and_evaluate(cfg, output=output, log=lambda msg: console.print(msg, highlight=False))
        _print_headline(result.metrics.get("test", {}))
        console.print(f"artefact: {result.artefact}")
        dist.barrier()
    finally:
        dist.shutdown()


def evaluate(
    artefact: Path = typer.Argument(..., help="Folder written by `seminspect train`."),
    dataset: Path = typer.Argument(..., help="Dataset folder (manifest + images)."),
    split: str = typer.Option("test", help="Split to evaluate ('all' for every sample)."),
    report: Path | None = typer.Option(None, help="HTML report path (default: <artefact>/eval_<split>.html)."),
    drop_role: list[str] = typer.Option([], "--drop-role", help="Remove views of this role (e.g. reference)."),
) -> None:
    """Metrics and an HTML report of a trained model on a dataset (the inference path, then the labels)."""
    from seminspect.evaluation.adc_evaluate import evaluate as run_eval
    from seminspect.utils.io import atomic_write_json, finite_json

    report = report or (artefact / f"eval_{split}.html")
    metrics = run_eval(artefact, dataset, split=None if split == "all" else split, report=report,
                       drop_roles=drop_role, log=lambda msg: console.print(msg, highlight=False))
    atomic_write_json(report.with_suffix(".json"), finite_json(metrics))
    _print_headline(metrics)
    console.print(f"report: {report}")


def _print_headline(m: dict) -> None:
    if not m:
        return
    rap = m.get("recall_at_precision", {})
    cal = m.get("calibrated", {})
    parts = [f"n={m.get('n')}"]
    if "auroc" in m:
        parts.append(f"AUROC={m['auroc']:.4f}")
    if rap:
        parts.append(f"recall@P99(test-optimal)={rap.get('recall', 0):.4f}")
    if cal:
        parts.append(f"calibrated recall={cal['recall']:.4f} precision={cal['precision']:.4f} "
                     f"(lower95 {cal['precision_lower_95']:.4f})")
    if "type_macro_f1" in m:
        parts.append(f"type macro-F1={m['type_macro_f1']:.4f}")
    if "triage" in m and "automation_rate" in m["triage"]:
        parts.append(f"automation={m['triage']['automation_rate']:.3f}")
    console.print("  ".join(parts), highlight=False)


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("evaluate")(evaluate)

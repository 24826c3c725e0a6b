"""``seminspect train`` as one call: train and calibrate (writes the artefact), then evaluate the test split.

    result = train_and_evaluate("configs/adc_demo.yaml")
    result.metrics["test"]["auroc"], result.artefact / "report.html"

Top-level orchestration: it joins training (which writes the artefact) and evaluation (which runs the
inference path on it), so neither has to import the other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def train_and_evaluate(config: Any, output: str | Path | None = None, log: Any = print,
                       report: bool = True) -> Any:
    """``seminspect train``: train and calibrate (writes the artefact), then evaluate the test split.

    The test split is judged by the inference path on the written artefact, exactly as
    ``seminspect evaluate`` would; its metrics go under ``"test"`` in ``metrics.json`` and the
    report to ``<artefact>/report.html``. Returns the trainer's ``TrainResult`` with
    ``metrics["test"]`` and ``predictions["test"]`` filled in.
    """
    from seminspect.data.sample import Role
    from seminspect.evaluation.adc_evaluate import evaluate_artefact
    from seminspect.training.adc_trainer import split_or_none, train
    from seminspect.training.config import ADCConfig
    from seminspect.utils.io import atomic_write_json, finite_json

    cfg = config if isinstance(config, ADCConfig) else ADCConfig.from_yaml(config)
    result = train(cfg, output=output, log=log)
    from seminspect.data.dataset import SampleDataset

    if split_or_none(SampleDataset(cfg.data.path), cfg.data.test_split) is None:
        return result
    kept = {Role.parse(r) for r in cfg.data.roles} if cfg.data.roles else set(Role)
    ev = evaluate_artefact(result.artefact, cfg.data.path, cfg.data.test_split,
                           report=result.artefact / "report.html" if report else None,
                           drop_roles=[r.value for r in Role if r not in kept], log=log)
    result.metrics["test"] = ev.metrics
    result.predictions["test"] = ev.predictions
    atomic_write_json(result.artefact / "metrics.json", finite_json(result.metrics))
    return result

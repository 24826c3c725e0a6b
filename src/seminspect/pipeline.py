"""The main job, end to end: generate (virtual fab) -> validate -> contact sheet -> train ->
calibrate -> evaluate -> report. ``seminspect demo`` is a thin wrapper around :func:`run_demo`.

Every stage is a call into the public API, so a notebook can run the same steps one by one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from seminspect.errors import SeminspectError
from seminspect.utils.io import atomic_write_json


class DemoError(SeminspectError):
    """A stage of the main job failed in a way the user can act on."""


@dataclass
class DemoResult:
    out: Path
    dataset: Path
    contact_sheet: Path
    artefact: Path
    report: Path
    headline: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)


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
    from seminspect.utils.io import atomic_write_json

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
    atomic_write_json(result.artefact / "metrics.json", result.metrics)
    return result


def demo_config_path() -> Path:
    """The packaged ADC config of the main job."""
    return Path(str(resources.files("seminspect") / "configs" / "demo.yaml"))


def run_demo(out: str | Path = "runs/demo", n_samples: int = 760, image_size: int = 460, n_zooms: int = 2,
             difficulty: str = "medium", seed: int = 0, workers: int | None = None,
             log: Any = print) -> DemoResult:
    """Run the main job into ``out`` and return where everything is, with headline figures.

    Re-running with the same settings reuses the generated samples and the feature cache
    (generation and training both resume), so an interrupted demo continues where it stopped.
    """
    from seminspect.data.synth import FabConfig, generate_dataset
    from seminspect.data.validate import validate_dataset
    from seminspect.evaluation.contact_sheet import render_contact_sheet
    from seminspect.training.config import ADCConfig

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}

    t0 = time.perf_counter()
    fab = FabConfig(image_size=image_size, n_angles=5, n_zooms=n_zooms, difficulty=difficulty)
    dataset = generate_dataset(out / "data", n_samples, fab, abnormal_fraction=0.5, seed=seed, workers=workers)
    seconds["generate"] = time.perf_counter() - t0
    log(f"[1/4] generated {n_samples} samples ({fab.n_angles}+{fab.refs} views + {fab.n_zooms} zooms, "
        f"{image_size} px) in {seconds['generate']:.0f} s -> {dataset}")

    t0 = time.perf_counter()
    report = validate_dataset(dataset, progress=True)
    report.save_json(out / "validation.json")
    seconds["validate"] = time.perf_counter() - t0
    if not report.ok:
        raise DemoError(f"{dataset}: generated dataset failed validation:\n{report.summary()}")
    log(f"[2/4] validated: no problems ({seconds['validate']:.0f} s) -> {out / 'validation.json'}")

    from seminspect.data.dataset import SampleDataset

    ds = SampleDataset(dataset)
    # One normal sample and the first sample of each defect type, from the whole dataset.
    shown: dict[str, int] = {}
    for i, (t, a) in enumerate(zip(ds.defect_types, ds.is_abnormal, strict=True)):
        key = t if a == 1 else "normal"
        if key not in shown:
            shown[key] = i
    sheet = render_contact_sheet([ds[i] for i in shown.values()], out / "contact_sheet.png",
                                 title=f"virtual fab, {difficulty}: one sample per type", max_views=12)
    log(f"[3/4] contact sheet of {len(shown)} samples -> {sheet}")

    t0 = time.perf_counter()
    cfg = ADCConfig.from_yaml(demo_config_path())
    cfg.data.path = str(dataset)
    cfg.seed = seed
    result = train_and_evaluate(cfg, output=out / "adc", log=log)
    seconds["train_calibrate_evaluate"] = time.perf_counter() - t0
    test = result.metrics.get("test", {})
    headline = _headline(test)
    headline["seconds"] = {k: round(v, 1) for k, v in seconds.items()}
    atomic_write_json(out / "summary.json", headline)
    report_path = result.artefact / "report.html"
    log(f"[4/4] trained, calibrated and evaluated in {seconds['train_calibrate_evaluate']:.0f} s -> {report_path}")
    return DemoResult(out=out, dataset=dataset, contact_sheet=sheet, artefact=result.artefact,
                      report=report_path, headline=headline, seconds=seconds)


def _headline(test: dict[str, Any]) -> dict[str, Any]:
    keys = ("n", "auroc", "average_precision", "recall_at_precision", "type_macro_f1", "type_accuracy",
            "level_accuracy", "triage")
    return {k: test[k] for k in keys if k in test}

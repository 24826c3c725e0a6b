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
from seminspect.utils.io import atomic_write_json, finite_json
from seminspect.workflow import train_and_evaluate


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
    decisions: Path | None = None


# Certifying 99 % precision at 95 % confidence needs at least 299 error-free automatic calls on the
# calibration split, and how many defects score above every normal grows with the training set
# (docs/adc.md, "How large a calibration split must be"): train and calibration get 1,080 sites each.
DEMO_SITES = 2400
DEMO_SPLITS = {"train": 0.45, "calib": 0.45, "test": 0.10}


def demo_config_path() -> Path:
    """The packaged ADC config of the main job."""
    return Path(str(resources.files("seminspect") / "configs" / "demo.yaml"))


def run_demo(out: str | Path = "runs/demo", n_samples: int = DEMO_SITES, image_size: int = 460, n_zooms: int = 2,
             difficulty: str = "medium", seed: int = 0, workers: int | None = None, n_new: int = 200,
             log: Any = print) -> DemoResult:
    """Run the main job into ``out`` and return where everything is, with headline figures.

    Re-running with the same settings reuses the generated samples, the feature cache and a finished
    prediction run (generation, training and predict all resume), so an interrupted demo continues.
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
    dataset = generate_dataset(out / "data", n_samples, fab, abnormal_fraction=0.5, seed=seed, workers=workers,
                               splits=DEMO_SPLITS)
    seconds["generate"] = time.perf_counter() - t0
    log(f"[1/6] generated {n_samples} labelled sites ({fab.n_angles}+{fab.refs} views + {fab.n_zooms} zooms, "
        f"{image_size} px; splits {_shares(DEMO_SPLITS)}) in {seconds['generate']:.0f} s -> {dataset}")

    t0 = time.perf_counter()
    report = validate_dataset(dataset, progress=True)
    report.save_json(out / "validation.json")
    seconds["validate"] = time.perf_counter() - t0
    if not report.ok:
        raise DemoError(f"{dataset}: generated dataset failed validation:\n{report.summary()}")
    log(f"[2/6] validated: no problems ({seconds['validate']:.0f} s) -> {out / 'validation.json'}")

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
    log(f"[3/6] contact sheet of {len(shown)} samples -> {sheet}")

    t0 = time.perf_counter()
    cfg = ADCConfig.from_yaml(demo_config_path())
    cfg.data.path = str(dataset)
    cfg.seed = seed
    result = train_and_evaluate(cfg, output=out / "adc", log=log)
    seconds["train_calibrate_evaluate"] = time.perf_counter() - t0
    test = result.metrics.get("test", {})
    report_path = result.artefact / "report.html"
    log(f"[4/6] trained, calibrated on {result.metrics.get('calib_samples', '?')} sites and evaluated on "
        f"{test.get('n')} held-out test sites in {seconds['train_calibrate_evaluate']:.0f} s -> {report_path}")
    log(f"[5/6] {automation_sentence(test)}")

    t0 = time.perf_counter()
    new = unlabelled_batch(out / "new_sites", n_new, fab, seed=seed + 1000, workers=workers)
    from seminspect.inference.predict import PredictError, predict

    decisions = out / "new_sites_decisions.parquet"
    try:
        summary = predict(result.artefact, new, decisions, log=None)
    except PredictError:  # decisions of an earlier model (the demo re-trained): judge again with this one
        log(f"{decisions}: written by an earlier model; judging the new sites again")
        summary = predict(result.artefact, new, decisions, log=None, overwrite=True)
    seconds["new_sites_predict"] = time.perf_counter() - t0
    r = summary.routes
    log(f"[6/6] {summary.n_sites} new unlabelled sites generated and judged in {seconds['new_sites_predict']:.0f} s "
        f"({summary.sites_per_second:.1f} sites/s in predict): auto_abnormal {r.get('auto_abnormal', 0)}, "
        f"auto_normal {r.get('auto_normal', 0)}, review {r.get('review', 0)}; failed {summary.n_failed} "
        f"-> {decisions}")
    headline = _headline(test)
    headline["new_sites"] = {"n": summary.n_sites, "routes": r, "decisions": str(decisions)}
    headline["seconds"] = {k: round(v, 1) for k, v in seconds.items()}
    atomic_write_json(out / "summary.json", finite_json(headline))
    return DemoResult(out=out, dataset=dataset, contact_sheet=sheet, artefact=result.artefact,
                      report=report_path, headline=headline, seconds=seconds, decisions=decisions)


def unlabelled_batch(root: Path, n: int, fab: Any, seed: int, workers: int | None) -> Path:
    """``n`` fresh virtual-fab sites with their labels, types and masks removed from the manifest."""
    from seminspect.data.manifest import write_manifest
    from seminspect.data.synth import generate_dataset

    generate_dataset(root, n, fab, abnormal_fraction=0.5, seed=seed, workers=workers, splits={"new": 1.0})
    import pandas as pd

    m = pd.read_csv(root / "manifest.csv", dtype=str, keep_default_na=False)
    keep = [c for c in m.columns if c not in ("label", "defect_type", "mask", "depth", "split")]
    write_manifest(root, m[keep].to_dict("records"), "csv")
    return root


def _shares(splits: dict[str, float]) -> str:
    return " / ".join(f"{k} {v:.0%}" for k, v in splits.items())


def automation_sentence(test: dict[str, Any]) -> str:
    """The main job's headline in words: certified automation and the realised precision beside it."""
    tri = test.get("triage") or {}
    n = tri.get("n", 0)
    routes = tri.get("routes", {})
    n_ab, n_no = routes.get("auto_abnormal", 0), routes.get("auto_normal", 0)
    text = (f"certified automation on {n} held-out test sites: {tri.get('automation_rate', 0):.1%} "
            f"(auto-abnormal {n_ab}, auto-normal {n_no}, review {routes.get('review', 0)}) at the floor of "
            f">= 99 % precision with 95 % confidence")
    if n_ab:
        lo, hi = tri["abnormal_precision_ci"]
        text += (f"; realised precision of the automatic abnormal calls {tri['abnormal_precision']:.1%} "
                 f"(95 % CI {lo:.1%}-{hi:.1%})")
    if n_no:
        lo, hi = tri["normal_miss_rate_ci"]
        text += f"; defects among automatic normal calls {tri['normal_miss_rate']:.1%} (95 % CI {lo:.1%}-{hi:.1%})"
    if not n_ab and not n_no:
        text += ": nothing was automated (the report says why)"
    return text


def _headline(test: dict[str, Any]) -> dict[str, Any]:
    keys = ("n", "auroc", "average_precision", "recall_at_precision", "type_macro_f1", "type_accuracy",
            "level_accuracy", "triage")
    return {k: test[k] for k in keys if k in test}

"""``seminspect predict``, ``join`` and ``optimise``: judge new sites with an inspection artefact, fast."""

from __future__ import annotations

from pathlib import Path

import typer

from seminspect.cli._common import console, err_console


def predict(
    artefact: Path = typer.Argument(..., help="Inspection artefact folder (written by `seminspect train`)."),
    data: Path = typer.Argument(..., help="Dataset folder or manifest (.csv/.parquet); labels are ignored."),
    out: Path = typer.Option(Path("decisions.parquet"), "--out", "-o",
                             help="Decisions file: .parquet, or .csv for CSV (errors and summary beside it)."),
    maps: Path | None = typer.Option(None, "--maps", help="Write each site's anomaly map here (16-bit PNG)."),
    ray: str | None = typer.Option(None, "--ray", help="Run on Ray Data: 'local' starts a local Ray, else a "
                                   "cluster address (ray://host:10001 or host:6379). Needs seminspect[ray]."),
    workers: int = typer.Option(2, help="Ray: inspector actors (each loads the model once)."),
    part_size: int = typer.Option(64, min=1, help="Sites per output part (a killed run redoes at most one)."),
    overwrite: bool = typer.Option(False, help="Discard an earlier run or output at OUT."),
    threads: int | None = typer.Option(None, help="Runtime threads (default: torch's; with --ray: per actor, 1)."),
    prefetch: int | None = typer.Option(None, min=0, help="Threads that read and align the next sites while one "
                                        "is judged (default: one per core, up to 4, on onnxruntime/openvino; "
                                        "0 on torch). Decisions do not depend on it."),
    processes: int = typer.Option(1, min=1, help="Worker processes, each judging whole sites with its own copy of "
                                  "the model and --threads (default 1) runtime threads; 2 on 2 cores is faster "
                                  "on large runs (benchmarks/results/predict_processes.md). Decisions do not "
                                  "depend on it."),
    backend: str | None = typer.Option(None, help="Where the ADC runs: onnxruntime (default; the whole model as "
                                       "one graph), openvino (seminspect[openvino]) or torch (eager). Env "
                                       "SEMINSPECT_BACKEND sets the default."),
    precision: str = typer.Option("fp32", help="fp32; bf16 (openvino, where the CPU has it); int8 (needs "
                                  "`seminspect optimise` first)."),
    fp32_check: bool | None = typer.Option(None, "--fp32-check/--no-fp32-check", help="bf16/int8: judge again in "
                                           "fp32 the sites near a threshold, so routes stay fp32's (default: "
                                           "wherever `seminspect optimise --precision` measured the margins)."),
    db: str | None = typer.Option(None, "--db", help="Also store the decisions in this review database (SQLite "
                                  "file or PostgreSQL URL; needs seminspect[serve]); sites routed to review "
                                  "join the review queue."),
) -> None:
    """Judge every site of DATA: route (auto-abnormal / auto-normal / review) with its reason, types, anomaly score.

    Streams the manifest (bounded memory) and resumes after an interruption: run the same command again.
    Exit status: 0 all sites judged, 1 some sites could not be read (see the errors file), 2 bad input.
    """
    if ray is not None:
        from seminspect.inference.ray_predict import predict_ray

        summary = predict_ray(artefact, data, out, address=None if ray == "local" else ray, workers=workers,
                              maps=maps, part_size=part_size, threads=threads or 1, overwrite=overwrite,
                              log=console.print, backend=backend, precision=precision)
    else:
        from seminspect.inference.predict import predict as run_predict
        from seminspect.utils.progress import make_progress

        with make_progress() as bar:
            task = bar.add_task("predict", total=None)

            def tick(done: int, total: int, rate: float) -> None:
                bar.update(task, completed=done, total=total, description=f"predict ({rate:.2f} sites/s)")

            summary = run_predict(artefact, data, out, maps=maps, part_size=part_size, overwrite=overwrite,
                                  threads=threads, log=console.print, progress=tick, backend=backend,
                                  precision=precision, prefetch=prefetch, fp32_check=fp32_check,
                                  processes=processes)
    for note in summary.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    r = summary.routes
    console.print(f"{summary.n_decided} of {summary.n_sites} sites judged in {summary.seconds:.1f} s "
                  f"({summary.sites_per_second:.2f} sites/s): auto_abnormal {r.get('auto_abnormal', 0)}, "
                  f"auto_normal {r.get('auto_normal', 0)}, review {r.get('review', 0)}", highlight=False)
    console.print(f"decisions: {summary.out}", highlight=False)
    if db is not None:
        from seminspect.cli.review import store_predictions

        done, skipped = store_predictions(artefact, Path(summary.out), data, db)
        console.print(f"review database {db}: {done} sites stored, {skipped} already there", highlight=False)
    if summary.n_failed:
        console.print(f"[bold red]{summary.n_failed} site(s) could not be judged[/]: {summary.errors}", highlight=False)
        raise typer.Exit(1)


def join(
    adc: Path = typer.Argument(..., help="ADC artefact folder (written by `seminspect train`)."),
    anomaly: Path = typer.Argument(..., help="Anomaly model folder (written by `seminspect anomaly fit`)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="New artefact folder (default: add to ADC in place)."),
    normals: Path | None = typer.Option(None, help="Dataset whose normal sites re-fit the anomaly rule through "
                                        "the inspector's shared alignment, and whose labelled sites calibrate the "
                                        "auto-normal route again with the rule (recommended; not the ADC's train "
                                        "split)."),
    split: str = typer.Option("calib", help="Split of --normals to use ('all' for every site)."),
) -> None:
    """Join an ADC artefact and an anomaly model into one inspection artefact (anomaly rule in the triage)."""
    from seminspect.inference.join import join as run_join

    manifest = run_join(adc, anomaly, out=out, normals=normals, split=None if split == "all" else split,
                        log=console.print)
    rule = manifest["anomaly"]
    console.print(f"artefact {out or adc} (model version {manifest['model_version']}): anomaly rule "
                  f"{rule['threshold']:.4g} ({rule['source']})", highlight=False)
    if normals is None:
        err_console.print("[yellow]warning:[/] the auto-normal route keeps the bound calibrated without the anomaly "
                          "rule; give --normals (e.g. the calib split) to fit the rule through the inspector and "
                          "calibrate that route again with it", highlight=False, soft_wrap=True)


def optimise(
    artefact: Path = typer.Argument(..., help="Inspection artefact folder (written by `seminspect train`)."),
    data: Path = typer.Option(..., "--data", help="Dataset folder whose sites calibrate the int8 graph."),
    split: str = typer.Option("calib", help="Split of --data to draw sites from ('all' for every site)."),
    sites: int = typer.Option(300, min=1, help="Calibration sites (drawn at random with --seed)."),
    check: int = typer.Option(100, min=0, help="Other sites on which int8 is compared with fp32."),
    seed: int = typer.Option(0, help="Random seed of the draw."),
    threads: int | None = typer.Option(None, help="ONNX Runtime threads (default: all cores)."),
    precision: str = typer.Option("int8", help="int8: make the int8 graph; bf16: only compare OpenVINO bf16 "
                                  "with fp32 (sets the margins of predict's fp32 check)."),
) -> None:
    """Make the int8 graph that `predict --precision int8` runs (or take bf16), checked against fp32 on real sites."""
    from seminspect.inference.optimise import optimise as run_optimise

    run_optimise(artefact, data, split=None if split == "all" else split, n_sites=sites, n_check=check, seed=seed,
                 threads=threads, log=lambda m: console.print(m, highlight=False), precision=precision)


def register(app: typer.Typer) -> None:
    app.command("predict")(predict)
    app.command("join")(join)
    app.command("optimise")(optimise)

"""``seminspect predict --ray``: the same inspector, scaled out on Ray Data (optional extra ``seminspect[ray]``).

    summary = predict_ray("runs/demo/adc", "fab_day3", "decisions.parquet", workers=2)         # local Ray
    summary = predict_ray(..., address="ray://head:10001")                                      # a cluster

The driver groups the manifest's rows into sites (streamed, no image read) and writes them as
``<out>.parts/sites.parquet``; Ray Data reads that file as a dataset, an actor pool of ``workers``
:class:`SiteJudge` actors (each loads the artefact once) judges the sites with the very code of the
single-process path (:func:`seminspect.inference.predict.judge_rows`, per site, no batch neighbours) and
Ray writes the results as Parquet under ``<out>.parts/ray/``. The driver then sorts them by site and
writes the same output files as :func:`seminspect.inference.predict.predict` (decisions, errors,
summary), so the two runs are interchangeable. On a cluster the artefact, the dataset and the output
folder must be on storage every node sees under the same path. A killed Ray run starts its Ray stage
again (the single-process path resumes part by part). This module is the only one that imports ray.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from seminspect.data.stream import SiteRows, iter_site_rows, manifest_of
from seminspect.errors import SeminspectError
from seminspect.inference.inspector import Inspector
from seminspect.inference.predict import PredictError, PredictSummary, _finalise, judge_rows, start_run
from seminspect.inference.schema import DECISION_SCHEMA, ERROR_SCHEMA, errors_frame, to_table
from seminspect.utils.io import atomic_path, atomic_write_json
from seminspect.utils.provenance import utc_now

SITES_SCHEMA = pa.schema([("ordinal", pa.int64()), ("sample_id", pa.string()), ("rows", pa.string()),
                          ("lines", pa.string()), ("error", pa.string()), ("file", pa.string())])
# What an actor returns per batch: the decision columns, plus the error table's two own columns.
RESULT_SCHEMA = pa.schema([*DECISION_SCHEMA, pa.field("error_file", pa.string()), pa.field("error", pa.string())])


class RayUnavailableError(SeminspectError):
    """``--ray`` was asked for but Ray is not installed or the cluster cannot be reached."""


def _write_sites(data: Path, path: Path, chunk: int = 1024) -> int:
    """Every site's manifest rows as one Parquet row each (streamed, bounded memory); returns the count."""
    n, buf = 0, []
    with atomic_path(path) as tmp, pq.ParquetWriter(tmp, SITES_SCHEMA) as writer:
        for s in iter_site_rows(data):
            buf.append({"ordinal": s.ordinal, "sample_id": s.sample_id, "rows": json.dumps(s.rows),
                        "lines": json.dumps(s.lines), "error": s.error, "file": s.file})
            n += 1
            if len(buf) >= chunk:
                writer.write_table(pa.Table.from_pylist(buf, schema=SITES_SCHEMA))
                buf = []
        if buf or n == 0:
            writer.write_table(pa.Table.from_pylist(buf, schema=SITES_SCHEMA))
    return n


class SiteJudge:
    """A Ray actor: loads the inspector once, judges batches of sites (a ``pyarrow.Table`` of ``SITES_SCHEMA``)."""

    def __init__(self, artefact: str, data: str, maps: str | None, scale: float, threads: int,
                 backend: str | None = None, precision: str = "fp32") -> None:
        self.inspector = Inspector.load(artefact, threads=threads, backend=backend, precision=precision)
        self.data = data
        self.maps = None if maps is None else Path(maps)
        self.scale = scale

    def __call__(self, batch: pa.Table) -> pa.Table:
        frames, errors = [], []
        for r in batch.to_pylist():
            rows = SiteRows(int(r["ordinal"]), r["sample_id"], json.loads(r["rows"]), json.loads(r["lines"]),
                            r["error"], r["file"])
            frame, err = judge_rows(self.inspector, self.data, rows, self.maps, self.scale)
            if frame is not None:
                frames.append(to_table(frame, DECISION_SCHEMA))
            if err is not None:
                errors.append(err)
        err_table = to_table(errors_frame(errors), ERROR_SCHEMA).rename_columns(
            ["site", "sample_id", "error_file", "error"])
        tables = [t.cast(pa.schema([f for f in RESULT_SCHEMA if f.name in t.column_names])) for t in
                  (*frames, err_table)]
        return pa.concat_tables(tables, promote_options="default").select(RESULT_SCHEMA.names).cast(RESULT_SCHEMA)


def _start_ray(address: str | None, cpus: int) -> tuple[Any, bool]:
    try:
        import ray
    except ImportError:
        raise RayUnavailableError("--ray needs Ray: pip install 'seminspect[ray]'") from None
    if ray.is_initialized():
        return ray, False
    try:
        if address is None:  # a local Ray for this run only; CPUs here are Ray's scheduling slots
            ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise RayUnavailableError(f"--ray {address or 'local'}: cannot start or reach Ray "
                                  f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    return ray, True


def _split_results(result_dir: Path, parts: Path, part_size: int) -> int:
    """Ray's output files -> ``part-K`` / ``errors-K`` files in site order; returns the number of parts."""
    table = pq.read_table(result_dir, schema=RESULT_SCHEMA).sort_by("site")
    failed = pc.is_valid(table.column("error"))
    decisions = table.filter(pc.invert(failed)).select(DECISION_SCHEMA.names).cast(DECISION_SCHEMA)
    errors = table.filter(failed).select(["site", "sample_id", "error_file", "error"]).rename_columns(
        ERROR_SCHEMA.names).cast(ERROR_SCHEMA)
    n_parts = max(1, -(-max(decisions.num_rows, errors.num_rows) // part_size))
    for prefix, t in (("part", decisions), ("errors", errors)):
        for k in range(n_parts):
            with atomic_path(parts / f"{prefix}-{k:06d}.parquet") as tmp:
                pq.write_table(t.slice(k * part_size, part_size), tmp)
    return n_parts


def predict_ray(artefact: str | Path, data: str | Path, out: str | Path, address: str | None = None,
                workers: int = 2, maps: str | Path | None = None, part_size: int = 64, batch_size: int = 4,
                threads: int = 1, overwrite: bool = False,
                log: Callable[[str], None] | None = print, backend: str | None = None,
                precision: str = "fp32") -> PredictSummary:
    """Judge every site of ``data`` on Ray with ``workers`` inspector actors; same files as ``predict``.

    ``address``: None starts a local Ray (stopped at the end); else ``ray://host:10001`` or ``host:6379``.
    ``threads``: torch threads per actor (each actor asks Ray for that many CPUs).
    """
    if workers < 1 or batch_size < 1 or part_size < 1 or threads < 1:
        raise PredictError(f"workers, batch_size, part_size and threads must be >= 1, got {workers}, {batch_size}, "
                           f"{part_size}, {threads}")
    t0 = time.perf_counter()
    data = Path(data)
    _, mpath = manifest_of(data)
    # checks the artefact (and makes its runtime graph) once here, with a one-line error, before Ray starts
    inspector = Inspector.load(artefact, backend=backend, precision=precision)
    run = start_run(inspector, data, out, maps, part_size, overwrite, log, runner="ray")
    if run.finished is not None:
        return run.finished
    paths, fp, maps_dir, scale = run.paths, run.fingerprint, run.maps, run.scale
    parts = paths["parts"]
    shutil.rmtree(parts / "ray", ignore_errors=True)  # a killed Ray stage starts again
    n = _write_sites(data, parts / "sites.parquet")
    notes = [*inspector.artefact.notes, inspector.runtime_note(f"{threads} thread(s) per actor")]
    del inspector  # the actors load their own
    # the actors' slots plus one for Ray's own read and write tasks (else they wait for a free actor slot forever)
    ray, started = _start_ray(address, max(workers * threads + 1, os.cpu_count() or 1))
    t_run = time.perf_counter()
    try:
        ds = ray.data.read_parquet(str((parts / "sites.parquet").resolve()))
        ds = ds.repartition(max(workers, -(-n // max(1, batch_size * 4))))
        ds = ds.map_batches(SiteJudge, batch_size=batch_size, batch_format="pyarrow", concurrency=workers,
                            num_cpus=threads, fn_constructor_kwargs={
                                "artefact": str(Path(artefact).resolve()), "data": str(mpath.resolve()),
                                "maps": None if maps_dir is None else str(maps_dir.resolve()),
                                "scale": scale, "threads": threads, "backend": backend, "precision": precision})
        ds.write_parquet(str((parts / "ray").resolve()))
    finally:
        if started:
            ray.shutdown()
    run_seconds = time.perf_counter() - t_run
    n_parts = _split_results(parts / "ray", parts, part_size)
    decided, failed, routes = _finalise(paths, n_parts)
    if decided + failed != n:
        raise PredictError(f"{parts}: Ray returned {decided + failed} results for {n} sites; run again")
    summary = PredictSummary(out=str(out), errors=str(paths["errors"]), n_sites=n, n_decided=decided,
                             n_failed=failed, routes=routes, seconds=round(time.perf_counter() - t0, 2),
                             sites_per_second=round(n / max(1e-9, run_seconds), 3), parts_reused=0,
                             model_version=fp["model_version"], finished=utc_now(),
                             notes=[*notes, f"ran on Ray with {workers} inspector actor(s)"])
    atomic_write_json(paths["summary"], {**asdict(summary), "fingerprint": fp})
    shutil.rmtree(parts, ignore_errors=True)
    return summary


__all__ = ["RayUnavailableError", "SiteJudge", "predict_ray"]

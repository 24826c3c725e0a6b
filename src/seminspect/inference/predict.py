"""``seminspect predict``: judge every site of a dataset and write a decisions file, resumably.

    summary = predict("runs/demo/adc", "fab_day3", "decisions.parquet")

Streams (:func:`seminspect.data.stream.iter_sites`): memory is bounded by one part of
``part_size`` sites, whatever the dataset size. Output is written in parts under
``<out>.parts/`` (``errors-K.parquet`` then ``part-K.parquet``, each atomically: the decisions
file is the part's commit point); a run killed at any moment and started again with the same
arguments redoes at most one part and skips the rest. When every part exists they are joined
into ``<out>`` (Parquet or CSV), ``<stem>.errors.<ext>`` and ``<stem>.summary.json``, then the
parts folder is removed. A site that cannot be read or judged becomes a row of the errors table
and the run goes on.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from seminspect.data.model_inputs import check_inputs, check_taxonomy, describe_stream
from seminspect.data.stream import Site, SiteRows, iter_site_rows, load_site, manifest_of
from seminspect.errors import SeminspectError
from seminspect.inference.inspector import Inspector, PreparedSite
from seminspect.inference.pool import InspectorSpec, Judged, JudgePool
from seminspect.inference.prefetch import default_workers, prefetched
from seminspect.inference.runtime import DEFAULT_BACKEND
from seminspect.inference.schema import DECISION_SCHEMA, ERROR_SCHEMA, errors_frame, to_table
from seminspect.models.artefact import MANIFEST
from seminspect.utils.digest import sha256_file
from seminspect.utils.io import atomic_path, atomic_write_json
from seminspect.utils.provenance import utc_now

RUN_VERSION = 1


class PredictError(SeminspectError):
    """The prediction run cannot start or continue (bad output path, a stale run in the way)."""


@dataclass
class PredictSummary:
    out: str
    errors: str
    n_sites: int
    n_decided: int
    n_failed: int
    routes: dict[str, int]
    seconds: float
    sites_per_second: float
    parts_reused: int
    model_version: str
    finished: str = ""
    notes: list[str] = field(default_factory=list)


def count_sites(data: str | Path) -> int:
    """Sites in ``data`` (one streaming pass over the manifest, no image read)."""
    return sum(1 for _ in iter_site_rows(data))


def output_paths(out: Path) -> dict[str, Path]:
    fmt = "csv" if out.suffix.lower() == ".csv" else "parquet"
    stem = out.with_suffix("")
    return {"out": out, "errors": stem.with_name(stem.name + f".errors.{fmt}"),
            "summary": stem.with_name(stem.name + ".summary.json"), "parts": out.with_name(out.name + ".parts"),
            "fmt": Path(fmt)}


def safe_name(sample_id: str) -> str:
    """A file name for a site id: ``[A-Za-z0-9._-]`` kept, anything else replaced by ``_``."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", sample_id).strip(".") or "site"
    return name[:200]


def _fingerprint(inspector: Inspector, data: Path, part_size: int, maps: Path | None) -> dict[str, Any]:
    _, mpath = manifest_of(data)
    return {"run_version": RUN_VERSION, "model_version": inspector.model_version,
            "manifest": str(mpath.resolve()), "manifest_sha256": sha256_file(mpath), "part_size": part_size,
            "maps": None if maps is None else str(maps.resolve())}


def _check_run(paths: dict[str, Path], fp: dict[str, Any], overwrite: bool) -> bool:
    """Prepare the parts folder; True when the run is already complete (nothing to do)."""
    parts = paths["parts"]
    run_file = parts / "run.json"
    if overwrite:
        shutil.rmtree(parts, ignore_errors=True)
        for key in ("out", "errors", "summary"):
            paths[key].unlink(missing_ok=True)
    if parts.is_dir() and run_file.is_file():
        old = json.loads(run_file.read_text())
        if old != fp:
            changed = sorted(k for k in fp if old.get(k) != fp[k])
            raise PredictError(f"{parts}: an unfinished run with other inputs ({', '.join(changed)} differ); "
                               "pass --overwrite to discard it")
        return False
    if paths["out"].exists() and paths["summary"].is_file():
        old = json.loads(paths["summary"].read_text()).get("fingerprint")
        if old == fp:
            # a run killed while it removed its parts folder (after the summary) leaves part of it behind
            shutil.rmtree(parts, ignore_errors=True)
            return True
        raise PredictError(f"{paths['out']}: exists from a run with other inputs; pass --overwrite to replace it")
    if paths["out"].exists():
        raise PredictError(f"{paths['out']}: exists; pass --overwrite to replace it")
    parts.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_file, fp)
    return False


def _write_map(maps: Path, sample_id: str, amap: np.ndarray, scale: float) -> None:
    from seminspect.data.imageio import write_image

    png = np.round(np.clip(amap / scale, 0.0, 1.0) * 65535).astype(np.uint16)
    write_image(maps / f"{safe_name(sample_id)}.png", png)


@dataclass
class Loaded:
    """One site read and prepared for the judges, or why it could not be (:func:`load_and_prepare`)."""

    site: Site
    prepared: PreparedSite | None = None
    error: str | None = None


def _error_text(exc: Exception) -> str:
    kind = "" if isinstance(exc, SeminspectError) else f"{type(exc).__name__}: "
    return f"{kind}{exc}".splitlines()[0]


def load_and_prepare(inspector: Inspector, data: str | Path, rows: SiteRows) -> Loaded:
    """Read one site's images and prepare it (:meth:`Inspector.prepare_site`); never raises, so it
    can run in a prefetch thread: a problem is the result's ``site.error`` or ``error``."""
    site = load_site(data, rows)
    if site.error is not None or site.sample is None:
        return Loaded(site)
    try:
        return Loaded(site, inspector.prepare_site(site.sample))
    except Exception as exc:  # one bad site must not stop the run; the errors table says what happened
        return Loaded(site, error=_error_text(exc))


def _judge(inspector: Inspector, loaded: Loaded, maps: Path | None, scale: float
           ) -> tuple[pd.DataFrame | None, tuple[int, str, str | None, str | None] | None]:
    site = loaded.site
    if site.error is not None or site.sample is None:
        return None, (site.ordinal, site.sample_id, site.file, site.error)
    if loaded.prepared is None:
        return None, (site.ordinal, site.sample_id, None, loaded.error)
    try:
        insp = inspector.judge([loaded.prepared], maps=maps is not None)
    except Exception as exc:  # one bad site must not stop the run; the errors table says what happened
        return None, (site.ordinal, site.sample_id, None, _error_text(exc))
    if maps is not None and insp.anomaly_maps:
        _write_map(maps, site.sample_id, insp.anomaly_maps[0], scale)
    return insp.frame([site.ordinal]), None


def judge_rows(inspector: Inspector, data: str | Path, rows: SiteRows, maps: Path | None, scale: float
               ) -> tuple[pd.DataFrame | None, tuple[int, str, str | None, str | None] | None]:
    """Read, prepare and judge one site from its manifest rows (what a worker process or a Ray actor does per
    site): its decision rows, or its error row."""
    return _judge(inspector, load_and_prepare(inspector, data, rows), maps, scale)


def _parts_of(results: Iterator[Judged], part_size: int) -> Iterator[tuple[int, list[Judged]]]:
    buf: list[Judged] = []
    current = -1
    for r in results:
        k = r[0] // part_size
        if buf and k != current:
            yield current, buf
            buf = []
        current = k
        buf.append(r)
    if buf:
        yield current, buf


def _finalise(paths: dict[str, Path], n_parts: int) -> tuple[int, int, dict[str, int]]:
    """Join the parts into the output files; returns ``(decided, failed, route counts)``."""
    parts, fmt = paths["parts"], str(paths["fmt"])
    decided, failed, routes = 0, 0, {"auto_abnormal": 0, "auto_normal": 0, "review": 0}
    for key, prefix, schema in (("out", "part", DECISION_SCHEMA), ("errors", "errors", ERROR_SCHEMA)):
        with atomic_path(paths[key]) as tmp:
            writer: Any = None
            for k in range(n_parts):
                table = pq.read_table(parts / f"{prefix}-{k:06d}.parquet", schema=schema)
                if key == "out":
                    decided += table.num_rows
                    for r, c in zip(*np.unique(table.column("route").to_numpy(zero_copy_only=False),
                                               return_counts=True), strict=True):
                        routes[str(r)] = routes.get(str(r), 0) + int(c)
                else:
                    failed += table.num_rows
                if fmt == "csv":
                    table.to_pandas().to_csv(tmp, mode="a", header=k == 0, index=False)
                else:
                    writer = writer or pq.ParquetWriter(tmp, schema)
                    writer.write_table(table)
            if fmt != "csv":
                writer = writer or pq.ParquetWriter(tmp, schema)
                writer.close()
            elif n_parts == 0:
                pd.DataFrame(columns=schema.names).to_csv(tmp, index=False)
    return decided, failed, routes


@dataclass
class RunStart:
    """A checked run: output paths, fingerprint, maps folder and scale; ``finished`` when nothing is left to do."""

    paths: dict[str, Path]
    fingerprint: dict[str, Any]
    maps: Path | None
    scale: float
    finished: PredictSummary | None = None


def start_run(inspector: Inspector, data: Path, out: str | Path, maps: str | Path | None, part_size: int,
              overwrite: bool, log: Callable[[str], None] | None, **extra: Any) -> RunStart:
    """The checks and set-up every runner shares (taxonomy, maps, the run's fingerprint, the parts folder).

    ``extra`` goes into the fingerprint (e.g. ``runner="ray"``): runs that differ there never mix.
    """
    _check_taxonomy(inspector, data)
    _check_inputs(inspector, data, log)
    paths = output_paths(Path(out))
    maps_dir = None if maps is None else Path(maps)
    if maps_dir is not None and not inspector.has_anomaly:
        raise PredictError(f"--maps {maps_dir}: the artefact {inspector.artefact.path} has no anomaly model "
                           "(add one with `seminspect join`)")
    fp = {**_fingerprint(inspector, data, part_size, maps_dir), **extra}
    scale = _map_scale(inspector)
    if _check_run(paths, fp, overwrite):
        summary = json.loads(paths["summary"].read_text())
        if log:
            log(f"{out}: already complete ({summary['n_sites']} sites); pass --overwrite to run again")
        summary.pop("fingerprint", None)
        return RunStart(paths, fp, maps_dir, scale, finished=PredictSummary(**summary))
    if maps_dir is not None:
        maps_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(maps_dir / "maps.json", {"scale": scale, "meaning": "anomaly = png / 65535 * scale",
                                                   "model_version": inspector.model_version})
    return RunStart(paths, fp, maps_dir, scale)


def predict(artefact: str | Path | Inspector, data: str | Path, out: str | Path, maps: str | Path | None = None,
            part_size: int = 64, overwrite: bool = False, threads: int | None = None,
            log: Callable[[str], None] | None = print, progress: Any = None, backend: str | None = None,
            precision: str = "fp32", prefetch: int | None = None, fp32_check: bool | None = None,
            processes: int = 1) -> PredictSummary:
    """Judge every site of ``data`` with ``artefact``; see the module docstring for files and resume.

    ``progress``: optional ``callable(done, total, rate)`` called after each site (the CLI's bar).
    ``backend`` / ``precision``: where the ADC runs (:mod:`seminspect.inference.runtime`); ``fp32_check``:
    bf16 / int8 sites near a threshold judged again in fp32 (:mod:`seminspect.inference.guard`; None: where
    measured).
    ``prefetch``: threads that read and align the next sites while one is judged (0: none; default:
    one per core, at most 4, for a graph runtime, 0 for torch). Decisions do not depend on it.
    ``processes``: > 1 judges whole sites in that many worker processes (:mod:`seminspect.inference.pool`),
    each with ``threads`` (default 1) runtime threads and no reader threads; decisions do not depend on it.
    """
    if part_size < 1 or processes < 1:
        raise PredictError(f"part_size and processes must be >= 1, got {part_size}, {processes}")
    if processes > 1 and isinstance(artefact, Inspector):
        raise PredictError("processes > 1 needs the artefact's folder (each worker loads its own inspector)")
    t0 = time.perf_counter()
    data = Path(data)
    manifest_of(data)  # a missing DATA path fails here, before the model loads
    if isinstance(artefact, Inspector):
        inspector, prefetch = artefact, _workers(artefact.runtime.name, prefetch)
    else:
        prefetch = _workers(backend, prefetch)
        inspector = Inspector.load(artefact, threads=threads, backend=backend, precision=precision,
                                   fp32_check=fp32_check)
    run = start_run(inspector, data, out, maps, part_size, overwrite, log)
    if run.finished is not None:
        return run.finished
    paths, fp, maps_dir, scale = run.paths, run.fingerprint, run.maps, run.scale
    n = count_sites(data)
    n_parts = (n + part_size - 1) // part_size
    parts = paths["parts"]
    done = {k for k in range(n_parts) if (parts / f"part-{k:06d}.parquet").is_file()}
    todo_start = min((k for k in range(n_parts) if k not in done), default=n_parts) * part_size
    if log and done:
        log(f"resuming: {len(done)} of {n_parts} parts already written")
    finished = sum(min(part_size, n - k * part_size) for k in done)
    rows = (r for r in iter_site_rows(data, start=todo_start) if r.ordinal // part_size not in done)
    with ExitStack() as stack:
        if processes > 1:
            pool = stack.enter_context(JudgePool(InspectorSpec(str(artefact), backend, precision, fp32_check), data,
                                                 maps_dir, scale, processes, threads=threads))
            results, how = pool.judged(rows), f"sites judged by {processes} worker processes"
        else:
            loaded = prefetched(lambda r: load_and_prepare(inspector, data, r), rows, prefetch)
            results = ((s.site.ordinal, *_judge(inspector, s, maps_dir, scale)) for s in loaded)
            how = f"sites read and aligned ahead by {prefetch} thread(s)" if prefetch else "sites read one at a time"
        t_run, judged = time.perf_counter(), 0  # after the workers started: model loading is not the run's rate
        for k, sites in _parts_of(results, part_size):
            frames, errors = [], []
            for _, frame, err in sites:
                if frame is not None:
                    frames.append(frame)
                if err is not None:
                    errors.append(err)
                judged += 1
                if progress is not None:
                    progress(finished + judged, n, judged / max(1e-9, time.perf_counter() - t_run))
            _write_part(parts, k, frames, errors)
    decided, failed, routes = _finalise(paths, n_parts)
    seconds = time.perf_counter() - t0
    summary = PredictSummary(out=str(out), errors=str(paths["errors"]), n_sites=n, n_decided=decided,
                             n_failed=failed, routes=routes, seconds=round(seconds, 2),
                             sites_per_second=round(judged / max(1e-9, time.perf_counter() - t_run), 3),
                             parts_reused=len(done), model_version=inspector.model_version, finished=utc_now(),
                             notes=[*inspector.artefact.notes,
                                    inspector.runtime_note(f"{threads or 1} thread(s) per process" if processes > 1
                                                           else None), how])
    atomic_write_json(paths["summary"], {**asdict(summary), "fingerprint": fp})
    shutil.rmtree(parts, ignore_errors=True)
    return summary


def _workers(backend: str | None, prefetch: int | None) -> int:
    """Reader threads: ``prefetch`` when given, else one per core (at most 4) on a graph runtime and
    none on torch, whose eager threads already fill the cores (readers beside it made it slower)."""
    if prefetch is not None:
        if prefetch < 0:
            raise PredictError(f"prefetch must be >= 0, got {prefetch}")
        return prefetch
    return 0 if (backend or DEFAULT_BACKEND) == "torch" else default_workers()


def _write_part(parts: Path, k: int, frames: list[pd.DataFrame], errors: list[tuple]) -> None:
    with atomic_path(parts / f"errors-{k:06d}.parquet") as tmp:
        pq.write_table(to_table(errors_frame(errors), ERROR_SCHEMA), tmp)
    df = pd.concat(frames, ignore_index=True) if frames else None
    table = to_table(df, DECISION_SCHEMA) if df is not None else DECISION_SCHEMA.empty_table()
    with atomic_path(parts / f"part-{k:06d}.parquet") as tmp:  # the part's commit point
        pq.write_table(table, tmp)


def _map_scale(inspector: Inspector) -> float:
    """Anomaly value stored as 65535 in a map PNG: twice the triage rule's threshold (or 1.0)."""
    rule = inspector.artefact.anomaly_rule or {}
    thr = rule.get("threshold")
    return float(2 * thr) if thr and np.isfinite(thr) and thr > 0 else 1.0


def _check_taxonomy(inspector: Inspector, data: Path) -> None:
    """DATA that names a taxonomy must name the artefact's (same leaves in the same order)."""
    root, _ = manifest_of(data)
    art = inspector.artefact
    check_taxonomy(art.taxonomy.leaves, art.path / art.manifest["parts"]["taxonomy"], root)


def _check_inputs(inspector: Inspector, data: Path, log: Callable[[str], None] | None) -> None:
    """DATA's view layout and view sizes must be what the model was trained on (one line naming both)."""
    art = inspector.artefact
    _, mpath = manifest_of(data)
    note = check_inputs(art.manifest.get("inputs"), describe_stream(data), mpath, art.path / MANIFEST)
    if note is not None and log:
        log(f"note: {note}")


__all__ = ["Loaded", "PredictError", "PredictSummary", "RunStart", "count_sites", "load_and_prepare", "output_paths",
           "predict", "start_run"]

"""Judge sites in worker processes, each with its own inspector (``seminspect predict --processes N``).

    with JudgePool(InspectorSpec("runs/demo/adc"), data, maps=None, scale=1.0, processes=2) as pool:
        for ordinal, frame, error in pool.judged(rows):   # one result per site, in input order
            ...

Each worker loads the artefact once (``spawn``: no runtime threads are forked) with ``threads``
runtime threads (default 1), then reads, aligns and judges whole sites with the very code of the
single-process path (:func:`seminspect.inference.predict.judge_rows`): a
site's decision never depends on which process judged it or on its neighbours. Sites travel in
chunks of ``chunk`` and at most ``2 * processes`` chunks are in flight, so memory stays bounded.
Where threads contend for the GIL and the runtime's threads for the cores, separate processes keep
both cores busy (``benchmarks/results/predict_processes.md``). A worker that dies ends the run
with a :class:`PoolError`; the parts written so far stay, and the same command resumes. A worker
whose parent is killed ends itself.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import pandas as pd

from seminspect.data.stream import SiteRows
from seminspect.errors import SeminspectError

Judged = tuple[int, pd.DataFrame | None, tuple | None]  # (ordinal, decision rows, error row)

__all__ = ["InspectorSpec", "JudgePool", "Judged", "PoolError"]

READY_TIMEOUT_S = 600.0


class PoolError(SeminspectError):
    """A worker process could not start or died during the run."""


@dataclass(frozen=True)
class InspectorSpec:
    """What a worker needs to load the same inspector as the parent (:meth:`Inspector.load`'s arguments)."""

    artefact: str
    backend: str | None = None
    precision: str = "fp32"
    fp32_check: bool | None = None


# ----- in the worker -----------------------------------------------------------------------------
_WORKER: dict[str, Any] = {}


def _watch_parent(parent: int) -> None:
    """End this worker when its parent is gone (``kill -9`` of predict leaves no worker running)."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _init(spec: InspectorSpec, threads: int, data: str, maps: str | None, scale: float, barrier: Any) -> None:
    _WORKER["barrier"] = barrier
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True, name="seminspect-parent-watch").start()
    try:
        from seminspect.inference.inspector import Inspector

        _WORKER["inspector"] = Inspector.load(spec.artefact, threads=threads, backend=spec.backend,
                                              precision=spec.precision, fp32_check=spec.fp32_check)
        _WORKER.update(data=data, maps=None if maps is None else Path(maps), scale=scale)
    except Exception as exc:  # reported by _ready as one line, instead of a broken pool
        _WORKER["error"] = f"{type(exc).__name__}: {exc}"


def _ready() -> None:
    """Returns once every worker has loaded its inspector (one call per worker: the barrier holds each)."""
    barrier = _WORKER["barrier"]
    if "error" in _WORKER:
        barrier.abort()
        raise PoolError(f"a predict worker could not load the artefact: {_WORKER['error']}")
    barrier.wait(READY_TIMEOUT_S)


def _judge_chunk(chunk: list[SiteRows]) -> list[Judged]:
    from seminspect.inference.predict import judge_rows

    insp, data, maps, scale = _WORKER["inspector"], _WORKER["data"], _WORKER["maps"], _WORKER["scale"]
    return [(rows.ordinal, *judge_rows(insp, data, rows, maps, scale)) for rows in chunk]


# ----- in the parent -----------------------------------------------------------------------------
class JudgePool:
    """``processes`` workers judging sites; a context manager (the workers stop on exit)."""

    def __init__(self, spec: InspectorSpec, data: str | Path, maps: Path | None, scale: float, processes: int,
                 threads: int | None = None, chunk: int = 4) -> None:
        if processes < 1 or chunk < 1 or (threads is not None and threads < 1):
            raise PoolError(f"processes, chunk and threads must be >= 1, got {processes}, {chunk}, {threads}")
        self.processes, self.chunk = processes, chunk
        ctx = mp.get_context("spawn")
        self._pool = ProcessPoolExecutor(processes, mp_context=ctx, initializer=_init,
                                         initargs=(spec, threads or 1, str(data), None if maps is None else str(maps),
                                                   scale, ctx.Barrier(processes)))

    def __enter__(self) -> JudgePool:
        try:
            self.wait_ready()
        except BaseException:
            self.close(cancel=True)
            raise
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self.close(cancel=exc_type is not None)

    def wait_ready(self) -> None:
        """Start every worker and wait until each has loaded the artefact (start-up stays out of the clock)."""
        futures = [self._pool.submit(_ready) for _ in range(self.processes)]
        errors = []
        for f in futures:
            try:
                f.result(READY_TIMEOUT_S + 60)
            except PoolError as exc:
                errors.append(str(exc))
            except threading.BrokenBarrierError:
                pass  # another worker failed: its error is the one to show
            except BrokenProcessPool:
                errors.append("a predict worker process died while starting (a script that calls predict with "
                              "processes > 1 must do so under `if __name__ == '__main__':`)")
        if errors:
            raise PoolError(errors[0])

    def judged(self, rows: Iterable[SiteRows]) -> Iterator[Judged]:
        """One ``(ordinal, frame, error)`` per site of ``rows``, in input order."""
        it = iter(rows)
        pending: deque[Future[list[Judged]]] = deque()
        try:
            while True:
                while len(pending) < 2 * self.processes:
                    chunk = list(islice(it, self.chunk))
                    if not chunk:
                        break
                    pending.append(self._pool.submit(_judge_chunk, chunk))
                if not pending:
                    return
                yield from pending.popleft().result()
        except BrokenProcessPool:
            raise PoolError("a predict worker process died (killed, or out of memory); the parts written so far "
                            "are kept: run the same command again to resume") from None
        finally:
            for f in pending:
                f.cancel()

    def close(self, cancel: bool = False) -> None:
        self._pool.shutdown(wait=True, cancel_futures=cancel)

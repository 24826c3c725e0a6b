"""Work on the next items in background threads while the caller uses the current one.

    for result in prefetched(work, items, workers=2):   # work(item) for each item, results in input order
        judge(result)

What ``predict`` uses to read, decode and align the next sites while the runtime judges the
current one: PNG decoding (Pillow), registration (FFT) and cropping spend their time in C code
that releases the GIL, so two reader threads and the runtime's own threads keep both cores busy
(``benchmarks/results/fast_predict.md``). At most ``2 * workers`` items are in flight, so memory
stays bounded whatever the input size. ``work`` must not raise (return the error instead): an
exception ends the iteration. Touches nothing but what ``work`` touches.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

__all__ = ["cpu_cores", "default_workers", "prefetched"]


def cpu_cores() -> int:
    """Cores this process may run on (its CPU affinity, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def default_workers(cores: int | None = None) -> int:
    """Reader threads beside a graph runtime: one per core, at most 4.

    Measured on 2 cores (``benchmarks/results/fast_predict.md``): two readers beside a two-thread
    runtime beat one reader, three or four readers, and two readers beside a one-thread runtime.
    """
    return max(1, min(4, cpu_cores() if cores is None else cores))


def prefetched(work: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    """``work(item)`` for each item, computed up to ``2 * workers`` items ahead; in input order.

    ``workers == 0`` computes each item when it is asked for (no thread).
    """
    if workers <= 0:
        yield from map(work, items)
        return
    pending: deque[Future[R]] = deque()
    with ThreadPoolExecutor(workers, thread_name_prefix="seminspect-prefetch") as pool:
        try:
            for item in items:
                pending.append(pool.submit(work, item))
                if len(pending) >= 2 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:  # the caller stopped early (an error, a closed generator): drop what was not started
            for f in pending:
                f.cancel()

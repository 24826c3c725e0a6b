"""Reading ahead: results in input order, at most ``2 * workers`` in flight, nothing left running."""

from __future__ import annotations

import threading
import time

import pytest

from seminspect.inference.prefetch import default_workers, prefetched


def test_results_come_in_input_order_whatever_finishes_first():
    def work(i: int) -> int:
        time.sleep(0.002 * (7 - i % 7))  # later items often finish first
        return i * i

    for workers in (0, 1, 3):
        assert list(prefetched(work, range(40), workers)) == [i * i for i in range(40)]


@pytest.mark.parametrize("workers", [1, 2])
def test_at_most_twice_the_workers_are_in_flight(workers):
    lock, state = threading.Lock(), {"started": 0, "max_ahead": 0}
    consumed = 0

    def work(i: int) -> int:
        with lock:
            state["started"] += 1
            state["max_ahead"] = max(state["max_ahead"], state["started"] - consumed)
        return i

    for i in prefetched(work, range(50), workers):
        time.sleep(0.001)  # a slow consumer: readers would run far ahead if nothing bounded them
        consumed = i + 1
    assert state["started"] == 50
    assert state["max_ahead"] <= 2 * workers + 1


def test_an_abandoned_iteration_stops_starting_work():
    started = []

    def work(i: int) -> int:
        started.append(i)
        time.sleep(0.005)
        return i

    gen = prefetched(work, range(1000), 2)
    assert [next(gen) for _ in range(3)] == [0, 1, 2]
    gen.close()
    n = len(started)
    time.sleep(0.05)
    assert len(started) == n <= 10


def test_default_workers_follow_the_cores():
    assert default_workers(1) == 1 and default_workers(2) == 2 and default_workers(64) == 4
    assert default_workers() >= 1

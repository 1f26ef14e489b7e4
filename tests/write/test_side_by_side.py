"""InOrder: calls side by side in threads, results in the order the calls were started."""

from __future__ import annotations

import threading
import time

import pytest

from masked_shards.write.side_by_side import InOrder


def test_results_come_back_in_start_order_whatever_order_the_calls_end_in():
    running = InOrder(3)
    delays = [0.05, 0.0, 0.03, 0.0, 0.01]
    given = [r for n, delay in enumerate(delays) for r in running.start(lambda n, d: time.sleep(d) or n, n, delay)]
    given += list(running.finish())
    assert given == [0, 1, 2, 3, 4]


def test_at_most_width_calls_run_at_once_and_a_result_waits_for_no_later_call():
    width, lock, now, most = 2, threading.Lock(), [0], [0]

    def call(n: int) -> int:
        with lock:
            now[0] += 1
            most[0] = max(most[0], now[0])
        time.sleep(0.02)
        with lock:
            now[0] -= 1
        return n

    running = InOrder(width)
    handed_back = [list(running.start(call, n)) for n in range(6)]
    assert handed_back == [[], [], [0], [1], [2], [3]]  # held: never more than `width` results
    assert list(running.finish()) == [4, 5]
    assert most[0] == width  # side by side, and never wider


def test_an_error_in_a_call_is_raised_where_its_result_is_handed_back():
    running = InOrder(1)
    assert list(running.start(lambda: 1)) == []
    with pytest.raises(ZeroDivisionError):
        list(running.start(lambda: 1 / 0))
        list(running.finish())


def test_after_an_error_the_threads_end_though_finish_is_never_called():
    before = set(_side_by_side_threads())
    running = InOrder(2)
    gate = threading.Event()
    assert list(running.start(lambda: gate.wait() and 1 / 0)) == []
    assert list(running.start(lambda: 2)) == []
    gate.set()
    with pytest.raises(ZeroDivisionError):
        list(running.start(lambda: 3))
    deadline = time.monotonic() + 5
    while set(_side_by_side_threads()) - before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert set(_side_by_side_threads()) - before == set()  # `running` is still referenced: only the error let them go


def _side_by_side_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("side-by-side")]

"""Work of one DoFn done side by side in threads, its results given back in the order started.

For steps whose work is pyarrow's and runs without the interpreter lock, such as merging a shard
(reading run slices, sorting, writing Parquet): one worker process then merges several shards of
a bundle at once, one per core, instead of one after another while the other cores wait on it.
At most `width` calls run at a time; a result is handed back once more than `width` are started
after it, or at the end of the bundle, so a DoFn holds no more than `width` results at once.

    start(a) -> []   start(b) -> []   start(c) -> [a]   finish() -> [b, c]      (width 2)

Outputs given back outside `process` (from `finish_bundle`) must name their window: `windowed`.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

T = TypeVar("T")


def cores() -> int:
    """The cores this process may run on (its CPU affinity where the system tells it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class InOrder(Generic[T]):
    """Calls run in up to `width` threads; results handed back in the order the calls were started."""

    def __init__(self, width: int) -> None:
        self._width = width
        self._pool: ThreadPoolExecutor | None = None
        self._started: deque[Future[T]] = deque()

    def start(self, call: Callable[..., T], *args: object) -> Iterator[T]:
        """Start `call(*args)`; give back the results that no longer fit in the width."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self._width, thread_name_prefix="overlap")
        self._started.append(self._pool.submit(call, *args))
        while len(self._started) > self._width:
            yield self._started.popleft().result()

    def finish(self) -> Iterator[T]:
        """Every result not yet given back, waiting for each in turn; then the threads end."""
        while self._started:
            yield self._started.popleft().result()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


def windowed(output: object) -> object:
    """An output of `finish_bundle` in the global window (a tagged one keeps its tag)."""
    if isinstance(output, beam.pvalue.TaggedOutput):
        return beam.pvalue.TaggedOutput(output.tag, WindowedValue(output.value, MIN_TIMESTAMP, [GlobalWindow()]))
    return WindowedValue(output, MIN_TIMESTAMP, [GlobalWindow()])

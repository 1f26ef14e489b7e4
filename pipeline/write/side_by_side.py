"""Calls done side by side in threads, their results given back in the order started.

For work that is pyarrow's and runs without the interpreter lock: a shard's merge reads its next
row group (run slices read, sorted and cast) while it writes this one, and packing reads and
packs two windows at once, instead of one thing after another while the other core waits. At
most `width` calls run at a time; a result is handed back once more than `width` are started
after it, or at the end, so a caller holds no more than `width` results at once.

    start(a) -> []   start(b) -> []   start(c) -> [a]   finish() -> [b, c]      (width 2)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

T = TypeVar("T")


class InOrder(Generic[T]):
    """Calls run in up to `width` threads; results handed back in the order the calls were started."""

    def __init__(self, width: int) -> None:
        self._width = width
        self._pool: ThreadPoolExecutor | None = None
        self._started: deque[Future[T]] = deque()

    def start(self, call: Callable[..., T], *args: object) -> Iterator[T]:
        """Start `call(*args)`; give back the results that no longer fit in the width."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self._width, thread_name_prefix="side-by-side")
        self._started.append(self._pool.submit(call, *args))
        while len(self._started) > self._width:
            yield self._oldest()

    def finish(self) -> Iterator[T]:
        """Every result not yet given back, waiting for each in turn; then the threads end."""
        while self._started:
            yield self._oldest()
        self._close()

    def _oldest(self) -> T:
        """The oldest call's result. If the call failed, the calls not yet running are cancelled
        and the threads let go before the error goes on: the caller (a DoFn whose bundle failed)
        may never call `finish`, and its threads would otherwise wait for work until it is collected."""
        try:
            return self._started.popleft().result()
        except BaseException:
            self._close()
            raise

    def _close(self) -> None:
        for call in self._started:
            call.cancel()
        self._started.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

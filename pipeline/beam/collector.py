"""Python's cyclic garbage collector, set for a job that loads a lot once and then streams.

A full collection walks every live container object. Start-up makes several hundred thousand that
live as long as the process (Beam, transformers and their modules, a 151k-entry vocabulary as
Python dicts), and with the default thresholds the ten or so full collections of a 20,000-example
run each walked all of them: measured with `gc.callbacks` on Qwen2's vocabulary, 3.8 s of 11 full
collections in 22 s of process CPU, against 0.1 s in 3 once start-up is frozen.

So start-up runs with the collector off, and what it built is frozen (moved where collections do
not look) before data flows; a worker process freezes again after loading its tokenizer. Frozen
objects are still freed by reference counting; only cycles among them wait. At the end of a job
everything is unfrozen and the collector restored, so a long-lived caller (the tests, a notebook)
gets cyclic garbage collected again.

While data flows, the youngest generation is collected every YOUNG allocations instead of
Python's 700. Each example makes a few dozen short-lived containers (its record's dicts, turns,
spans) that reference counting frees, so a collection every 700 mostly walked objects about to
die: 2,500 collections for 55k chats, 0.45 s of the thread that holds the interpreter lock. At
50,000, 200k chats: 1.1 CPU-s less on that thread, 25.7 to 24.5 s (A/B, 3 runs each). A cycle
made now waits at most 50,000 allocations longer to be freed.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


YOUNG = 50_000


@contextmanager
def job_scope() -> Iterator[None]:
    """The collector off for start-up (until `data_flows`), and as it was after the job."""
    enabled, thresholds = gc.isenabled(), gc.get_threshold()
    gc.disable()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
        if enabled:
            gc.enable()


def data_flows() -> None:
    """Start-up is done: freeze what it made and collect from here on, the young rarely."""
    loaded()
    gc.enable()


def loaded() -> None:
    """A worker loaded its heavy objects (the tokenizer): keep collections from walking them, and
    from walking each batch's short-lived objects too often. For the worker's life: a step run in
    this process outside a job (a test driving TokenizeFn) leaves the settings as a worker would."""
    gc.freeze()
    gc.set_threshold(YOUNG, *gc.get_threshold()[1:])

"""Arrow's memory allocator, set for a job that makes and drops tens of MB of columns per batch.

pyarrow's default pool (mimalloc) hands freed pages back to the kernel and faults fresh ones in on
the next allocation. A job allocates the same large buffers over and over (each batch's columns,
each sorted run: write/runs.py), so it paid for those faults every time: at 55,000 Qwen2 examples,
1.2 to 1.4 s of kernel time in a 14 s run, 0.4 s of it in one sort of one run (measured with
`getrusage` around it: 1,800 faults). Arrow's jemalloc pool keeps pages for reuse: kernel time
0.6 s, the same rows. Measured peak RSS (benchmarks/results/2026-12-05-*-memory.*, Qwen2):

    pool        unpacked 100k -> 1M       packed (bfd) 100k -> 1M
    mimalloc    -                         865 -> 967 MB (+12%)
    C library   510 -> 540 MB (+6%)       762 -> 971 MB (+27%: fragments over a long packed run)
    jemalloc    528 -> 538 MB (+2%)       721 -> 813 MB (+13%)

so jemalloc, or the C library's allocator where a pyarrow build lacks jemalloc (as on Windows).
A user's own `ARROW_DEFAULT_MEMORY_POOL` wins. Worker processes that Beam starts during the job
inherit the choice through the environment; both are restored after the job.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import pyarrow as pa

_VARIABLE = "ARROW_DEFAULT_MEMORY_POOL"


@contextmanager
def job_allocator() -> Iterator[None]:
    """Arrow allocates from jemalloc (else the C library's allocator) for the job, unless the user chose a pool."""
    if _VARIABLE in os.environ:
        yield
        return
    previous = pa.default_memory_pool()
    try:
        pool = pa.jemalloc_memory_pool()
    except NotImplementedError:  # a pyarrow built without jemalloc
        pool = pa.system_memory_pool()
    os.environ[_VARIABLE] = pool.backend_name
    pa.set_memory_pool(pool)
    try:
        yield
    finally:
        pa.set_memory_pool(previous)
        del os.environ[_VARIABLE]

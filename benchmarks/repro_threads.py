"""Beam defect behind issue 6 point 9, reproduced without masked-shards code.

Under `--direct_running_mode multi_threading`, FnApiRunner runs its SDK workers as threads of the
same process and exchanges elements with them over loopback gRPC. Their data channels flush the
output buffer every `worker_handlers.DATA_BUFFER_TIME_LIMIT_MS` (1000 ms) from a timer thread,
`TimeBasedBufferingClosableOutputStream`, which shares no lock with the bundle thread writing
elements into that buffer. So a flushed chunk can end inside an element, and bytes the bundle
writes between the timer's `get()` and `_clear()` are dropped. The runner decodes each chunk on its
own (GroupingBuffer) or deals whole chunks out to workers (ListBuffer.partition), so downstream
steps see garbage: elements that are None, "Unknown type tag", "Invalid PaneInfoEncoding",
MemoryError from a length read out of the middle of an element, or elements missing.

    python benchmarks/repro_threads.py stream            # the buffer alone: chunks cut inside elements
    python benchmarks/repro_threads.py pipeline          # a 4-step pipeline, threaded: runs fail
    python benchmarks/repro_threads.py pipeline --fixed  # with DATA_BUFFER_TIME_LIMIT_MS = 0: all pass

The workaround masked-shards applies (`pipeline.job.without_timed_flush`) is that last setting,
Beam's own value for "no timed flush", which is also what an SDK worker on Dataflow uses.
"""

from __future__ import annotations

import resource
import sys
import time

import apache_beam as beam
from apache_beam.coders import coders
from apache_beam.coders.coder_impl import create_InputStream
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import worker_handlers
from apache_beam.runners.worker.data_plane import TimeBasedBufferingClosableOutputStream

ITEMS = 400_000


class Item:
    """A plain object: FastPrimitivesCoder pickles it, as it does any dataclass."""

    def __init__(self, i: int) -> None:
        self.i = i


def stream(count: int = 300_000, flush_ms: int = 5) -> None:
    """Write elements the way an SDK worker does, with a timer flushing every `flush_ms`
    (1000 in FnApiRunner; shorter here only to see it within a second), then decode each chunk
    the way the runner does."""
    impl = coders.FastPrimitivesCoder().get_impl()
    chunks: list[bytes] = []
    out = TimeBasedBufferingClosableOutputStream(chunks.append, flush_callback=chunks.append, time_flush_threshold_ms=flush_ms)
    for i in range(count):
        impl.encode_to_stream(Item(i), out, True)
        out.maybe_flush()
    out.close()
    broken, decoded = 0, 0
    for chunk in chunks:
        data = create_InputStream(chunk)
        try:
            while data.size() > 0:
                impl.decode_from_stream(data, True)
                decoded += 1
        except Exception:
            broken += 1
    print(f"{len(chunks)} chunks, {broken} of them cut inside an element; {decoded} of {count} elements decode from whole chunks")


def _emit(part: int):
    for i in range(part, ITEMS, 4):
        yield Item(i)


def _check(total: tuple[int, int]) -> None:
    if total != (ITEMS, ITEMS * (ITEMS - 1) // 2):
        raise AssertionError(f"wrong result {total}")


def pipeline(runs: int = 3) -> None:
    """Count and sum the items through a GroupByKey, threaded, `runs` times."""
    options = PipelineOptions(["--runner=FnApiRunner", "--direct_num_workers=2", "--direct_running_mode=multi_threading"])
    failed = 0
    for run in range(runs):
        start = time.time()
        try:
            with beam.Pipeline(options=options) as p:
                (
                    p
                    | beam.Create(range(4))
                    | beam.FlatMap(_emit)
                    | "Key" >> beam.Map(lambda item: (item.i % 16, item))
                    | beam.GroupByKey()
                    | "Sizes" >> beam.Map(lambda kv: (len(list(kv[1])), sum(item.i for item in kv[1])))
                    | beam.combiners.ToList()
                    | "Total" >> beam.Map(lambda sizes: _check((sum(n for n, _ in sizes), sum(s for _, s in sizes))))
                )
            print(f"run {run}: ok ({time.time() - start:.1f} s)")
        except Exception as err:  # noqa: BLE001 - any failure is the finding
            failed += 1
            last = (str(err).strip().splitlines() or [repr(err)])[-1]
            print(f"run {run}: FAILED ({time.time() - start:.1f} s): {type(err).__name__}: {last[:200]}")
    print(f"{failed} of {runs} runs failed")


if __name__ == "__main__":
    # A length read from the middle of an element can ask for gigabytes: cap memory so that is a
    # MemoryError, not a machine out of memory.
    resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))
    if "--fixed" in sys.argv:
        worker_handlers.DATA_BUFFER_TIME_LIMIT_MS = 0
    if "stream" in sys.argv:
        stream()
    else:
        pipeline()

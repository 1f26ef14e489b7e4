"""Threaded runs write an in-process run's bytes, every time (issue 6, point 9).

Under `--direct_running_mode multi_threading` Beam flushed each data channel on a one-second timer
that shares no lock with the thread writing elements into it, so a chunk could end inside an
element or lose the elements written while it was being sent: runs failed with None elements,
"Unknown type tag", MemoryError, or counts that did not reconcile (benchmarks/repro_threads.py
shows it without our code; `masked_shards.beam.job.without_timed_flush` is the workaround).

It is a race, so the test repeats the run, on an input chosen to give the race many chances per
second: rows cross Beam steps as a few large Arrow batches, but rejected records cross one by one,
so 99% of the 60,000 records are rejected (no `output`), in two files so that both worker threads
read at once for several seconds. Measured on the old code with this input and two workers on the
2-core development machine (its load shared): 22 of 29 threaded runs failed or wrote other bytes
(two of them exited 0 with a different rejected.jsonl and manifest), p = 0.76 a run. 4 runs all
pass with probability (1 - p) ** 4 = 0.3%, so the old code fails this test 99.7% of the time
(96.9% even at p = 0.58, the 95% lower bound of that estimate). About 50 s: a reference run and
four threaded runs of about 9.5 s each.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from masked_shards.cli import main

RUNS = 4
FILES, RECORDS_PER_FILE = 2, 30_000
THREADED = ["--direct_num_workers", "2", "--direct_running_mode", "multi_threading"]


def _record(n: int) -> dict[str, str]:
    """Every hundredth record is a good one (a run must write rows); the rest lack `output`."""
    if n % 100 == 0:
        return {"instruction": f"What is {n} plus {n}?", "output": f"{2 * n}."}
    return {"instruction": f"What is {n} plus {n}?"}


def _files(output: Path) -> dict[str, bytes]:
    return {path.relative_to(output).as_posix(): path.read_bytes() for path in sorted(output.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def job(tmp_path_factory) -> tuple[list[str], dict[str, bytes]]:
    """The run's flags and the bytes an in-process (single-threaded) run writes with them."""
    folder = tmp_path_factory.mktemp("threads")
    for part in range(FILES):
        numbers = range(part * RECORDS_PER_FILE, (part + 1) * RECORDS_PER_FILE)
        (folder / f"part{part}.jsonl").write_text("".join(json.dumps(_record(n)) + "\n" for n in numbers), encoding="utf-8")
    args = ["run", "--smoke-test", "off", "--input", str(folder / "*.jsonl")]
    assert main([*args, "--output", str(folder / "reference")]) == 0
    return args, _files(folder / "reference")


def test_threaded_runs_write_the_in_process_bytes_every_time(job, tmp_path):
    args, reference = job
    assert {"manifest.json", "rejected/rejected.jsonl"} <= reference.keys() and any(name.startswith("data/") for name in reference)
    failures = []
    for run in range(RUNS):
        output = tmp_path / f"run{run}"
        if main([*args, "--output", str(output), *THREADED]) != 0:
            failures.append(f"run {run} failed")
        elif (written := _files(output)) != reference:
            failures.append(f"run {run} wrote other bytes in {sorted(name for name in written.keys() | reference.keys() if written.get(name) != reference.get(name))}")
    assert not failures, f"{len(failures)} of {RUNS} threaded runs went wrong: {failures}"

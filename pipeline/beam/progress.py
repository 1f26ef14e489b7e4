"""A live progress line for local runs: records done, tokens/s, elapsed, and an ETA when the
number of records is known.

Beam's own metrics reach the driver only when a bundle ends, and on the default runner a bundle
can be the whole input, so they cannot drive a live line. Instead the workers of a local run
(threads of this process, or worker processes on this machine under `multi_processing`) each add
their counts to a tally per process, written at most twice a second as one small JSON file in a
scratch folder; the driver sums the files. A runner whose workers are other machines (Dataflow)
gets no folder and no line: its own console shows progress.

What is counted, and where (job.build taps these PCollections; no step of the job changes):
  records  every record that ends somewhere: a row's example, a rejected or a dropped record
  tokens   the tokens of the rows
  total    the records the inputs hold, from the line counts the job makes anyway to number lines;
           known only when every input range was counted (JSON arrays, CSV and --limit are read
           whole without counting, so those runs show no ETA)

On a terminal the line is redrawn in place every half second and cleared at the end; when the
output is piped, a plain line is printed every 10 seconds; under --quiet nothing is.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import TextIO

WRITE_EVERY_S = 0.5
TERMINAL_EVERY_S, PIPED_EVERY_S = 0.5, 10.0
FIELDS = ("records", "tokens", "total", "ranges", "uncounted")


class Tally:
    """One process's counts, shared by its threads, written to `folder/<pid>.json`."""

    def __init__(self, folder: str) -> None:
        self._path = Path(folder) / f"{os.getpid()}.json"
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._written = 0.0

    def add(self, **counts: int) -> None:
        with self._lock:
            self._counts.update(counts)
            now = time.monotonic()
            if now - self._written < WRITE_EVERY_S:
                return
            self._written = now
            data = json.dumps(dict(self._counts))
        try:  # progress must never fail a job: a worker that cannot write is simply not shown
            partial = self._path.with_suffix(f".{threading.get_ident()}.tmp")
            partial.write_text(data, encoding="utf-8")
            os.replace(partial, self._path)
        except OSError:
            pass

    def flush(self) -> None:
        """Write now, whatever the time since the last write (at the end of a bundle)."""
        with self._lock:
            self._written = 0.0
        self.add()


_TALLIES: dict[str, Tally] = {}
_TALLIES_LOCK = threading.Lock()


def tally(folder: str) -> Tally:
    """This process's tally for a run's folder (the same object for every thread)."""
    with _TALLIES_LOCK:
        if folder not in _TALLIES:
            _TALLIES[folder] = Tally(folder)
        return _TALLIES[folder]


def read_counts(folder: str) -> Counter[str]:
    """The sum over every worker process's file; a file being replaced is read next time."""
    total: Counter[str] = Counter()
    for path in Path(folder).glob("*.json"):
        try:
            total.update(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue
    return total


def progress_text(counts: Counter[str], elapsed: float) -> str:
    """`records 12,345 / 200,000 (6%) · 61,204 tokens/s · 0:23 elapsed · ETA 5:41`."""
    records, tokens = counts["records"], counts["tokens"]
    known = counts["ranges"] > 0 and counts["uncounted"] == 0 and counts["total"] > 0
    done = f"records {records:,}"
    if known:
        done += f" / {counts['total']:,} ({min(records / counts['total'], 1.0):.0%})"
    parts = [done, f"{tokens / elapsed:,.0f} tokens/s" if elapsed > 0 else "", f"{_clock(elapsed)} elapsed"]
    if known and 0 < records < counts["total"]:
        parts.append(f"ETA {_clock(elapsed * (counts['total'] - records) / records)}")
    return " · ".join(p for p in parts if p)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressLine:
    """The driver's side: a daemon thread that shows the summed counts until `stop`."""

    def __init__(self, folder: str, stream: TextIO | None = None) -> None:
        self._folder, self._stream = folder, stream or sys.stderr
        self._terminal = self._stream.isatty()
        self._every = TERMINAL_EVERY_S if self._terminal else PIPED_EVERY_S
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="masked-shards-progress", daemon=True)

    def __enter__(self) -> ProgressLine:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        if self._terminal:
            self._stream.write("\r\x1b[2K")  # the report that follows says it all
            self._stream.flush()

    def _loop(self) -> None:
        while not self._stop.wait(self._every):
            counts = read_counts(self._folder)
            if not counts["records"]:
                continue  # still starting: nothing to say yet
            text = progress_text(counts, time.monotonic() - self._started)
            self._stream.write(f"\r\x1b[2K{text}" if self._terminal else f"{text}\n")
            self._stream.flush()

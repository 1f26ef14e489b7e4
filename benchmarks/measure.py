"""Run one command as a child process and measure its wall time and the peak RSS of its whole process tree.

The tree matters: with `--direct_running_mode multi_processing` Beam's workers are separate
processes, and `resource.getrusage(RUSAGE_CHILDREN).ru_maxrss` reports only the largest single
process. Every `POLL_SECONDS` the RSS of the child and all its descendants is summed; the peak is
the largest such sum. Pages shared between processes count once per process, as `top` shows them, so
the sum is an upper bound of what the tree occupies; a peak shorter than the poll interval can be missed.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from dataclasses import dataclass

import psutil

POLL_SECONDS = 0.1


@dataclass(frozen=True)
class Measured:
    wall_seconds: float
    peak_rss_bytes: int
    result: dict[str, float]  # the child's last stdout line, a JSON object; {} when it printed none


def tree_rss(process: psutil.Process) -> int:
    total = 0
    for member in (process, *process.children(recursive=True)):
        try:
            total += member.memory_info().rss
        except psutil.Error:  # exited between listing and reading
            pass
    return total


def run_measured(command: list[str], env: dict[str, str], status: int = 0) -> Measured:
    """Run `command` to its end; raise RuntimeError with its output's tail if it exits with
    another status than `status` (0, or the 2 of a config error the start-up row times).

    Output goes to files, not pipes: a child that fills an unread pipe would stall and be timed stalled.
    """
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        start = time.perf_counter()
        child = subprocess.Popen(command, stdout=stdout, stderr=stderr, env=env, text=True)
        watched, peak = psutil.Process(child.pid), 0
        while True:
            try:
                peak = max(peak, tree_rss(watched))
            except psutil.Error:  # the child itself just exited
                pass
            try:
                child.wait(timeout=POLL_SECONDS)  # returns at the exit, so the wall time is not rounded up to a poll
                break
            except subprocess.TimeoutExpired:
                pass
        wall = time.perf_counter() - start
        stdout.seek(0)
        stderr.seek(0)
        lines = stdout.read().splitlines()
        if child.returncode != status:
            tail = "\n".join((stderr.read().splitlines() + lines)[-15:])
            raise RuntimeError(f"{' '.join(command)} exited with {child.returncode}:\n{tail}")
    last = lines[-1] if lines else ""
    return Measured(wall, peak, json.loads(last) if last.startswith("{") else {})

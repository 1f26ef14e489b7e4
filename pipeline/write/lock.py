"""Who holds an output: a lease a run writes under the output prefix while it writes there.

Two runs into one output used to interleave: both exited 0, and the folder held one run's files
(or one died in Beam's Finalize on the other's deletions). So a run takes `<output>/_lock.json`
before it writes anything and removes it when it ends:

    {"expires": 1796419500.0, "host": "node-7", "pid": 41233, "run": "3f2a9c...", "started": 1796419200.0}

A lock is an object like any other, so this works on object stores (gs://, s3://) as on disks.
A holder that died must not bar the output for ever, so a lock is *stale* when

    its host is this machine and its pid is no live process (killed, crashed, Ctrl-C'd), or
    its lease has expired: the holder renews `expires` every RENEW_SECONDS, so a lock written from
    another machine goes stale LEASE_SECONDS after its holder stopped renewing.

A stale lock is taken over; a live one refuses the run in one sentence naming its holder.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

LOCK = "_lock.json"
LEASE_SECONDS = 300.0
RENEW_SECONDS = 60.0


@dataclass(frozen=True)
class Holder:
    """The run that holds an output: a random run id, where it runs, when its lease ends."""

    run: str
    host: str
    pid: int
    started: float
    expires: float

    def to_json(self) -> bytes:
        return (json.dumps(asdict(self), sort_keys=True) + "\n").encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> Holder | None:
        """The holder a lock names; None for bytes that are no lock of ours (half-written, edited)."""
        try:
            fields = json.loads(data)
            return cls(str(fields["run"]), str(fields["host"]), int(fields["pid"]), float(fields["started"]), float(fields["expires"]))
        except (ValueError, KeyError, TypeError):
            return None

    def renewed(self, now: float) -> Holder:
        return replace(self, expires=now + LEASE_SECONDS)

    def describe(self) -> str:
        """'pid 41233 on node-7, started 2026-12-04 18:40:00 UTC'."""
        return f"pid {self.pid} on {self.host}, started {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(self.started))}"


def new_holder(now: float) -> Holder:
    return Holder(uuid.uuid4().hex, socket.gethostname(), os.getpid(), now, now + LEASE_SECONDS)


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (signal 0 checks, sends nothing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def is_stale(holder: Holder | None, now: float, host: str | None = None, alive: Callable[[int], bool] = pid_alive) -> bool:
    """Whether a lock no longer stands for a live run (module docstring); an unreadable lock is
    stale too, so a torn write can never bar an output."""
    if holder is None or now > holder.expires:
        return True
    return holder.host == (host or socket.gethostname()) and not alive(holder.pid)


def held_sentence(output: str, holder: Holder) -> str:
    return f"--output {output} is being written by another run ({holder.describe()}); wait for it to end or choose another --output"

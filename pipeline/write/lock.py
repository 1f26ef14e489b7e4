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

Taking a lock must be a create-if-absent, so that of two runs starting together exactly one wins.
Where it is kept decides how (`LockStore`; beam/outputs.py picks one per output):

    a local disk      LocalLock: a complete file hard-linked to the lock's name (fails if it exists)   atomic
    gs://             GcsLock: an upload on the condition that no generation exists (GCS's             atomic
                      `ifGenerationMatch=0`); renewals, releases and take-overs are conditional on
                      the generation last seen, so none touches a lock another run made since
    any other store   written where none is, then read back (Beam's filesystems have no               best effort
    (s3://, hdfs://,  create-if-absent): keeps apart runs that start more than a moment apart;
    azfs://, ...)     two that look at the same instant can both believe they won
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Protocol

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


class LockStore(Protocol):
    """Where an output's lock is kept (module docstring). `atomic`: whether `create` is a true
    create-if-absent. Every method takes and gives a lock's bytes (Holder.to_json)."""

    atomic: bool

    def read(self) -> bytes | None:
        """The lock's bytes, None when there is no lock."""

    def create(self, data: bytes) -> bool:
        """Write the lock where there is none; False, writing nothing, when there is one."""

    def renew(self, data: bytes) -> bool:
        """Replace our own lock, whole; False when it is no longer the one we last wrote."""

    def remove(self, seen: bytes) -> None:
        """Delete the lock if it still holds `seen` (a stale one we read, or our own)."""


class LocalLock:
    """The lock as a file on this machine's disks."""

    atomic = True

    def __init__(self, path: str) -> None:
        self._path = path

    def read(self) -> bytes | None:
        try:
            with open(self._path, "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            return None

    def create(self, data: bytes) -> bool:
        """A complete draft hard-linked to the lock's name: the link fails if the name exists, so
        exactly one run wins, and no reader ever sees a half-written lock."""
        os.makedirs(os.path.dirname(self._path) or ".", exist_ok=True)
        draft = self._draft(data)
        try:
            os.link(draft, self._path)
        except FileExistsError:
            return False
        finally:
            os.unlink(draft)
        return True

    def renew(self, data: bytes) -> bool:
        os.replace(self._draft(data), self._path)  # whole or not at all
        return True

    def remove(self, seen: bytes) -> None:
        """Renamed aside first, so of two runs that both found it stale only one removes it (the
        other's rename fails), and a lock made since we looked is put back."""
        aside = f"{self._path}.{uuid.uuid4().hex}.stale"
        try:
            os.rename(self._path, aside)
        except FileNotFoundError:
            return
        with open(aside, "rb") as handle:
            taken = handle.read()
        if taken != seen:
            try:
                os.link(aside, self._path)
            except FileExistsError:
                pass
        os.unlink(aside)

    def _draft(self, data: bytes) -> str:
        draft = f"{self._path}.{uuid.uuid4().hex}.new"
        with open(draft, "wb") as handle:
            handle.write(data)
        return draft


class GcsLock:
    """The lock as a GCS object, written and deleted on preconditions on its generation (GCS's
    compare-and-set): `ifGenerationMatch=0` creates it only if absent; renewals and deletes name
    the generation we last saw, so a lock another run made since is never overwritten or removed.
    Needs google-cloud-storage (the `gcp` extra) and the credentials Beam's gs:// uses."""

    atomic = True

    def __init__(self, uri: str, client: object | None = None) -> None:
        from google.cloud import storage

        bucket, _, name = uri.removeprefix("gs://").partition("/")
        self._blob = (client or storage.Client()).bucket(bucket).blob(name)
        self._generation: int | None = None  # of the lock as we last read or wrote it

    def read(self) -> bytes | None:
        """The lock's bytes and, remembered, their generation (a download conditional on the
        generation just listed, so the two belong together)."""
        from google.api_core.exceptions import NotFound, PreconditionFailed

        while True:
            try:
                self._blob.reload()
                data = self._blob.download_as_bytes(if_generation_match=self._blob.generation)
            except NotFound:
                return None
            except PreconditionFailed:  # replaced between the two calls: look again
                continue
            self._generation = self._blob.generation
            return data

    def create(self, data: bytes) -> bool:
        return self._upload(data, 0)

    def renew(self, data: bytes) -> bool:
        return self._generation is not None and self._upload(data, self._generation)

    def remove(self, seen: bytes) -> None:
        from google.api_core.exceptions import NotFound, PreconditionFailed

        if self.read() != seen:
            return
        try:
            self._blob.delete(if_generation_match=self._generation)
        except (NotFound, PreconditionFailed):  # gone, or replaced since we read it: not ours to delete
            pass

    def _upload(self, data: bytes, generation: int) -> bool:
        from google.api_core.exceptions import PreconditionFailed

        try:
            self._blob.upload_from_string(data, content_type="application/json", if_generation_match=generation)
        except PreconditionFailed:
            return False
        self._generation = self._blob.generation
        return True

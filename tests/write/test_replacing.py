"""A finished run replaces the previous one so that a kill at any instant of the swap loses
neither (write/replacing.py): killed before the journal exists, the previous run is there byte
for byte; killed after, the next run or `validate` completes the new one. Every filesystem change
of the swap is a kill point: on a local disk a forked child is SIGKILLed before it
(kill_replacing.py); on an in-memory object store, where a move is a copy then a delete, an
exception stops it before each object copied, deleted or uploaded."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_jsonl
from memory_fs import MemoryFileSystem, _Upload
from masked_shards.beam.outputs import hold_output, promote, recover
from masked_shards.cli import main
from masked_shards.write.replacing import JOURNAL, journal_json, read_journal, remaining_steps

OLD = [{"prompt": f"Question {n}?", "completion": f"Answer {n}."} for n in range(30)] + ["{broken"]
NEW = [{"prompt": f"Another question {n}?", "completion": f"Another answer {n}."} for n in range(40)]
LEFTOVERS = ("_staging/", "_lock.json", JOURNAL)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _finished(files: dict[str, bytes]) -> dict[str, bytes]:
    return {name: data for name, data in files.items() if not name.startswith(LEFTOVERS)}


def _run(inputs: Path, output: Path | str, *args: str) -> int:
    return main(["run", "--smoke-test", "off", "--quiet", "--input", str(inputs), "--output", str(output), *args])


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Two finished runs with overlapping and distinct file names: the old one has a rejected-records
    file and one train shard, the new one no rejection, a train shard of the same name and a
    validation shard."""
    base = tmp_path_factory.mktemp("runs")
    old_input, new_input = write_jsonl(base / "old.jsonl", OLD), write_jsonl(base / "new.jsonl", NEW)
    assert _run(old_input, base / "old") == 0
    assert _run(new_input, base / "new", "--validation-fraction", "0.25") == 0
    return {"old": base / "old", "new": base / "new", "old_input": old_input}


def _staged(runs: dict[str, Path], output: Path) -> Path:
    """An output as a run leaves it when its job has ended: the previous run, and the new one
    complete under _staging/ (the job writes there exactly what it would write in place)."""
    shutil.copytree(runs["old"], output)
    shutil.copytree(runs["new"], output / "_staging")
    return output


def test_the_remaining_steps_redo_what_a_kill_left_undone():
    files = ["data/a.parquet", "data/b.parquet", "manifest.json"]
    nothing_done = remaining_steps(files, set(files), ["data/a.parquet", "data/old.parquet", "manifest.json"])
    assert nothing_done.delete == ["manifest.json", "data/a.parquet", "data/old.parquet"]  # the manifest first
    assert nothing_done.move == ["data/a.parquet", "data/b.parquet", "manifest.json"]  # the manifest last
    half_moved = remaining_steps(files, {"data/b.parquet", "manifest.json"}, ["data/a.parquet"])
    assert half_moved.delete == [] and half_moved.move == ["data/b.parquet", "manifest.json"]
    # a copy made but its source not yet deleted (an object store's move): the staged file wins
    copied = remaining_steps(files, {"data/b.parquet", "manifest.json"}, ["data/a.parquet", "data/b.parquet"])
    assert copied.delete == ["data/b.parquet"] and copied.move == ["data/b.parquet", "manifest.json"]
    done = remaining_steps(files, set(), ["data/a.parquet", "data/b.parquet", "manifest.json"])
    assert done.delete == [] and done.move == []
    assert read_journal(journal_json(files)) == files
    assert read_journal(b"") is None and read_journal(journal_json(files)[:-9]) is None  # torn: no replacement began


def _committed(left: dict[str, bytes]) -> bool:
    """Past the commit point: a whole journal, or none left because the swap is done."""
    return read_journal(left.get(JOURNAL, b"")) is not None or "_staging/manifest.json" not in left


def _kill(folder: Path, points: list[int]) -> dict[int, list[int]]:
    done = subprocess.run([sys.executable, str(Path(__file__).with_name("kill_replacing.py")), str(folder), *map(str, points)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return {int(k): v for k, v in json.loads(done.stdout).items()}


def test_a_swap_killed_at_any_change_leaves_the_old_run_or_completes_the_new(runs, tmp_path):
    old, new = _files(runs["old"]), _files(runs["new"])
    (count,) = _kill(_staged(runs, tmp_path / "-1").parent, [-1]).values()
    assert count[0] == 0 and _finished(_files(tmp_path / "-1")) == new and not (tmp_path / "-1" / "_staging").exists()
    changes = count[1]
    points = list(range(changes))
    for point in points:
        _staged(runs, tmp_path / str(point))
    killed = _kill(tmp_path, points)
    assert all(status == -9 for status, _ in killed.values())  # every child died by SIGKILL
    outcomes = []
    for point in points:
        wreck = tmp_path / str(point)
        left = _files(wreck)
        committed = _committed(left)
        if not committed:  # before the commit point: the previous run is untouched
            assert _finished(left) == old, point
        shutil.copytree(wreck, tmp_path / f"next-{point}")
        assert main(["validate", str(wreck)]) == 0, point  # completes a committed swap first
        outcome = _finished(_files(wreck))
        assert outcome in (old, new), point
        outcomes.append("new" if outcome == new else "old")
        # what the next run does first, holding the output: roll forward or back, then nothing is left over
        with hold_output(str(tmp_path / f"next-{point}")):
            recover(str(tmp_path / f"next-{point}"))
        assert _files(tmp_path / f"next-{point}") == (new if committed else old) and outcomes[-1] == ("new" if committed else "old"), point
    # one switch from old to new: the kills before the journal is whole keep the old run
    switch = outcomes.index("new")
    assert outcomes == ["old"] * switch + ["new"] * (changes - switch) and 0 < switch < changes - 5
    # a real next run over a wreck left mid-swap: it completes, replaces, and leaves nothing over
    middle = tmp_path / str((switch + changes) // 2)
    shutil.rmtree(middle)
    _staged(runs, middle)
    _kill(tmp_path, [(switch + changes) // 2])
    assert _run(runs["old_input"], middle, "--overwrite") == 0
    assert _files(middle) == old


class KillingStore(MemoryFileSystem):
    """`killtest://`: the in-memory object store, stopped (an exception no code catches) before
    its k-th object copied, deleted or uploaded. A move is a copy and then a delete, as on GCS."""

    kill_at = -1  # none
    changes = 0

    @classmethod
    def scheme(cls) -> str:
        return "killtest"

    @classmethod
    def change(cls) -> None:
        if cls.changes == cls.kill_at:
            cls.kill_at = -1
            raise Killed
        cls.changes += 1

    def copy(self, sources: list[str], destinations: list[str]) -> None:
        for source, destination in zip(sources, destinations):
            self.change()
            super().copy([source], [destination])

    def delete(self, paths: list[str]) -> None:
        for path in paths:
            self.change()
            super().delete([path])

    def create(self, path: str, *args: object, **kwargs: object) -> _Upload:
        return _CountedUpload(self.objects, path)


class _CountedUpload(_Upload):
    """An upload that a kill before its end leaves unwritten, even when garbage collection
    closes it later (a killed process never does)."""

    def close(self) -> None:
        if not self.closed:
            try:
                KillingStore.change()
            except Killed:
                io.BytesIO.close(self)
                raise
        super().close()


class Killed(BaseException):
    """A kill: nothing catches it, so the swap stops exactly there."""


def _objects(prefix: str) -> dict[str, bytes]:
    return {path[len(prefix) :]: data for path, data in MemoryFileSystem.objects.items() if path.startswith(prefix)}


def test_a_swap_stopped_at_any_object_on_an_object_store_leaves_the_old_run_or_completes_the_new(runs):
    old, new = _files(runs["old"]), _files(runs["new"])

    def staged(output: str) -> None:
        for prefix, run in ((output, old), (f"{output}/_staging", new)):
            MemoryFileSystem.objects.update({f"{prefix}/{name}": data for name, data in run.items()})

    def swap(output: str, kill_at: int) -> int | None:
        """The changes promote made, or None if it was stopped (the lock's writes not counted)."""
        try:
            with hold_output(output):
                KillingStore.kill_at, KillingStore.changes = kill_at, 0
                promote(output)
                KillingStore.kill_at = -1
                return KillingStore.changes
        except Killed:
            return None
        finally:
            KillingStore.kill_at = -1

    staged("killtest://bucket/count")
    changes = swap("killtest://bucket/count", -1)
    assert _objects("killtest://bucket/count/") == new
    outcomes = []
    for point in range(changes):
        output = f"killtest://bucket/k{point}"
        staged(output)
        assert swap(output, point) is None
        left = _objects(output + "/")
        committed = _committed(left)
        if not committed:
            assert _finished(left) == old, point
        if point % 2:  # half the wrecks: validate completes the swap, then the next run cleans up
            assert main(["validate", output]) == 0, point
            assert _finished(_objects(output + "/")) == (new if committed else old), point
        with hold_output(output):
            recover(output)
        after = _objects(output + "/")
        assert after == (new if committed else old), point
        outcomes.append("new" if committed else "old")
    switch = outcomes.index("new")
    assert outcomes == ["old"] * switch + ["new"] * (changes - switch) and 0 < switch < changes - 5

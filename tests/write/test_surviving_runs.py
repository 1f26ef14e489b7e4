"""Runs that survive each other and being killed: a live run holds its output (a second run is
refused in one sentence naming it), two runs never interleave files, a killed --overwrite run
leaves the previous result byte for byte and valid, an unfinished run is named as such, and
`validate` fails on a wreck. Real processes, real signals, real Beam runs."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import write_jsonl
from memory_fs import MemoryFileSystem
from masked_shards.cli import main
from masked_shards.write.lock import LEASE_SECONDS, Holder, is_stale

ROOT = Path(__file__).parent.parent.parent
SMALL = [{"prompt": f"Question {n}?", "completion": f"Answer {n}."} for n in range(30)]
# Enough rows that a run is still writing seconds after it took the output (about 10 s on two cores).
LARGE = [{"prompt": f"Question {n} about {'many things ' * 20}?", "completion": f"Answer {n}: {'it depends ' * 30}."} for n in range(12_000)]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("inputs")
    write_jsonl(folder / "small.jsonl", SMALL)
    write_jsonl(folder / "large.jsonl", LARGE)
    return folder


def _command(inputs: Path, name: str, output: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "masked_shards.cli", "run", "--smoke-test", "off", "--quiet", "--input", str(inputs / name), "--output", str(output), *args]


def _start(inputs: Path, name: str, output: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(_command(inputs, name, output, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _finished(folder: Path) -> dict[str, bytes]:
    """The files of the finished run: everything but a killed run's leftovers."""
    return {name: data for name, data in _files(folder).items() if not name.startswith(("_staging/", "_lock.json"))}


def _wait_for(predicate, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert process.poll() is None, f"the run ended first: {process.communicate()}"
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def _staged(output: Path) -> bool:
    return any(p.is_file() for p in (output / "_staging").rglob("*")) if (output / "_staging").is_dir() else False


@pytest.fixture
def finished_small(inputs, tmp_path) -> Path:
    output = tmp_path / "out"
    done = subprocess.run(_command(inputs, "small.jsonl", output), capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    return output


def test_two_runs_started_together_never_interleave(inputs, tmp_path):
    """Old code: both exited 0 and the folder held one run's shards, or one died in Beam's Finalize."""
    output = tmp_path / "out"
    runs = {name: _start(inputs, name, output) for name in ("small.jsonl", "large.jsonl")}
    done = {name: (p.wait(timeout=300), *p.communicate()) for name, p in runs.items()}
    winners = [name for name, (code, _, _) in done.items() if code == 0]
    assert len(winners) == 1, done
    (loser,) = set(done) - set(winners)
    assert done[loser][0] == 2 and done[loser][2].startswith(f"masked-shards: --output {output} ")
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["counts"]["rows_written"] == len(SMALL if winners == ["small.jsonl"] else LARGE)
    assert sorted(_files(output)) == sorted(_finished(output))  # no lock, no staging left
    assert main(["validate", str(output)]) == 0


def test_a_live_run_holds_its_output_even_against_overwrite(inputs, tmp_path):
    output = tmp_path / "out"
    first = _start(inputs, "large.jsonl", output)
    _wait_for(lambda: (output / "_lock.json").exists(), first)
    second = subprocess.run(_command(inputs, "small.jsonl", output, "--overwrite"), capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert second.returncode == 2
    assert second.stderr.startswith(f"masked-shards: --output {output} is being written by another run (pid {first.pid} on {socket.gethostname()}, started ")
    assert second.stderr.strip().endswith("wait for it to end or choose another --output") and len(second.stderr.strip().splitlines()) == 1
    assert first.wait(timeout=300) == 0
    assert json.loads((output / "manifest.json").read_text())["counts"]["rows_written"] == len(LARGE)


def _replacing(output: Path, inputs: Path) -> tuple[dict[str, bytes], subprocess.Popen]:
    """The finished run's files, and an --overwrite run over it caught once it has staged files."""
    before = _files(output)
    run = _start(inputs, "large.jsonl", output, "--overwrite")
    _wait_for(lambda: _staged(output), run)
    return before, run


def test_a_killed_overwrite_run_leaves_the_previous_run_intact_and_valid(finished_small, inputs):
    """Old code deleted the old files before the new job started: a kill left an empty data/."""
    output = finished_small
    before, run = _replacing(output, inputs)
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=60)
    assert _finished(output) == before  # manifest, data/, reports, record files byte for byte
    assert _staged(output)  # the leftovers lie outside data/
    assert main(["validate", str(output)]) == 0
    refused = subprocess.run(_command(inputs, "small.jsonl", output), capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert refused.returncode == 2 and refused.stderr.strip() == f"masked-shards: --output {output} is not empty; pass --overwrite to replace it"
    again = subprocess.run(_command(inputs, "small.jsonl", output, "--overwrite", "--seed", "1"), capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert again.returncode == 0, again.stderr  # the dead holder's lock is stale, its leftovers cleaned
    assert not (output / "_staging").exists() and not (output / "_lock.json").exists()
    assert main(["validate", str(output)]) == 0


def test_a_killed_first_run_is_named_unfinished_and_fails_validation(inputs, tmp_path, capsys):
    output = tmp_path / "out"
    run = _start(inputs, "large.jsonl", output)
    _wait_for(lambda: _staged(output), run)
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=60)
    assert not list((output / "data").glob("*")) if (output / "data").exists() else True  # nothing under data/, so no zero-byte shard
    assert main(["validate", str(output)]) == 1
    out = capsys.readouterr().out
    assert "no_manifest" in out and "no_shards" in out and "OK" not in out
    refused = subprocess.run(_command(inputs, "small.jsonl", output), capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert refused.returncode == 2
    assert refused.stderr.strip() == f"masked-shards: --output {output} holds an unfinished run (no manifest.json: it was stopped, or failed); pass --overwrite to replace it"
    assert subprocess.run(_command(inputs, "small.jsonl", output, "--overwrite"), capture_output=True, text=True, cwd=ROOT, timeout=300).returncode == 0
    assert main(["validate", str(output)]) == 0


def test_ctrl_c_exits_130_and_says_what_it_left(finished_small, inputs):
    """Old code exited 1 with Beam's traceback sentence."""
    output = finished_small
    before, run = _replacing(output, inputs)
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 130
    assert err.strip().splitlines()[-1] == f"masked-shards: interrupted; the previous run in {output} is as it was; the next run there deletes the unfinished files in {output}/_staging"
    assert _finished(output) == before and not (output / "_lock.json").exists()  # the lock is given back


def test_validate_fails_on_an_empty_folder_and_on_a_bare_one_without_asking(tmp_path, capsys):
    """Old code said `OK: no violation` (exit 0) on an empty folder."""
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["validate", str(empty)]) == 1
    assert main(["validate", str(empty), "--bare"]) == 1
    assert "no_shards 1" in capsys.readouterr().out


def test_a_lock_is_stale_when_its_holder_died_or_its_lease_ran_out():
    now = time.time()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    here = socket.gethostname()
    assert not is_stale(Holder("a", here, os.getpid(), now, now + LEASE_SECONDS), now)
    assert is_stale(Holder("a", here, int(dead), now, now + LEASE_SECONDS), now)
    assert not is_stale(Holder("a", "another-machine", int(dead), now, now + LEASE_SECONDS), now)  # its pid means nothing here
    assert is_stale(Holder("a", "another-machine", 1, now - 2 * LEASE_SECONDS, now - LEASE_SECONDS), now)
    assert is_stale(None, now)  # an unreadable lock


def test_a_stale_lock_is_taken_over_and_a_live_one_refuses(inputs, tmp_path, capsys):
    output = tmp_path / "out"
    output.mkdir()
    now = time.time()
    (output / "_lock.json").write_bytes(Holder("live", socket.gethostname(), os.getpid(), now, now + LEASE_SECONDS).to_json())
    assert main(["run", "--smoke-test", "off", "--quiet", "--input", str(inputs / "small.jsonl"), "--output", str(output), "--overwrite"]) == 2
    assert f"is being written by another run (pid {os.getpid()} on {socket.gethostname()}" in capsys.readouterr().err
    (output / "_lock.json").write_bytes(Holder("gone", "another-machine", 1, now - 2 * LEASE_SECONDS, now - LEASE_SECONDS).to_json())
    assert main(["run", "--smoke-test", "off", "--quiet", "--input", str(inputs / "small.jsonl"), "--output", str(output), "--overwrite"]) == 0
    assert not (output / "_lock.json").exists()


class FullDisk(MemoryFileSystem):
    """`fulltest://`: the in-memory store, whose shard writes fail as on a full disk."""

    @classmethod
    def scheme(cls) -> str:
        return "fulltest"

    def create(self, path: str, *args: object, **kwargs: object) -> io.BytesIO:
        return _FullUpload(self.objects, path) if "/data/" in path else super().create(path, *args, **kwargs)


class _FullUpload(io.BytesIO):
    def __init__(self, objects: dict[str, bytes], path: str) -> None:
        super().__init__()
        objects[path] = b""  # the empty file a full disk leaves

    def write(self, data: bytes) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_names_the_file_and_leaves_no_empty_shard_under_data(inputs, capsys):
    """Old code left a zero-byte shard under data/ and printed an OSError naming a Beam step."""
    output = "fulltest://bucket/out"
    assert main(["run", "--smoke-test", "off", "--quiet", "--input", str(inputs / "small.jsonl"), "--output", output]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"masked-shards: run failed: cannot write {output}/_staging/data/train-00000-of-00001.parquet: No space left on device"
    assert not [path for path in FullDisk.objects if path.startswith(f"{output}/data/")]


def test_the_smoke_test_stage_runs_on_the_staged_run_before_it_replaces_the_previous_one(inputs, tmp_path):
    """The stage rewrites the report and manifest; on the staged copy, under the lock, the
    previous run stays byte for byte until the swap puts the new run, its result included, in place."""
    from masked_shards.beam.job import run
    from masked_shards.cli import smoke_stage
    from masked_shards.config import PipelineConfig

    output = tmp_path / "out"
    assert main(["run", "--smoke-test", "off", "--quiet", "--input", str(inputs / "small.jsonl"), "--output", str(output)]) == 0
    previous, seen = _files(output), []

    def stage(folder: str, report: dict) -> None:
        assert Path(folder) == output / "_staging" and report["rows_written"] == 30
        assert _finished(output) == previous and (output / "_lock.json").exists()
        seen.append(smoke_stage(folder, "cpu", named=str(output)))

    config = PipelineConfig(inputs=(str(inputs / "small.jsonl"),), output=str(output), overwrite=True, quiet=True, seed=7)
    run(config, [], before_swap=stage)
    assert [status for status, _ in seen] == [0]
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["smoke_test"]["passed"] and json.loads((output / "coverage_report.json").read_text())["smoke_test"]["passed"]
    assert all(hashlib.sha256((output / entry["path"]).read_bytes()).hexdigest() == entry["sha256"] for entry in manifest["report_files"])
    assert not (output / "_staging").exists()


def test_a_smoke_test_stage_that_is_stopped_leaves_the_previous_run_whole(inputs, tmp_path):
    """Stopped inside the stage (Ctrl-C, a crash): nothing of the new run was swapped in."""
    from masked_shards.beam.job import run
    from masked_shards.config import PipelineConfig

    output = tmp_path / "out"
    assert main(["run", "--smoke-test", "off", "--quiet", "--input", str(inputs / "small.jsonl"), "--output", str(output)]) == 0
    previous = _files(output)

    def stopped(folder: str, report: dict) -> None:
        raise KeyboardInterrupt

    config = PipelineConfig(inputs=(str(inputs / "small.jsonl"),), output=str(output), overwrite=True, quiet=True, seed=7)
    with pytest.raises(KeyboardInterrupt):
        run(config, [], before_swap=stopped)
    assert _finished(output) == previous
    assert main(["validate", str(output)]) == 0

"""Flag and config mistakes are answered before anything heavy loads: the command prints its one
sentence having imported neither Beam nor transformers nor torch (Python's `-X importtime` lists
every module a process imports), and the same checks agree with Beam's own file matching. A local
output that a live run holds is one of them; on an object store its lock is read after Beam
loads (outputs.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from masked_shards.beam.preflight import match_files
from masked_shards.write.lock import LEASE_SECONDS, Holder

HEAVY = ("apache_beam", "transformers", "torch", "matplotlib", "datasets")


def _command(tmp_path: Path, *args: str) -> tuple[int, list[str], set[str]]:
    """Exit status, our stderr lines, and the top-level packages the process imported."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "masked_shards.cli", "run", *args], capture_output=True, text=True, cwd=tmp_path)
    lines = done.stderr.splitlines()
    imported = {line.rsplit("|", 1)[1].strip().split(".")[0] for line in lines if line.startswith("import time:") and "|" in line}
    return done.returncode, [line for line in lines if not line.startswith("import time:")], imported


@pytest.fixture
def chat(tmp_path: Path) -> Path:
    path = tmp_path / "chat.jsonl"
    path.write_text('{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}\n', encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("args", "sentence"),
    [
        (("--template", "nosuch"), "masked-shards: unknown template 'nosuch'; choose one of "),
        (("--max-length", "0"), "masked-shards: --max-length must be"),
        (("--input", "missing/*.jsonl"), "masked-shards: --input missing/*.jsonl matches no file"),
        (("--source-lang", "en"), "masked-shards: --source-lang and --target-lang must be given together"),
        (("--translate-template", "nosuch.jinja"), "masked-shards: cannot read --translate-template nosuch.jinja"),
    ],
)
def test_a_config_mistake_is_one_sentence_before_any_heavy_import(tmp_path, chat, args, sentence):
    status, stderr, imported = _command(tmp_path, "--input", str(chat), "--output", "out", *args)
    assert status == 2
    assert len(stderr) == 1 and stderr[0].startswith(sentence), stderr
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))


def test_a_local_output_held_by_a_live_run_is_refused_before_any_heavy_import(tmp_path, chat):
    """The holder is this test's process: alive, on this machine, and not the command's own."""
    (tmp_path / "out").mkdir()
    now = time.time()
    (tmp_path / "out" / "_lock.json").write_bytes(Holder("live", socket.gethostname(), os.getpid(), now, now + LEASE_SECONDS).to_json())
    status, stderr, imported = _command(tmp_path, "--input", str(chat), "--output", "out", "--overwrite")
    assert status == 2
    assert len(stderr) == 1 and stderr[0].startswith(f"masked-shards: --output out is being written by another run (pid {os.getpid()} on "), stderr
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))


def test_the_probe_sees_heavy_imports_when_they_happen(tmp_path, chat):
    """The import listing is not blind: an unknown Beam flag is checked against Beam's options."""
    status, stderr, imported = _command(tmp_path, "--input", str(chat), "--output", "out", "--no_such_beam_flag")
    assert status == 2 and stderr == ["masked-shards: Unknown flag --no_such_beam_flag; see masked-shards run --help."]
    assert "apache_beam" in imported


@pytest.mark.parametrize("pattern", ["data/*.jsonl", "data/**.jsonl", "data/**/*.jsonl", "data/[ab].jsonl", "data/?.jsonl", "data/a.jsonl", "data", "none/*.jsonl"])
def test_local_matching_agrees_with_beams(tmp_path, monkeypatch, pattern):
    from apache_beam.io.filesystems import FileSystems

    for name in ("top.jsonl", "data/a.jsonl", "data/b.jsonl", "data/c.json", "data/deep/d.jsonl", "data/deep/e.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("{}\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    for spelled in (pattern, str(tmp_path / pattern)):
        beams = sorted(m.path for result in FileSystems.match([spelled]) for m in result.metadata_list)
        assert match_files(spelled) == beams

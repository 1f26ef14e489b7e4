"""What a run leaves in --output: refused runs change nothing, the output is a prefix on every
filesystem (tested on an in-memory object store with no folders, like GCS), a run that writes no
row fails after writing its report, and every split and shard written loads in `datasets`,
pandas and `pyarrow.dataset`. Every run here is a whole job on Beam's FnApiRunner."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import datasets
import pandas as pd
import pyarrow.dataset as pds
import pyarrow.parquet as pq
import pytest

from conftest import write_jsonl
from memory_fs import MemoryFileSystem
from masked_shards.cli import main
from masked_shards.beam.job import NoRowsWritten

GOOD = [{"prompt": f"Question {n}?", "completion": f"Answer {n}."} for n in range(40)]
NEEDS_FIELD = [{"question": f"Question {n}?", "answer": f"Answer {n}."} for n in range(3)]


def _under(prefix: str) -> dict[str, bytes]:
    return {path[len(prefix) :]: data for path, data in MemoryFileSystem.objects.items() if path.startswith(prefix)}


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _report(output: Path) -> dict:
    return json.loads((output / "coverage_report.json").read_text())


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("inputs")
    write_jsonl(folder / "good.jsonl", GOOD)
    write_jsonl(folder / "four.jsonl", GOOD[:4])
    write_jsonl(folder / "needs_field.jsonl", NEEDS_FIELD)
    (folder / "empty.jsonl").write_text("", encoding="utf-8")
    return folder


def _job(inputs: Path, output: str | Path, *args: str, input_name: str = "good.jsonl") -> int:
    return main(["run", "--smoke-test", "off", "--input", str(inputs / input_name), "--output", str(output), *args])


# Local runs shared by several tests: both splits in several shards, and a sparse run whose
# validation split gets no row (0.001 of 4 rows) and whose 8 requested shards outnumber its rows.
RUNS = {
    "two_splits": ("good.jsonl", "--validation-fraction", "0.25", "--num-shards", "3"),
    "sparse": ("four.jsonl", "--validation-fraction", "0.001", "--num-shards", "8"),
}


@pytest.fixture(scope="module")
def finished(inputs, tmp_path_factory) -> dict[str, Path]:
    outputs = {}
    for name, (input_name, *args) in RUNS.items():
        outputs[name] = tmp_path_factory.mktemp(name) / "out"
        assert _job(inputs, outputs[name], *args, input_name=input_name) == 0
    return outputs


# --- point 7: every split and shard we write loads everywhere --------------------------------


def test_no_written_file_is_empty_and_shard_sets_are_whole(finished):
    two_splits = sorted(p.name for p in (finished["two_splits"] / "data").iterdir())
    assert two_splits == [f"{split}-0000{i}-of-00003.parquet" for split in ("train", "validation") for i in range(3)]
    sparse = sorted(p.name for p in (finished["sparse"] / "data").iterdir())
    assert sparse and all(name.startswith("train-") for name in sparse)  # the empty validation split is not written
    assert sparse == [f"train-{i:05d}-of-{len(sparse):05d}.parquet" for i in range(len(sparse))]  # at most 4: one per row
    for output in finished.values():
        manifest = json.loads((output / "manifest.json").read_text())
        assert sorted(s["path"].split("/")[1] for s in manifest["shards"]) == sorted(p.name for p in (output / "data").iterdir())
        for path in (output / "data").iterdir():
            assert pq.ParquetFile(path).metadata.num_rows > 0, path


LOADERS = {
    "datasets": lambda folder, split, cache: datasets.load_dataset("parquet", data_dir=str(folder), cache_dir=str(cache))[split].num_rows,
    "pandas": lambda folder, split, cache: len(pd.read_parquet([str(p) for p in sorted(folder.glob(f"{split}-*.parquet"))])),
    "pyarrow": lambda folder, split, cache: pds.dataset(sorted(str(p) for p in folder.glob(f"{split}-*.parquet"))).count_rows(),
}


@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize("loader", LOADERS)
def test_every_written_split_loads(run, loader, finished, tmp_path):
    """Old code wrote a zero-row validation shard and empty train shards; `datasets` failed on them
    (ArrowInvalid: BatchSize must be greater than 0) and took the train split down with it."""
    output = finished[run]
    by_split = _report(output)["rows_by_split"]
    loaded = {split: LOADERS[loader](output / "data", split, tmp_path) for split, rows in by_split.items() if rows}
    assert loaded == {split: rows for split, rows in by_split.items() if rows} and sum(loaded.values()) == _report(output)["rows_written"]
    assert (by_split["validation"] > 0) == (run == "two_splits")  # the report names an empty split with 0 rows; it has no file
    if loader == "pandas":  # the whole folder at once, as pandas users load it
        assert len(pd.read_parquet(output / "data")) == sum(by_split.values())
    if loader == "pyarrow":
        assert pds.dataset(output / "data").count_rows() == sum(by_split.values())


# --- point 4: a run that writes no row fails, after writing its report and record files -----


ZERO_ROWS = {
    "all_rejected": ("needs_field.jsonl", (), "no rows written: 3 records rejected (unknown_format 3), 0 dropped"),
    "all_dropped": ("four.jsonl", ("--max-length", "8"), "no rows written: 0 records rejected, 4 dropped (no_supervised_tokens_after_truncation 4)"),
    "empty_file": ("empty.jsonl", (), "no rows written: the inputs hold no records"),
}


@pytest.mark.parametrize("case", ZERO_ROWS)
def test_a_run_that_writes_no_row_fails_with_the_reasons(case, inputs, tmp_path, capsys):
    input_name, args, sentence = ZERO_ROWS[case]
    output = tmp_path / "out"
    assert _job(inputs, output, *args, input_name=input_name) == 1
    assert capsys.readouterr().err.splitlines() == [f"masked-shards: {sentence}"]
    report = _report(output)
    assert report["rows_written"] == 0 and (output / "coverage_report.md").exists() and (output / "coverage_report.html").exists()
    for folder, count in (("rejected", report["rejected"]), ("dropped", report["dropped"])):
        if count:
            assert len((output / folder / f"{folder}.jsonl").read_text().splitlines()) == count
    assert not (output / "manifest.json").exists()
    assert not list(output.rglob("*.parquet"))  # no zero-row file for a loader to choke on


def test_the_no_rows_sentence_names_the_commonest_reasons():
    report = {"records_read": 12, "rejected": 11, "dropped": 1, "sampled_out": 0, "dropped_by_reason": {"overlong": 1}}
    report["rejected_by_reason"] = {"invalid_json": 2, "missing_field": 5, "template_error": 2, "no_assistant_turn": 1, "empty_target": 1}
    assert str(NoRowsWritten(report)) == (
        "no rows written: 11 records rejected (missing_field 5, invalid_json 2, template_error 2, 2 other reasons), 1 dropped (overlong 1)"
    )


# --- point 5: a refused run leaves the earlier one exactly as it was -------------------------


@pytest.mark.parametrize(
    "args,stray",
    [
        (("--template", "nosuch"), None),
        (("--tokenizer", "/nonexistent/tokenizer"), None),
        ((), "data/notes.txt"),  # a file we did not write is never deleted, so --overwrite is refused
    ],
)
def test_a_refused_overwrite_changes_nothing(args, stray, finished, inputs, tmp_path, capsys):
    """Old code deleted the earlier run in check_output, before the later start-up checks failed."""
    output = tmp_path / "out"
    shutil.copytree(finished["two_splits"], output)
    if stray:
        (output / stray).write_text("mine")
    before = _files(output)
    assert _job(inputs, output, "--overwrite", *args) == 2
    assert _files(output) == before
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("masked-shards: ")
    if stray:
        assert line == f"masked-shards: --output {output} holds {stray}, which masked-shards did not write and --overwrite does not delete; move it or choose another --output"


# --- point 6: the output is a prefix on object stores too ------------------------------------


MEM = "memtest://bucket/out"


@pytest.fixture(scope="module")
def memory_run(inputs) -> dict[str, bytes]:
    """A whole job written to the in-memory object store; a sibling prefix must stay untouched."""
    MemoryFileSystem.objects[MEM + "-other/data/train-00000-of-00001.parquet"] = b"not ours"
    assert _job(inputs, MEM, "--num-shards", "8") == 0
    return _under(MEM + "/")


def test_a_whole_job_writes_to_an_object_store(memory_run):
    manifest = json.loads(memory_run["manifest.json"])
    shards = sorted(name for name in memory_run if name.startswith("data/"))
    assert shards == [f"data/train-{i:05d}-of-00008.parquet" for i in range(8)]
    assert [s["path"] for s in manifest["shards"]] == shards
    for shard in manifest["shards"]:
        data = memory_run[shard["path"]]
        assert hashlib.sha256(data).hexdigest() == shard["sha256"]
        assert pq.read_table(io.BytesIO(data)).num_rows == shard["rows"] > 0
    assert manifest["counts"]["rows_written"] == len(GOOD)
    assert MemoryFileSystem.objects[MEM + "-other/data/train-00000-of-00001.parquet"] == b"not ours"


def test_a_non_empty_object_store_prefix_is_refused(memory_run, inputs, capsys):
    """Old code asked `exists(output)`, false for a prefix on an object store, and wrote over it."""
    assert _job(inputs, MEM, "--num-shards", "2") == 2
    assert capsys.readouterr().err.strip() == f"masked-shards: --output {MEM} is not empty; pass --overwrite to replace it"
    assert _under(MEM + "/") == memory_run


def test_overwrite_on_an_object_store_removes_a_larger_earlier_run(memory_run, inputs):
    """Old code deleted nothing on an object store: the 8-shard run's shards stayed beside the new 2."""
    again = MEM + "-again"
    for name, data in memory_run.items():  # the earlier 8-shard run, now under its own prefix
        MemoryFileSystem.objects[f"{again}/{name}"] = data
    assert _job(inputs, again, "--overwrite", "--num-shards", "2") == 0
    written = _under(again + "/")
    assert sorted(name for name in written if name.startswith("data/")) == ["data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"]
    assert sorted(written) == sorted(["coverage_report.json", "coverage_report.html", "coverage_report.md", "coverage_by_file.jsonl", "manifest.json", *(n for n in written if n.startswith("data/"))])
    assert sum(pq.read_table(io.BytesIO(written[n])).num_rows for n in written if n.startswith("data/")) == len(GOOD)

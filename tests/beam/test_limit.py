"""`masked-shards run --limit N`: the first N records of each input, by index, in every input kind
(line files, Parquet row groups, a JSON array, CSV); rejected records count among the N, blank
lines do not; everything else is a normal run, and the manifest and report say it was limited."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import write_jsonl
from masked_shards.cli import main
from masked_shards.config import ConfigError, PipelineConfig
from masked_shards.records import BlankLines
from masked_shards.read.sources import InputFile, RawRecord, count_range, read_range, split_input

LIMIT = 3


def _open(path: str):
    return open(path, "rb")


def _size(path: str) -> int:
    return Path(path).stat().st_size


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("limit_inputs")
    lines = [{"prompt": f"L{n}?", "completion": f"l{n}."} for n in range(8)]
    write_jsonl(folder / "lines.jsonl", [lines[0], "", "{broken", lines[1], "", *lines[2:]])  # ids 0, 2 (rejected), 3, then 5..
    pq.write_table(pa.Table.from_pylist([{"prompt": f"P{n}?", "completion": f"p{n}."} for n in range(10)]), folder / "rows.parquet", row_group_size=2)
    (folder / "array.json").write_text(json.dumps([{"prompt": f"A{n}?", "completion": f"a{n}."} for n in range(6)]), encoding="utf-8")
    (folder / "table.csv").write_text("prompt,completion\n" + "".join(f"C{n}?,c{n}.\n" for n in range(6)), encoding="utf-8")
    return folder


def test_a_limited_unit_is_one_range_that_stops_after_n_records(inputs):
    """A file that would be cut into many byte ranges is read as one range from the start, never
    counted to its end, and stops at the N-th record: a blank line before it is counted, the one
    after it is not read."""
    unit = InputFile("lines.jsonl", "lines.jsonl", str(inputs / "lines.jsonl"), "jsonl")
    assert len(split_input(unit, _open, _size, target_bytes=16)) > 3
    (limited,) = split_input(unit, _open, _size, target_bytes=16, limit=LIMIT)
    assert count_range(limited, _open) == 0
    items = list(read_range(limited, _open, 0))
    assert [(type(i).__name__, getattr(i, "index", None)) for i in items] == [("RawRecord", 0), ("Rejected", 2), ("RawRecord", 3), ("BlankLines", None)]
    assert items[-1] == BlankLines("lines.jsonl", 1)


@pytest.mark.parametrize(("name", "kind"), [("rows.parquet", "parquet"), ("array.json", "json"), ("table.csv", "csv")])
def test_every_other_input_kind_stops_after_n_records(inputs, name, kind):
    unit = InputFile(name, name, str(inputs / name), kind)
    ranges = split_input(unit, _open, _size, target_bytes=16, limit=LIMIT)
    assert len(ranges) == 1
    items = list(read_range(ranges[0], _open, 0))
    assert all(isinstance(i, RawRecord) for i in items) and [i.index for i in items] == list(range(LIMIT))


@pytest.fixture(scope="module")
def limited(inputs, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("limited") / "out"
    args = ["run", "--smoke-test", "off", "--output", str(output), "--limit", str(LIMIT)]
    for name in ("lines.jsonl", "rows.parquet", "array.json", "table.csv"):
        args += ["--input", str(inputs / name)]
    assert main(args) == 0
    return output


def test_a_limited_run_processes_the_first_n_records_of_each_input_and_says_so(limited):
    report = json.loads((limited / "coverage_report.json").read_text())
    manifest = json.loads((limited / "manifest.json").read_text())
    ids = sorted(i for entry in manifest["shards"] for i in pq.read_table(limited / entry["path"], columns=["example_id"]).column("example_id").to_pylist())
    assert ids == sorted(["lines.jsonl:0", "lines.jsonl:3", *(f"{name}:{n}" for name in ("rows.parquet", "array.json", "table.csv") for n in range(LIMIT))])
    assert report["records_read"] == 4 * LIMIT
    assert report["rejected_by_reason"] == {"invalid_json": 1}
    assert report["blank_lines"] == 1
    assert report["limit"] == LIMIT and manifest["config"]["limit"] == LIMIT and manifest["counts"]["limit"] == LIMIT
    rejected = [json.loads(line) for line in (limited / "rejected" / "rejected.jsonl").read_text().splitlines()]
    assert [(r["source"], r["index"]) for r in rejected] == [("lines.jsonl", 2)]


def test_the_limit_must_be_positive():
    with pytest.raises(ConfigError, match="--limit must be positive, not 0"):
        PipelineConfig(limit=0)


def test_an_unlimited_run_records_no_limit():
    assert PipelineConfig().recorded()["limit"] is None

"""A corpus sharded into many files: the files of one --input glob are one source (named after the
glob, or NAME=), each file's counts go to coverage_by_file.jsonl, the report and manifest do not
grow with the number of files, and the HTML page lists the top sources and sums the rest."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import write_jsonl
from masked_shards.cli import main
from masked_shards.report.label_coverage import file_line, merge_pieces
from masked_shards.report.tables import TOP_SOURCES


def _corpus(folder: Path, files: int) -> Path:
    for f in range(files):
        write_jsonl(folder / f"part-{f:04d}.jsonl", [{"prompt": f"Question {f}.{n}?", "completion": f"Answer {n}."} for n in range(2)] + (["{broken"] if f == 0 else []))
    return folder


def _run(output: Path, *inputs: str) -> dict[str, bytes]:
    args = ["run", "--smoke-test", "off", "--quiet", "--output", str(output)]
    for spec in inputs:
        args += ["--input", spec]
    assert main(args) == 0
    return {p.name: p.read_bytes() for p in output.iterdir() if p.is_file()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[int, dict[str, bytes]]:
    base = tmp_path_factory.mktemp("many")
    return {files: _run(base / f"out{files}", str(_corpus(base / f"in{files}", files) / "*.jsonl")) for files in (20, 200)}


def test_a_glob_is_one_source_and_each_file_is_counted_beside_the_report(runs):
    written = runs[200]
    report = json.loads(written["coverage_report.json"])
    assert list(report["by_source"]) == ["*.jsonl"]
    assert report["by_source"]["*.jsonl"]["rows"] == 400 and report["by_source"]["*.jsonl"]["rejected"] == 1
    lines = [json.loads(line) for line in written["coverage_by_file.jsonl"].splitlines()]
    assert [line["file"] for line in lines] == [f"part-{f:04d}.jsonl" for f in range(200)]
    assert {line["source"] for line in lines} == {"*.jsonl"}
    assert [(line["rows"], line["rejected"]) for line in lines] == [(2, int(f == 0)) for f in range(200)]
    assert sum(line["tokens"] for line in lines) == report["tokens_total"] and report["by_file"] == "coverage_by_file.jsonl"
    manifest = json.loads(written["manifest.json"])
    assert "coverage_by_file.jsonl" in {entry["path"] for entry in manifest["report_files"]}


def test_report_and_manifest_do_not_grow_with_the_number_of_files(runs):
    """Old code: every file its own source; 2,000 files made a 548 KB manifest and a 500 KB report."""
    def size(files: int, name: str) -> int:  # the plots, drawn from the data, not the files
        return len(re.sub(rb"<svg .*?</svg>", b"", runs[files][name]))

    for name in ("manifest.json", "coverage_report.json", "coverage_report.md", "coverage_report.html"):
        assert size(200, name) < size(20, name) + 1_000, name  # more digits; a source a file cost ~250 B each
    assert len(runs[200]["coverage_by_file.jsonl"]) > 9 * len(runs[20]["coverage_by_file.jsonl"])


def test_a_named_glob_keeps_its_name(tmp_path):
    written = _run(tmp_path / "out", f"web={_corpus(tmp_path / 'in', 3)}/*.jsonl")
    assert list(json.loads(written["coverage_report.json"])["by_source"]) == ["web"]


def test_the_page_lists_the_top_sources_and_sums_the_rest(tmp_path):
    corpus = _corpus(tmp_path / "in", TOP_SOURCES + 5)
    written = _run(tmp_path / "out", *(str(p) for p in sorted(corpus.glob("*.jsonl"))))
    assert len(json.loads(written["coverage_report.json"])["by_source"]) == TOP_SOURCES + 5
    page = written["coverage_report.md"].decode()
    table = page[page.index("Records per source") :].split("\n\n")[2]
    assert len(re.findall(r"^\| part-", table, re.M)) == TOP_SOURCES
    assert "| 5 more sources | 10 | 10 | 0 |" in table


def test_the_per_file_counts_are_merged_from_sorted_pieces_into_the_same_bytes(runs, tmp_path, monkeypatch):
    """No process holds every file's line: each worker writes sorted pieces of at most
    PIECE_LINES lines and the finalize step merges them line by line. Pieces of 7 lines (29 of
    them for 200 files) give the same bytes as the one piece of the default size."""
    import masked_shards.beam.transforms as transforms

    monkeypatch.setattr(transforms, "PIECE_LINES", 7)
    written = _run(tmp_path / "out", str(_corpus(tmp_path / "in", 200) / "*.jsonl"))
    assert written["coverage_by_file.jsonl"] == runs[200]["coverage_by_file.jsonl"]
    listed = [[e for e in json.loads(run["manifest.json"])["report_files"] if e["path"] == "coverage_by_file.jsonl"] for run in (written, runs[200])]
    assert listed[0] == listed[1] and listed[0][0]["bytes"] == len(written["coverage_by_file.jsonl"])
    assert not (tmp_path / "out" / "_runs").exists() and not (tmp_path / "out" / "_staging").exists()  # the pieces are deleted


def test_merging_pieces_keeps_file_name_order():
    names = ["b.jsonl", "a/z.jsonl", "é.jsonl", "a.jsonl", "Z.jsonl", "a b.jsonl", "日本.jsonl", "a-1.jsonl"]
    lines = {name: file_line(name, "src", (1, 0, 0, 2, 1)) for name in names}
    pieces = [sorted(names[i::3]) for i in range(3)]
    merged = list(merge_pieces([iter([lines[name] for name in piece]) for piece in pieces]))
    assert merged == [lines[name] for name in sorted(names)]
    assert json.loads(merged[0]) == {"file": "Z.jsonl", "source": "src", "rows": 1, "rejected": 0, "dropped": 0, "tokens": 2, "tokens_supervised": 1}

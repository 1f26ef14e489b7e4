"""Input files as Windows tools, broken encoders and nested datasets write them, through one real job.

One run (real command line, FnApiRunner, demo tokenizer) reads every text kind with a UTF-8
byte-order mark, invalid UTF-8, blank lines, a CSV row with more cells than its header, and
`alpaca_seed_tasks`-style records reached with dotted `--field` paths; the tests read back the
shards, rejected.jsonl and the coverage report.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import datasets
import pytest

from expected import SUPERVISED, supervised_runs
from masked_shards.cli import main
from masked_shards.report.label_coverage import Coverage
from masked_shards.records import BlankLines, Rejected

BOM = b"\xef\xbb\xbf"


def _line(record: dict) -> bytes:
    return json.dumps(record).encode("utf-8") + b"\n"


SEED_TASKS = [
    {"id": "seed_task_0", "instruction": "Suggest a breakfast.", "instances": [{"input": "", "output": "Oatmeal with fruit."}], "is_classification": False},
    {"id": "seed_task_1", "instruction": "Sort these numbers.", "instances": [{"input": "3, 1, 2", "output": "1, 2, 3"}], "is_classification": False},
    {"id": "seed_task_2", "instruction": "No instances here.", "instances": [], "is_classification": False},
]

INPUTS: dict[str, bytes] = {
    # line 0 good; line 1 invalid UTF-8 (the issue's record); lines 2-3 blank; line 4 good
    "lines.jsonl": BOM
    + _line({"instruction": "Say yes.", "output": "yes"})
    + b'{"instruction": "bad utf8 \xff\xfe", "output": "y"}\n'
    + b"\n"
    + b"   \r\n"
    + _line({"prompt": "Say no.", "completion": "no"}),
    # a pretty-printed array of three records, as Windows tools save it
    "array.json": BOM + json.dumps([{"prompt": f"Count {n}.", "completion": str(n)} for n in range(3)], indent=2).encode("utf-8"),
    # data rows 0 good, 1 extra cells, (blank row), 2 invalid UTF-8, 3 good
    "table.csv": BOM
    + b"instruction,input,output\r\n"
    + b"Say hi.,,hi\r\n"
    + b"Add.,1 2,3,extra\r\n"
    + b"\r\n"
    + b"Bad \xe9t\xe9,,x\r\n"
    + b"Name a colour.,,blue\r\n",
    # no format can be told from these columns: the old code sorted a None key here and crashed
    "odd.csv": b"a,b\n1,2,3\n",
    "notes.txt": BOM + b"First document.\n\nSecond document.\n",
    "seed_tasks.jsonl": b"".join(_line(record) for record in SEED_TASKS),
    # gzip (named .gz), its line 1 over --max-record-bytes 2000
    "packed.jsonl.gz": gzip.compress(_line({"prompt": "Short.", "completion": "yes"}) + _line({"prompt": "long " * 1000, "completion": "no"}) + _line({"prompt": "After.", "completion": "ok"})),
    "src.txt": BOM + b"Hallo Welt\n",
    "tgt.txt": BOM + b"Hello world\n",
}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("inputs")
    for name, data in INPUTS.items():
        (folder / name).write_bytes(data)
    output = tmp_path_factory.mktemp("run") / "out"
    args = ["run", "--smoke-test", "off", "--output", str(output), "--max-length", "256", "--max-record-bytes", "2000"]
    for name in ("lines.jsonl", "array.json", "table.csv", "odd.csv", "notes.txt", "seed_tasks.jsonl", "packed.jsonl.gz"):
        args += ["--input", str(folder / name)]
    args += ["--input-pair", str(folder / "src.txt"), str(folder / "tgt.txt")]
    args += ["--field", "input=instances.0.input", "--field", "output=instances.0.output"]
    assert main(args) == 0
    return output


@pytest.fixture(scope="module")
def rows(run) -> dict[str, dict]:
    return {row["example_id"]: row for row in datasets.load_dataset("parquet", data_dir=str(run / "data"))["train"]}


@pytest.fixture(scope="module")
def rejected(run) -> dict[str, dict]:
    text = (run / "rejected" / "rejected.jsonl").read_bytes().decode("utf-8")  # strict: the file is valid UTF-8
    return {f"{r['source']}:{r['index']}": r for r in map(json.loads, text.splitlines())}


@pytest.fixture(scope="module")
def report(run) -> dict:
    return json.loads((run / "coverage_report.json").read_text(encoding="utf-8"))


def _answers(tokenizer, row: dict) -> list[str]:
    return [tokenizer.decode(run, clean_up_tokenization_spaces=False) for run in supervised_runs(row["input_ids"], row["labels"])]


def test_invalid_utf8_is_rejected_with_its_byte_offset_and_never_trained(rows, rejected, demo_tokenizer):
    assert "lines.jsonl:1" not in rows and "table.csv:2" not in rows
    line = rejected["lines.jsonl:1"]
    assert line["reason"] == "invalid_utf8"
    assert "byte 26 of the line" in line["detail"] and "0xff" in line["detail"]
    assert line["raw"] == '{"instruction": "bad utf8 \\xff\\xfe", "output": "y"}'
    cell = rejected["table.csv:2"]
    assert cell["reason"] == "invalid_utf8" and "'instruction'" in cell["detail"] and "byte 4 of the cell" in cell["detail"]
    assert all("\ufffd" not in demo_tokenizer.decode(row["input_ids"]) for row in rows.values())


def test_a_byte_order_mark_is_read_transparently_in_every_text_format(rows, demo_tokenizer):
    assert {"lines.jsonl:0", "array.json:0", "array.json:1", "array.json:2", "table.csv:0", "table.csv:3", "notes.txt:0", "src.txt:0"} <= set(rows)
    assert _answers(demo_tokenizer, rows["table.csv:0"]) == [SUPERVISED["chatml"]("hi")]
    assert _answers(demo_tokenizer, rows["notes.txt:0"])[0].startswith("First document.")
    assert _answers(demo_tokenizer, rows["src.txt:0"]) == [SUPERVISED["chatml"]("Hello world")]
    assert "\ufeff" not in demo_tokenizer.decode(rows["src.txt:0"]["input_ids"])


def test_blank_lines_keep_ids_on_line_numbers_and_are_counted(rows, report, run):
    assert {"lines.jsonl:4", "notes.txt:2"} <= set(rows) and "lines.jsonl:2" not in rows and "notes.txt:1" not in rows
    assert report["blank_lines"] == 2 + 1 + 1  # lines.jsonl, table.csv, notes.txt
    assert "blank lines" in (run / "coverage_report.md").read_text(encoding="utf-8")


def test_every_record_is_accounted_for(report):
    # lines 3 + array 3 + table 4 + odd 1 + notes 2 + seed tasks 3 + packed 3 + pair 1; blank lines are not records
    assert report["records_read"] == 20
    assert report["records_read"] == report["rows_written"] + report["rejected"] + report["dropped"]


def test_csv_row_with_extra_cells_is_a_rejected_record(rows, rejected):
    assert "table.csv:1" not in rows
    for key in ("table.csv:1", "odd.csv:0"):
        assert rejected[key]["reason"] == "csv_extra_cells"
    assert "4 cells" in rejected["table.csv:1"]["detail"] and "3 columns" in rejected["table.csv:1"]["detail"]
    assert "line 3" in rejected["table.csv:1"]["detail"]
    assert rejected["odd.csv:0"]["raw"] == ["1", "2", "3"]


def test_dotted_field_paths_read_nested_seed_task_fields(rows, rejected, demo_tokenizer):
    assert _answers(demo_tokenizer, rows["seed_tasks.jsonl:0"]) == [SUPERVISED["chatml"]("Oatmeal with fruit.")]
    assert _answers(demo_tokenizer, rows["seed_tasks.jsonl:1"]) == [SUPERVISED["chatml"]("1, 2, 3")]
    assert "Sort these numbers.\n\n3, 1, 2" in demo_tokenizer.decode(rows["seed_tasks.jsonl:1"]["input_ids"])
    assert rejected["seed_tasks.jsonl:2"]["reason"] == "missing_field"
    # records with top-level fields are read as they are when the path is absent
    assert _answers(demo_tokenizer, rows["lines.jsonl:0"]) == [SUPERVISED["chatml"]("yes")]


def test_blank_lines_are_counted_apart_from_records_and_merge():
    left, right = Coverage(), Coverage()
    left.add(BlankLines("a.jsonl", 2))
    right.add(BlankLines("b.txt", 3))
    right.add(Rejected("b.txt", 0, "invalid_utf8", "x"))
    report = left.merge(right).report(records_read=1, rows_in_shards=0)
    assert report["blank_lines"] == 5 and report["rejected"] == 1


def test_a_compressed_file_is_read_and_a_record_over_max_record_bytes_is_rejected_with_its_size(rows, rejected, demo_tokenizer):
    assert [_answers(demo_tokenizer, rows[f"packed.jsonl.gz:{n}"]) for n in (0, 2)] == [[SUPERVISED["chatml"]("yes")], [SUPERVISED["chatml"]("ok")]]
    too_large = rejected["packed.jsonl.gz:1"]
    assert too_large["reason"] == "record_too_large" and "is 5034 bytes, over --max-record-bytes 2000" in too_large["detail"]

"""Every input kind is read into indexed records; broken files become rejected records."""

from __future__ import annotations

import json

import datasets
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.records import Rejected
from pipeline.sources import InputFile, RawRecord, file_kind, parse_hf_spec, read_records, split_name


def _read(path, kind: str, **extra) -> list[RawRecord | Rejected]:
    return list(read_records(InputFile("src", path.name, str(path), kind, **extra), lambda p: open(p, "rb")))


def test_split_name_and_kinds():
    assert split_name("alpaca=data/*.jsonl") == ("alpaca", "data/*.jsonl")
    assert split_name("data/a=b.jsonl") == (None, "data/a=b.jsonl")
    assert split_name("hf:org/name") == (None, "hf:org/name")
    assert [file_kind(p) for p in ("a.JSONL", "b.json", "c.parquet", "d.csv", "e.txt", "f.xml")] == ["jsonl", "json", "parquet", "csv", "text_lines", None]
    assert parse_hf_spec("hf:org/name") == ("org/name", None, "train")
    assert parse_hf_spec("hf:org/name:cfg:test") == ("org/name", "cfg", "test")
    assert parse_hf_spec("hf:org/name::validation") == ("org/name", None, "validation")


def test_jsonl_lines_keep_their_index_and_bad_lines_are_rejected(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\nnot json\n\n{"prompt": "c", "completion": "d"}\n')
    items = _read(path, "jsonl")
    assert [type(i).__name__ for i in items] == ["RawRecord", "Rejected", "RawRecord"]
    assert [i.index for i in items] == [0, 1, 2]
    assert items[1].reason == "invalid_json" and items[1].raw == "not json"
    assert items[0].example_id == "f.jsonl:0" and items[0].source == "src"


def test_json_array_and_json_lines_in_a_json_file(tmp_path):
    array, lines = tmp_path / "a.json", tmp_path / "b.json"
    array.write_text(json.dumps([{"prompt": "a"}, {"prompt": "c"}]))
    lines.write_text('{"prompt": "a"}\n{"prompt": "c"}\n')
    assert [i.value["prompt"] for i in _read(array, "json")] == ["a", "c"]
    assert [i.value["prompt"] for i in _read(lines, "json")] == ["a", "c"]


def test_broken_json_array_is_one_rejected_record(tmp_path):
    path = tmp_path / "a.json"
    path.write_text('[{"prompt": "a", ')
    (item,) = _read(path, "json")
    assert isinstance(item, Rejected) and item.index is None and item.reason == "invalid_json"


def test_parquet_rows_with_nested_messages(tmp_path):
    rows = [{"messages": [{"role": "user", "content": f"q{n}"}, {"role": "assistant", "content": f"a{n}"}]} for n in range(5)]
    path = tmp_path / "chat.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    assert [(i.index, i.value) for i in _read(path, "parquet")] == list(enumerate(rows))


def test_csv_with_plain_and_json_columns(tmp_path):
    path = tmp_path / "qa.csv"
    path.write_text('prompt,completion\n"Hi, there",Hello\n"multi\nline","x"\n', encoding="utf-8")
    assert [i.value for i in _read(path, "csv")] == [{"prompt": "Hi, there", "completion": "Hello"}, {"prompt": "multi\nline", "completion": "x"}]
    chat = tmp_path / "chat.csv"
    chat.write_text('messages\n"[{""role"": ""user"", ""content"": ""q""}]"\n"[broken"\n', encoding="utf-8")
    good, bad = _read(chat, "csv")
    assert good.value == {"messages": [{"role": "user", "content": "q"}]}
    assert isinstance(bad, Rejected) and bad.index == 1 and bad.reason == "invalid_json"


def test_line_pairs_split_at_newlines_only(tmp_path):
    """U+2028 and form feeds inside a sentence must not shift one file against the other."""
    (tmp_path / "src.txt").write_text("Hallo\u2028du\r\nWelt\x0c!\n", encoding="utf-8")
    (tmp_path / "tgt.txt").write_text("Hello\u2028you\nWorld!\n", encoding="utf-8")
    items = _read(tmp_path / "src.txt", "line_pair", target_path=str(tmp_path / "tgt.txt"))
    assert [i.value for i in items] == [{"src": "Hallo\u2028du", "tgt": "Hello\u2028you"}, {"src": "Welt\x0c!", "tgt": "World!"}]


def test_saved_dataset_folder_and_local_hf_dataset(tmp_path):
    rows = [{"prompt": f"p{n}", "completion": f"c{n}"} for n in range(4)]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    assert [i.value for i in _read(tmp_path / "saved", "hf_disk")] == rows
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[:2]), "test": datasets.Dataset.from_list(rows[2:])}).save_to_disk(str(tmp_path / "dict"))
    assert [i.value for i in _read(tmp_path / "dict", "hf_disk", split="test")] == rows[2:]
    folder = tmp_path / "hub_like"
    folder.mkdir()
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    unit = InputFile("src", "hub_like", f"hf:{folder}", "hf_hub")
    assert [i.value for i in read_records(unit, open)] == rows

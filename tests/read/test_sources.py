"""Every input kind is read into indexed records; broken files become rejected records."""

from __future__ import annotations

import json
import os
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from masked_shards.records import BlankLines, Rejected
from masked_shards.read.sources import (
    InputFile,
    RawRecord,
    count_lines,
    count_range,
    file_kind,
    parse_hf_spec,
    read_range,
    read_records,
    split_input,
    split_name,
)

BOM = b"\xef\xbb\xbf"  # the UTF-8 byte-order mark Excel and Windows tools write


def _read(path, kind: str, **extra) -> list[RawRecord | Rejected | BlankLines]:
    return list(read_records(InputFile("src", path.name, str(path), kind, **extra), lambda p: open(p, "rb")))


def test_split_name_and_kinds():
    assert split_name("alpaca=data/*.jsonl") == ("alpaca", "data/*.jsonl")
    assert split_name("data/a=b.jsonl") == (None, "data/a=b.jsonl")
    assert split_name("hf:org/name") == (None, "hf:org/name")
    assert [file_kind(p) for p in ("a.JSONL", "b.json", "c.parquet", "d.csv", "e.txt", "f.xml")] == ["jsonl", "json", "parquet", "csv", "text_lines", None]
    assert parse_hf_spec("hf:org/name") == ("org/name", None, "train")
    assert parse_hf_spec("hf:org/name:cfg:test") == ("org/name", "cfg", "test")
    assert parse_hf_spec("hf:org/name::validation") == ("org/name", None, "validation")


def test_jsonl_lines_keep_their_line_number_and_bad_lines_are_rejected(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\nnot json\n\n \t\n{"prompt": "c", "completion": "d"}\n')
    items = _read(path, "jsonl")
    assert [type(i).__name__ for i in items] == ["RawRecord", "Rejected", "RawRecord", "BlankLines"]
    assert [i.index for i in items[:3]] == [0, 1, 4]
    assert items[1].reason == "invalid_json" and items[1].raw == "not json"
    assert items[0].example_id == "f.jsonl:0" and items[0].source == "src"
    assert items[3] == BlankLines("f.jsonl", 2)


def test_json_nested_deeper_than_the_parser_reads_is_rejected_alone(tmp_path):
    """json.loads raises RecursionError, not JSONDecodeError, on such a line; reading goes on."""
    path = tmp_path / "f.jsonl"
    path.write_text("[" * 100_000 + "]" * 100_000 + '\n{"prompt": "a"}\n')
    deep, good = _read(path, "jsonl")
    assert isinstance(deep, Rejected) and (deep.index, deep.reason) == (0, "invalid_json") and "nested deeper" in deep.detail
    assert (good.index, good.value) == (1, {"prompt": "a"})


def test_text_lines_are_numbered_by_line_and_blank_lines_counted(tmp_path):
    path = tmp_path / "doc.txt"
    path.write_bytes(b"one\r\n\r\ntwo\n\n\nthree")
    items = _read(path, "text_lines")
    assert [(i.index, i.value) for i in items[:-1]] == [(0, {"text": "one"}), (2, {"text": "two"}), (5, {"text": "three"})]
    assert items[-1] == BlankLines("doc.txt", 3)


def test_invalid_utf8_lines_are_rejected_with_byte_offsets_and_shown_safely(tmp_path):
    """Strict decoding per line: the rest of the file is still read, nothing becomes U+FFFD."""
    jsonl, text = tmp_path / "f.jsonl", tmp_path / "f.txt"
    jsonl.write_bytes(b'{"prompt": "a", "completion": "b"}\n{"prompt": "\xff\xfe", "completion": "c"}\n{"prompt": "d", "completion": "e"}\n')
    good, bad, last = _read(jsonl, "jsonl")
    assert (good.index, last.index) == (0, 2) and isinstance(bad, Rejected)
    assert (bad.index, bad.reason) == (1, "invalid_utf8")
    assert bad.detail == "line is not valid UTF-8 (byte 0xff at byte 12 of the line, byte 47 of the file)"
    assert bad.raw == '{"prompt": "\\xff\\xfe", "completion": "c"}'
    text.write_bytes(b"fine\ncaf\xc3\n")  # a truncated two-byte sequence
    fine, cut = _read(text, "text_lines")
    assert fine.value == {"text": "fine"} and (cut.index, cut.reason) == (1, "invalid_utf8") and cut.raw == "caf\\xc3"
    assert "byte 3 of the line, byte 8 of the file" in cut.detail


def test_invalid_utf8_in_a_json_array_rejects_the_file_with_the_offset(tmp_path):
    path = tmp_path / "a.json"
    path.write_bytes(b'[{"prompt": "a"}, {"prompt": "\x80"}]')
    (item,) = _read(path, "json")
    assert isinstance(item, Rejected) and (item.index, item.reason) == (None, "invalid_utf8")
    assert item.detail == "file is not valid UTF-8 (byte 0x80 at byte 30 of the file)"


def test_invalid_utf8_in_a_line_pair_rejects_that_pair(tmp_path):
    (tmp_path / "src.txt").write_bytes(b"eins\nzw\xf6lf\n")
    (tmp_path / "tgt.txt").write_bytes(b"one\ntwelve\n")
    good, bad = _read(tmp_path / "src.txt", "line_pair", target_path=str(tmp_path / "tgt.txt"))
    assert good.value == {"src": "eins", "tgt": "one"}
    assert isinstance(bad, Rejected) and (bad.index, bad.reason) == (1, "invalid_utf8")
    assert bad.detail.startswith("source line is not valid UTF-8 (byte 0xf6 at byte 2 of the line")
    assert bad.raw == {"src": "zw\\xf6lf", "tgt": "twelve"}



@pytest.mark.parametrize(
    "name,kind,data",
    [
        ("f.jsonl", "jsonl", b'{"prompt": "a"}\n{"prompt": "b"}\n'),
        ("f.json", "json", json.dumps([{"prompt": "a"}, {"prompt": "b"}], indent=2).encode()),
        ("f.json", "json", b'{"prompt": "a"}\n{"prompt": "b"}\n'),
        ("f.csv", "csv", b"prompt\r\na\r\nb\r\n"),
    ],
)
def test_a_byte_order_mark_is_read_transparently(tmp_path, name, kind, data):
    path = tmp_path / name
    path.write_bytes(BOM + data)
    assert [(i.index, i.value) for i in _read(path, kind)] == [(0, {"prompt": "a"}), (1, {"prompt": "b"})]


def test_a_byte_order_mark_is_dropped_from_text_and_line_pairs(tmp_path):
    (tmp_path / "src.txt").write_bytes(BOM + b"Hallo\nWelt\n")
    (tmp_path / "tgt.txt").write_bytes(BOM + b"Hello\nworld\n")
    assert [i.value for i in _read(tmp_path / "src.txt", "text_lines")] == [{"text": "Hallo"}, {"text": "Welt"}]
    pairs = _read(tmp_path / "src.txt", "line_pair", target_path=str(tmp_path / "tgt.txt"))
    assert [i.value for i in pairs] == [{"src": "Hallo", "tgt": "Hello"}, {"src": "Welt", "tgt": "world"}]
    assert count_lines(str(tmp_path / "src.txt"), lambda p: open(p, "rb")) == 2


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


def test_csv_rows_with_extra_cells_or_invalid_utf8_are_rejected_alone(tmp_path):
    """Data rows keep their 0-based index; a blank row is counted, not a record, and no index."""
    path = tmp_path / "t.csv"
    path.write_bytes(b"prompt,completion\na,b\nc,d,e\n\n\"q\xff\nx\",y\nshort\nf,g\n")
    items = _read(path, "csv")
    assert [(i.index, i.value) for i in items if isinstance(i, RawRecord)] == [(0, {"prompt": "a", "completion": "b"}), (3, {"prompt": "short", "completion": None}), (4, {"prompt": "f", "completion": "g"})]
    extra, bad = (i for i in items if isinstance(i, Rejected))
    assert (extra.index, extra.reason, extra.raw) == (1, "csv_extra_cells", ["c", "d", "e"])
    assert extra.detail == "row has 3 cells but the header names 2 columns (data row 1, ending at line 3 of the file)"
    assert (bad.index, bad.reason, bad.raw) == (2, "invalid_utf8", ["q\\xff\nx", "y"])
    assert bad.detail == "column 'prompt' is not valid UTF-8 (byte 0xff at byte 1 of the cell; data row 2, ending at line 6 of the file)"
    assert items[-1] == BlankLines("t.csv", 1)


def test_csv_header_with_invalid_utf8_rejects_the_file(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(b"pr\xffompt,completion\na,b\n")
    (item,) = _read(path, "csv")
    assert isinstance(item, Rejected) and (item.index, item.reason) == (None, "invalid_utf8")
    assert item.detail == "header cell 0 is not valid UTF-8 (byte 0xff at byte 2 of the cell)"
    assert item.raw == ["pr\\xffompt", "completion"]


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


def _opener(path: str):
    return open(path, "rb")


def _read_in_ranges(unit: InputFile, target_bytes: int, chunk_size: int) -> list[RawRecord | Rejected | BlankLines]:
    """What the job's workers read together: each range numbered from the lines counted before it."""
    items: list[RawRecord | Rejected | BlankLines] = []
    first_line = 0
    for piece in split_input(unit, _opener, os.path.getsize, target_bytes):
        items += read_range(piece, _opener, first_line, chunk_size)
        first_line += count_range(piece, _opener, chunk_size)
    return items


def test_a_file_smaller_than_one_range_is_still_cut_for_many_workers(tmp_path: Path):
    """A 6.5 MiB JSONL file is read in four ranges, not one 64 MiB range: with one range per file,
    16 worker processes ran a 25 MB file no faster than one. Read together, they are the file."""
    line = json.dumps({"prompt": "p" * 1000, "completion": "c"}) + "\n"
    path = tmp_path / "mid.jsonl"
    path.write_text(line * (int(6.5 * (1 << 20)) // len(line)))
    unit = InputFile("src", "mid.jsonl", str(path), "jsonl")
    ranges = split_input(unit, _opener, os.path.getsize)
    assert len(ranges) == 4 and ranges[0].end - ranges[0].start == 2 << 20
    assert _records_and_blanks(_read_in_ranges(unit, 64 << 20, 1 << 16)) == _records_and_blanks(_read(path, "jsonl"))


def _records_and_blanks(items: list) -> tuple[list, int]:
    return [i for i in items if not isinstance(i, BlankLines)], sum(i.count for i in items if isinstance(i, BlankLines))


def _file_lines(data: bytes) -> list[tuple[int, bytes]]:
    """(file offset, bytes) of each line of a whole file in memory, as the format defines them."""
    offset = len(BOM) if data.startswith(BOM) else 0
    parts = data[offset:].split(b"\n")
    if parts[-1] == b"":
        parts.pop()
    lines = []
    for part in parts:
        lines.append((offset, part.removesuffix(b"\r")))
        offset += len(part) + 1
    return lines


# Lines as files hold them: blank, JSON, not JSON, not UTF-8 (a cut multi-byte character too),
# longer than the chunks they are read in, and arbitrary bytes.
LINE = st.sampled_from([b"", b" \t", b"\r", b'{"prompt": "a"}', '{"prompt": "\u00e9t\u00e9"}'.encode(), b"not json", b"\xff\xfe", b"caf\xc3", b"[1, 2]", b"x" * 40]) | st.binary(max_size=12).map(
    lambda data: data.replace(b"\n", b"")
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lines=st.lists(st.tuples(LINE, st.sampled_from([b"\n", b"\r\n"])), max_size=12),
    bom=st.booleans(),
    last_newline=st.booleans(),
    kind=st.sampled_from(["jsonl", "json", "text_lines"]),
    target_bytes=st.integers(1, 48),
    chunk_size=st.integers(1, 9),
)
def test_ranges_read_together_are_the_whole_file(tmp_path: Path, lines, bom, last_newline, kind, target_bytes, chunk_size):
    """Any cut of any line file into ranges, read in any chunk size, gives the whole file's items:
    same records and rejections with the same ids and byte offsets, and the same blank lines."""
    data = (BOM if bom else b"") + b"".join(line + end for line, end in lines)
    if lines and not last_newline:
        data = data.removesuffix(lines[-1][1])
    path = tmp_path / {"jsonl": "f.jsonl", "json": "f.json", "text_lines": "f.txt"}[kind]
    path.write_bytes(data)
    unit = InputFile("src", path.name, str(path), kind)
    whole = list(read_records(unit, _opener, chunk_size=1 << 16))  # the whole file in one chunk
    assert _records_and_blanks(_read_in_ranges(unit, target_bytes, chunk_size)) == _records_and_blanks(whole)
    expected = _file_lines(data)
    assert count_lines(str(path), _opener, chunk_size) == len(expected)
    if split_input(unit, _opener, os.path.getsize, target_bytes)[0].kind == "lines":  # not a .json array
        records, blank = _records_and_blanks(whole)
        by_line = {item.index: item for item in records}
        assert len(by_line) == len(records) and len(records) + blank == len(expected)
        for number, (offset, line) in enumerate(expected):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as err:
                assert by_line[number].reason == "invalid_utf8" and f"byte {offset + err.start} of the file)" in by_line[number].detail
    pair = InputFile("src", path.name, str(path), "line_pair", target_path=str(path))
    assert list(read_records(pair, _opener, chunk_size)) == list(read_records(pair, _opener, 1 << 16))


def test_parquet_ranges_are_runs_of_row_groups_read_as_the_whole_file(tmp_path):
    rows = [{"prompt": f"p{n}", "completion": "c" * (n % 7)} for n in range(50)]
    path = tmp_path / "t.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=4)  # 13 row groups
    group = pq.ParquetFile(path).metadata.row_group(0)
    group_bytes = sum(group.column(c).total_compressed_size for c in range(group.num_columns))
    unit = InputFile("src", path.name, str(path), "parquet")
    whole = list(read_records(unit, _opener))
    assert [(i.index, i.value) for i in whole] == list(enumerate(rows))
    for target_bytes, ranges in ((1, {13}), (2 * group_bytes + 1, set(range(2, 13))), (1 << 30, {1})):
        pieces = split_input(unit, _opener, os.path.getsize, target_bytes)
        assert len(pieces) in ranges and {p.kind for p in pieces} == {"row_groups"}
        assert [p.start for p in pieces[1:]] == [p.end for p in pieces[:-1]] and pieces[-1].end is None
        assert _read_in_ranges(unit, target_bytes, 1 << 16) == whole


def test_json_arrays_csv_line_pairs_and_datasets_are_one_range(tmp_path):
    """They cannot be cut (split_input says why); each is one range that reads as the whole unit."""
    (tmp_path / "a.json").write_bytes(BOM + b"\n  \r\n" + json.dumps([{"prompt": str(n)} for n in range(40)]).encode())
    (tmp_path / "t.csv").write_bytes(b"prompt\n" + b"".join(b'"line\n%d"\n' % n for n in range(40)))
    (tmp_path / "s.txt").write_bytes(b"".join(b"%d\n" % n for n in range(40)))
    units = [
        InputFile("src", "a.json", str(tmp_path / "a.json"), "json"),
        InputFile("src", "t.csv", str(tmp_path / "t.csv"), "csv"),
        InputFile("src", "s.txt", str(tmp_path / "s.txt"), "line_pair", target_path=str(tmp_path / "s.txt")),
        InputFile("src", "saved", str(tmp_path / "saved"), "hf_disk"),
    ]
    for unit in units:
        (piece,) = split_input(unit, _opener, os.path.getsize, target_bytes=16)
        assert (piece.start, piece.end, piece.kind) == (0, None, "whole")
    for unit in units[:3]:
        whole = list(read_records(unit, _opener, chunk_size=3))
        assert len(whole) == 40 and _read_in_ranges(unit, 16, 3) == whole



JSON_EDGES = [
    '{"big": 123456789012345678901234567890, "small": -9223372036854775808}',  # beyond 64 bits: json's int
    '{"edge": 18446744073709551616, "under": 18446744073709551615, "neg": -9223372036854775809, "short": 999999999999999999}',  # 2^64, 2^64 - 1, below -2^63, 18 digits
    '{"text": "caf\u00e9 \u00e9t\u00e9 — 你好", "n": 12345678901234567890}',  # other than ASCII, and 20 digits
    '{"x": NaN, "y": Infinity, "z": 1e400}',  # json's extensions and an overflow
    '{"lone": "\\ud800"}',  # a lone surrogate escape
    '{"a": 1, "a": 2, "f": [0.1, -0.0, 5e-324, 1.7976931348623157e308], "s": "\\u00df\\n"}',
]


@pytest.mark.parametrize("line", JSON_EDGES)
def test_jsonl_values_are_exactly_what_json_reads(tmp_path, line):
    """The fast decoder is used only where its answer is json's own, values and types alike."""
    path = tmp_path / "edges.jsonl"
    path.write_text(line + "\n", encoding="utf-8")
    (record,) = _read(path, "jsonl")
    expected = json.loads(line)
    assert repr(record.value) == repr(expected)
    assert [type(v) for v in record.value.values()] == [type(v) for v in expected.values()]


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10**25), max_value=10**25) | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
# Bytes that UTF-8 or JSON refuse, or that a reader could read differently from json: an encoded
# surrogate, an overlong NUL, a stray continuation byte, a byte-order mark, a form feed (blank to
# str.strip, not to JSON), U+2028, a lone surrogate escape, json's NaN, a run of 19 digits.
_ODD_BYTES = [b"\xed\xa0\x80", b"\xc0\x80", b"\x85", BOM, b"\x0c", "\u2028".encode(), b'"\\ud800"', b"NaN", b"1234567890123456789", b" "]


@st.composite
def _json_lines(draw) -> bytes:
    line = json.dumps(draw(_JSON_VALUES), ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(line)))
        line = line[:at] + draw(st.sampled_from(_ODD_BYTES)) + line[at:]
    return line


def _as_json_reads(data: bytes, strip_bom: bool = False) -> tuple[str, object]:
    """What json makes of bytes read as strict UTF-8 text: ("value", its repr), ("blank", None),
    or ("rejected", the reason)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return "rejected", "invalid_utf8"
    text = text.removeprefix("\ufeff") if strip_bom else text
    if not strip_bom and not text.strip():
        return "blank", None
    try:
        return "value", json.loads(text)
    except (ValueError, RecursionError):
        return "rejected", "invalid_json"


def _outcome(item: RawRecord | Rejected) -> tuple[str, object]:
    return ("rejected", item.reason) if isinstance(item, Rejected) else ("value", repr(item.value))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(_json_lines(), min_size=1, max_size=4))
@example(lines=[b"{}", BOM + b"null", b'{"n": 12345678901234567890}', b"\xed\xa0\x80"])  # a BOM past the first line, 20 digits, a surrogate
def test_lines_and_arrays_read_from_their_bytes_are_what_json_reads_from_their_text(tmp_path, lines):
    """orjson reads a line's or an array's bytes as they are read; each value is json's own, from
    the text strict UTF-8 decoding gives, and every line json or UTF-8 refuses is rejected for it."""
    (tmp_path / "lines.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    read = [(r.index, _outcome(r)) for r in _read(tmp_path / "lines.jsonl", "jsonl") if not isinstance(r, BlankLines)]
    expected = [(n, _as_json_reads(line.removeprefix(BOM) if n == 0 else line)) for n, line in enumerate(lines)]  # a first BOM is the file's
    assert read == [(n, (kind, repr(v) if kind == "value" else v)) for n, (kind, v) in expected if kind != "blank"]
    array = BOM * (len(lines) % 2) + b"[" + b",".join(lines) + b"]"
    (tmp_path / "array.json").write_bytes(array)
    kind, whole = _as_json_reads(array, strip_bom=True)
    read = [_outcome(r) for r in _read(tmp_path / "array.json", "json")]
    if kind == "value" and isinstance(whole, list):
        assert read == [("value", repr(v)) for v in whole]
    else:
        assert [reason for _, reason in read] == [whole]

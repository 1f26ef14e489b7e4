"""Where records come from: input specs, file kinds, and reading each kind into `RawRecord`s.

An input is one of

    PATH_OR_GLOB            JSONL, JSON (array or lines), Parquet or CSV; local or any Beam
                            filesystem (gs://, s3://, ... where Beam's extra is installed)
    FOLDER                  a Hugging Face `datasets` folder written by `save_to_disk`
    hf:NAME[:CONFIG][:SPLIT]  `datasets.load_dataset` (a local folder or script offline; the hub online)

optionally prefixed `name=` to name the source (the `source` column, `--mix` weights and the report
use it). Reading takes an `opener` (Beam's `FileSystems.open` in the job) so this module never
imports Beam.

Ids. Every record keeps `<file name>:<0-based index>` as its id, the index being where an editor
finds it. In line-based files (JSONL, JSON Lines in a `.json`, `.txt`) it is the line number, so
`f.jsonl:41` is line 42: a blank (empty or whitespace-only) line advances it but is no record, and
each file's blank lines are counted (`BlankLines`; the report's `blank_lines`), neither read nor
rejected, so ids skipping a number is never unexplained. In `--input-pair` files every line is a
pair (an empty side is the translation check's to reject). In a JSON array the index is the
element's position, in CSV the 0-based data row (the header and blank rows are not data rows; a
quoted cell spanning lines is one row), in Parquet and `datasets` the row.

Text. Every text kind is UTF-8, read with one leading byte-order mark dropped (Excel and Windows
tools write one). Decoding is strict: bytes that are not UTF-8 are never turned into U+FFFD and
trained on; they make the line, CSV row, or JSON array file a rejected `invalid_utf8` record whose
detail gives the first bad byte's offset and whose `raw` shows the bytes as `\\xNN` escapes, so
rejected.jsonl stays valid UTF-8.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO

from pipeline.records import BlankLines, Rejected

HF_PREFIX = "hf:"
BOM = b"\xef\xbb\xbf"
FILE_KINDS = {".jsonl": "jsonl", ".json": "json", ".parquet": "parquet", ".csv": "csv", ".txt": "text_lines"}
# Columns that hold a list of messages; in CSV they can only arrive as JSON text.
_NESTED_COLUMNS = ("messages", "conversations", "translation")

Opener = Callable[[str], IO[bytes]]


@dataclass(frozen=True)
class RawRecord:
    """A parsed record: `name:index` is its id and location, `source` the input it belongs to."""

    name: str
    index: int
    value: object
    source: str = ""

    @property
    def example_id(self) -> str:
        return f"{self.name}:{self.index}"


# What reading an input yields: its records, the ones rejected while reading, its blank-line count.
Item = RawRecord | Rejected | BlankLines


@dataclass(frozen=True)
class InputFile:
    """One readable unit of an input: a file, a `datasets` split, or a pair of line files."""

    source: str
    name: str
    path: str
    kind: str
    split: str | None = None
    target_path: str | None = None


def split_name(spec: str) -> tuple[str | None, str]:
    """`name=PATH` -> (name, PATH); a bare PATH (or hf: spec) has no name."""
    head, sep, tail = spec.partition("=")
    if sep and head and "/" not in head and ":" not in head and "*" not in head:
        return head, tail
    return None, spec


def file_kind(path: str) -> str | None:
    """The kind of a file from its name, or None when it is not a supported input."""
    for suffix, kind in FILE_KINDS.items():
        if path.lower().endswith(suffix):
            return kind
    return None


def parse_hf_spec(spec: str) -> tuple[str, str | None, str]:
    """`hf:NAME[:CONFIG][:SPLIT]` -> (NAME, CONFIG or None, SPLIT, default train)."""
    parts = spec[len(HF_PREFIX) :].split(":")
    name = parts[0]
    config = parts[1] or None if len(parts) > 1 else None
    split = parts[2] if len(parts) > 2 and parts[2] else "train"
    return name, config, split


@dataclass(frozen=True)
class _Line:
    """One line's bytes (without its "\\n" or a trailing "\\r"), its 0-based number, and the offset
    of its first byte in the file."""

    number: int
    offset: int
    data: bytes


def _lines(data: bytes) -> list[_Line]:
    """Lines split at "\\n" only, after one leading BOM. `str.splitlines` also splits at U+2028,
    U+0085 and form feeds, which are legal inside JSON strings and sentences, and would shift every
    later line of a line-aligned pair of files. Splitting the bytes before decoding lets a line that
    is not UTF-8 be rejected alone: byte 0x0A never occurs inside a multi-byte UTF-8 character."""
    offset = len(BOM) if data.startswith(BOM) else 0
    parts = data[offset:].split(b"\n")
    if parts[-1] == b"":
        parts.pop()
    lines: list[_Line] = []
    for number, part in enumerate(parts):
        lines.append(_Line(number, offset, part.removesuffix(b"\r")))
        offset += len(part) + 1
    return lines


class _NotUtf8(ValueError):
    """Bytes that are not UTF-8; the message says where the first bad byte is."""


def _decode(data: bytes, within: str, file_offset: int | None = None) -> str:
    """`data` decoded strictly as UTF-8, or `_NotUtf8` giving the first bad byte and its offset
    `within` the line or cell (and in the file, when `file_offset` says where `data` starts)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        where = f"byte 0x{data[err.start]:02x} at byte {err.start} of the {within}"
        if file_offset is not None:
            where += f", byte {file_offset + err.start} of the file"
        raise _NotUtf8(where) from None


def _shown(data: bytes) -> str:
    """Bytes as text for rejected.jsonl: a byte that is not UTF-8 is written as `\\xNN`, so the
    file stays valid UTF-8 and the bad byte stays visible (U+FFFD would hide which it was)."""
    return data.decode("utf-8", errors="backslashreplace")


def read_records(unit: InputFile, opener: Opener) -> Iterator[Item]:
    """Every record of one input unit, in order, each with its 0-based index (see the module
    docstring), then the unit's `BlankLines` when it has any."""
    if unit.kind in ("hf_disk", "hf_hub"):
        yield from _read_dataset(unit)
    elif unit.kind == "line_pair":
        yield from _read_line_pair(unit, opener)
    else:
        with opener(unit.path) as stream:
            yield from _READERS[unit.kind](unit, stream)


def _json_value(text: str) -> object:
    """`json.loads`, except that nesting too deep for Python's parser (its RecursionError) is
    reported as unreadable JSON like any other, so such a line or cell is rejected alone instead
    of ending the reading of its file."""
    try:
        return json.loads(text)
    except RecursionError:
        raise json.JSONDecodeError("nested deeper than the parser can read", text, 0) from None


def _line_records(unit: InputFile, data: bytes, parse: Callable[[str], object]) -> Iterator[Item]:
    """One record per non-blank line, indexed by line number; `parse` turns the line's text into the
    record's value (a JSONDecodeError from it rejects the line as `invalid_json`)."""
    blank = 0
    for line in _lines(data):
        try:
            text = _decode(line.data, "line", line.offset)
        except _NotUtf8 as err:
            yield Rejected(unit.name, line.number, "invalid_utf8", f"line is not valid UTF-8 ({err})", _shown(line.data))
            continue
        if not text.strip():
            blank += 1
            continue
        try:
            value = parse(text)
        except json.JSONDecodeError as err:
            yield Rejected(unit.name, line.number, "invalid_json", f"line is not valid JSON ({err.msg})", text)
            continue
        yield RawRecord(unit.name, line.number, value, unit.source)
    if blank:
        yield BlankLines(unit.name, blank)


# A JSON array, after an optional BOM and JSON's whitespace (matched in place: files can be large).
_ARRAY_START = re.compile(rb"(?:\xef\xbb\xbf)?[ \t\r\n]*\[")


def _read_json(unit: InputFile, stream: IO[bytes]) -> Iterator[Item]:
    """A `.json` holding a JSON array yields its elements; otherwise it is read as JSON Lines.
    A JSONL line that does not parse is rejected alone; a broken array (not UTF-8, or not JSON) is
    one rejected record (index None), since no element can be recovered from it."""
    data = stream.read()
    if unit.kind == "json" and _ARRAY_START.match(data):
        try:
            values = _json_value(_decode(data, "file").removeprefix("\ufeff"))
        except _NotUtf8 as err:
            yield Rejected(unit.name, None, "invalid_utf8", f"file is not valid UTF-8 ({err})", None)
            return
        except json.JSONDecodeError as err:
            yield Rejected(unit.name, None, "invalid_json", f"file is not a valid JSON array ({err.msg} at line {err.lineno})", None)
            return
        for index, value in enumerate(values):
            yield RawRecord(unit.name, index, value, unit.source)
        return
    yield from _line_records(unit, data, _json_value)


def _read_parquet(unit: InputFile, stream: IO[bytes]) -> Iterator[RawRecord]:
    import pyarrow.parquet as pq

    index = 0
    for batch in pq.ParquetFile(io.BytesIO(stream.read())).iter_batches(batch_size=4096):
        for value in batch.to_pylist():
            yield RawRecord(unit.name, index, value, unit.source)
            index += 1


# How `surrogateescape` decoding keeps a byte that is not UTF-8: as U+DC80..U+DCFF. Strict UTF-8
# decoding never yields a surrogate, so one of these in a cell always stands for such a byte.
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")


def _read_csv(unit: InputFile, stream: IO[bytes]) -> Iterator[Item]:
    """CSV cells are strings; a messages/conversations/translation cell must hold JSON text.

    The file is decoded with `surrogateescape`, so a byte that is not UTF-8 is kept (as a lone
    surrogate) instead of stopping the reader. Such bytes are all >= 0x80, never a comma, quote or
    newline, so the rows split exactly as in a clean file and only the row holding one is rejected
    (`invalid_utf8`, with the byte's offset in its cell; the csv module gives no byte offsets in the
    file, so the row's last line number is given instead). A header that is not UTF-8 rejects the
    file, as no row's columns could be named. A row with more cells than the header is rejected
    (`csv_extra_cells`; csv.DictReader would file the extra cells under a None key); a row with
    fewer has None for the missing columns.
    """
    text = stream.read().removeprefix(BOM).decode("utf-8", errors="surrogateescape")
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None:
        return
    escaped = _escaped_cell(header)
    if escaped:
        yield Rejected(unit.name, None, "invalid_utf8", f"header cell {escaped[0]} is not valid UTF-8 ({escaped[1]})", _shown_cells(header))
        return
    index = blank = 0
    for cells in reader:
        if not cells:
            blank += 1
            continue
        yield _csv_record(unit, index, header, cells, f"data row {index}, ending at line {reader.line_num} of the file")
        index += 1
    if blank:
        yield BlankLines(unit.name, blank)


def _csv_record(unit: InputFile, index: int, header: list[str], cells: list[str], where: str) -> RawRecord | Rejected:
    escaped = _escaped_cell(cells)
    if escaped:
        column, problem = escaped
        name = f"column {header[column]!r}" if column < len(header) else f"cell {column}"
        return Rejected(unit.name, index, "invalid_utf8", f"{name} is not valid UTF-8 ({problem}; {where})", _shown_cells(cells))
    if len(cells) > len(header):
        return Rejected(unit.name, index, "csv_extra_cells", f"row has {len(cells)} cells but the header names {len(header)} columns ({where})", cells)
    row: dict[str, object] = {column: cells[n] if n < len(cells) else None for n, column in enumerate(header)}
    value = dict(row)
    try:
        for column in _NESTED_COLUMNS:
            if isinstance(value.get(column), str):
                value[column] = _json_value(value[column])
    except json.JSONDecodeError as err:
        return Rejected(unit.name, index, "invalid_json", f"column {column!r} is not valid JSON ({err.msg})", row)
    return RawRecord(unit.name, index, value, unit.source)


def _escaped_cell(cells: list[str]) -> tuple[int, str] | None:
    """(column, where its first bad byte is) for the first cell holding a byte that is not UTF-8."""
    for column, cell in enumerate(cells):
        if _ESCAPED_BYTE.search(cell):
            try:
                _decode(cell.encode("utf-8", errors="surrogateescape"), "cell")
            except _NotUtf8 as err:
                return column, str(err)
    return None


def _shown_cells(cells: list[str]) -> list[str]:
    return [_shown(cell.encode("utf-8", errors="surrogateescape")) for cell in cells]


def _read_text_lines(unit: InputFile, stream: IO[bytes]) -> Iterator[Item]:
    yield from _line_records(unit, stream.read(), lambda text: {"text": text})


def _read_line_pair(unit: InputFile, opener: Opener) -> Iterator[RawRecord | Rejected]:
    """Two line-aligned text files (source, target) -> `{"src", "tgt"}` records, indexed by line.
    Their line counts were checked equal at start (`count_lines`). A line of either file that is
    not UTF-8 rejects its pair."""
    with opener(unit.path) as source, opener(unit.target_path) as target:
        source_lines, target_lines = _lines(source.read()), _lines(target.read())
    for src, tgt in zip(source_lines, target_lines):
        value: dict[str, str] = {}
        problems: list[str] = []
        for key, side, line in (("src", "source", src), ("tgt", "target", tgt)):
            try:
                value[key] = _decode(line.data, "line", line.offset)
            except _NotUtf8 as err:
                problems.append(f"{side} line is not valid UTF-8 ({err})")
        if problems:
            yield Rejected(unit.name, src.number, "invalid_utf8", "; ".join(problems), {"src": _shown(src.data), "tgt": _shown(tgt.data)})
        else:
            yield RawRecord(unit.name, src.number, value, unit.source)


def count_lines(path: str, opener: Opener) -> int:
    with opener(path) as stream:
        return len(_lines(stream.read()))


def _read_dataset(unit: InputFile) -> Iterator[RawRecord]:
    import datasets

    if unit.kind == "hf_disk":
        loaded = datasets.load_from_disk(unit.path)
        table = loaded[unit.split] if unit.split else loaded
    else:
        name, config, split = parse_hf_spec(unit.path)
        table = datasets.load_dataset(name, config, split=split)
    for index, value in enumerate(table):
        yield RawRecord(unit.name, index, value, unit.source)


_READERS = {"jsonl": _read_json, "json": _read_json, "parquet": _read_parquet, "csv": _read_csv, "text_lines": _read_text_lines}

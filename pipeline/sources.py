"""Where records come from: input specs, file kinds, and reading each kind into `RawRecord`s.

An input is one of

    PATH_OR_GLOB            JSONL, JSON (array or lines), Parquet or CSV; local or any Beam
                            filesystem (gs://, s3://, ... where Beam's extra is installed)
    FOLDER                  a Hugging Face `datasets` folder written by `save_to_disk`
    hf:NAME[:CONFIG][:SPLIT]  `datasets.load_dataset` (a local folder or script offline; the hub online)

optionally prefixed `name=` to name the source (the `source` column, `--mix` weights and the report
use it). Every record keeps `<file name>:<0-based index>` as its id. Reading takes an `opener`
(Beam's `FileSystems.open` in the job) so this module never imports Beam.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO

from pipeline.records import Rejected

HF_PREFIX = "hf:"
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


def _lines(data: bytes) -> list[str]:
    """Lines split at "\\n" only (a trailing "\\r" dropped). `str.splitlines` also splits at
    U+2028, U+0085 and form feeds, which are legal inside JSON strings and sentences, and would
    shift every later line of a line-aligned pair of files."""
    lines = data.decode("utf-8", errors="replace").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def read_records(unit: InputFile, opener: Opener) -> Iterator[RawRecord | Rejected]:
    """Every record of one input unit, in order, each with its 0-based index."""
    if unit.kind in ("hf_disk", "hf_hub"):
        yield from _read_dataset(unit)
    elif unit.kind == "line_pair":
        yield from _read_line_pair(unit, opener)
    else:
        with opener(unit.path) as stream:
            yield from _READERS[unit.kind](unit, stream)


def _read_json(unit: InputFile, stream: IO[bytes]) -> Iterator[RawRecord | Rejected]:
    """A `.json` holding a JSON array yields its elements; otherwise it is read as JSON Lines.
    A JSONL line that does not parse is rejected alone; a broken array is one rejected record
    (index None), since no element can be recovered from it."""
    raw = stream.read()
    data = raw.decode("utf-8", errors="replace")
    if unit.kind == "json" and data.lstrip().startswith("["):
        try:
            values = json.loads(data)
        except json.JSONDecodeError as err:
            yield Rejected(unit.name, None, "invalid_json", f"file is not a valid JSON array ({err.msg} at line {err.lineno})", None)
            return
        for index, value in enumerate(values):
            yield RawRecord(unit.name, index, value, unit.source)
        return
    index = 0
    for line in _lines(raw):
        if not line.strip():
            continue
        try:
            yield RawRecord(unit.name, index, json.loads(line), unit.source)
        except json.JSONDecodeError as err:
            yield Rejected(unit.name, index, "invalid_json", f"line is not valid JSON ({err.msg})", line)
        index += 1


def _read_parquet(unit: InputFile, stream: IO[bytes]) -> Iterator[RawRecord]:
    import pyarrow.parquet as pq

    index = 0
    for batch in pq.ParquetFile(io.BytesIO(stream.read())).iter_batches(batch_size=4096):
        for value in batch.to_pylist():
            yield RawRecord(unit.name, index, value, unit.source)
            index += 1


def _read_csv(unit: InputFile, stream: IO[bytes]) -> Iterator[RawRecord | Rejected]:
    """CSV cells are strings; a messages/conversations/translation cell must hold JSON text."""
    reader = csv.DictReader(io.TextIOWrapper(stream, encoding="utf-8", newline=""))
    for index, row in enumerate(reader):
        value: dict[str, object] = dict(row)
        try:
            for column in _NESTED_COLUMNS:
                if isinstance(value.get(column), str):
                    value[column] = json.loads(value[column])
        except json.JSONDecodeError as err:
            yield Rejected(unit.name, index, "invalid_json", f"column {column!r} is not valid JSON ({err.msg})", row)
            continue
        yield RawRecord(unit.name, index, value, unit.source)


def _read_text_lines(unit: InputFile, stream: IO[bytes]) -> Iterator[RawRecord]:
    for index, line in enumerate(_lines(stream.read())):
        yield RawRecord(unit.name, index, {"text": line}, unit.source)


def _read_line_pair(unit: InputFile, opener: Opener) -> Iterator[RawRecord]:
    """Two line-aligned text files (source, target) -> `{"src", "tgt"}` records. Their line counts
    were checked equal at start (`count_lines`)."""
    with opener(unit.path) as source, opener(unit.target_path) as target:
        source_lines, target_lines = _lines(source.read()), _lines(target.read())
    for index, (src, tgt) in enumerate(zip(source_lines, target_lines)):
        yield RawRecord(unit.name, index, {"src": src, "tgt": tgt}, unit.source)


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

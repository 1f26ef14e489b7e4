"""Where records come from: input specs, file kinds, and reading each kind into `RawRecord`s.

An input is one of

    PATH_OR_GLOB            JSONL, JSON (array or lines), Parquet or CSV; local or any Beam
                            filesystem (gs://, s3://, ... where Beam's extra is installed)
    FOLDER                  a Hugging Face `datasets` folder written by `save_to_disk`
    hf:NAME[:CONFIG][:SPLIT]  `datasets.load_dataset` (a local folder or script offline; the hub online)

optionally prefixed `name=` to name the source (the `source` column, `--mix` weights and the report
use it). Reading takes an `opener` (in the job `open_raw`: Beam's `FileSystems.open`, bytes as
stored) so this module never imports Beam.

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

Compression. A `.gz`, `.bz2`, `.xz`/`.lzma`, `.zst`/`.zstd` or `.deflate` file after any of the
text kinds' extensions (`f.jsonl.gz`, `f.csv.bz2`) is read as the file it decompresses to, with the
same ids, blank lines and rejections (compression.py says how the codec is found); it is one
range, read by one worker. A damaged one ends in one rejected `damaged_file` entry saying how many
records were read before the damage; those are kept.

Size. A record over `max_record_bytes` (--max-record-bytes) is rejected as `record_too_large` with
its size, found while reading: a line past the limit is never put together, so its cost is a chunk.

Ranges. Memory stays flat in input size: every kind but a JSON array is read in bounded chunks,
and a large file is read by many workers, each taking one `InputRange` of it (`split_input`):
line-based files split into byte ranges, Parquet into groups of row groups. A range numbers its
lines from `first_line`, the sum of `count_range` over the ranges before it in its file, so ids
are the whole file's whichever worker reads a line:

    f.jsonl (250 MB), target 64 MB -> [0, 64M) [64M, 128M) [128M, 192M) [192M, end)
    a line belongs to the range holding its first byte; one crossing a range's end is read whole
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import IO, Literal

import orjson

from masked_shards.read.compression import DamagedInput, codec_of, open_input, strip_compression
from masked_shards.records import BlankLines, Rejected, json_bytes, strings_in

HF_PREFIX = "hf:"
BOM = b"\xef\xbb\xbf"
FILE_KINDS = {".jsonl": "jsonl", ".json": "json", ".parquet": "parquet", ".csv": "csv", ".txt": "text_lines"}
# Columns that hold a list of messages; in CSV they can only arrive as JSON text.
_NESTED_COLUMNS = ("messages", "conversations", "translation")
# How much of a file one read takes: what a worker holds at once besides the line it is reading
# (a line longer than this is put together from several chunks). 4 MiB keeps the per-read cost of
# a remote filesystem small next to the bytes it brings.
CHUNK_BYTES = 4 << 20
# How much of a `.json` file is read at a time to see whether it opens with "[".
_PEEK_BYTES = 64 << 10
# How much of a record over the size limit rejected.jsonl shows.
_SHOWN_BYTES = 200

Opener = Callable[[str], IO[bytes]]
# How an `InputRange` is read: lines of a byte range, a run of Parquet row groups, or a whole unit.
RangeKind = Literal["lines", "row_groups", "whole"]


@dataclass(slots=True, unsafe_hash=True)
class RawRecord:
    """A parsed record: `name:index` is its id and location, `source` the input it belongs to.
    `columnar`: read from Parquet or `datasets`, whose structs hold a null for every key a value
    lacks, so a null there is an absent key at any depth; in JSON a null is the record's own
    value (a tool call's `{"unit": null}` argument), kept."""

    name: str
    index: int
    value: object
    source: str = ""
    columnar: bool = False

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


@dataclass(frozen=True)
class InputRange:
    """The part of one input unit that one worker reads (`split_input` makes them, `read_range`
    reads one). `start` and `end` (exclusive; None: to the end) are byte offsets for `lines`, row
    group indices for `row_groups`, and 0 and None for `whole`. `limit` (--limit) stops reading
    after that many records; a limited range is always its unit's only range."""

    unit: InputFile
    start: int
    end: int | None
    kind: RangeKind
    limit: int | None = None
    compression: str | None = None  # the codec of a compressed file (compression.py), read whole


def split_name(spec: str) -> tuple[str | None, str]:
    """`name=PATH` -> (name, PATH); a bare PATH (or hf: spec) has no name."""
    head, sep, tail = spec.partition("=")
    if sep and head and "/" not in head and ":" not in head and "*" not in head:
        return head, tail
    return None, spec


def file_kind(path: str) -> str | None:
    """The kind of a file from its name, a compression suffix aside (`f.jsonl.gz` is "jsonl"), or
    None when it is not a supported input. Parquet compresses inside: a compressed one is not."""
    plain = strip_compression(path)
    for suffix, kind in FILE_KINDS.items():
        if plain.lower().endswith(suffix):
            return None if kind == "parquet" and plain != path else kind
    return None


def parse_hf_spec(spec: str) -> tuple[str, str | None, str]:
    """`hf:NAME[:CONFIG][:SPLIT]` -> (NAME, CONFIG or None, SPLIT, default train)."""
    parts = spec[len(HF_PREFIX) :].split(":")
    name = parts[0]
    config = parts[1] or None if len(parts) > 1 else None
    split = parts[2] if len(parts) > 2 and parts[2] else "train"
    return name, config, split


@dataclass(slots=True, unsafe_hash=True)
class _Line:
    """One line's bytes (without its "\\n" or a trailing "\\r"), its 0-based number, the offset
    of its first byte in the file, and its size; a line over the size limit holds only its first
    bytes (`_stream_lines`)."""

    number: int
    offset: int
    data: bytes
    size: int


def _stream_lines(stream: IO[bytes], position: int, chunk_size: int, max_bytes: int | None = None) -> Iterator[tuple[int, bytes, int]]:
    """(offset, bytes, size) of each line read from `position` (the stream's place in the file) on,
    in chunks, split at "\\n" only; a last line without "\\n" counts, nothing after a final "\\n" does.
    `str.splitlines` also splits at U+2028, U+0085 and form feeds, which are legal inside JSON
    strings and sentences, and would shift every later line of a line-aligned pair of files.
    Splitting the bytes before decoding lets a line that is not UTF-8 be rejected alone: byte 0x0A
    never occurs inside a multi-byte UTF-8 character.

    A line longer than `max_bytes` is never put together: past the limit only its first bytes are
    kept, and its size is counted on, so it costs a chunk of memory however long it is."""
    pending: list[bytes] = []  # the start of a line no chunk read so far has ended
    held = 0  # its size
    for chunk in iter(lambda: stream.read(chunk_size), b""):
        *ended, rest = chunk.split(b"\n")
        for line in ended:
            size = held + len(line)
            yield position, _kept(b"".join((*pending, line)) if pending else line, size, max_bytes), size
            position += size + 1
            pending, held = [], 0
        if rest:
            held += len(rest)
            pending.append(rest)
            if max_bytes is not None and held > max_bytes:
                pending = [b"".join(pending)[:_SHOWN_BYTES]]
    if pending:
        yield position, _kept(b"".join(pending), held, max_bytes), held


def _kept(line: bytes, size: int, max_bytes: int | None) -> bytes:
    """A line, or only its first bytes when its `size` is over the limit."""
    return line if max_bytes is None or size <= max_bytes else line[:_SHOWN_BYTES]


def _content_start(stream: IO[bytes]) -> int:
    """Where a text file's content starts (after one leading BOM, which only offset 0 can hold),
    with the stream left there."""
    if stream.read(len(BOM)) == BOM:
        return len(BOM)
    stream.seek(0)
    return 0


def _range_lines(stream: IO[bytes], start: int, end: int | None, first_line: int, chunk_size: int, max_bytes: int | None = None) -> Iterator[_Line]:
    """The lines whose first byte lies in [start, end), numbered from `first_line`; the last one
    read to its end even past `end`. The line holding byte start-1 began in an earlier range, so
    the range's first line is the one after the first "\\n" at or after start-1."""
    if start == 0:
        begin = _content_start(stream)
        lines = _stream_lines(stream, begin, chunk_size, max_bytes)
        if end is not None:
            end = max(end, begin + 1)  # the BOM is line 0's first bytes: line 0 is the first range's
    else:
        stream.seek(start - 1)
        lines = _stream_lines(stream, start - 1, chunk_size, max_bytes)
        next(lines, None)  # the end of the line holding byte start-1 ("" when that byte is "\n")
    for number, (offset, data, size) in enumerate(lines, first_line):
        if end is not None and offset >= end:
            return
        yield _Line(number, offset, data.removesuffix(b"\r"), size)


def _count_range_lines(stream: IO[bytes], start: int, end: int | None, chunk_size: int) -> int:
    """How many lines `_range_lines` yields for [start, end), counted by `bytes.count` instead of
    splitting: a line begins at 0 (when the file holds one) and after each "\\n" that is not the
    file's last byte, so the count is that first line when start is 0 plus the "\\n"s in
    [start-1, end-1)."""
    if start == 0:
        begin = _content_start(stream)
        count = 1 if stream.read(1) else 0
        stream.seek(begin)  # a BOM holds no "\n": counting from after it is the same
    else:
        begin, count = start - 1, 0
        stream.seek(begin)
    left = None if end is None else end - 1 - begin
    last = b""
    while left is None or left > 0:
        chunk = stream.read(chunk_size if left is None else min(chunk_size, left))
        if not chunk:
            break
        count += chunk.count(b"\n")
        last = chunk
        left = None if left is None else left - len(chunk)
    if last.endswith(b"\n") and not stream.read(1):
        count -= 1  # the file's last byte ends a line and begins none
    return count


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


# Worker processes share out an input by its ranges, so a file must give several ranges per worker:
# at 64 MB a 200,000-conversation JSONL (94 MB) was 2 ranges, and 16 workers left 14 idle. A range
# costs one more seek and a few records' bookkeeping; 4 MB is one read chunk (CHUNK_BYTES).
RANGE_BYTES, RANGES_PER_FILE, MIN_RANGE_BYTES = 4 << 20, 32, 2 << 20


def split_input(unit: InputFile, opener: Opener, sizer: Callable[[str], int], target_bytes: int = RANGE_BYTES, limit: int | None = None) -> list[InputRange]:
    """The ranges workers read a unit in, in file order: byte ranges for JSONL, JSON Lines in a
    `.json` and `.txt` (`sizer` gives a file's size), of `target_bytes` at most, and smaller for a
    smaller file, down to `MIN_RANGE_BYTES`, so that one file is still `RANGES_PER_FILE` pieces
    for as many workers (a 25 MB file read as one 64 MB range kept 15 of 16 workers idle; a range
    costs a few milliseconds of set-up, so much smaller ones buy nothing); runs of Parquet row groups
    holding about `target_bytes` of the file each (a row group is the smallest piece Parquet reads).
    Every other unit is one range, read by one worker, still in bounded chunks except a JSON array:
    an array's elements cannot be found from the middle of it without a streaming JSON parser;
    a CSV range could start inside a quoted cell holding a newline, with no way to tell from there;
    a line pair's target line for a source byte offset is only known by reading the target up to
    it; and `datasets` shard their own reading.

    A compressed file (compression.py) is one range too: no line start in it can be found without
    decompressing everything before it.

    With `limit` (--limit N) the unit is one range that stops after N records: the first N are
    only known by reading from the start, and a reader that stops early costs what it read, not
    the file (counting a line file's lines for later ranges' ids would read all of it)."""
    whole = _unit_range(unit, opener)
    if limit is not None:
        return [replace(whole, limit=limit)]
    if whole.kind == "lines" and whole.compression is None:
        size = sizer(unit.path)
        step = min(target_bytes, max(MIN_RANGE_BYTES, -(-size // RANGES_PER_FILE)))
        starts = [0, *range(step, size, step)]
        return [InputRange(unit, start, end, "lines") for start, end in zip(starts, [*starts[1:], None])]
    if whole.kind == "row_groups":
        with opener(unit.path) as stream:
            sizes = _row_group_bytes(stream)
        return _row_group_ranges(unit, sizes, target_bytes)
    return [whole]


def _unit_range(unit: InputFile, opener: Opener) -> InputRange:
    """A whole unit as one range of the kind it is read as (a `.json` file is peeked at: an array
    is read whole, anything else as JSON Lines), with its codec when it is compressed (a text
    file's first bytes are read for it: the name may lie)."""
    compression = codec_of(unit.path, opener) if unit.kind in ("jsonl", "json", "text_lines", "csv") else None
    if unit.kind == "json":
        with open_input(unit.path, opener) as stream:
            array = _holds_json_array(stream)
        return InputRange(unit, 0, None, "whole" if array else "lines", compression=compression)
    kinds: dict[str, RangeKind] = {"jsonl": "lines", "text_lines": "lines", "parquet": "row_groups"}
    return InputRange(unit, 0, None, kinds.get(unit.kind, "whole"), compression=compression)


def _holds_json_array(stream: IO[bytes]) -> bool:
    """Whether the first byte after a BOM and JSON's whitespace is "[" (read a little at a time:
    the whitespace may be long)."""
    _content_start(stream)
    for chunk in iter(lambda: stream.read(_PEEK_BYTES), b""):
        rest = chunk.lstrip(b" \t\r\n")
        if rest:
            return rest.startswith(b"[")
    return False


def _row_group_bytes(stream: IO[bytes]) -> list[int]:
    """Each row group's compressed size: the bytes of the file reading it takes."""
    import pyarrow.parquet as pq

    metadata = pq.ParquetFile(stream).metadata
    groups = (metadata.row_group(n) for n in range(metadata.num_row_groups))
    return [sum(group.column(c).total_compressed_size for c in range(group.num_columns)) for group in groups]


def _row_group_ranges(unit: InputFile, sizes: list[int], target_bytes: int) -> list[InputRange]:
    """Consecutive row groups gathered until they hold `target_bytes`; the last range to the end."""
    ranges: list[InputRange] = []
    first = held = 0
    for index, size in enumerate(sizes[:-1]):
        held += size
        if held >= target_bytes:
            ranges.append(InputRange(unit, first, index + 1, "row_groups"))
            first, held = index + 1, 0
    return [*ranges, InputRange(unit, first, None, "row_groups")]


def count_range(r: InputRange, opener: Opener, chunk_size: int = CHUNK_BYTES) -> int:
    """How many ids a range spans, which the ranges after it in its unit add to their `first_line`:
    the lines whose first byte lies in it (blank and rejected ones too), read in chunks; the rows of
    its row groups, from the Parquet footer. A `whole` range is its unit's only range, so no range's
    ids depend on it and it counts 0 without reading the unit; so do a limited range and a
    compressed file's (counting would decompress it twice)."""
    if r.limit is not None or r.compression is not None:
        return 0
    if r.kind == "lines":
        with opener(r.unit.path) as stream:
            return _count_range_lines(stream, r.start, r.end, chunk_size)
    if r.kind == "row_groups":
        import pyarrow.parquet as pq

        with opener(r.unit.path) as stream:
            metadata = pq.ParquetFile(stream).metadata
        return sum(metadata.row_group(n).num_rows for n in _row_groups(r, metadata.num_row_groups))
    return 0


def _row_groups(r: InputRange, count: int) -> range:
    return range(r.start, count if r.end is None else r.end)


def read_range(r: InputRange, opener: Opener, first_line: int, chunk_size: int = CHUNK_BYTES, max_record_bytes: int | None = None) -> Iterator[Item]:
    """The items of one range, in order, ids numbered from `first_line` (the sum of `count_range`
    over the ranges before it; 0 for the first, and for a `whole` range, which is always first),
    then the range's `BlankLines` when it has any: the report sums them over ranges. With
    `r.limit`, reading stops after that many records (read or rejected); the blank lines counted
    are those before the last record read.

    A record over `max_record_bytes` is rejected (`record_too_large`, with its size) as it is
    read: a line is never put together past the limit, and a record of any other kind is
    measured before it goes on. A compressed file found damaged becomes one rejected entry after
    the records read before the damage (`_damaged`)."""
    unit, limit, max_bytes = r.unit, r.limit, max_record_bytes
    if unit.kind in ("hf_disk", "hf_hub"):
        yield from itertools.islice(_within_size(_read_dataset(unit), max_bytes), limit)
    elif unit.kind == "line_pair":
        yield from _until_damaged(unit, itertools.islice(_read_line_pair(unit, opener, chunk_size, max_bytes), limit))
    elif r.kind == "row_groups":
        with opener(unit.path) as stream:
            yield from itertools.islice(_within_size(_read_row_groups(r, stream, first_line), max_bytes), limit)
    else:
        with open_input(unit.path, opener) as stream:
            if r.kind == "lines":
                lines = _range_lines(stream, r.start, r.end, first_line, chunk_size, max_bytes)
                yield from _line_records(unit, lines, _LINE_VALUES[unit.kind], limit, max_bytes)
            elif unit.kind == "csv":
                yield from _until_damaged(unit, _within_size(_read_csv(unit, stream, limit), max_bytes))
            else:
                yield from _until_damaged(unit, itertools.islice(_within_size(_read_json_array(unit, stream), max_bytes), limit))


def read_records(unit: InputFile, opener: Opener, chunk_size: int = CHUNK_BYTES, max_record_bytes: int | None = None) -> Iterator[Item]:
    """Every record of one input unit, in order, each with its 0-based index (see the module
    docstring), then the unit's `BlankLines` when it has any: the unit read as one range."""
    yield from read_range(_unit_range(unit, opener), opener, 0, chunk_size, max_record_bytes)


def _damaged(unit: InputFile, read: int, err: DamagedInput) -> Rejected:
    """The one entry a damaged compressed file leaves: its records before the damage are kept."""
    return Rejected(unit.name, None, "damaged_file", f"{err}: {read} records were read before the damage and are kept; the rest of the file cannot be read", None)


def _until_damaged(unit: InputFile, items: Iterator[Item]) -> Iterator[Item]:
    """`items`, ending with `_damaged` where a compressed file turns out damaged."""
    read = 0
    try:
        for item in items:
            read += not isinstance(item, BlankLines)
            yield item
    except DamagedInput as err:
        yield _damaged(unit, read, err)


def _within_size(items: Iterator[Item], max_bytes: int | None) -> Iterator[Item]:
    """Records of a kind read whole (Parquet and `datasets` rows, JSON array elements, CSV rows),
    a record whose text is over `max_bytes` rejected with its size."""
    for item in items:
        size = None if max_bytes is None or not isinstance(item, RawRecord) else _text_bytes(item.value, max_bytes)
        if size is not None and size > max_bytes:
            yield Rejected(item.name, item.index, "record_too_large", _too_large(size, max_bytes), None)
        else:
            yield item


def _text_bytes(value: object, max_bytes: int) -> int:
    """The UTF-8 size of the text a record holds (its strings, at any depth) where it is over
    `max_bytes`, else a size within it: the record's JSON (`json_bytes`) when that is within it
    (the strings are no larger than their JSON, and are not walked), or their characters, encoded
    unless the count settles it (a character is 1 to 4 bytes)."""
    shown = json_bytes(value)
    if shown is not None and len(shown) <= max_bytes:
        return len(shown)
    strings = list(strings_in(value, keys=False))
    chars = sum(map(len, strings))
    if 4 * chars <= max_bytes:
        return chars
    return sum(len(text.encode("utf-8", errors="surrogatepass")) for text in strings)


def _too_large(size: int, max_bytes: int) -> str:
    return f"record is {size} bytes, over --max-record-bytes {max_bytes}; it was not parsed or tokenized"


# A run of 19 digits, found by turning every digit into "0" and looking for 19 of them: a fifth of
# the time of a regex search for it (0.6 against 3.1 us a 470-byte line).
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_DIGITS = b"0" * 19


def _json_value(text: str) -> object:
    """`json.loads`, except that nesting too deep for Python's parser (its RecursionError) is
    reported as unreadable JSON like any other, so such a line or cell is rejected alone instead
    of ending the reading of its file.

    orjson decodes first (several times faster) where its answer is provably json's: it refuses
    what it cannot read exactly (NaN, 1e400, a lone surrogate), and json then decides; an
    integer of 19 digits or more, which orjson would turn into a float, goes to json directly
    (as does any text with a run of 19 digits: both parsers read a string alike). orjson reads
    the text's UTF-8 bytes (a character that UTF-8 cannot hold, a lone surrogate, gives bytes it refuses)."""
    value = _exactly_json(text.encode("utf-8", "surrogatepass"))
    if value is not _UNREAD:
        return value
    try:
        return json.loads(text)
    except RecursionError:
        raise json.JSONDecodeError("nested deeper than the parser can read", text, 0) from None


_UNREAD = object()


def _exactly_json(data: bytes) -> object:
    """orjson's value of the JSON text in `data` where it is provably json's (`_json_value`), else
    `_UNREAD`. Given a line's or a file's bytes as read, it spares decoding them to text and
    encoding them back (0.03 s of a run of 55k chats; 0.07 s before the first record of a 17 MB
    JSON array): orjson reads only valid UTF-8, and for valid UTF-8 the text decoded from the
    bytes encodes back to the same bytes."""
    if _LONG_DIGITS in data.translate(_DIGITS_AS_ZERO):
        return _UNREAD
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return _UNREAD


def _line_records(unit: InputFile, lines: Iterator[_Line], parse: Callable[[str], object], limit: int | None = None, max_bytes: int | None = None) -> Iterator[Item]:
    """One record per non-blank line, indexed by line number, the first `limit` (None: all); `parse`
    turns the line's text into the record's value (a JSONDecodeError from it rejects the line as
    `invalid_json`). A line over `max_bytes` is rejected unread (it holds only its first bytes);
    damage to a compressed file ends the lines with one rejected entry, then the blank count."""
    blank = records = 0
    try:
        for line in lines:
            if records == limit:
                break
            records += 1
            if max_bytes is not None and line.size > max_bytes:
                yield Rejected(unit.name, line.number, "record_too_large", f"line {_too_large(line.size, max_bytes).removeprefix('record ')} (its first {len(line.data)} bytes are shown)", _shown(line.data))
                continue
            value = _exactly_json(line.data) if parse is _json_value else _UNREAD  # blank or bad lines are never read by it
            if value is not _UNREAD:
                yield RawRecord(unit.name, line.number, value, unit.source)
                continue
            try:
                text = _decode(line.data, "line", line.offset)
            except _NotUtf8 as err:
                yield Rejected(unit.name, line.number, "invalid_utf8", f"line is not valid UTF-8 ({err})", _shown(line.data))
                continue
            if not text.strip():
                records -= 1
                blank += 1
                continue
            try:
                value = parse(text)
            except json.JSONDecodeError as err:
                yield Rejected(unit.name, line.number, "invalid_json", f"line is not valid JSON ({err.msg})", text)
                continue
            yield RawRecord(unit.name, line.number, value, unit.source)
    except DamagedInput as err:
        yield _damaged(unit, records, err)
    if blank:
        yield BlankLines(unit.name, blank)


def _text_value(text: str) -> dict[str, str]:
    return {"text": text}


# What a line of each line-based kind holds (JSON Lines in a `.json` too).
_LINE_VALUES: dict[str, Callable[[str], object]] = {"jsonl": _json_value, "json": _json_value, "text_lines": _text_value}


def _read_json_array(unit: InputFile, stream: IO[bytes]) -> Iterator[Item]:
    """The elements of a `.json` file holding a JSON array, read whole (see `split_input`). A broken
    array (not UTF-8, or not JSON) is one rejected record (index None), since no element can be
    recovered from it."""
    data = stream.read()
    values = _exactly_json(data.removeprefix(BOM))
    try:
        if values is _UNREAD:
            values = _json_value(_decode(data, "file").removeprefix("\ufeff"))
    except _NotUtf8 as err:
        yield Rejected(unit.name, None, "invalid_utf8", f"file is not valid UTF-8 ({err})", None)
        return
    except json.JSONDecodeError as err:
        yield Rejected(unit.name, None, "invalid_json", f"file is not a valid JSON array ({err.msg} at line {err.lineno})", None)
        return
    for index, value in enumerate(values):
        yield RawRecord(unit.name, index, value, unit.source)


def _read_row_groups(r: InputRange, stream: IO[bytes], first_line: int) -> Iterator[RawRecord]:
    """The rows of a range's row groups, read through the file's own seeks (footer, then each
    column chunk), never the whole file at once."""
    import pyarrow.parquet as pq

    table = pq.ParquetFile(stream)
    index = first_line
    for batch in table.iter_batches(batch_size=4096, row_groups=_row_groups(r, table.num_row_groups)):
        for value in batch.to_pylist():
            yield RawRecord(r.unit.name, index, value, r.unit.source, columnar=True)
            index += 1


# How `surrogateescape` decoding keeps a byte that is not UTF-8: as U+DC80..U+DCFF. Strict UTF-8
# decoding never yields a surrogate, so one of these in a cell always stands for such a byte.
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")


def _read_csv(unit: InputFile, stream: IO[bytes], limit: int | None = None) -> Iterator[Item]:
    """CSV cells are strings; a messages/conversations/translation cell must hold JSON text.

    The file is decoded as it is read (one range, in bounded chunks: see `split_input`), with
    `surrogateescape`, so a byte that is not UTF-8 is kept (as a lone surrogate) instead of stopping
    the reader. Such bytes are all >= 0x80, never a comma, quote or newline, so the rows split
    exactly as in a clean file and only the row holding one is rejected (`invalid_utf8`, with the
    byte's offset in its cell; the csv module gives no byte offsets in the file, so the row's last
    line number is given instead). A header that is not UTF-8 rejects the file, as no row's columns
    could be named. A row with more cells than the header is rejected (`csv_extra_cells`;
    csv.DictReader would file the extra cells under a None key); a row with fewer has None for the
    missing columns. With `limit`, the first `limit` data rows only.
    """
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline="")
    reader = csv.reader(text)
    header = next(reader, None)
    if header is None:
        return
    escaped = _escaped_cell(header)
    if escaped:
        yield Rejected(unit.name, None, "invalid_utf8", f"header cell {escaped[0]} is not valid UTF-8 ({escaped[1]})", _shown_cells(header))
        return
    index = blank = 0
    for cells in reader:
        if index == limit:
            break
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


def _read_line_pair(unit: InputFile, opener: Opener, chunk_size: int, max_bytes: int | None = None) -> Iterator[RawRecord | Rejected]:
    """Two line-aligned text files (source, target) -> `{"src", "tgt"}` records, indexed by line,
    both read in chunks, line by line in step. Their line counts were checked equal at start
    (`count_lines`). A line of either file that is not UTF-8, or over `max_bytes`, rejects its pair."""
    with open_input(unit.path, opener) as source, open_input(unit.target_path, opener) as target:
        for src, tgt in zip(_range_lines(source, 0, None, 0, chunk_size, max_bytes), _range_lines(target, 0, None, 0, chunk_size, max_bytes)):
            if max_bytes is not None and src.size + tgt.size > max_bytes:
                yield Rejected(unit.name, src.number, "record_too_large", _too_large(src.size + tgt.size, max_bytes), {"src": _shown(src.data[:_SHOWN_BYTES]), "tgt": _shown(tgt.data[:_SHOWN_BYTES])})
                continue
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


def count_lines(path: str, opener: Opener, chunk_size: int = CHUNK_BYTES) -> int:
    """The lines of a text file (blank ones too), counted in chunks, decompressed if it is compressed
    (a damaged one raises `DamagedInput`)."""
    with open_input(path, opener) as stream:
        return _count_range_lines(stream, 0, None, chunk_size)


def _read_dataset(unit: InputFile) -> Iterator[RawRecord]:
    import datasets

    if unit.kind == "hf_disk":
        loaded = datasets.load_from_disk(unit.path)
        table = loaded[unit.split] if unit.split else loaded
    else:
        name, config, split = parse_hf_spec(unit.path)
        table = datasets.load_dataset(name, config, split=split)
    for index, value in enumerate(table):
        yield RawRecord(unit.name, index, value, unit.source, columnar=True)

"""Compressed inputs read as the files they hold: same records, ids, blank lines and rejections;
damage is one rejected entry after the records before it; oversized records are rejected unread."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import os
import random
import zlib
from pathlib import Path

import pytest
import zstandard
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from masked_shards.read.compression import DamagedInput, detect_compression, open_input, strip_compression
from masked_shards.read.sources import InputFile, RawRecord, count_lines, file_kind, read_records, split_input
from masked_shards.records import BlankLines, Rejected

BOM = b"\xef\xbb\xbf"
# suffix -> how the command-line tools write it (zstd's CLI adds a checksum, so damage is found)
COMPRESSORS = {
    ".gz": gzip.compress,
    ".bz2": lambda data: bz2.compress(data, 1),  # 100 kB blocks: a damaged file has whole blocks before the damage
    ".xz": lzma.compress,
    ".lzma": lambda data: lzma.compress(data, format=lzma.FORMAT_ALONE),
    ".zst": lambda data: zstandard.ZstdCompressor(write_checksum=True).compress(data),
    ".zstd": lambda data: zstandard.ZstdCompressor(write_checksum=True).compress(data),
    ".deflate": zlib.compress,
}
KINDS = {"jsonl": ".jsonl", "json": ".json", "text_lines": ".txt", "csv": ".csv"}


def _opener(path: str):
    return open(path, "rb")


def _items(path: Path, kind: str, name: str = "f", **options) -> list:
    """What reading the file gives, the id name fixed so plain and compressed copies compare."""
    return list(read_records(InputFile("src", name, str(path), kind), _opener, **options))


def test_compressed_names_keep_their_kind_and_parquet_is_never_compressed():
    assert [file_kind(p) for p in ("a.jsonl.gz", "b.JSON.ZST", "c.csv.bz2", "d.txt.xz", "e.jsonl.lzma", "f.jsonl.zstd", "g.json.deflate")] == ["jsonl", "json", "csv", "text_lines", "jsonl", "jsonl", "json"]
    assert [file_kind(p) for p in ("h.parquet.gz", "i.gz", "j.xml.gz")] == [None, None, None]
    assert strip_compression("dir.v2/a.jsonl.gz") == "dir.v2/a.jsonl" and strip_compression("a.jsonl") == "a.jsonl"


def test_magic_bytes_win_over_a_name_that_lies():
    text = b'{"prompt": "a"}\n'
    assert detect_compression("a.jsonl", gzip.compress(text)[:10]) == "gzip"  # gzip under a plain name
    assert detect_compression("a.jsonl.gz", text[:10]) is None  # plain text under a .gz name
    assert detect_compression("a.jsonl.gz", bz2.compress(text)[:10]) == "bzip2"
    assert detect_compression("a.txt", b"BZh91AY&SY") == "bzip2" and detect_compression("a.txt", b"BZh9 is text") is None
    assert detect_compression("a.jsonl.zst", b"\x00\xff\xfe garbage") == "zstd"  # not text: the name holds
    assert detect_compression("a.jsonl.deflate", zlib.compress(text)[:10]) == "deflate"


# Lines as files hold them: blank, JSON, not JSON, not UTF-8, long, arbitrary bytes.
LINE = st.sampled_from([b"", b" \t", b"\r", b'{"prompt": "a"}', '{"prompt": "\u00e9t\u00e9"}'.encode(), b"not json", b"\xff\xfe", b"caf\xc3", b"x" * 300]) | st.binary(max_size=12).map(lambda data: data.replace(b"\n", b""))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lines=st.lists(st.tuples(LINE, st.sampled_from([b"\n", b"\r\n"])), max_size=12),
    bom=st.booleans(),
    last_newline=st.booleans(),
    kind=st.sampled_from(sorted(KINDS)),
    suffix=st.sampled_from(sorted(COMPRESSORS)),
    plain_name=st.booleans(),
    chunk_size=st.integers(1, 9),
    members=st.integers(1, 3),
)
def test_a_compressed_copy_reads_as_the_file(tmp_path: Path, lines, bom, last_newline, kind, suffix, plain_name, chunk_size, members):
    """The same records, ids, rejections (byte offsets in the details too) and blank lines from a
    file and from any compressed copy of it, in one member or several, named as compressed or
    (for codecs with magic bytes) under the plain name; read as one range."""
    data = (BOM if bom else b"") + b"".join(line + end for line, end in lines)
    if lines and not last_newline:
        data = data.removesuffix(lines[-1][1])
    if kind == "csv":
        data = b"prompt,completion\n" + data
    assume(detect_compression("f.jsonl", data[:10]) is None)  # not text: a codec's magic bytes, read as such
    plain = tmp_path / f"f{KINDS[kind]}"
    plain.write_bytes(data)
    cuts = sorted({0, len(data), *(len(data) * n // members for n in range(1, members))})
    pieces = [data[a:b] for a, b in zip(cuts, cuts[1:])] or [b""]
    joined = b"".join(map(COMPRESSORS[suffix], pieces)) if suffix in (".gz", ".bz2", ".xz", ".zst", ".zstd") else COMPRESSORS[suffix](data)
    packed = tmp_path / (plain.name if plain_name and suffix not in (".lzma", ".deflate") else plain.name + suffix)
    if packed != plain:
        packed.write_bytes(joined)
    else:
        plain = tmp_path / f"plain{KINDS[kind]}"
        plain.write_bytes(data)
        packed.write_bytes(joined)
    expected = _items(plain, kind, chunk_size=1 << 16)
    assert _items(packed, kind, chunk_size=chunk_size) == expected
    (piece,) = split_input(InputFile("src", "f", str(packed), kind), _opener, os.path.getsize, target_bytes=1)
    assert piece.compression is not None and piece.start == 0 and piece.end is None
    if kind != "csv":
        assert count_lines(str(packed), _opener, chunk_size) == count_lines(str(plain), _opener)


def _jsonl(count: int) -> bytes:
    """Records that compress about as well as text (hex digits): the damage falls mid-file."""
    draw = random.Random(0)
    return b"".join(json.dumps({"prompt": f"p{n}", "completion": draw.randbytes(40).hex()}).encode() + b"\n" for n in range(count))


@pytest.mark.parametrize("magic", [b"\xfd7zXZ\x00", b"\x1f\x8b\x08", b"\x28\xb5\x2f\xfd"])
def test_a_plain_file_that_starts_like_a_codec_is_read_as_text(tmp_path, magic):
    """Hypothesis found a .jsonl whose first line began with xz's magic bytes: it was taken for
    an xz stream and counting its lines raised. Under a plain name, bytes that do not decode are
    text: every line is counted and the bad one rejected as invalid UTF-8."""
    path = tmp_path / "f.jsonl"
    path.write_bytes(magic + b"\n" + b'{"prompt": "p", "completion": "c"}\n')
    unit = InputFile("src", "f.jsonl", str(path), "jsonl")
    assert count_lines(str(path), _opener) == 2
    items = list(read_records(unit, _opener))
    assert [(type(i).__name__, getattr(i, "reason", None)) for i in items] == [("Rejected", "invalid_utf8"), ("RawRecord", None)]


@pytest.mark.parametrize("suffix", sorted(COMPRESSORS))
@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_a_damaged_file_is_one_rejection_after_the_records_before_it(tmp_path, suffix, damage):
    data = _jsonl(6_000)  # ~600 kB: the damage lies chunks after the start
    packed = bytearray(COMPRESSORS[suffix](data))
    if damage == "truncated":
        del packed[len(packed) * 2 // 3 :]
    else:
        middle = len(packed) * 2 // 3
        packed[middle : middle + 16] = bytes(b ^ 0x5A for b in packed[middle : middle + 16])
    path = tmp_path / f"f.jsonl{suffix}"
    path.write_bytes(bytes(packed))
    items = [i for i in _items(path, "jsonl", chunk_size=1 << 16) if not isinstance(i, BlankLines)]
    *records, last = items
    assert isinstance(last, Rejected) and last.reason == "damaged_file" and last.index is None
    assert str(path) in last.detail and f"{len(records)} records were read before the damage" in last.detail
    assert 0 < len(records) < 6_000
    # A codec that checks its data only at a block's or the stream's end (deflate's Adler-32,
    # gzip's CRC) has handed on the damaged block's bytes by then: lines from them are rejected
    # one by one (or, by chance, read as other JSON); every record before the damage is intact.
    lines = data.splitlines()
    intact = next((n for n, r in enumerate(records) if not isinstance(r, RawRecord) or r.value != json.loads(lines[r.index])), len(records))
    assert intact > len(records) // 2 and [r.index for r in records[:intact]] == list(range(intact))


def test_a_truncated_csv_and_json_array_are_one_rejection_too(tmp_path):
    rows = b"prompt,completion\n" + b"".join(b"p%d,%s\n" % (n, b"%x" % (n * 7919)) for n in range(5000))
    array = json.dumps([{"prompt": str(n)} for n in range(5000)]).encode()
    for name, kind, data in (("t.csv.gz", "csv", rows), ("a.json.gz", "json", array)):
        path = tmp_path / name
        path.write_bytes(gzip.compress(data)[:-100])
        items = _items(path, kind)
        assert items[-1].reason == "damaged_file" and all(isinstance(i, RawRecord) for i in items[:-1])
        assert f"{len(items) - 1} records were read" in items[-1].detail


def test_memory_stays_bounded_reading_a_stream(tmp_path):
    """A highly compressible file: each read returns at most what was asked, never the file."""
    data = b'{"text": "' + b"a" * (64 << 20) + b'"}\n'
    path = tmp_path / "big.jsonl.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(data))
    assert path.stat().st_size < 1 << 20
    with open_input(str(path), _opener) as stream:
        sizes = [len(chunk) for chunk in iter(lambda: stream.read(1 << 20), b"")]
    assert sum(sizes) == len(data) and max(sizes) <= 1 << 20


def test_a_damaged_stream_raises_where_it_is_found():
    data = gzip.compress(_jsonl(100))
    with open_input("f.jsonl.gz", lambda _: io.BytesIO(data[:-8])) as stream:
        with pytest.raises(DamagedInput, match="truncated"):
            stream.read()


@pytest.mark.parametrize("compress", [None, gzip.compress])
def test_a_record_over_max_record_bytes_is_rejected_unread_with_its_size(tmp_path, compress):
    big = b'{"prompt": "' + b"x" * 5000 + b'", "completion": "y"}'
    data = b'{"prompt": "a", "completion": "b"}\n' + big + b"\n\n" + b'{"prompt": "c", "completion": "d"}\n'
    path = tmp_path / ("f.jsonl.gz" if compress else "f.jsonl")
    path.write_bytes(compress(data) if compress else data)
    items = _items(path, "jsonl", chunk_size=64, max_record_bytes=1000)
    assert [type(i).__name__ for i in items] == ["RawRecord", "Rejected", "RawRecord", "BlankLines"]
    rejected = items[1]
    assert (rejected.index, rejected.reason) == (1, "record_too_large") and f"is {len(big)} bytes, over --max-record-bytes 1000" in rejected.detail
    assert rejected.raw == big[:200].decode()  # only the head is kept
    assert items[2].index == 3 and items[3] == BlankLines("f", 1)
    assert [getattr(i, "index", None) for i in _items(path, "jsonl", chunk_size=64, max_record_bytes=len(big))] == [0, 1, 3, None]


def test_records_read_whole_are_measured_against_max_record_bytes(tmp_path):
    rows = [{"prompt": "a", "completion": "b"}, {"prompt": "\u00e9" * 600, "completion": "b"}, {"messages": [{"role": "user", "content": "z" * 2000}]}]
    path = tmp_path / "a.json"
    path.write_text(json.dumps(rows))
    items = _items(path, "json", max_record_bytes=1000)
    assert [(i.index, getattr(i, "reason", None)) for i in items] == [(0, None), (1, "record_too_large"), (2, "record_too_large")]
    assert "is 1201 bytes" in items[1].detail  # é is two bytes in UTF-8


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 9])
def test_a_gzip_member_that_ends_inside_a_short_read_goes_on_to_the_next(tmp_path: Path, chunk_size):
    """Hypothesis found it: a read shorter than a member's output leaves input in zlib's
    unconsumed_tail; when the next read ends the member, that tail stays beside the next member
    in unused_data, and taking the tail again decoded nothing, for ever."""
    data = b"\xef\xbb\xbf}" + b"{a\xe9\n"
    packed = tmp_path / "f.jsonl.gz"
    packed.write_bytes(gzip.compress(data[:4]) + gzip.compress(data[4:]))
    plain = tmp_path / "plain.jsonl"
    plain.write_bytes(data)
    assert count_lines(str(packed), _opener, chunk_size) == count_lines(str(plain), _opener) == 1
    assert _items(packed, "jsonl", chunk_size=chunk_size) == _items(plain, "jsonl", chunk_size=1 << 16)

"""Compressed inputs: which codec a file uses, and reading it back as the bytes it holds.

A file's codec comes from its name, by the suffixes Beam's own file reading knows (`.gz`, `.bz2`,
`.deflate`, `.zst`/`.zstd`, `.xz`/`.lzma`, after one of our extensions: `f.jsonl.gz`), checked
against its first bytes, which win where the name lies: a `.jsonl` that holds gzip is read as
gzip, a `.gz` that holds plain text as plain text. gzip, bzip2, xz and zstd open with magic bytes
that UTF-8 text never starts with; a raw zlib stream (`.deflate`) and the legacy `.lzma` format
have none worth trusting, so those are taken by name only.

A compressed file is read as one stream, from its start, by one worker: no offset in it can be
found without decompressing everything before. The stream holds little at a time (one chunk of
compressed input and one of output), so memory stays flat in the file's size. Concatenated
members (`cat a.gz b.gz`, multi-frame zstd, pbzip2's streams) read as one file, as with the
command-line tools. A damaged or truncated stream raises `DamagedInput` where the damage is
found; the reader turns it into one rejected entry after the records it read (sources.py).
"""

from __future__ import annotations

import bz2
import io
import lzma
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO

import zstandard  # brought by apache-beam, which reads .zst with it too

# Suffix -> codec, as Beam's CompressionTypes.detect_compression_type names them.
SUFFIXES = {".gz": "gzip", ".bz2": "bzip2", ".deflate": "deflate", ".zst": "zstd", ".zstd": "zstd", ".xz": "lzma", ".lzma": "lzma"}
# Codecs whose streams start with bytes no UTF-8 text starts with (bzip2: "BZh", a block size
# digit, then the first block's or the end-of-stream's 48-bit magic).
_MAGIC: tuple[tuple[str, tuple[bytes, ...]], ...] = (
    ("gzip", (b"\x1f\x8b",)),
    ("zstd", (b"\x28\xb5\x2f\xfd",)),
    ("lzma", (b"\xfd7zXZ\x00",)),
    ("bzip2", tuple(b"BZh" + bytes([digit]) + magic for digit in b"123456789" for magic in (b"1AY&SY", b"\x17\x72\x45\x38\x50\x90"))),
)
_HEAD_BYTES = 10
# Compressed bytes fed to a decompressor at a time, and the most it may give back for them: what
# a stream holds besides its caller's chunk. zstd's decompressor takes no output limit, so it gets
# small inputs: even its densest blocks (a run of one byte) then decode to a few MB at most.
_INPUT_BYTES = 64 << 10
_ZSTD_INPUT_BYTES = 4 << 10
_OUTPUT_BYTES = 1 << 20

Opener = Callable[[str], IO[bytes]]


class DamagedInput(Exception):
    """A compressed stream that cannot be decoded to its end (corrupt or truncated)."""


def strip_compression(path: str) -> str:
    """The name without a compression suffix: `f.jsonl.gz` -> `f.jsonl`."""
    codec = compression_by_name(path)
    return path[: path.rfind(".")] if codec else path


def compression_by_name(path: str) -> str | None:
    for suffix, codec in SUFFIXES.items():
        if path.lower().endswith(suffix):
            return codec
    return None


def detect_compression(path: str, head: bytes) -> str | None:
    """The codec a file with this name and these first bytes is read with (None: plain)."""
    for codec, magics in _MAGIC:
        if head.startswith(magics):
            return codec
    named = compression_by_name(path)
    if named in ("deflate", "lzma") and not path.lower().endswith(".xz"):
        return named
    return None if _is_text(head) else named  # text under a codec's name is text; else the name holds


def _is_text(head: bytes) -> bool:
    """Whether a file's first bytes are UTF-8 (a character cut at the end of `head` allowed)."""
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as err:
        return err.reason == "unexpected end of data"
    return True


@contextmanager
def open_input(path: str, opener: Opener) -> Iterator[IO[bytes]]:
    """The file's content as a binary stream: decompressed when it is compressed. The stream
    supports `seek` (a backward seek past its buffer restarts it, forward ones read on)."""
    with opener(path) as raw:
        codec = _sniff(path, raw)
        yield raw if codec is None else io.BufferedReader(_Decompressed(raw, codec, path), _OUTPUT_BYTES)


def codec_of(path: str, opener: Opener) -> str | None:
    """The codec of a file, reading only its first bytes (and its first block, below)."""
    with opener(path) as raw:
        return _sniff(path, raw)


def _sniff(path: str, raw: IO[bytes]) -> str | None:
    """`detect_compression`, with one more proof where only the bytes speak (a plain name): the
    first block must decode, or the file is plain. A `.jsonl` line may start with xz's magic
    bytes and be no xz stream (hypothesis found one); it is then read as text and rejected line
    by line. Under a codec's name the name holds, so a damaged `.gz` is still a damaged file."""
    codec = detect_compression(path, raw.read(_HEAD_BYTES))
    raw.seek(0)
    if codec is not None and compression_by_name(path) is None:
        try:
            _Decompressed(raw, codec, path).read(1)
        except DamagedInput:
            codec = None
        raw.seek(0)
    return codec


def _decompressor(codec: str):
    if codec == "gzip":
        return zlib.decompressobj(zlib.MAX_WBITS | 16)
    if codec == "deflate":
        return zlib.decompressobj()
    if codec == "bzip2":
        return bz2.BZ2Decompressor()
    if codec == "lzma":
        return lzma.LZMADecompressor()
    return zstandard.ZstdDecompressor().decompressobj()


class _Decompressed(io.RawIOBase):
    """A compressed stream read as its content, a bounded piece at a time."""

    def __init__(self, raw: IO[bytes], codec: str, path: str) -> None:
        super().__init__()
        self._raw, self._codec, self._path = raw, codec, path
        self._restart()

    def _restart(self) -> None:
        self._raw.seek(0)
        self._decoder = _decompressor(self._codec)
        self._input = b""  # compressed bytes read and not yet given to the decoder
        self._started = False  # whether the current member has been given any byte
        self._spill = b""  # output decoded and not yet read (zstd's takes no output limit)
        self._position = 0
        self._ended = False

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        target = {io.SEEK_SET: offset, io.SEEK_CUR: self._position + offset}.get(whence)
        if target is None:
            raise io.UnsupportedOperation("a compressed stream's end is only known by reading it")
        if target < self._position:
            self._restart()
        while self._position < target and self.read(min(target - self._position, _OUTPUT_BYTES)):
            pass
        return self._position

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        while self._spill or not self._ended:
            data = self._spill or self._decode(len(view))
            if data:
                size = min(len(data), len(view))
                view[:size], self._spill = data[:size], data[size:]
                self._position += size
                return size
        return 0

    def _decode(self, size: int) -> bytes:
        """Up to `size` bytes of content; b"" when more input is needed or the stream ended."""
        limit = min(size, _OUTPUT_BYTES)
        decoder = self._decoder
        if decoder.eof:  # one member ended: another may follow (in unused_data; zlib may leave a stale unconsumed_tail beside it)
            self._input = decoder.unused_data + self._input
            self._decoder, self._started = _decompressor(self._codec), False
        elif self._codec in ("gzip", "deflate") and decoder.unconsumed_tail:
            return self._call(decoder.unconsumed_tail, limit)
        elif self._codec in ("bzip2", "lzma") and not decoder.needs_input:
            return self._call(b"", limit)
        if not self._input:
            self._input = self._raw.read(_ZSTD_INPUT_BYTES if self._codec == "zstd" else _INPUT_BYTES)
        if not self._input:
            if self._started and not self._decoder.eof:
                rest = self._call(b"", limit) if self._codec in ("gzip", "deflate") else b""
                if rest:  # zlib may still hold output of input it has taken
                    return rest
                self._ended = True
                raise DamagedInput(f"{self._path} ends before its {self._codec} stream does (truncated)")
            self._ended = True
            return b""
        data, self._input = self._input, b""
        if not self._started and not data.strip(b"\x00") and self._codec == "gzip":
            return b""  # zero padding after the last gzip member (tape blocks), as gzip -d allows
        self._started = True
        return self._call(data, limit)

    def _call(self, data: bytes, limit: int) -> bytes:
        try:
            if self._codec == "zstd":
                return self._decoder.decompress(data)
            return self._decoder.decompress(data, limit)
        except (zlib.error, OSError, EOFError, lzma.LZMAError, zstandard.ZstdError) as err:
            self._ended = True
            raise DamagedInput(f"{self._path} is not a readable {self._codec} stream here ({err})") from None

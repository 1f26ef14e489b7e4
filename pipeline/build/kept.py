"""What one run keeps for the next: start-up work that depends only on a tokenizer's bytes and
the libraries' versions, so a second run on the same tokenizer reads it back instead.

    kind          what                                              read back instead of
    same-bpe      tiktoken's verdict on a vocabulary (same_bpe.py)  about 1.5 s of checks
    vocabulary    a folder tokenizer's vocabulary, token -> id      0.16 s of get_vocab
    tiktoken      tiktoken's ranks, bytes -> id, of a vocabulary    0.25 s: building them, and
                  that passed every check (same_bpe.py)             the checks before them
    same-split    which characters past ASCII two regex engines     0.6 s of measuring
                  class alike under a pattern (same_split.py)

Entries live under `$MASKED_SHARDS_CACHE`, else `$XDG_CACHE_HOME/masked-shards`, else
`~/.cache/masked-shards`, one folder per kind, each named by a hash of everything it depends on
(`key`), written whole then renamed, so a reader sees an entry whole or not at all. A folder that
cannot be written, or an entry that cannot be read back, costs the work again, nothing else.
Tables are kept with `marshal` (plain dicts of str or bytes and ints: nothing in them runs when
read, unlike a pickle), whose format `key` names with the interpreter's version. Like a pickle it
is not made for data from others: the folder is the user's own, as pip's cache is.
"""

from __future__ import annotations

import hashlib
import marshal
import os
import sys
import tempfile
from pathlib import Path


def key(*parts: str | bytes) -> str:
    """The name of an entry that depends on `parts` (a file's sha256, versions, ...)."""
    return hashlib.sha256(b"\0".join(p.encode() if isinstance(p, str) else p for p in parts)).hexdigest()


def folder(kind: str) -> Path:
    if os.environ.get("MASKED_SHARDS_CACHE"):
        return Path(os.environ["MASKED_SHARDS_CACHE"]) / kind
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "masked-shards" / kind


def read(kind: str, name: str) -> bytes | None:
    try:
        return (folder(kind) / name).read_bytes()
    except OSError:
        return None


def keep(kind: str, name: str, data: bytes) -> None:
    """Kept for the next run (written whole, then renamed); where it cannot be written, nothing is kept."""
    place = folder(kind)
    try:
        place.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("wb", dir=place, delete=False) as handle:
            handle.write(data)
        os.replace(handle.name, place / name)
    except OSError:
        pass


def read_table(kind: str, name: str) -> dict | None:
    """A dict kept with `keep_table`, or None when absent or unreadable."""
    data = read(kind, name)
    if data is None:
        return None
    try:
        table = marshal.loads(data)
    except (EOFError, ValueError, TypeError):
        return None
    return table if isinstance(table, dict) else None


def keep_table(kind: str, name: str, table: dict) -> None:
    keep(kind, name, marshal.dumps(table))


# What names the format of a kept table, for `key`.
TABLE_FORMAT = f"marshal {marshal.version} python {sys.version_info[0]}.{sys.version_info[1]}"

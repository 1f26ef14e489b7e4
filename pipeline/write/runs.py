"""Sorted runs: how rows reach their shards in bounded memory, whatever the input size.

A shard's rows come from every worker, and its bytes must not depend on which worker made which
row. Gathering each shard's rows in one place (a GroupByKey) holds every row in memory on a local
runner. Instead, like an external sort:

1. Each worker spills the row batches it makes, every few tens of MB, as a *run*: one Arrow IPC
   file per split, its rows sorted by `key = hash(seed, example_id)` (ties by id), carrying that key.
2. Once every run is written, each split's shard count is known, and shard i of B covers the
   key range [i * 2^64 / B, (i + 1) * 2^64 / B): a contiguous slice of every run.
3. Each shard is written by merging its slices of all runs, one row group at a time, cut at every
   `ROW_GROUP_ROWS`-th key of the shard's merged key order.

    run A  keys: 03 17 42 80 91 ...      shard 0 of 2: keys [00, 80) -> A[03 17 42] + B[11 64]
    run B  keys: 11 64 85 ...            shard 1 of 2: keys [80, ff] -> A[80 91]    + B[85]

Only the key column of each run is read whole (8 bytes a row); rows are read one record batch of
a run at a time. The output is a function of the set of rows alone: byte-identical however the rows
were spread over workers and runs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from itertools import chain
from typing import IO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from masked_shards.write.arrow import ShardWriter
from masked_shards.write.shards import ROW_GROUP_ROWS, SCHEMA, stable_hashes
from masked_shards.write.side_by_side import InOrder

KEY = "key"
TIEBREAK = "window_start"
RUNS = "_runs"  # the folder under the output that holds runs while a job writes its shards
_RUN_GROUP_ROWS = 1024
_RUN_GROUP_BYTES = 1 << 20
_SPACE = 1 << 64


def _order(table: pa.Table) -> list[tuple[str, str]]:
    """Rows sort by (key, example_id), then by `window_start` where rows carry one: the windows
    of a strided document, or packed rows whose first pieces are pieces of one example, share an
    id and are told apart by where they begin in it."""
    return [(KEY, "ascending"), ("example_id", "ascending")] + ([(TIEBREAK, "ascending")] if TIEBREAK in table.column_names else [])


def keyed_runs(batches: list[pa.RecordBatch], seed: int) -> dict[str, pa.Table]:
    """Rows of `batches` (with `example_id` and `split` columns) per split, each sorted by
    (key, example_id[, window_start]) with the key added as a uint64 column."""
    table = pa.Table.from_batches(batches)
    ids = table.column("example_id").to_pylist()
    keys = pa.array(stable_hashes(seed, ids))
    table = table.append_column(KEY, keys)
    runs = {}
    splits = pc.unique(table.column("split")).to_pylist()
    for split in splits:
        part = table if len(splits) == 1 else table.filter(pc.equal(table.column("split"), split))  # a filter copies every row
        runs[split] = part.sort_by(_order(part))
    return runs


def write_run(table: pa.Table, sink: IO[bytes]) -> None:
    """A run file: an Arrow IPC file, LZ4-compressed, in record batches small enough that a shard
    reads little beyond its slice. Runs are read back only by this job, so they are written in
    Arrow's own layout (a copy and fast compression), not encoded as Parquet: that took 0.24
    CPU-s to write and 0.53 CPU-s to read back for 55k chats, the IPC file 0.07 and 0.07.

    A merge holds one batch of every run at once, and the number of runs grows with the input,
    so a batch is kept near 1 MB of rows (at most 1,024 rows): 1,024 packed rows of 2,048
    tokens would be 27 MB a run, which made a packed run's memory grow with its input."""
    rows = max(1, min(_RUN_GROUP_ROWS, _RUN_GROUP_BYTES * table.num_rows // max(table.nbytes, 1)))
    with pa.ipc.new_file(sink, table.schema, options=pa.ipc.IpcWriteOptions(compression="lz4")) as writer:
        writer.write_table(table, max_chunksize=rows)


class RunReader:
    """One run, opened for merging: its keys in memory (read alone: an IPC file reader fetches
    only the buffers of the fields it is asked for), its rows read a batch at a time."""

    def __init__(self, source: IO[bytes]) -> None:
        self._file = pa.ipc.open_file(source)
        keys_only = pa.ipc.open_file(source, options=pa.ipc.IpcReadOptions(included_fields=[self._file.schema.get_field_index(KEY)]))
        keys = [keys_only.get_batch(i).column(0).to_numpy() for i in range(keys_only.num_record_batches)]
        self.keys = np.concatenate(keys) if keys else np.zeros(0, dtype=np.uint64)
        self._starts = np.cumsum([0, *map(len, keys)])
        self._cached: tuple[int, pa.Table] | None = None

    def slice(self, low: int, high: int | None) -> pa.Table | None:
        """Rows whose key lies in [low, high) (high None: to the end of the key space)."""
        first = int(np.searchsorted(self.keys, np.uint64(low), side="left"))
        last = len(self.keys) if high is None else int(np.searchsorted(self.keys, np.uint64(high), side="left"))
        if first == last:
            return None
        groups = range(int(np.searchsorted(self._starts, first, side="right")) - 1, int(np.searchsorted(self._starts, last, side="left")))
        tables = [self._group(g) for g in groups]
        offset = int(self._starts[groups[0]])
        return pa.concat_tables(tables).slice(first - offset, last - first)

    def _group(self, index: int) -> pa.Table:
        if self._cached is None or self._cached[0] != index:
            self._cached = (index, pa.Table.from_batches([self._file.get_batch(index)]))
        return self._cached[1]


@dataclass(frozen=True)
class ShardRange:
    """Shard `index` of `count` of a split: the rows whose key lies in [low, high)."""

    split: str
    index: int
    count: int
    low: int
    high: int | None


def plan_shards(split: str, keys: np.ndarray, buckets: int) -> list[ShardRange]:
    """The shards of a split from all its keys: `buckets` equal key ranges, empty ones skipped and
    the rest numbered in key order, so every shard written has rows and `-of-N` is the whole set."""
    edges = [(b * _SPACE) // buckets for b in range(buckets)] + [None]
    filled = [b for b in range(buckets) if _count_in(keys, edges[b], edges[b + 1])]
    return [ShardRange(split, n, len(filled), edges[b], edges[b + 1]) for n, b in enumerate(filled)]


def _count_in(keys: np.ndarray, low: int, high: int | None) -> int:
    first = np.searchsorted(keys, np.uint64(low), side="left")
    last = len(keys) if high is None else np.searchsorted(keys, np.uint64(high), side="left")
    return int(last - first)


def merge_shard(shard: ShardRange, runs: list[RunReader], sink: IO[bytes], schema: pa.Schema = SCHEMA, output_format: str = "parquet") -> dict[str, object]:
    """Write one shard's bytes to `sink` (Parquet, or an Arrow stream: arrow.py), row group by row
    group, in the columns of `schema` (shards.output_schema); returns rows, bytes, sha256."""
    keys = np.sort(np.concatenate([r.keys[(r.keys >= np.uint64(shard.low)) & (_below(r.keys, shard.high))] for r in runs]))
    cuts = [int(k) for k in keys[::ROW_GROUP_ROWS]] + [shard.high]
    hashing = _HashingSink(sink)
    writer = ShardWriter(hashing, schema, output_format)
    # A shard's next row group is read, sorted and cast while this one is written (pyarrow's work,
    # without the interpreter lock): a packed shard of 200k chats took 1.05 s, 0.29 s of it reading.
    # One group is held besides the one being written.
    ahead: InOrder[pa.Table] = InOrder(1)
    started = (ahead.start(_row_group, runs, low, high, writer.schema) for low, high in zip(cuts, cuts[1:]))
    for group in chain(chain.from_iterable(started), ahead.finish()):
        writer.write(group, ROW_GROUP_ROWS)
    writer.close()
    return {"rows": len(keys), "bytes": hashing.size, "sha256": hashing.digest()}


def _row_group(runs: list[RunReader], low: int, high: int | None, schema: pa.Schema) -> pa.Table:
    """The rows of every run with keys in [low, high), in the shard's order and columns.

    Slices that follow one another in key order are laid end to end as they are, with no sort:
    packed runs hold whole windows, which are ranges of the key space, so a row group of packed
    rows is mostly one run's slice or two. Sorting one takes 0.1 s (a copy of 55 MB of 2,048
    rows), on the path from the last window packed to the shard written. Rows with equal keys
    (pieces of one example) are sorted as always."""
    pieces = sorted((piece for piece in (r.slice(low, high) for r in runs) if piece is not None), key=lambda piece: piece.column(KEY)[0].as_py())
    group = pa.concat_tables(pieces)
    keys = group.column(KEY).to_numpy()
    group = group.combine_chunks() if (keys[1:] > keys[:-1]).all() else group.sort_by(_order(group))  # one chunk either way: the same bytes written
    return group.select(schema.names).cast(schema)


def _below(keys: np.ndarray, high: int | None) -> np.ndarray:
    return np.ones(len(keys), dtype=bool) if high is None else keys < np.uint64(high)


class _HashingSink:
    """A write-only file that passes bytes on and keeps their sha256 and count, so a shard is
    described for the manifest without reading it back."""

    def __init__(self, sink: IO[bytes]) -> None:
        self._sink, self._hash, self.size, self.closed = sink, hashlib.sha256(), 0, False

    def write(self, data: bytes) -> int:
        self._sink.write(data)
        self._hash.update(data)
        self.size += len(data)
        return len(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def digest(self) -> str:
        return self._hash.hexdigest()

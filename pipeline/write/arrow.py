"""Shard files in either format: `--output-format parquet` (the default) or `arrow`, the layout
`datasets.DatasetDict.save_to_disk` writes, so `datasets.load_from_disk("OUT/data")` (and
LLaMA-Factory's `tokenized_path`, which calls it) returns the splits with nothing converted:

    OUT/data/dataset_dict.json                    {"splits": ["train", "validation"]}
    OUT/data/train/data-00000-of-00002.arrow      Arrow IPC streams, one record batch per 2,048 rows
    OUT/data/train/data-00001-of-00002.arrow
    OUT/data/train/dataset_info.json              the features (columns and types)
    OUT/data/train/state.json                     the split's files, in order, and a fingerprint

The rows, their order, the shard split and the bytes' determinism are those of Parquet (runs.py
writes both from the same merge); only the container differs. Arrow files are uncompressed and
memory-mapped by `datasets`, so they are larger than zstd Parquet and load without decoding.
The streams carry the schema `datasets` derives from the columns (nullable fields, its
`huggingface` metadata), so `load_from_disk` maps them as they are instead of casting a copy.

`ShardReader` reads one shard of either format a record batch at a time, for the checks
(validate, inspect, the loader and smoke test) and the report's first rows.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Iterator, Sequence
from typing import IO

import pyarrow as pa
import pyarrow.parquet as pq

DATASET_DICT = "dataset_dict.json"
SPLIT_FILES = ("dataset_info.json", "state.json")


def stream_schema(schema: pa.Schema) -> pa.Schema:
    """The schema `datasets` gives these columns: written into Arrow shards so that loading them
    needs no cast (a cast would copy every memory-mapped column)."""
    from datasets import Features  # only Arrow runs need it

    return Features.from_arrow_schema(schema).arrow_schema


def layout_files(schema: pa.Schema, shards: Sequence[dict[str, object]]) -> dict[str, bytes]:
    """The save_to_disk metadata beside the Arrow shards, by path under OUT: dataset_dict.json and
    each split's dataset_info.json and state.json. Their bytes depend only on the schema and the
    shards' names and checksums, so they are as reproducible as the shards."""
    from datasets import Features

    features = Features.from_arrow_schema(schema).to_dict()
    info = {"citation": "", "description": "", "features": features, "homepage": "", "license": ""}
    splits = sorted({str(s["split"]) for s in shards}, key=lambda split: (split != "train", split))
    files = {posixpath.join("data", DATASET_DICT): _json({"splits": splits})}
    for split in splits:
        mine = sorted((s for s in shards if s["split"] == split), key=lambda s: str(s["path"]))
        fingerprint = hashlib.sha256("".join(str(s["sha256"]) for s in mine).encode()).hexdigest()[:16]
        state = {
            "_data_files": [{"filename": posixpath.basename(str(s["path"]))} for s in mine],
            "_fingerprint": fingerprint,
            "_format_columns": None,
            "_format_kwargs": {},
            "_format_type": None,
            "_output_all_columns": False,
            "_split": split,
        }
        files[posixpath.join("data", split, "dataset_info.json")] = _json(info)
        files[posixpath.join("data", split, "state.json")] = _json(state)
    return files


def _json(value: object) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True) + "\n").encode("utf-8")


class ShardWriter:
    """Row groups into one shard file, Parquet (zstd, fixed settings) or an Arrow stream.

    Parquet dictionary-encodes only `source`, the one column of few distinct values: token ids
    are too many and too varied for a dictionary to pay (for 55k chats, 12.2 MB and 0.20 CPU-s
    without one, 13.6 MB and 0.28 CPU-s with)."""

    def __init__(self, sink: IO[bytes], schema: pa.Schema, output_format: str) -> None:
        self._arrow = output_format == "arrow"
        self.schema = stream_schema(schema) if self._arrow else schema
        if self._arrow:
            self._writer = pa.ipc.new_stream(sink, self.schema)
        else:
            self._writer = pq.ParquetWriter(sink, schema, compression="zstd", use_dictionary=[n for n in ("source",) if n in schema.names], write_statistics=False)

    def write(self, group: pa.Table, rows: int) -> None:
        if self._arrow:
            self._writer.write_table(group, max_chunksize=rows)
        else:
            self._writer.write_table(group, row_group_size=rows)

    def close(self) -> None:
        self._writer.close()


class ShardReader:
    """One shard of either format, by its name: schema, rows, and its record batches (Parquet row
    groups, or the Arrow stream's batches, which the writer cut at the same rows). An Arrow shard
    is read batch by batch; from a memory map (`pa.memory_map`) that reads nothing until used."""

    def __init__(self, source: str | pa.NativeFile | IO[bytes], name: str) -> None:
        self._parquet, self._batches = None, None
        if name.endswith(".arrow"):
            stream = pa.ipc.open_stream(source)
            self.schema, self._batches = stream.schema, list(stream)
        else:
            self._parquet = pq.ParquetFile(source)
            self.schema = self._parquet.schema_arrow

    @property
    def num_row_groups(self) -> int:
        return self._parquet.num_row_groups if self._parquet is not None else len(self._batches)

    @property
    def num_rows(self) -> int:
        return self._parquet.metadata.num_rows if self._parquet is not None else sum(b.num_rows for b in self._batches)

    def iter_batches(self, batch_size: int, row_groups: Sequence[int] | None = None, columns: Sequence[str] | None = None) -> Iterator[pa.RecordBatch]:
        if self._parquet is not None:
            yield from self._parquet.iter_batches(batch_size=batch_size, row_groups=row_groups, columns=columns)
            return
        for index in range(len(self._batches)) if row_groups is None else row_groups:
            batch = self._batches[index]
            batch = batch.select(list(columns)) if columns is not None else batch
            for start in range(0, batch.num_rows, batch_size):
                yield batch.slice(start, batch_size)

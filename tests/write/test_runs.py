"""Sorted runs merge into shards whose bytes depend on the rows alone, never on how they were spread."""

from __future__ import annotations

import hashlib
import io
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from masked_shards.records import BATCH_SCHEMA
from masked_shards.write.runs import RunReader, keyed_runs, merge_shard, plan_shards, write_run
from masked_shards.write.shards import ROW_GROUP_ROWS, SCHEMA, shard_count, stable_hash


def _batch(ids: list[str]) -> pa.RecordBatch:
    """Rows whose content follows from their id alone (n tokens for id n), half in validation."""
    numbers = [int(i.split(":")[1]) for i in ids]
    return pa.RecordBatch.from_pylist(
        [
            {
                "input_ids": list(range(n % 7 + 1)),
                "labels": [-100] + list(range(1, n % 7 + 1)),
                "attention_mask": [1] * (n % 7 + 1),
                "example_id": i,
                "source": "f.jsonl",
                "split": "train" if n % 2 else "validation",
                "truncated": False,
                "split_at_boundaries": False,
                "tokens_before_truncation": n % 7 + 1,
            }
            for i, n in zip(ids, numbers)
        ],
        schema=BATCH_SCHEMA,
    )


def _shards(chunks: list[list[str]], seed: int, num_shards: int) -> dict[tuple[str, int, int], bytes]:
    """Spill one run per chunk and split, then merge every shard, as the job does."""
    runs: dict[str, list[bytes]] = {}
    for chunk in chunks:
        for split, table in keyed_runs([_batch(chunk)], seed).items():
            sink = io.BytesIO()
            write_run(table, sink)
            runs.setdefault(split, []).append(sink.getvalue())
    written = {}
    for split, blobs in runs.items():
        readers = [RunReader(io.BytesIO(blob)) for blob in blobs]
        keys = np.sort(np.concatenate([r.keys for r in readers]))
        for shard in plan_shards(split, keys, shard_count(len(keys), num_shards, 100_000)):
            sink = io.BytesIO()
            info = merge_shard(shard, readers, sink)
            assert (info["rows"], info["bytes"], info["sha256"]) == (pq.ParquetFile(io.BytesIO(sink.getvalue())).metadata.num_rows, len(sink.getvalue()), hashlib.sha256(sink.getvalue()).hexdigest())
            written[(split, shard.index, shard.count)] = sink.getvalue()
    return written


IDS = [f"f.jsonl:{n}" for n in range(9_000)]


def test_shard_bytes_do_not_depend_on_how_rows_were_spread_over_runs():
    whole = _shards([IDS], seed=0, num_shards=3)
    shuffled = random.Random(1).sample(IDS, len(IDS))
    spread = _shards([shuffled[:10], shuffled[10:4000], shuffled[4000:4001], shuffled[4001:]], seed=0, num_shards=3)
    assert whole == spread
    by_key = sorted(IDS, key=lambda i: stable_hash(0, i))  # runs of key ranges, as packed windows are: merged with no sort
    assert whole == _shards([by_key[:3000], by_key[3000:3001], by_key[3001:]], seed=0, num_shards=3)
    assert whole != _shards([IDS], seed=1, num_shards=3)


def test_every_row_lands_once_in_key_order_in_fixed_row_groups():
    written = _shards([IDS[:5000], IDS[5000:]], seed=0, num_shards=2)
    assert sorted(written) == [("train", 0, 2), ("train", 1, 2), ("validation", 0, 2), ("validation", 1, 2)]
    seen = []
    for (split, _, _), data in sorted(written.items()):
        table = pq.read_table(io.BytesIO(data))
        assert table.schema.equals(SCHEMA)
        ids = table.column("example_id").to_pylist()
        keys = [stable_hash(0, i) for i in ids]
        assert keys == sorted(keys) and all((int(i.split(":")[1]) % 2 == 1) == (split == "train") for i in ids)
        groups = [pq.ParquetFile(io.BytesIO(data)).metadata.row_group(g).num_rows for g in range(pq.ParquetFile(io.BytesIO(data)).num_row_groups)]
        assert groups[:-1] == [ROW_GROUP_ROWS] * (len(groups) - 1) and len(groups) > 1
        seen += ids
    assert sorted(seen) == sorted(IDS)


def test_key_range_shards_are_balanced():
    keys = np.sort(np.array([stable_hash(0, f"f:{n}") for n in range(8000)], dtype=np.uint64))
    shards = plan_shards("train", keys, 4)
    sizes = [int(np.sum((keys >= np.uint64(s.low)) & ((keys < np.uint64(s.high)) if s.high is not None else True))) for s in shards]
    assert len(shards) == 4 and min(sizes) > 1800 and sum(sizes) == 8000


def test_empty_key_ranges_get_no_shard_and_the_rest_are_numbered_in_order():
    keys = np.sort(np.array([stable_hash(0, f"f:{n}") for n in range(5)], dtype=np.uint64))
    buckets = {int(k) * 5 >> 64 for k in keys}
    assert len(buckets) < 5  # this input really leaves a key range empty
    shards = plan_shards("train", keys, 5)
    assert [(s.index, s.count) for s in shards] == [(n, len(buckets)) for n in range(len(buckets))]


def test_a_run_of_wide_rows_keeps_each_record_batch_near_a_megabyte():
    """A merge holds one record batch of every run at once, and runs multiply with the input: a
    batch of 1,024 packed rows of 2,048 tokens (27 MB) per run made packed jobs' memory grow."""
    wide = pa.table({"input_ids": pa.array([np.arange(2048, dtype=np.int32)] * 300, pa.list_(pa.int32())), "example_id": [f"e{n}" for n in range(300)]})
    narrow = pa.table({"input_ids": pa.array([np.arange(8, dtype=np.int32)] * 3000, pa.list_(pa.int32())), "example_id": [f"e{n}" for n in range(3000)]})
    for table, most_rows in ((wide, (1 << 20) // (2048 * 4)), (narrow, 1024)):
        sink = io.BytesIO()
        write_run(table, sink)
        run = pa.ipc.open_file(io.BytesIO(sink.getvalue()))
        sizes = [run.get_batch(n).num_rows for n in range(run.num_record_batches)]
        assert sum(sizes) == table.num_rows and max(sizes) <= most_rows + 1 and max(sizes) >= most_rows // 2

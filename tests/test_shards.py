"""Shard layout decisions are stable, balanced and byte-for-byte repeatable."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pyarrow.parquet as pq

from pipeline.records import TokenizedRow
from pipeline.shards import SCHEMA, parquet_bytes, shard_count, shard_for, shard_name, shard_number, split_for, stable_hash


def _row(n: int) -> TokenizedRow:
    return TokenizedRow(f"f.jsonl:{n}", "f.jsonl", "train", [n, n + 1], [-100, n + 1], [1, 1])


def test_stable_hash_is_the_same_in_another_process():
    """Python's own hash() is salted per process; ours must not be, or shards would move."""
    code = "from pipeline.shards import stable_hash; print(stable_hash('split', 'f.jsonl:0'))"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    other = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert int(other.stdout) == stable_hash("split", "f.jsonl:0")


def test_validation_fraction_is_respected_and_stable():
    ids = [f"data.jsonl:{n}" for n in range(20_000)]
    validation = [i for i in ids if split_for(i, 0.1) == "validation"]
    assert 1800 < len(validation) < 2200
    assert set(validation) <= {i for i in ids if split_for(i, 0.2) == "validation"}
    assert all(split_for(i, 0.0) == "train" for i in ids[:1000])


def test_shards_are_balanced_and_seeded():
    counts = [0] * 4
    for n in range(8000):
        counts[shard_for(f"f:{n}", 0, 4)] += 1
    assert min(counts) > 1800
    moved = sum(shard_for(f"f:{n}", 0, 4) != shard_for(f"f:{n}", 1, 4) for n in range(1000))
    assert moved > 500


def test_shard_count_and_names():
    assert shard_count(0, 0, 100) == 0  # an empty split is not written
    assert shard_count(250, 0, 100) == 3
    assert shard_count(250, 8, 100) == 8
    assert shard_count(4, 8, 100) == 4  # never more shards than rows
    assert shard_name("train", 2, 10) == "train-00002-of-00010.parquet"


def test_parquet_bytes_do_not_depend_on_input_order():
    rows = [_row(n) for n in range(50)]
    first = parquet_bytes(rows, seed=0)
    assert first == parquet_bytes(list(reversed(rows)), seed=0)
    assert first != parquet_bytes(rows, seed=1)
    table = pq.read_table(io.BytesIO(first))
    assert table.schema.equals(SCHEMA)
    assert sorted(table.column("example_id").to_pylist()) == sorted(r.example_id for r in rows)


def test_empty_buckets_get_no_shard_and_the_rest_are_numbered_in_order():
    """5 rows in 5 buckets: the hash leaves some empty; the written set is still numbered 0..K-1 of K."""
    ids = [f"f:{n}" for n in range(5)]
    buckets = [shard_for(i, 0, shard_count(len(ids), 8, 100)) for i in ids]
    assert len(set(buckets)) < 5  # this input really leaves a bucket empty
    numbers = sorted({shard_number(b, buckets) for b in buckets})
    assert numbers == [(index, len(set(buckets))) for index in range(len(set(buckets)))]

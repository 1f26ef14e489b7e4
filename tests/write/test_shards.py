"""Shard layout decisions are stable, balanced and byte-for-byte repeatable."""

from __future__ import annotations

import os
import subprocess
import sys

from masked_shards.write.shards import shard_count, shard_name, split_for, stable_hash, stable_hashes


def test_stable_hash_is_the_same_in_another_process():
    """Python's own hash() is salted per process; ours must not be, or shards would move."""
    code = "from masked_shards.write.shards import stable_hash; print(stable_hash('split', 'f.jsonl:0'))"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    other = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert int(other.stdout) == stable_hash("split", "f.jsonl:0")


def test_hashes_of_many_ids_are_their_hashes_one_by_one():
    ids = ["f.jsonl:0", "f.jsonl:1", "données.jsonl:7", "", "x" * 300, "a\x1fb"]
    for seed in (0, 17, "mix"):
        assert stable_hashes(seed, ids).tolist() == [stable_hash(seed, i) for i in ids]
    assert stable_hashes(0, []).tolist() == []


def test_validation_fraction_is_respected_and_stable():
    ids = [f"data.jsonl:{n}" for n in range(20_000)]
    validation = [i for i in ids if split_for(i, 0.1) == "validation"]
    assert 1800 < len(validation) < 2200
    assert set(validation) <= {i for i in ids if split_for(i, 0.2) == "validation"}
    assert all(split_for(i, 0.0) == "train" for i in ids[:1000])


def test_shard_count_and_names():
    assert shard_count(0, 0, 100) == 0  # an empty split is not written
    assert shard_count(250, 0, 100) == 3
    assert shard_count(250, 8, 100) == 8
    assert shard_count(4, 8, 100) == 4  # never more shards than rows
    assert shard_name("train", 2, 10) == "train-00002-of-00010.parquet"

"""Writing: deterministic shard assignment, sorted runs merged into shards, the manifest. Knows nothing of Beam."""

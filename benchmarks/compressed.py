"""Reading compressed inputs: throughput against the plain file, and memory on a large one.

    python benchmarks/compressed.py [--examples 200000] [--large-gb 1.1] [--cache /tmp/masked-shards-bench]

Reads the benchmark's chat JSONL (data.py) with the job's own reader (`read_records`: chunked
lines, UTF-8 check, JSON parse; no tokenizing), plain and as `.jsonl.gz` / `.jsonl.zst` copies,
each in a fresh (spawned) process whose peak RSS is reported. Then writes a gzip file of at least
`--large-gb` GB uncompressed (the chat file repeated), reads it the same way, and deletes it.
"""

from __future__ import annotations

import argparse
import gzip
import json
import multiprocessing
import resource
import sys
import time
from pathlib import Path

import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data import dataset_file  # noqa: E402

from masked_shards.read.sources import InputFile, RawRecord, read_records  # noqa: E402


def _read(path: str, answer) -> None:
    """Read every record of `path`; send (records, seconds, peak RSS in MB) back."""
    start = time.perf_counter()
    unit = InputFile("bench", Path(path).name, path, "jsonl")
    records = sum(isinstance(item, RawRecord) for item in read_records(unit, lambda p: open(p, "rb")))
    answer.send((records, time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def measure(path: Path) -> dict[str, float]:
    receive, send = multiprocessing.Pipe(duplex=False)
    child = multiprocessing.get_context("spawn").Process(target=_read, args=(str(path), send))
    child.start()
    records, seconds, peak = receive.recv()
    child.join()
    return {"records": records, "seconds": round(seconds, 2), "records_per_s": round(records / seconds), "file_mb": round(path.stat().st_size / 1e6, 1), "peak_rss_mb": round(peak)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=200_000)
    parser.add_argument("--large-gb", type=float, default=1.1)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/masked-shards-bench"))
    args = parser.parse_args()
    plain = dataset_file(args.examples, args.cache)
    data = plain.read_bytes()
    copies = {"plain": plain, "gzip": plain.with_name(plain.name + ".gz"), "zstd": plain.with_name(plain.name + ".zst")}
    copies["gzip"].write_bytes(gzip.compress(data, 6))
    copies["zstd"].write_bytes(zstandard.ZstdCompressor(level=3, write_checksum=True).compress(data))
    results = {name: {**measure(path), "uncompressed_mb": round(len(data) / 1e6, 1)} for name, path in copies.items()}
    large = args.cache / "large.jsonl.gz"
    with gzip.open(large, "wb", compresslevel=1) as out:
        written = 0
        while written < args.large_gb * 1e9:
            out.write(data)
            written += len(data)
    results["large_gzip"] = {**measure(large), "uncompressed_mb": round(written / 1e6, 1)}
    large.unlink()
    for path in copies.values():
        if path != plain:
            path.unlink()
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

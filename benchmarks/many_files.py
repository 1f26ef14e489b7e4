"""A corpus sharded into many tiny files: time and peak memory of the whole job, and the sizes of
what it writes beside the shards (manifest, report, HTML page, per-file counts).

    .venv/bin/python benchmarks/many_files.py --files 2000,50000

Each file holds ten short prompt/completion records (the first one a broken line, so the
rejection path is counted too). The files are written once per count under
/tmp/masked-shards-many-files/<count>/ (50,000 files are about 200 MB of file system entries;
never committed) and read as one `--input` glob. Each run is a fresh process
(`masked-shards run --smoke-test off --quiet`), measured by measure.py: wall seconds and the
peak RSS of its process tree. Prints one Markdown row per count.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from measure import run_measured

DATA = Path(tempfile.gettempdir()) / "masked-shards-many-files"
RECORDS_PER_FILE = 10
WRITTEN = ("manifest.json", "coverage_report.json", "coverage_report.html", "coverage_by_file.jsonl")


def corpus(files: int) -> Path:
    """The folder of `files` tiny JSONL files, written once (a marker file says it is whole)."""
    folder = DATA / str(files)
    if (folder / ".complete").exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for f in range(files):
        lines = ["{broken"] if f == 0 else []
        lines += [json.dumps({"prompt": f"Question {f}.{n}: what is {n} + {f}?", "completion": f"It is {n + f}."}) for n in range(RECORDS_PER_FILE)]
        (folder / f"part-{f:06d}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / ".complete").touch()
    return folder


def measure(files: int, output: Path) -> dict[str, object]:
    shutil.rmtree(output, ignore_errors=True)
    command = [sys.executable, "-m", "masked_shards.cli", "run", "--smoke-test", "off", "--quiet", "--input", f"{corpus(files)}/*.jsonl", "--output", str(output)]
    measured = run_measured(command, dict(os.environ))
    sizes = {name: (output / name).stat().st_size for name in WRITTEN}
    return {"files": files, "seconds": round(measured.wall_seconds, 1), "peak_rss_mb": round(measured.peak_rss_bytes / 2**20), **sizes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", default="2000,50000", help="comma-separated file counts")
    parser.add_argument("--output", default=str(DATA / "out"), help="where each run writes (replaced)")
    args = parser.parse_args()
    print("| files | seconds | peak RSS (MB) | " + " | ".join(WRITTEN) + " (bytes) |")
    print("| --- " * (3 + len(WRITTEN)) + "|")
    for files in (int(n) for n in args.files.split(",")):
        row = measure(files, Path(args.output))
        print("| " + " | ".join(f"{row[k]:,}" if isinstance(row[k], int) else str(row[k]) for k in ("files", "seconds", "peak_rss_mb", *WRITTEN)) + " |", flush=True)


if __name__ == "__main__":
    main()

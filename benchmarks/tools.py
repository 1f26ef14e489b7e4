"""Tool-calling data against plain chat, per token: is the job slower on agentic records?

    python benchmarks/tools.py [--tokens 4500000] [--repeats 3] [--cache benchmarks/.cache]

Tool data: ../shared/data/glaive_toolcall_en_demo.json (300 real conversations with tool
definitions, function calls and their results, in the ShareGPT layout our reader takes as it is),
repeated until it holds about `--tokens` tokens; copy k > 0 of a record gets " [k]" after its first
human turn, as data.py marks copies, so no two records are identical. Plain chat: the benchmark's
alpaca + sharegpt file (data.py) of about the same number of tokens. Both run as `masked-shards
run --template qwen2.5 --tokenizer <Qwen2>` (a template that renders tools, calls and results),
each a whole fresh process; runs are interleaved and the medians reported. Tokens per second are
the job's own output tokens (its coverage report) over the whole process's seconds, start-up
included, so the two files are sized alike for start-up to weigh alike.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from datetime import datetime
from pathlib import Path

from data import SHARED, dataset_file, tokenizer_dir, written_once
from measure import run_measured

TOOL_CORPUS = "glaive_toolcall_en_demo.json"
# Measured once on the two sources through qwen2.5 with Qwen2's vocabulary: tokens per record.
PLAIN_TOKENS_PER_RECORD = 105.8  # qwen2.5 adds its default system turn to each
TOOL_TOKENS_PER_RECORD = 574.0


def tool_file(records: int, cache: Path) -> Path:
    """`records` glaive records, repeated and marked, as one JSON array (the corpus's own layout)."""
    source = SHARED / TOOL_CORPUS
    path = cache / "data" / f"tools_{records}.json"
    if not path.is_file() and not source.is_file():
        raise SystemExit(f"this benchmark needs {source} (clone beside ../shared/data).")

    def write(out) -> None:
        base = json.loads(source.read_text(encoding="utf-8"))
        copies = []
        for i in range(records):
            copy, position = divmod(i, len(base))
            record = json.loads(json.dumps(base[position]))
            if copy:
                first = next(turn for turn in record["conversations"] if turn["from"] == "human")
                first["value"] += f" [{copy}]"
            copies.append(record)
        json.dump(copies, out, ensure_ascii=False)

    return written_once(path, write)


def run_once(data: Path, tokenizer: Path) -> dict[str, float]:
    """One whole `masked-shards run`: seconds, output tokens, records written."""
    with tempfile.TemporaryDirectory(prefix="masked-shards-bench-") as scratch:
        output = Path(scratch) / "out"
        command = [sys.executable, "run_pipeline.py", "--input", str(data), "--output", str(output), "--tokenizer", str(tokenizer), "--template", "qwen2.5", "--max-length", "8192", "--smoke-test", "off", "--quiet"]
        measured = run_measured(command, {**os.environ, "HF_HUB_OFFLINE": "1"})
        report = json.loads((output / "coverage_report.json").read_text(encoding="utf-8"))
    return {"seconds": measured.wall_seconds, "tokens": report["tokens_total"], "rows": report["rows_written"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4_500_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=Path(__file__).resolve().parent / ".cache")
    args = parser.parse_args()
    tokenizer = tokenizer_dir("qwen2", args.cache)
    files = {"plain chat": dataset_file(round(args.tokens / PLAIN_TOKENS_PER_RECORD), args.cache), "tool calling": tool_file(round(args.tokens / TOOL_TOKENS_PER_RECORD), args.cache)}
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in files}
    for _ in range(args.repeats):
        for name, data in files.items():
            samples[name].append(run_once(data, tokenizer))
            print(f"{name}: {samples[name][-1]}", file=sys.stderr)
    lines = [f"## Tool calling against plain chat, {datetime.now().isoformat(timespec='seconds')}", "", f"Qwen2, --template qwen2.5, median of {args.repeats}, load average {os.getloadavg()[0]:.1f} at end", ""]
    lines += ["| data | records | tokens | seconds | tokens/s |", "| --- | ---: | ---: | ---: | ---: |"]
    for name, runs in samples.items():
        seconds = statistics.median(r["seconds"] for r in runs)
        lines.append(f"| {name} | {runs[0]['rows']:,} | {runs[0]['tokens']:,} | {seconds:.2f} | {runs[0]['tokens'] / seconds:,.0f} |")
    print("\n".join(lines))
    results = Path(__file__).resolve().parent / "results" / f"{datetime.now():%Y-%m-%d-%H%M}-tools.md"
    results.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"\nwritten to {results}")


if __name__ == "__main__":
    main()

"""Throughput of the job: rows/s and tokens/s, end to end through Beam and for the core alone.

    python benchmarks/throughput.py                 # demo data + ../shared/data/alpaca_5000.json
    python benchmarks/throughput.py --beam-args "--direct_num_workers=2 --direct_running_mode=multi_processing"

End-to-end numbers include Beam's start-up and the writing of shards, report and manifest;
`core` numbers are the Beam-free per-example work (render, encode, label) in one process,
which is what each Beam worker does. Corpora in ../shared are optional: a missing one is
reported and skipped, never required.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.config import DEMO_INPUTS, PipelineConfig  # noqa: E402
from pipeline.formats import RawRecord, file_kind, iter_records, to_example  # noqa: E402
from pipeline.job import expand_inputs, run  # noqa: E402
from pipeline.records import Example, TokenizedRow  # noqa: E402
from pipeline.rows import RowBuilder  # noqa: E402
from pipeline.templates import resolve_template  # noqa: E402
from pipeline.tokenization import load_tokenizer  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
CORPORA = {
    "demo (bundled, 5 files)": DEMO_INPUTS,
    "alpaca_5000 (shared)": (str(SHARED / "alpaca_5000.json"),),
    "sharegpt_dummy (shared)": (str(SHARED / "sharegpt_dummy.json"),),
}


def _examples(inputs: tuple[str, ...]) -> list[Example]:
    examples = []
    for name, path in expand_inputs(inputs):
        with open(path, "rb") as stream:
            for item in iter_records(name, stream, file_kind(path) or "jsonl"):
                if isinstance(item, RawRecord):
                    example = to_example(item)
                    if isinstance(example, Example):
                        examples.append(example)
    return examples


def bench_core(config: PipelineConfig) -> dict[str, float]:
    tokenizer = load_tokenizer(config.tokenizer)
    builder = RowBuilder(config, tokenizer, resolve_template(config.template, None))
    examples = _examples(config.inputs)
    start = time.perf_counter()
    rows = [r for i in range(0, len(examples), config.batch_size) for r in builder.build(examples[i : i + config.batch_size])]
    seconds = time.perf_counter() - start
    tokens = sum(len(r.input_ids) for r in rows if isinstance(r, TokenizedRow))
    return {"examples": len(examples), "seconds": round(seconds, 3), "rows_per_s": round(len(rows) / seconds), "tokens_per_s": round(tokens / seconds)}


def bench_job(config: PipelineConfig, beam_args: list[str]) -> dict[str, float]:
    start = time.perf_counter()
    report = run(config, beam_args)
    seconds = time.perf_counter() - start
    return {
        "records_read": report["records_read"],
        "rows_written": report["rows_written"],
        "tokens": report["tokens_total"],
        "seconds": round(seconds, 2),
        "rows_per_s": round(report["rows_written"] / seconds),
        "tokens_per_s": round(report["tokens_total"] / seconds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beam-args", default="", help="Beam flags for the end-to-end runs, as one string")
    parser.add_argument("--template", default="chatml")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    results = {"machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores, Python {platform.python_version()}", "beam_args": args.beam_args, "runs": {}}
    for name, inputs in CORPORA.items():
        if not all(Path(p).exists() or "*" in p for p in inputs):
            print(f"{name}: skipped, {inputs[0]} is not there (benchmarks only; tests never need it)")
            continue
        with tempfile.TemporaryDirectory() as output:
            config = PipelineConfig(inputs=inputs, output=output, template=args.template, overwrite=True)
            results["runs"][name] = {"core": bench_core(config), "job": bench_job(config, shlex.split(args.beam_args))}
        print(name, json.dumps(results["runs"][name]))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

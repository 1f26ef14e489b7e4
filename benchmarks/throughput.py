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
from pipeline.job import plan, run  # noqa: E402
from pipeline.records import Rejected, TokenizedRow  # noqa: E402
from pipeline.rows import RowBuilder  # noqa: E402
from pipeline.sources import RawRecord, read_records  # noqa: E402
from pipeline.tokenization import load_tokenizer  # noqa: E402
from pipeline.translation import Seq2SeqRowBuilder  # noqa: E402
from pipeline.beam_transforms import _parse  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
WMT = {"source_lang": "en", "target_lang": "de"}
CORPORA = {
    "demo (bundled, 5 files)": {"inputs": DEMO_INPUTS},
    "alpaca_5000 (shared)": {"inputs": (str(SHARED / "alpaca_5000.json"),)},
    "sharegpt_dummy (shared)": {"inputs": (str(SHARED / "sharegpt_dummy.json"),)},
    "wmt_ende_10k decoder-only (shared)": {"inputs": (str(SHARED / "wmt_ende_10k.jsonl"),), **WMT},
    "wmt_ende_10k seq2seq (shared)": {"inputs": (str(SHARED / "wmt_ende_10k.jsonl"),), "model_type": "seq2seq", **WMT},
}


def bench_core(config: PipelineConfig) -> dict[str, float]:
    """The per-example work of one worker, without Beam: parse, render, encode, label."""
    job = plan(config)
    tokenizer = load_tokenizer(config.tokenizer)
    seq2seq = config.model_type == "seq2seq"
    builder = Seq2SeqRowBuilder(config, tokenizer) if seq2seq else RowBuilder(config, tokenizer, job.template)
    records = [r for unit in job.files for r in read_records(unit, lambda p: open(p, "rb")) if isinstance(r, RawRecord)]
    examples = [e for e in (_parse(r, job.parse_options) for r in records) if not isinstance(e, Rejected)]
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
    for name, settings in CORPORA.items():
        if not all(Path(p).exists() or "*" in p for p in settings["inputs"]):
            print(f"{name}: skipped, {settings['inputs'][0]} is not there (benchmarks only; tests never need it)")
            continue
        with tempfile.TemporaryDirectory() as output:
            config = PipelineConfig(output=output, template=args.template, overwrite=True, **settings)
            results["runs"][name] = {"core": bench_core(config), "job": bench_job(config, shlex.split(args.beam_args))}
        print(name, json.dumps(results["runs"][name]))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Packed and strided runs of the real job (FnApiRunner), read back with `datasets`."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import datasets
import pytest

from conftest import write_jsonl
from masked_shards.config import ASSETS, PipelineConfig
from masked_shards.beam.job import run
from masked_shards.write.shards import PACKED_SCHEMA, STRIDED_SCHEMA

IGNORE = -100
DEMO = (str(ASSETS / "demo_data" / "alpaca.jsonl"), str(ASSETS / "demo_data" / "sharegpt.jsonl"))


def _files(output: Path) -> dict[str, bytes]:
    return {str(p.relative_to(output)): p.read_bytes() for p in sorted(output.rglob("*")) if p.is_file() and p.suffix != ".png"}


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> tuple[Path, Path]:
    """The demo's alpaca and sharegpt examples packed at 256 tokens (long ones split), twice: in
    process, and on two threads with a window of 100 examples so several windows and workers pack."""
    outputs = []
    for n, beam_args in enumerate([[], ["--direct_num_workers=2", "--direct_running_mode=multi_threading"]]):
        output = tmp_path_factory.mktemp(f"packed{n}") / "out"
        config = PipelineConfig(inputs=DEMO, output=str(output), max_length=256, packing="bfd", pack_window=100, overlong="split", validation_fraction=0.1)
        run(config, beam_args)
        outputs.append(output)
    return outputs[0], outputs[1]


def test_packed_rows_load_with_datasets_keep_examples_apart_and_fill_rows(packed):
    output = packed[0]
    report = json.loads((output / "coverage_report.json").read_text())
    dataset = datasets.load_dataset("parquet", data_dir=str(output / "data"))
    assert set(dataset) == {"train", "validation"}
    seen: dict[str, int] = {}
    real = capacity = 0
    per_row_examples: Counter = Counter()
    per_row_tokens: Counter = Counter()
    for split in dataset.values():
        assert split.column_names == PACKED_SCHEMA.names
        for row in split:
            assert len(row["input_ids"]) <= 256 and sum(row["seq_lengths"]) == len(row["input_ids"])
            start = 0
            for length, example_id in zip(row["seq_lengths"], row["example_ids"]):
                assert row["labels"][start] == IGNORE and row["position_ids"][start : start + length] == list(range(length))
                seen[example_id] = seen.get(example_id, 0) + 1
                start += length
            real, capacity = real + len(row["input_ids"]), capacity + 256
            per_row_examples[len(row["example_ids"])] += 1
            per_row_tokens[round(len(row["input_ids"]) / 256, 6)] += 1
    packing = report["packing"]
    assert len(seen) == packing["examples"] == report["records_read"] - report["rejected"] - report["dropped"] == 400
    assert packing["examples_split"] == sum(1 for count in seen.values() if count > 1) > 0  # overlong examples, in pieces
    assert packing["fill"] == round(real / capacity, 6) and packing["fill"] >= 0.95  # 5 windows of ~100 examples: README has the fill of large windows
    assert report["rows_written"] == sum(len(split) for split in dataset.values()) == packing["rows"]
    # The report's distributions per packed row, recounted from the files, and plotted.
    found = packing["distributions"]
    assert {v: c for v, c in found["examples_per_row"]["bins"]} == per_row_examples
    assert {v: c for v, c in found["fill_per_row"]["bins"]} == per_row_tokens
    assert (output / "coverage_report.html").read_text().count("<figure><svg ") == 4  # outcomes, shares, distributions, packing
    manifest = json.loads((output / "manifest.json").read_text())
    assert [f["name"] for f in manifest["schema"]] == PACKED_SCHEMA.names


def test_packed_runs_write_the_same_bytes_on_any_runner(packed):
    first, second = (_files(output) for output in packed)
    assert first.keys() == second.keys() and first == second


def test_strided_run_scores_each_document_token_once(tmp_path):
    documents = [{"text": " ".join(f"word{i}" for i in range(n))} for n in (5, 60, 150)]
    write_jsonl(tmp_path / "docs.jsonl", documents)
    output = tmp_path / "out"
    report = run(PipelineConfig(inputs=(str(tmp_path / "docs.jsonl"),), output=str(output), format="text", max_length=32, stride=16, pad_to="max_length"))
    rows = datasets.load_dataset("parquet", data_dir=str(output / "data"))["train"]
    assert rows.column_names == STRIDED_SCHEMA.names
    by_document: dict[str, list[dict]] = {}
    for row in rows:
        by_document.setdefault(row["example_id"], []).append(row)
    for windows in by_document.values():
        windows.sort(key=lambda w: w["window_start"])
        assert [w["window_start"] for w in windows] == list(range(0, 16 * len(windows), 16))
        document: dict[int, int] = {}
        scored = []
        for w in windows:
            assert len(w["input_ids"]) == 32  # padded
            for i, (token, label, attended) in enumerate(zip(w["input_ids"], w["labels"], w["attention_mask"])):
                if attended:
                    assert document.setdefault(w["window_start"] + i, token) == token  # overlaps agree
                    if label != IGNORE:
                        scored.append(w["window_start"] + i)
        assert sorted(scored) == list(range(1, len(document)))  # text: every token but the first, once
    striding = report["striding"]
    assert (striding["examples"], striding["rows"], report["rows_written"]) == (3, len(rows), len(rows))
    assert striding["windows_per_document"]["max"] == max(len(w) for w in by_document.values()) > 1
    manifest = json.loads((output / "manifest.json").read_text())
    assert [f["name"] for f in manifest["schema"]] == STRIDED_SCHEMA.names

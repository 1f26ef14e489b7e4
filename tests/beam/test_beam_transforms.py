"""The composites on Beam's real in-process runner (FnApiRunner) under TestPipeline."""

from __future__ import annotations

import io

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from conftest import Row, row_batch, rows_of, write_jsonl
from masked_shards.beam.transforms import ReadExamples, TokenizeExamples, WriteShards
from masked_shards.config import DEMO_TOKENIZER, PipelineConfig
from masked_shards.read.sources import InputFile
from masked_shards.build.templates import resolve_template

RECORDS = [
    {"prompt": "one", "completion": "1"},
    "{broken",
    {"messages": [{"role": "user", "content": "two"}, {"role": "assistant", "content": "2"}]},
    {"instruction": "three"},
    {"conversations": [{"from": "human", "value": "four"}, {"from": "gpt", "value": "4"}]},
]


def _pipeline() -> TestPipeline:
    return TestPipeline(runner="FnApiRunner")


def test_read_examples_routes_good_and_bad_records(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", RECORDS)
    with _pipeline() as p:
        read = p | ReadExamples([InputFile("in.jsonl", "in.jsonl", str(path), "jsonl")])
        assert_that(read["examples"] | beam.Map(lambda e: e.example_id), equal_to(["in.jsonl:0", "in.jsonl:2", "in.jsonl:4"]), label="examples")
        assert_that(read["rejected"] | beam.Map(lambda r: (r.index, r.reason)), equal_to([(1, "invalid_json"), (3, "missing_field")]), label="rejected")
        assert_that(read["read"], equal_to([5]), label="read")


def test_tokenize_examples_labels_only_answers(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", RECORDS)
    config = PipelineConfig(tokenizer=DEMO_TOKENIZER, batch_size=2)

    def answer_texts(batch) -> list[tuple[str, str]]:
        from masked_shards.build.tokenization import load_tokenizer

        tokenizer = load_tokenizer(DEMO_TOKENIZER)
        return [(row.example_id, tokenizer.decode([t for t, label in zip(row.input_ids, row.labels) if label != -100])) for row in rows_of(batch)]

    with _pipeline() as p:
        read = p | ReadExamples([InputFile("in.jsonl", "in.jsonl", str(path), "jsonl")])
        rows = read["examples"] | TokenizeExamples(config, resolve_template("chatml", None))
        expected = [("in.jsonl:0", "1<|im_end|>"), ("in.jsonl:2", "2<|im_end|>"), ("in.jsonl:4", "4<|im_end|>")]
        assert_that(rows["rows"] | beam.FlatMap(answer_texts), equal_to(expected), label="rows")
        assert_that(rows["rejected"], equal_to([]), label="rejected")
        assert_that(rows["dropped"], equal_to([]), label="dropped")


def test_write_shards_puts_every_row_in_exactly_one_file_and_spends_its_runs(tmp_path):
    rows = [Row(f"f:{n}", "f", "train" if n % 4 else "validation", [n], [n], [1]) for n in range(40)]
    batches = [row_batch(rows[n : n + 7]) for n in range(0, 40, 7)]  # several batches: several runs
    config = PipelineConfig(num_shards=3)
    with _pipeline() as p:
        written = p | beam.Create(batches) | WriteShards(str(tmp_path), config)
        assert_that(written["shards"] | beam.Map(lambda i: i["path"]), equal_to([f"data/{s}-0000{n}-of-00003.parquet" for s in ("train", "validation") for n in range(3)]), label="shards")
        assert_that(written["runs"] | beam.Map(lambda r: r["rows"]) | beam.CombineGlobally(sum), equal_to([40]), label="runs")
    ids = []
    for path in sorted((tmp_path / "data").iterdir()):
        ids += pq.read_table(io.BytesIO(path.read_bytes())).column("example_id").to_pylist()
    assert sorted(ids) == sorted(r.example_id for r in rows)

"""The composites on Beam's real in-process runner (FnApiRunner) under TestPipeline."""

from __future__ import annotations

import gzip
import io
import lzma

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from conftest import Row, row_batch, rows_of, write_jsonl
from memory_fs import MemoryFileSystem
from masked_shards.beam.preflight import expand_inputs
from masked_shards.beam.transforms import ReadExamples, SpillRunsFn, TokenizeExamples, WriteShards
from masked_shards.read.formats import ParseOptions
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
        assert_that(read["batches"] | beam.FlatMap(lambda b: [e.example_id for e in b]), equal_to(["in.jsonl:0", "in.jsonl:2", "in.jsonl:4"]), label="examples")
        assert_that(read["rejected"] | beam.Map(lambda r: (r.index, r.reason)), equal_to([(1, "invalid_json"), (3, "missing_field")]), label="rejected")
        assert_that(read["read"], equal_to([5]), label="read")


def test_read_examples_gives_batches_of_at_most_batch_size_in_each_range(tmp_path):
    """Eight good records among ten, batches of three: one range, so batches of 3, 3 and 2, in
    the file's order; the bad ones are counted as read and rejected, not batched."""
    records = [RECORDS[0], RECORDS[1], RECORDS[2], RECORDS[0], RECORDS[3], RECORDS[4], RECORDS[0], RECORDS[2], RECORDS[0], RECORDS[4]]
    path = write_jsonl(tmp_path / "in.jsonl", records)
    options = ParseOptions(PipelineConfig(batch_size=3))
    with _pipeline() as p:
        read = p | ReadExamples([InputFile("in.jsonl", "in.jsonl", str(path), "jsonl")], options)
        ids = read["batches"] | beam.Map(lambda b: tuple(int(e.example_id.rpartition(":")[2]) for e in b))
        assert_that(ids, equal_to([(0, 2, 3), (5, 6, 7), (8, 9)]), label="batches")
        assert_that(read["read"], equal_to([10]), label="read")
        assert_that(read["rejected"] | beam.Map(lambda r: r.index), equal_to([1, 4]), label="rejected")


def test_read_examples_reads_compressed_files_on_any_filesystem_as_the_plain_file(tmp_path):
    """Compressed copies in an object store (`memtest://`), one under a plain name that holds gzip
    and one truncated: through the job's own file listing and reading, the same ids and reasons as
    the plain file, and the truncated one ends in one `damaged_file` entry after its first records."""
    data = write_jsonl(tmp_path / "in.jsonl", RECORDS * 400).read_bytes()
    packed = gzip.compress(data)
    MemoryFileSystem.objects.clear()
    for name, content in (("a.jsonl.gz", packed), ("b.jsonl", packed), ("c.json.xz", lzma.compress(data)), ("d.jsonl.gz", packed[: len(packed) // 2])):
        MemoryFileSystem.objects[f"memtest://bucket/in/{name}"] = content
    units = expand_inputs(tuple(f"memtest://bucket/in/{name}" for name in ("a.jsonl.gz", "b.jsonl", "c.json.xz", "d.jsonl.gz")))  # a source each
    assert [(u.name, u.kind) for u in units] == [("a.jsonl.gz", "jsonl"), ("b.jsonl", "jsonl"), ("c.json.xz", "json"), ("d.jsonl.gz", "jsonl")]
    plain = [(n, 1 + 2 * (n % 5 == 1) + (n % 5 == 3)) for n in range(2000)]  # 1: example, 3: invalid_json, 2: missing_field
    with _pipeline() as p:
        read = p | ReadExamples(units)
        examples = read["batches"] | "Examples" >> beam.FlatMap(lambda b: [(e.source, int(e.example_id.rpartition(":")[2]), 1) for e in b])
        rejected = read["rejected"] | "Rejected" >> beam.Map(lambda r: (r.source, r.index, {"invalid_json": 3, "missing_field": 2}.get(r.reason, r.reason)))
        whole = [(name, n, kind) for name in ("a.jsonl.gz", "b.jsonl", "c.json.xz") for n, kind in plain]
        assert_that((examples, rejected) | beam.Flatten() | beam.Filter(lambda item: item[0] != "d.jsonl.gz"), equal_to(whole), label="whole")
        damaged = rejected | beam.Filter(lambda item: item[0] == "d.jsonl.gz" and item[1] is None) | beam.Map(lambda item: item[2])
        assert_that(damaged, equal_to(["damaged_file"]), label="damaged")


def test_tokenize_examples_labels_only_answers(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", RECORDS)
    config = PipelineConfig(tokenizer=DEMO_TOKENIZER, batch_size=2)

    def answer_texts(batch) -> list[tuple[str, str]]:
        from masked_shards.build.tokenization import load_tokenizer

        tokenizer = load_tokenizer(DEMO_TOKENIZER)
        return [(row.example_id, tokenizer.decode([t for t, label in zip(row.input_ids, row.labels) if label != -100])) for row in rows_of(batch)]

    with _pipeline() as p:
        read = p | ReadExamples([InputFile("in.jsonl", "in.jsonl", str(path), "jsonl")])
        rows = read["batches"] | TokenizeExamples(config, resolve_template("chatml", None))
        expected = [("in.jsonl:0", "1<|im_end|>"), ("in.jsonl:2", "2<|im_end|>"), ("in.jsonl:4", "4<|im_end|>")]
        assert_that(rows["rows"] | beam.FlatMap(answer_texts), equal_to(expected), label="rows")
        assert_that(rows["rejected"], equal_to([]), label="rejected")
        assert_that(rows["dropped"], equal_to([]), label="dropped")


def test_write_shards_puts_every_row_in_exactly_one_file_and_spends_its_runs(tmp_path):
    rows = [Row(f"f:{n}", "f", "train" if n % 4 else "validation", [n], [n], [1]) for n in range(40)]
    batches = [row_batch(rows[n : n + 7]) for n in range(0, 40, 7)]  # several batches: several runs
    config = PipelineConfig(num_shards=3)
    with _pipeline() as p:
        runs = p | beam.Create(batches) | beam.ParDo(SpillRunsFn(str(tmp_path), config.seed))
        shards = runs | WriteShards(str(tmp_path), config)
        assert_that(shards | beam.Map(lambda i: i["path"]), equal_to([f"data/{s}-0000{n}-of-00003.parquet" for s in ("train", "validation") for n in range(3)]), label="shards")
        assert_that(runs | beam.Map(lambda r: r["rows"]) | beam.CombineGlobally(sum), equal_to([40]), label="runs")
    ids = []
    for path in sorted((tmp_path / "data").iterdir()):
        ids += pq.read_table(io.BytesIO(path.read_bytes())).column("example_id").to_pylist()
    assert sorted(ids) == sorted(r.example_id for r in rows)

"""Thin Beam composites over the Beam-free core; bad records leave on tagged outputs.

    ReadExamples      files -> Example            (+ rejected, + count of records read, + blank lines)
    TokenizeExamples  Example -> TokenizedRow     (+ rejected, + dropped)
    WriteShards       TokenizedRow -> shard info  (deterministic Parquet files, see shards.py)
    WriteJsonLines    Rejected/Dropped -> one sorted JSONL file
    ReportCoverage    everything -> Coverage
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterator

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from pipeline.config import PipelineConfig
from pipeline.formats import ParseOptions, to_example
from pipeline.label_coverage import Coverage
from pipeline.mixing import is_kept, keep_rates
from pipeline.records import BlankLines, Dropped, Example, Rejected, SampledOut, TokenizedRow
from pipeline.sources import InputFile, RawRecord, read_records
from pipeline.rows import RowBuilder
from pipeline.shards import parquet_bytes, sha256, shard_count, shard_for, shard_name, shard_number
from pipeline.templates import ChatTemplate
from pipeline.tokenization import load_tokenizer
from pipeline.translation import Seq2SeqRowBuilder, to_pair

REJECTED, DROPPED = "rejected", "dropped"


class FailFast(Exception):
    """Raised under --fail-fast at the first rejected record; the message names its location."""


def _fail_fast(item: Rejected) -> None:
    where = f"{item.source}:{item.index}" if item.index is not None else item.source
    raise FailFast(f"record {where} is bad ({item.reason}: {item.detail}); stopping because of --fail-fast")


def _read_unit(unit: InputFile) -> Iterator[RawRecord | Rejected]:
    """Every record of one input; a failure of the file itself (unreadable, corrupt) after `n`
    records becomes one rejected entry for the file (index None) saying where reading stopped."""
    read = 0
    try:
        for item in read_records(unit, FileSystems.open):
            read += 1
            yield item
    except Exception as err:  # noqa: BLE001 - any failure here is the file's, never the job's
        yield Rejected.internal_error(unit.name, None, err, during=f"reading the file after {read} records (the rest of it was not read)")


def _parse(record: RawRecord, options: ParseOptions) -> object:
    """An Example for decoder rows; a checked TranslationPair for encoder-decoder rows; a
    Rejected for a bad record, including one our own code failed on."""
    try:
        if options.model_type == "seq2seq":
            return to_pair(record, options.source_lang, options.target_lang, options.max_length_ratio)
        return to_example(record, options)
    except Exception as err:  # noqa: BLE001
        return Rejected.internal_error(record.name, record.index, err, record.value, during="parsing the record")


class ToExampleFn(beam.DoFn):
    """Raw record -> Example on the main output, or Rejected on `rejected`."""

    def __init__(self, options: ParseOptions, fail_fast: bool) -> None:
        self._options, self._fail_fast = options, fail_fast
        self._rejected = Metrics.counter("masked_shards", "records_rejected")

    def process(self, item: RawRecord | Rejected) -> Iterator[object]:
        result = item if isinstance(item, Rejected) else _parse(item, self._options)
        if isinstance(result, Rejected):
            if self._fail_fast:
                _fail_fast(result)
            self._rejected.inc()
            yield beam.pvalue.TaggedOutput(REJECTED, result)
        else:
            yield result


class ReadExamples(beam.PTransform):
    """Read input units into Examples; returns {examples, rejected, read, blank_lines}. Blank lines
    are counted apart: they are no records, so not in `read` (sources.py)."""

    def __init__(self, units: list[InputFile], options: ParseOptions = ParseOptions(), fail_fast: bool = False) -> None:
        super().__init__()
        self._units, self._options, self._fail_fast = units, options, fail_fast

    def expand(self, pbegin: beam.pvalue.PBegin) -> dict[str, beam.PCollection]:
        items, blank_lines = (
            pbegin
            | "ListFiles" >> beam.Create(self._units)
            | "ReadRecords" >> beam.FlatMap(_read_unit)
            | "SetBlankLinesApart" >> beam.Partition(lambda item, _: int(isinstance(item, BlankLines)), 2)
        )
        raw = items | "Spread" >> beam.Reshuffle()
        parsed = raw | "ParseRecords" >> beam.ParDo(ToExampleFn(self._options, self._fail_fast)).with_outputs(REJECTED, main="examples")
        read = raw | "CountRead" >> beam.combiners.Count.Globally()
        return {"examples": parsed.examples, "rejected": parsed[REJECTED], "read": read, "blank_lines": blank_lines}


class MixSources(beam.PTransform):
    """Down-sample named sources to `--mix` weights; returns {examples, sampled_out}."""

    def __init__(self, weights: dict[str, float], seed: int) -> None:
        super().__init__()
        self._weights, self._seed = weights, seed

    def expand(self, examples: beam.PCollection) -> dict[str, beam.PCollection]:
        weights, seed = self._weights, self._seed
        rates = (
            examples
            | "Sources" >> beam.Map(lambda e: e.source)
            | "CountSources" >> beam.combiners.Count.PerElement()
            | "AllCounts" >> beam.combiners.ToDict()
            | "Rates" >> beam.Map(keep_rates, weights)
        )

        def choose(example: Example, rates: dict[str, float]) -> Iterator[object]:
            if is_kept(example.example_id, rates[example.source], seed):
                yield example
            else:
                yield beam.pvalue.TaggedOutput("sampled_out", SampledOut(example.source))

        chosen = examples | "Sample" >> beam.FlatMap(choose, rates=beam.pvalue.AsSingleton(rates)).with_outputs("sampled_out", main="examples")
        return {"examples": chosen.examples, "sampled_out": chosen.sampled_out}


class TokenizeFn(beam.DoFn):
    """Batch of Examples -> rows; the tokenizer and template are loaded once per worker."""

    def __init__(self, config: PipelineConfig, template: ChatTemplate) -> None:
        self._config, self._template = config, template
        self._builder: RowBuilder | Seq2SeqRowBuilder | None = None
        self._rows = Metrics.counter("masked_shards", "rows")
        self._tokens = Metrics.counter("masked_shards", "tokens")

    def setup(self) -> None:
        tokenizer = load_tokenizer(self._config.tokenizer)
        if self._config.model_type == "seq2seq":
            self._builder = Seq2SeqRowBuilder(self._config, tokenizer)
        else:
            self._builder = RowBuilder(self._config, tokenizer, self._template)

    def process(self, batch: list[Example]) -> Iterator[object]:
        for result in self._build(batch):
            if isinstance(result, Rejected):
                if self._config.fail_fast:
                    _fail_fast(result)
                yield beam.pvalue.TaggedOutput(REJECTED, result)
            elif isinstance(result, Dropped):
                yield beam.pvalue.TaggedOutput(DROPPED, result)
            else:
                self._rows.inc()
                self._tokens.inc(len(result.input_ids))
                yield result


    def _build(self, batch: list[Example]) -> list[object]:
        """The batch's results; if the batch raises, each example is built alone so only the
        example that fails becomes a rejected `internal_error`."""
        try:
            return self._builder.build(batch)
        except Exception:  # noqa: BLE001
            return [self._build_one(example) for example in batch]

    def _build_one(self, example: Example) -> object:
        try:
            return self._builder.build([example])[0]
        except Exception as err:  # noqa: BLE001
            name, index = example.example_id.rsplit(":", 1)
            return Rejected.internal_error(name, int(index), err, example.raw, during="rendering and encoding the example")


class TokenizeExamples(beam.PTransform):
    """Examples -> TokenizedRows; returns {rows, rejected, dropped}."""

    def __init__(self, config: PipelineConfig, template: ChatTemplate) -> None:
        super().__init__()
        self._config, self._template = config, template

    def expand(self, examples: beam.PCollection) -> dict[str, beam.PCollection]:
        tokenized = (
            examples
            | "Batch" >> beam.BatchElements(min_batch_size=1, max_batch_size=self._config.batch_size)
            | "Tokenize" >> beam.ParDo(TokenizeFn(self._config, self._template)).with_outputs(REJECTED, DROPPED, main="rows")
        )
        return {"rows": tokenized.rows, "rejected": tokenized[REJECTED], "dropped": tokenized[DROPPED]}


class WriteShardFn(beam.DoFn):
    """((split, bucket), rows) -> writes one Parquet file, yields its info for the manifest.

    `filled` lists every non-empty (split, bucket), so the file is numbered among the shards
    actually written and no empty shard is ever needed to complete the `-of-N` set (shards.py).
    """

    def __init__(self, output: str, seed: int) -> None:
        self._output, self._seed = output, seed

    def process(self, keyed: tuple[tuple[str, int], list[TokenizedRow]], filled: list[tuple[str, int]]) -> Iterator[dict[str, object]]:
        (split, bucket), rows = keyed
        index, shards = shard_number(bucket, [b for s, b in filled if s == split])
        yield write_shard(self._output, split, index, shards, list(rows), self._seed)


def write_shard(output: str, split: str, index: int, shards: int, rows: list[TokenizedRow], seed: int) -> dict[str, object]:
    """Write one shard through Beam's FileSystems (local or gs://) and describe it."""
    data = parquet_bytes(rows, seed)
    relative = posixpath.join("data", shard_name(split, index, shards))
    with FileSystems.create(FileSystems.join(output, "data", shard_name(split, index, shards))) as handle:
        handle.write(data)
    return {"path": relative, "split": split, "index": index, "rows": len(rows), "bytes": len(data), "sha256": sha256(data)}


class WriteShards(beam.PTransform):
    """Rows -> deterministic shard files; returns the PCollection of shard infos."""

    def __init__(self, output: str, config: PipelineConfig) -> None:
        super().__init__()
        self._output, self._config = output, config

    def expand(self, rows: beam.PCollection) -> beam.PCollection:
        config = self._config
        per_split = rows | "CountPerSplit" >> beam.Map(lambda r: (r.split, 1)) | "SumPerSplit" >> beam.CombinePerKey(sum)

        def assign(row: TokenizedRow, counts: dict[str, int]) -> tuple[tuple[str, int], TokenizedRow]:
            buckets = shard_count(counts[row.split], config.num_shards, config.rows_per_shard)
            return (row.split, shard_for(row.example_id, config.seed, buckets)), row

        grouped = rows | "AssignShard" >> beam.Map(assign, counts=beam.pvalue.AsDict(per_split)) | "GroupShards" >> beam.GroupByKey()
        filled = grouped | "FilledBuckets" >> beam.Keys()
        return grouped | "WriteShard" >> beam.ParDo(WriteShardFn(self._output, config.seed), filled=beam.pvalue.AsList(filled))


class WriteJsonLines(beam.PTransform):
    """Rejected or Dropped records -> `<output>/<folder>/<folder>.jsonl`, sorted; yields its info."""

    def __init__(self, output: str, folder: str) -> None:
        super().__init__()
        self._output, self._folder = output, folder

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        output, folder = self._output, self._folder

        def write(keyed: tuple[None, list[tuple[tuple[str, int], str]]]) -> dict[str, object]:
            lines = [line for _, line in sorted(keyed[1])]
            data = "".join(line + "\n" for line in lines).encode("utf-8")
            with FileSystems.create(FileSystems.join(output, folder, f"{folder}.jsonl")) as handle:
                handle.write(data)
            return {"path": posixpath.join(folder, f"{folder}.jsonl"), "rows": len(lines), "sha256": sha256(data)}

        return (
            records
            | "ToJson" >> beam.Map(lambda r: (None, _json_line(r)))
            | "Gather" >> beam.GroupByKey()
            | "Write" >> beam.Map(write)
        )


def _json_line(record: Rejected | Dropped) -> tuple[tuple[str, int], str]:
    """The line, keyed by its place in the input so the file lists records in input order."""
    if isinstance(record, Rejected):
        key = (record.source, -1 if record.index is None else record.index)
    else:
        name, index = record.example_id.rsplit(":", 1)
        key = (name, int(index))
    line = json.dumps(record.to_json(), ensure_ascii=False, sort_keys=True, default=repr)
    if not line.isascii() and not _encodable(line):  # a lone surrogate from an escaped "\ud800"
        line = json.dumps(record.to_json(), ensure_ascii=True, sort_keys=True, default=repr)
    return key, line


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class CoverageFn(beam.CombineFn):
    def create_accumulator(self) -> Coverage:
        return Coverage()

    def add_input(self, coverage: Coverage, item: object) -> Coverage:
        coverage.add(item)
        return coverage

    def merge_accumulators(self, accumulators: Iterator[Coverage]) -> Coverage:
        merged = Coverage()
        for coverage in accumulators:
            merged.merge(coverage)
        return merged

    def extract_output(self, coverage: Coverage) -> Coverage:
        return coverage


class ReportCoverage(beam.PTransform):
    """Rows, rejected and dropped records -> one Coverage (empty input gives an empty one)."""

    def expand(self, outcomes: tuple[beam.PCollection, ...]) -> beam.PCollection:
        return outcomes | "Outcomes" >> beam.Flatten() | "Combine" >> beam.CombineGlobally(CoverageFn())

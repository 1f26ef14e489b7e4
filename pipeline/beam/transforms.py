"""Thin Beam composites over the Beam-free core; bad records leave on tagged outputs.

    ReadExamples      files -> ranges -> Example batches   (+ rejected, + count of records read, + blank lines)
    TokenizeExamples  Example batches -> RowBatch          (Arrow columns; + rejected, + dropped)
    PackRows          RowBatch -> windows of examples by a seeded hash -> PackedBatch   (--packing)
                      (+ runs: the packed rows, spilled as each window is packed)
    StrideRows        RowBatch -> StridedBatch, each long row as overlapping windows   (--stride)
    SpillRunsFn       RowBatch, StridedBatch -> sorted runs (runs.py)
    WriteShards       sorted runs -> shard info (deterministic Parquet or Arrow files, runs.py)
    WriteJsonLines    Rejected/Dropped -> one sorted JSONL file
    ReportCoverage    everything -> Coverage
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import shutil
import tempfile
import uuid
from collections import Counter, deque
from itertools import chain
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from masked_shards.beam import coders  # noqa: F401 - registers the coders of the batches' types
from masked_shards.beam.collector import loaded
from masked_shards.config import PipelineConfig
from masked_shards.read.formats import ParseOptions, to_example
from masked_shards.report.label_coverage import PIECE_LINES, Coverage, add_file_counts, file_counts, file_line, one_file_count
from masked_shards.read.mixing import is_kept, keep_rates
from masked_shards.shape.packing import PackedBatch, pack_rows
from masked_shards.beam.progress import tally
from masked_shards.records import BATCH_SCHEMA, BlankLines, Dropped, Example, Rejected, RowBatch, SampledOut
from masked_shards.read.sources import InputFile, InputRange, Item, RawRecord, count_range, read_range, split_input
from masked_shards.build.rows import RowBuilder
from masked_shards.write.runs import KEY, RUNS, RunReader, ShardRange, keyed_runs, merge_shard, plan_shards, write_run
from masked_shards.write.shards import output_schema, sha256, shard_count, shard_name
from masked_shards.write.side_by_side import InOrder
from masked_shards.shape.striding import StridedBatch, stride_rows
from masked_shards.build.templates import ChatTemplate
from masked_shards.build.tokenization import TokenizerError, load_tokenizer
from masked_shards.read.translation import TranslationPair, to_pair

REJECTED, DROPPED, BLANK_LINES, READ, SPILLED = "rejected", "dropped", "blank_lines", "read", "spilled"


def windowed(output: object) -> object:
    """An output of `finish_bundle` in the global window (a tagged one keeps its tag): outside
    `process`, each output must name its window."""
    if isinstance(output, beam.pvalue.TaggedOutput):
        return beam.pvalue.TaggedOutput(output.tag, WindowedValue(output.value, MIN_TIMESTAMP, [GlobalWindow()]))
    return WindowedValue(output, MIN_TIMESTAMP, [GlobalWindow()])


def tokenizer_for(name: str):  # -> transformers.PreTrainedTokenizerBase
    """`load_tokenizer`, also for a folder in an object store (gs://BUCKET/PATH, or any scheme Beam
    reads): its files are copied once per machine and folder state to a local folder, as Hugging
    Face loads only local folders and hub ids. This is how Dataflow's workers get a tokenizer that
    is no hub id: they cannot see a folder on the machine that submitted the job."""
    if "://" not in name:
        return load_tokenizer(name)
    try:
        local = _local_copy(name)
    except TokenizerError:
        raise
    except Exception as err:  # noqa: BLE001 - a store's errors are many types; each is one sentence
        raise TokenizerError(f"cannot read tokenizer folder {name} ({type(err).__name__}: {str(err).splitlines()[0][:200]})") from None
    return load_tokenizer(local)


def _local_copy(folder: str) -> str:
    found = FileSystems.match([folder.rstrip("/") + "/*"])[0].metadata_list
    if not found:
        raise TokenizerError(f"tokenizer folder {folder} holds no files")
    state = hashlib.sha256(repr(sorted((m.path, m.size_in_bytes, m.last_updated_in_seconds) for m in found)).encode()).hexdigest()[:16]
    local = Path(tempfile.gettempdir()) / "masked-shards-tokenizers" / state
    if not local.is_dir():
        partial = local.with_name(f"{state}.{uuid.uuid4().hex}.partial")
        partial.mkdir(parents=True)
        for m in found:
            with FileSystems.open(m.path) as source:
                (partial / posixpath.basename(m.path)).write_bytes(source.read())
        try:
            partial.rename(local)  # whole or not at all; another process may have won the race
        except OSError:
            shutil.rmtree(partial, ignore_errors=True)
    return str(local)


@contextmanager
def create_file(path: str) -> Iterator[object]:
    """`FileSystems.create`, with a failed write (a full disk, a quota) named by its file: Beam's
    error names only the step, and the raw OSError no path at all."""
    try:
        with FileSystems.create(path) as handle:
            yield handle
    except OSError as err:
        raise OSError(err.errno, f"cannot write {path}: {err.strerror or err}") from None


class FailFast(Exception):
    """Raised under --fail-fast at the first rejected record; the message names its location."""


def _fail_fast(item: Rejected) -> None:
    where = f"{item.source}:{item.index}" if item.index is not None else item.source
    raise FailFast(f"record {where} is bad ({item.reason}: {item.detail}); stopping because of --fail-fast")


def _ranges(unit: InputFile, limit: int | None = None) -> list[InputRange]:
    """The pieces one input is read in (sources.split_input): byte ranges of line files, runs of
    Parquet row groups, the whole of anything else; under --limit, the unit as one capped range."""
    try:
        return split_input(unit, open_raw, _size, limit=limit)
    except Exception:  # noqa: BLE001 - an unreadable file is reported when it is read
        return [InputRange(unit, 0, None, "whole", limit)]


def open_raw(path: str):  # -> a binary stream
    """A file's bytes as stored: Beam would decompress a `.gz` by its name, and sources.py
    decompresses by name and first bytes itself (compression.py), so the job reads them raw."""
    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def _size(path: str) -> int:
    return FileSystems.match([path])[0].metadata_list[0].size_in_bytes


def _count(r: InputRange) -> tuple[tuple[str, int], int]:
    """(unit path, range start) -> records numbered in the range, for line numbers of later ranges."""
    try:
        return (r.unit.path, r.start), count_range(r, open_raw)
    except Exception:  # noqa: BLE001
        return (r.unit.path, r.start), 0


def _read_range(r: InputRange, counts: dict[tuple[str, int], int], max_record_bytes: int | None) -> Iterator[Item]:
    """The records of one range, numbered after the lines of the unit's earlier ranges; a failure of
    the file itself after `n` records becomes one rejected entry (index None) saying so."""
    first = sum(n for (path, start), n in counts.items() if path == r.unit.path and start < r.start)
    read = 0
    try:
        for item in read_range(r, open_raw, first, max_record_bytes=max_record_bytes):
            read += 1
            yield item
    except Exception as err:  # noqa: BLE001 - any failure here is the file's, never the job's
        yield Rejected.internal_error(r.unit.name, None, err, during=f"reading bytes {r.start}.. after {read} records (the rest of the range was not read)")


def _parse(record: RawRecord, options: ParseOptions) -> object:
    """An Example for decoder rows; a checked TranslationPair for encoder-decoder rows; a
    Rejected for a bad record, including one our own code failed on."""
    try:
        if options.config.model_type == "seq2seq":
            return to_pair(record, options.config.source_lang, options.config.target_lang, options.config.max_length_ratio)
        return to_example(record, options)
    except Exception as err:  # noqa: BLE001
        return Rejected.internal_error(record.name, record.index, err, record.value, during="parsing the record")


class ReadExamplesFn(beam.DoFn):
    """A range -> its examples in lists of --batch-size (the tokenizer's batches), and on tagged
    outputs its bad records (`rejected`), its blank lines and how many records it read (`read`).

    One step takes a range from bytes to batches because every step a record passes on its own
    costs Beam's bookkeeping: reading, setting blank lines apart, parsing, counting and batching
    as five steps cost a run of 55k chats 0.6 CPU-s more. A range's last batch may be short."""

    def __init__(self, options: ParseOptions, fail_fast: bool) -> None:
        self._options, self._fail_fast = options, fail_fast
        self._rejected = Metrics.counter("masked_shards", "records_rejected")

    def process(self, r: InputRange, counts: dict[tuple[str, int], int]) -> Iterator[object]:
        batch, read, size = [], 0, self._options.config.batch_size
        for item in _read_range(r, counts, self._options.config.max_record_bytes):
            if isinstance(item, BlankLines):
                yield beam.pvalue.TaggedOutput(BLANK_LINES, item)
                continue
            read += 1
            result = item if isinstance(item, Rejected) else _parse(item, self._options)
            if isinstance(result, Rejected):
                if self._fail_fast:
                    _fail_fast(result)
                self._rejected.inc()
                yield beam.pvalue.TaggedOutput(REJECTED, result)
                continue
            batch.append(result)
            if len(batch) == size:
                yield batch
                batch = []
        if batch:
            yield batch
        yield beam.pvalue.TaggedOutput(READ, read)


class ReadExamples(beam.PTransform):
    """Read input units into batches of Examples; returns {batches, rejected, read, blank_lines}.
    Blank lines are counted apart: they are no records, so not in `read` (sources.py)."""

    def __init__(self, units: list[InputFile], options: ParseOptions = ParseOptions(), fail_fast: bool = False) -> None:
        super().__init__()
        self._units, self._options, self._fail_fast = units, options, fail_fast

    def expand(self, pbegin: beam.pvalue.PBegin) -> dict[str, beam.PCollection]:
        ranges = pbegin | "ListFiles" >> beam.Create(self._units) | "SplitFiles" >> beam.FlatMap(_ranges, self._options.config.limit) | "SpreadRanges" >> beam.Reshuffle()
        counted = ranges | "CountLines" >> beam.Map(_count)
        batch = beam.typehints.List[TranslationPair if self._options.config.model_type == "seq2seq" else Example]  # coders.py
        read = ranges | "ReadRanges" >> beam.ParDo(ReadExamplesFn(self._options, self._fail_fast), counts=beam.pvalue.AsDict(counted)).with_output_types(batch).with_outputs(REJECTED, BLANK_LINES, READ, main="batches")
        total = read[READ] | "CountRead" >> beam.CombineGlobally(sum)
        return {"batches": read.batches, "rejected": read[REJECTED], "read": total, "blank_lines": read[BLANK_LINES], "ranges": ranges, "counted": counted}


class TallyFn(beam.DoFn):
    """Adds what `count` says of each element to this process's progress tally (progress.py)
    and outputs nothing: a tap beside the job, which it leaves as it is."""

    def __init__(self, folder: str, count: Callable[[object], dict[str, int]]) -> None:
        self._folder, self._count = folder, count

    def process(self, element: object) -> Iterator[object]:
        tally(self._folder).add(**self._count(element))
        return iter(())

    def finish_bundle(self) -> None:
        tally(self._folder).flush()


def range_tally(r: InputRange) -> dict[str, int]:
    """Ranges read whole (JSON arrays, CSV, --limit, compressed files) are not counted, so the
    total stays unknown."""
    return {"ranges": 1, "uncounted": int(r.kind == "whole" or r.limit is not None or r.compression is not None)}


def count_tally(counted: tuple[tuple[str, int], int]) -> dict[str, int]:
    return {"total": counted[1]}


def rows_tally(batch: RowBatch) -> dict[str, int]:
    return {"records": batch.rows.num_rows, "tokens": len(batch.rows.column("input_ids").values)}


def record_tally(_: object) -> dict[str, int]:
    return {"records": 1}


class MixSources(beam.PTransform):
    """Down-sample named sources to `--mix` weights; batches of examples -> {batches (what is
    kept of each), sampled_out}."""

    def __init__(self, weights: dict[str, float], seed: int) -> None:
        super().__init__()
        self._weights, self._seed = weights, seed

    def expand(self, batches: beam.PCollection) -> dict[str, beam.PCollection]:
        weights, seed = self._weights, self._seed
        rates = (
            batches
            | "Sources" >> beam.FlatMap(lambda batch: Counter(e.source for e in batch).items())
            | "CountSources" >> beam.CombinePerKey(sum)
            | "AllCounts" >> beam.combiners.ToDict()
            | "Rates" >> beam.Map(keep_rates, weights)
        )

        def choose(batch: list[Example], rates: dict[str, float]) -> Iterator[object]:
            kept = []
            for example in batch:
                if is_kept(example.example_id, rates[example.source], seed):
                    kept.append(example)
                else:
                    yield beam.pvalue.TaggedOutput("sampled_out", SampledOut(example.source))
            if kept:
                yield kept

        chosen = batches | "Sample" >> beam.FlatMap(choose, rates=beam.pvalue.AsSingleton(rates)).with_output_types(batches.element_type).with_outputs("sampled_out", main="batches")
        return {"batches": chosen.batches, "sampled_out": chosen.sampled_out}


class TokenizeFn(beam.DoFn):
    """Batch of examples -> one RowBatch of rows (Arrow columns), and each example that gave no row
    on `rejected` or `dropped`; the tokenizer and template are loaded once per worker.

    Each batch is started (rendered, its encoding queued in a thread: `RowBuilder.start`) before
    the two before it are finished and emitted, so the Rust encoder works on one batch while this
    thread labels an earlier one and renders the next, and still has one queued when this thread
    is slow to come back (a new input range opened, a run spilled): with one batch ahead the
    encoder waited on this thread 0.6 s of 6 s at 55k chats, with two 0.36 s (200k: 26.5 against
    27.1 s). The bundle's last batches are emitted at its end."""

    AHEAD = 2

    def __init__(self, config: PipelineConfig, template: ChatTemplate) -> None:
        self._config, self._template = config, template
        self._builder: RowBuilder | None = None
        self._rows = Metrics.counter("masked_shards", "rows")
        self._tokens = Metrics.counter("masked_shards", "tokens")

    def setup(self) -> None:
        self._builder = RowBuilder(self._config, tokenizer_for(self._config.tokenizer), self._template)
        loaded()

    def start_bundle(self) -> None:
        self._started: deque[tuple[list[object], Callable[[], RowBatch] | None]] = deque()

    def process(self, batch: list[object]) -> Iterator[object]:
        self._started.append((batch, self._start(batch)))
        if len(self._started) > self.AHEAD:
            yield from self._emit(*self._started.popleft())

    def finish_bundle(self) -> Iterator[object]:
        while self._started:
            yield from map(windowed, self._emit(*self._started.popleft()))

    def _start(self, batch: list[object]) -> Callable[[], RowBatch] | None:
        try:
            return self._builder.start(batch)
        except Exception:  # noqa: BLE001 - _emit builds the batch example by example instead
            return None

    def _emit(self, batch: list[object], finish: Callable[[], RowBatch] | None) -> Iterator[object]:
        built = self._build(batch, finish)
        for other in built.others:
            if isinstance(other, Rejected):
                if self._config.fail_fast:
                    _fail_fast(other)
                yield beam.pvalue.TaggedOutput(REJECTED, other)
            else:
                yield beam.pvalue.TaggedOutput(DROPPED, other)
        self._rows.inc(built.rows.num_rows)
        self._tokens.inc(len(built.rows.column("input_ids").values))
        yield built

    def _build(self, batch: list[object], finish: Callable[[], RowBatch] | None) -> RowBatch:
        """The batch's rows; if the batch raises, each example is built alone so only the one that
        fails becomes a rejected `internal_error`."""
        if finish is not None:
            try:
                return finish()
            except Exception:  # noqa: BLE001
                pass
        alone = [self._build_one(item) for item in batch]
        return RowBatch(pa.concat_batches([b.rows for b in alone]), tuple(o for b in alone for o in b.others), alone[0].aligned)

    def _build_one(self, item: object) -> RowBatch:
        try:
            return self._builder.build([item])
        except Exception as err:  # noqa: BLE001
            name, index = item.example_id.rsplit(":", 1)
            rejected = Rejected.internal_error(name, int(index), err, item.raw, during="rendering and encoding the example")
            return RowBatch(pa.RecordBatch.from_pylist([], schema=BATCH_SCHEMA), (rejected,), self._config.model_type != "seq2seq")


class TokenizeExamples(beam.PTransform):
    """Batches of examples -> RowBatches; returns {rows, rejected, dropped}."""

    def __init__(self, config: PipelineConfig, template: ChatTemplate) -> None:
        super().__init__()
        self._config, self._template = config, template

    def expand(self, batches: beam.PCollection) -> dict[str, beam.PCollection]:
        # Rows that packing or striding remakes are padded once made, not as examples.
        config = replace(self._config, pad_to=None) if self._config.reshapes_rows else self._config
        tokenized = batches | "Tokenize" >> beam.ParDo(TokenizeFn(config, self._template)).with_output_types(RowBatch).with_outputs(REJECTED, DROPPED, main="rows")
        return {"rows": tokenized.rows, "rejected": tokenized[REJECTED], "dropped": tokenized[DROPPED]}


def _pad_id(config: PipelineConfig) -> int | None:
    """The tokenizer's pad id when rows are padded (--pad-to; plan() has checked it has one)."""
    return tokenizer_for(config.tokenizer).pad_token_id if config.pad_to else None


class PackWindowFn(beam.DoFn):
    """A window (a key range of one split) -> one PackedBatch (packing.pack_rows) of its example
    rows, read from its slice of every sorted run of the split, and on the `spilled` output the
    packed rows as sorted runs (spill_runs), written by the thread that packed them. Two windows of
    a bundle are read, packed and spilled side by side (write/side_by_side.py), never more: a window in the
    making holds its rows and about six times their size besides, and more workers, not more
    windows, use more cores. Spilled here, one window's rows are written while the next is packed,
    where a spill step after this one wrote them all once the last was packed (0.2 s of a 5.4 s
    run of 55k chats packed)."""

    SIDE_BY_SIDE = 2

    def __init__(self, config: PipelineConfig) -> None:
        self._config = config
        self._pad_id: int | None = None

    def setup(self) -> None:
        self._pad_id = _pad_id(self._config)

    def start_bundle(self) -> None:
        self._packing: InOrder[tuple[PackedBatch, list[dict[str, object]]]] = InOrder(self.SIDE_BY_SIDE)

    def process(self, window: ShardRange, runs: list[dict[str, object]]) -> Iterator[object]:
        for packed, spilled in self._packing.start(self._pack, window, runs):
            yield from _packed_outputs(packed, spilled)

    def finish_bundle(self) -> Iterator[WindowedValue]:
        for packed, spilled in self._packing.finish():
            yield from map(windowed, _packed_outputs(packed, spilled))

    def _pack(self, window: ShardRange, runs: list[dict[str, object]]) -> tuple[PackedBatch, list[dict[str, object]]]:
        config = self._config
        readers = [_reader(run) for run in sorted(runs, key=lambda r: r["path"]) if run["split"] == window.split]
        rows = pa.concat_tables([t for t in (r.slice(window.low, window.high) for r in readers) if t is not None]).drop_columns([KEY])
        packed = pack_rows(rows, config.max_length, config.packing, config.pad_length if config.pad_to else None, self._pad_id)
        return packed, spill_runs(config.output, config.seed, [packed.rows] if packed.rows.num_rows else [])


def _packed_outputs(packed: PackedBatch, spilled: list[dict[str, object]]) -> Iterator[object]:
    yield packed
    for run in spilled:
        yield beam.pvalue.TaggedOutput(SPILLED, run)


class PackRows(beam.PTransform):
    """Example rows -> {rows: packed rows (PackedBatch), best-fit or wrapped within windows of
    examples; runs: the packed rows as sorted runs, for WriteShards}.

    Beam does the grouping, through files as the shards do (runs.py): the example rows are
    spilled in sorted runs, each split's key space is cut into ceil(rows / --pack-window) equal
    ranges (the windows), and each window is read back from its slice of every run and packed on
    its own worker. A worker holds one spill buffer or one window, never the input: grouping the
    rows themselves (or waiting on their total count) made the local runner keep every row in
    memory. Which window a row joins depends only on its id, the seed and the number of rows, and
    each window is packed from its rows sorted by id: the packed rows do not depend on the runner."""

    def __init__(self, config: PipelineConfig) -> None:
        super().__init__()
        self._config = config

    def expand(self, batches: beam.PCollection) -> dict[str, beam.PCollection]:
        runs = beam.pvalue.AsList(batches | "SpillExamples" >> beam.ParDo(SpillRunsFn(self._config.output, self._config.seed)))
        packed = (
            batches.pipeline
            | "Once" >> beam.Create([None])
            | "PlanWindows" >> beam.FlatMap(_plan_windows, runs=runs, window=self._config.pack_window)
            | "SpreadWindows" >> beam.Reshuffle()
            | "PackWindows" >> beam.ParDo(PackWindowFn(self._config), runs=runs).with_output_types(PackedBatch).with_outputs(SPILLED, main="rows")  # coders.py
        )
        return {"rows": packed.rows, "runs": packed[SPILLED]}


class StrideFn(beam.DoFn):
    """RowBatch -> StridedBatch (striding.stride_rows), padded once windowed (--pad-to)."""

    def __init__(self, config: PipelineConfig) -> None:
        self._config = config
        self._pad_id: int | None = None

    def setup(self) -> None:
        self._pad_id = _pad_id(self._config)

    def process(self, batch: RowBatch) -> Iterator[StridedBatch]:
        config = self._config
        yield stride_rows(batch.rows, config.max_length, config.stride, config.pad_length if config.pad_to else None, self._pad_id)


class StrideRows(beam.PTransform):
    """Example rows -> windows every --stride tokens over rows longer than --max-length."""

    def __init__(self, config: PipelineConfig) -> None:
        super().__init__()
        self._config = config

    def expand(self, batches: beam.PCollection) -> beam.PCollection:
        return batches | "Stride" >> beam.ParDo(StrideFn(self._config)).with_output_types(StridedBatch)  # coders.py


class SpillRunsFn(beam.DoFn):
    """Row batches -> sorted run files under `<output>/_runs/`, spilled every `spill_bytes` of rows
    and at the end of each bundle, so a worker holds a bounded amount however large the input
    (runs.py); yields one {path, split, rows} per run.

    A run is sorted and written in a thread beside the rows that come next (write/side_by_side.py:
    pyarrow's sort and write let the interpreter go), one run at a time: a worker holds the run
    being written and the next one filling, where the Python thread sorted and wrote each run
    itself (0.3 s of its 6 s at 55k chats packed: the packed rows are spilled too)."""

    def __init__(self, output: str, seed: int, spill_bytes: int = 32 << 20) -> None:
        self._output, self._seed, self._spill_bytes = output, seed, spill_bytes
        self._pending: list[pa.RecordBatch] = []
        self._size = 0

    def start_bundle(self) -> None:
        self._pending, self._size = [], 0
        self._writing: InOrder[list[dict[str, object]]] = InOrder(1)

    def process(self, batch: RowBatch | PackedBatch | StridedBatch) -> Iterator[dict[str, object]]:
        if batch.rows.num_rows:
            self._pending.append(batch.rows)
            self._size += batch.rows.nbytes
        if self._size >= self._spill_bytes:
            yield from self._spill()

    def finish_bundle(self) -> Iterator[WindowedValue]:
        yield from map(windowed, chain(self._spill(), chain.from_iterable(self._writing.finish())))

    def _spill(self) -> Iterator[dict[str, object]]:
        pending, self._pending, self._size = self._pending, [], 0
        if pending:
            yield from chain.from_iterable(self._writing.start(self._write, pending))

    def _write(self, pending: list[pa.RecordBatch]) -> list[dict[str, object]]:
        return spill_runs(self._output, self._seed, pending)


def spill_runs(output: str, seed: int, batches: list[pa.RecordBatch]) -> list[dict[str, object]]:
    """`batches` as sorted run files under `<output>/_runs/`, one per split (runs.keyed_runs);
    returns one {path, split, rows} per run."""
    runs = []
    for split, table in keyed_runs(batches, seed).items():
        path = FileSystems.join(output, RUNS, f"{split}-{uuid.uuid4().hex}.arrow")
        with create_file(path) as handle:
            write_run(table, handle)
        runs.append({"path": path, "split": split, "rows": table.num_rows})
    return runs


def _plan_shards(_: object, runs: list[dict[str, object]], config: PipelineConfig) -> Iterator[ShardRange]:
    """Every shard of every split, from the keys of all runs (8 bytes a row)."""
    yield from _key_ranges(runs, lambda rows: shard_count(rows, config.num_shards, config.rows_per_shard))


def _plan_windows(_: object, runs: list[dict[str, object]], window: int) -> Iterator[ShardRange]:
    """Every packing window of every split: about `window` rows each."""
    yield from _key_ranges(runs, lambda rows: -(-rows // window))


def _key_ranges(runs: list[dict[str, object]], ranges: Callable[[int], int]) -> Iterator[ShardRange]:
    """Each split's key space cut into `ranges(rows)` equal ranges, empty ones skipped (runs.plan_shards)."""
    for split in sorted({run["split"] for run in runs}):
        keys = np.sort(np.concatenate([_reader(run).keys for run in runs if run["split"] == split]))
        yield from plan_shards(split, keys, ranges(len(keys)))


def _reader(run: dict[str, object]) -> RunReader:
    return RunReader(FileSystems.open(run["path"]))


class MergeShardFn(beam.DoFn):
    """ShardRange -> its Parquet file, merged from its slice of every run of the split; one shard
    at a time (each reading its next row group while it writes one: runs.merge_shard).

    A merge holds a batch of every run of its split (write_run: near 1 MB each), and the number
    of runs grows with the input, so shards merged one per core at once made the peak grow with
    it: 1M Qwen2 chats on 2 cores peaked 22% above 100k (687 against 562 MB); one at a time, 9%
    (577 against 529 MB), for 0.2 s more at 200k (0.96 against 0.76 s of merging). Worker processes
    (`--direct_num_workers`, Dataflow's workers) still merge their own shards side by side."""

    def __init__(self, output: str, schema: pa.Schema, output_format: str = "parquet") -> None:
        self._output, self._schema, self._format = output, schema, output_format

    def process(self, shard: ShardRange, runs: list[dict[str, object]]) -> Iterator[dict[str, object]]:
        readers = [_reader(run) for run in sorted(runs, key=lambda r: r["path"]) if run["split"] == shard.split]
        name = shard_name(shard.split, shard.index, shard.count, self._format)
        with create_file(FileSystems.join(self._output, "data", name)) as handle:
            info = merge_shard(shard, readers, handle, self._schema, self._format)
        yield {"path": posixpath.join("data", name), "split": shard.split, "index": shard.index, **info}


class WriteShards(beam.PTransform):
    """Sorted runs (SpillRunsFn, PackRows) -> deterministic shard files: their infos. The runs are
    temporary: the caller deletes them once the shards are written."""

    def __init__(self, output: str, config: PipelineConfig) -> None:
        super().__init__()
        self._output, self._config = output, config

    def expand(self, spilled: beam.PCollection) -> beam.PCollection:
        runs = beam.pvalue.AsList(spilled)
        return (
            spilled.pipeline
            | "Once" >> beam.Create([None])
            | "PlanShards" >> beam.FlatMap(_plan_shards, runs=runs, config=self._config)
            | "SpreadShards" >> beam.Reshuffle()
            | "MergeShard" >> beam.ParDo(MergeShardFn(self._output, output_schema(self._config.packing, self._config.stride), self._config.output_format), runs=runs)
        )


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
            with create_file(FileSystems.join(output, folder, f"{folder}.jsonl")) as handle:
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
        if isinstance(item, RowBatch):
            coverage.add_batch(item)
        elif isinstance(item, PackedBatch):
            coverage.reshaped.add_packed(item)
        elif isinstance(item, StridedBatch):
            coverage.reshaped.add_strided(item)
        elif isinstance(item, Coverage):  # one input's counts (ReportCoverage)
            coverage.merge(item)
        else:
            coverage.add(item)
        return coverage

    def merge_accumulators(self, accumulators: Iterator[Coverage]) -> Coverage:
        merged = Coverage()
        for coverage in accumulators:
            merged.merge(coverage)
        return merged

    def extract_output(self, coverage: Coverage) -> Coverage:
        return coverage


class CountBundleFn(beam.DoFn):
    """Items -> one Coverage of a bundle's items, at its end: the partial count Beam would lift
    out of a CombineGlobally into the producing step, in one step instead of eight."""

    def __init__(self) -> None:
        self._counting = CoverageFn()

    def start_bundle(self) -> None:
        self._coverage = Coverage()

    def process(self, item: object) -> None:
        self._counting.add_input(self._coverage, item)

    def finish_bundle(self) -> Iterator[WindowedValue]:
        yield windowed(self._coverage)


class ReportCoverage(beam.PTransform):
    """Rows, rejected and dropped records -> one Coverage (empty input gives an empty one).

    Each input is counted on its own, where it is made, a bundle at a time, and only the counts
    are flattened and merged. Flattening the inputs themselves made Beam's local runner hold
    every example row in memory until the packed rows, made later, could join them (measured:
    2.6 GB against 1.5 GB peak at 200,000 examples). Counting each input with a CombineGlobally
    of its own did the same work in eight steps instead of one: every step costs the job's start
    (building the graph, and a bundle processor per stage), and the 28 steps fewer took a
    `--limit 100` run on Qwen2 from 2.77 to 2.57 s."""

    def expand(self, outcomes: tuple[beam.PCollection, ...]) -> beam.PCollection:
        counted = [outcome | f"Count{n}" >> beam.ParDo(CountBundleFn()) for n, outcome in enumerate(outcomes)]
        return counted | "Outcomes" >> beam.Flatten() | "Combine" >> beam.CombineGlobally(CoverageFn())


class CountByFile(beam.PTransform):
    """Rows, rejected and dropped records -> the paths of sorted pieces of REPORT_BY_FILE under
    `_runs/` (label_coverage.py: counted per file where they are made, summed per file by the
    runner's shuffle, never all files in one process), for FinalizeFn to merge line by line."""

    def __init__(self, output: str, sources: dict[str, str]) -> None:
        super().__init__()
        self._output, self._sources = output, sources

    def expand(self, outcomes: tuple[beam.PCollection, beam.PCollection, beam.PCollection]) -> beam.PCollection:
        rows, rejected, dropped = outcomes
        counted = (
            rows | "RowsByFile" >> beam.FlatMap(file_counts),
            rejected | "RejectedByFile" >> beam.Map(one_file_count),
            dropped | "DroppedByFile" >> beam.Map(one_file_count),
        )
        return counted | "AllByFile" >> beam.Flatten() | "SumByFile" >> beam.CombinePerKey(add_file_counts) | "WritePieces" >> beam.ParDo(WriteFilePiecesFn(self._output, self._sources))


class WriteFilePiecesFn(beam.DoFn):
    """Each file's summed counts -> its REPORT_BY_FILE line, gathered into pieces of at most
    PIECE_LINES lines, each sorted by file and written under `_runs/`; yields each piece's path."""

    def __init__(self, output: str, sources: dict[str, str]) -> None:
        self._output, self._sources = output, sources

    def start_bundle(self) -> None:
        self._lines: list[tuple[str, bytes]] = []

    def process(self, item: tuple[str, tuple[int, ...]]) -> Iterator[str]:
        name, counts = item
        self._lines.append((name, file_line(name, self._sources.get(name, name), counts)))
        if len(self._lines) >= PIECE_LINES:
            yield self._spill()

    def finish_bundle(self) -> Iterator[WindowedValue]:
        if self._lines:
            yield windowed(self._spill())

    def _spill(self) -> str:
        path = FileSystems.join(self._output, RUNS, f"by_file-{uuid.uuid4().hex}.jsonl")
        with create_file(path) as handle:
            handle.write(b"".join(line for _, line in sorted(self._lines)))
        self._lines = []
        return path

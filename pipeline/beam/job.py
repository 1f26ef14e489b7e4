"""The job: check everything at start (`plan`), wire the composites (`build`), run (`run`).

`build(pipeline, plan)` takes any Beam pipeline, so tests hand it a `TestPipeline` and the command
line hands it one made from the user's runner flags. The last step, `FinalizeFn`, runs once after
every shard is written: it writes the report, checks that the counts reconcile end to end
(records read = rows in shard files + rejected + dropped), and only then writes `manifest.json`.
A run that fails anywhere before that leaves no manifest, and so does a run that wrote no row:
`run` then raises `NoRowsWritten`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions, StandardOptions, TestOptions, WorkerOptions
from apache_beam.runners.portability.fn_api_runner import worker_handlers
from apache_beam.runners.worker import statesampler

import masked_shards
from masked_shards.beam.preflight import preflight, translation_template
from masked_shards.beam.transforms import DROPPED, CountByFile, MixSources, open_raw, PackRows, ReadExamples, ReportCoverage, SpillRunsFn, StrideRows, TallyFn, TokenizeExamples, WriteJsonLines, WriteShards, count_tally, create_file, tokenizer_for, range_tally, record_tally, rows_tally
from masked_shards.beam.allocator import job_allocator
from masked_shards.beam.introspection import remember_introspection
from masked_shards.beam.collector import data_flows, job_scope
from masked_shards.beam.outputs import MANIFEST, check_output, hold_output, promote, recover, staging
from masked_shards.config import ConfigError, PipelineConfig
from masked_shards.read.compression import DamagedInput
from masked_shards.read.hub import check_dataset, looks_like_path
from masked_shards.read.sources import HF_PREFIX, InputFile, RawRecord, count_lines, parse_hf_spec, read_records
from masked_shards.read.formats import ParseOptions, detect_format
from masked_shards.report.label_coverage import REPORT_BY_FILE, REPORT_HTML, REPORT_JSON, REPORT_MARKDOWN, Coverage, gate_limits, merge_pieces, reconcile, report_files
from masked_shards.report.html import EXAMPLE_ROWS, example_views, with_smoke_test
from masked_shards.report.tables import report_markdown
from masked_shards.build.masking import IGNORE_INDEX, describe_training
from masked_shards.beam.progress import ProgressLine
from masked_shards.build.rows import RowBuilder, check_template
from masked_shards.write.arrow import ShardReader, layout_files
from masked_shards.write.runs import RUNS
from masked_shards.write.shards import SMOKE_TEST_JSON, SPLITS, manifest_counts, manifest_json, output_schema, schema_description, sha256
from masked_shards.build.templates import AUTO_TEMPLATE, TOKENIZER_TEMPLATE, ChatTemplate, TemplateError, resolve_template
from masked_shards.build.tokenization import TokenizerError, fingerprint
from masked_shards.read.translation import looks_language_keyed, needs_languages



@dataclass(frozen=True)
class JobPlan:
    """What the driver settled before any data flows."""

    config: PipelineConfig
    files: list[InputFile]
    template: ChatTemplate
    tokenizer: dict[str, object]
    parse_options: ParseOptions
    progress: str | None = None  # the scratch folder of the progress line (progress.py), local runs only


def plan(config: PipelineConfig, files: list[InputFile] | None = None) -> JobPlan:
    """Resolve inputs, output folder, tokenizer and template; raise ConfigError on any problem.
    The checks that need neither run first (preflight.py); `files` is their answer when the
    caller already ran them."""
    files = preflight(config) if files is None else files
    check_output(config.output, config.overwrite)  # after Beam loads: it lists any filesystem and reads the output's lock
    check_pairs_aligned(config.input_pairs)
    for unit in (u for u in files if u.kind == "hf_hub"):  # resolve now, not in a worker half a minute in
        try:
            check_dataset(*parse_hf_spec(unit.path))
        except ValueError as err:
            raise ConfigError(f"--input {unit.path}: {err}") from None
    try:
        tokenizer = tokenizer_for(config.tokenizer)
        template = resolve_template(config.template, getattr(tokenizer, "chat_template", None), tokenizer.bos_token, tokenizer.eos_token)
        if config.template == AUTO_TEMPLATE:
            why = "the tokenizer has no chat template" if template.matched_sha256 is None else "no bundled template renders the tokenizer's chat template identically" if template.name == TOKENIZER_TEMPLATE else "renders the tokenizer's chat template identically"
            print(f"masked-shards: --template auto: {template.name} ({why})", file=sys.stderr)
        if config.format != "text" and config.model_type == "decoder":
            warning = check_template(template, tokenizer, config.tokenizer)
            if warning:
                print(f"masked-shards: warning: {warning}", file=sys.stderr)
        if config.model_type == "seq2seq":
            RowBuilder(config, tokenizer, template)  # refuses a tokenizer without EOS (or pad, when padding)
    except (TokenizerError, TemplateError, ValueError) as err:
        raise ConfigError(str(err)) from None
    limit = tokenizer.model_max_length  # Hugging Face's "unset" is 1e30, above any --max-length
    if config.max_length > limit and not config.allow_max_length_above_model:
        raise ConfigError(f"--max-length {config.max_length} is above the tokenizer's model_max_length of {limit}; use at most {limit}, or pass --allow-max-length-above-model if the model takes longer rows")
    if config.source_lang is None:
        check_languages_not_needed(files, config)
    if config.pad_to and tokenizer.pad_token_id is None:
        raise ConfigError(f"--pad-to needs a pad token but tokenizer {config.tokenizer!r} has none")
    options = ParseOptions(config, translation_template(config.translate_template))
    return JobPlan(config, files, template, fingerprint(tokenizer, config.tokenizer), options)


def check_pairs_aligned(pairs: tuple[tuple[str, str], ...]) -> None:
    """The two files of an --input-pair must have as many lines (each line is one side of a pair)."""
    for source_path, target_path in pairs:
        try:
            source_lines, target_lines = count_lines(source_path, open_raw), count_lines(target_path, open_raw)
        except DamagedInput:  # reading them rejects the damage, after the pairs before it
            source_lines = target_lines = 0
        if source_lines != target_lines:
            raise ConfigError(f"--input-pair {source_path} has {source_lines} lines but {target_path} has {target_lines}")


def check_languages_not_needed(units: list[InputFile], config: PipelineConfig) -> None:
    """Without --source-lang/--target-lang, translation records keyed by language could only be
    rejected one by one; refuse at start instead, judging each file by its first readable record
    (files are read lazily, so this costs one record per file, not the file)."""
    for unit in units:
        if unit.kind in ("hf_hub", "line_pair"):
            continue
        first = _first_record(unit)
        if first is None or not isinstance(first.value, dict) or config.field_map:
            continue
        chosen = config.format if config.format != "auto" else detect_format(first.value)
        wants_pair = config.model_type == "seq2seq" or chosen == "translation"
        if (wants_pair and needs_languages(first.value)) or (chosen is None and looks_language_keyed(first.value)):
            keys = ", ".join(sorted(map(str, first.value))[:4])
            raise ConfigError(f"records in {unit.name} are translation pairs keyed by language ({keys}), so --source-lang and --target-lang must say which side is which")


def _first_record(unit: InputFile) -> RawRecord | None:
    """The first record of a unit that parsed, looking at no more than a few records."""
    records = read_records(unit, open_raw)
    try:
        return next((r for r in itertools.islice(records, 16) if isinstance(r, RawRecord)), None)
    except Exception:  # an unreadable file is reported by the job itself, record by record
        return None
    finally:
        records.close()


class NoRowsWritten(Exception):
    """A run that wrote no row failed, though its report and record files are written; the
    message is one sentence naming where the records went, and `report` holds the counts. Beside
    a finished run, which a failed one never replaces, its files stay in the staging prefix."""

    def __init__(self, report: dict[str, object], folder: str = "") -> None:
        super().__init__(_no_rows_sentence(report))
        self.report, self.folder = report, folder  # the staging prefix when a finished run was kept


def _no_rows_sentence(report: dict[str, object]) -> str:
    """'no rows written: 500 records rejected (missing_field 500), 0 dropped'."""
    if not report["records_read"]:
        return "no rows written: the inputs hold no records"
    records = "record" if report["rejected"] == 1 else "records"
    parts = [_outcome(report["rejected"], f"{records} rejected", report["rejected_by_reason"]), _outcome(report["dropped"], "dropped", report["dropped_by_reason"])]
    if report["sampled_out"]:
        parts.append(f"{report['sampled_out']} sampled out by --mix")
    return "no rows written: " + ", ".join(parts)


def _outcome(count: int, what: str, by_reason: dict[str, int]) -> str:
    """'3 dropped (overlong 2, no_supervised_tokens 1)': the three commonest reasons, then how many more."""
    top = sorted(by_reason.items(), key=lambda item: (-item[1], item[0]))
    named = [f"{reason} {n}" for reason, n in top[:3]] + ([f"{len(top) - 3} other reasons"] if len(top) > 3 else [])
    return f"{count} {what}" + (f" ({', '.join(named)})" if named else "")


class FinalizeFn(beam.DoFn):
    """Runs once at the end: report, reconciliation, then the manifest, last (none if no row was
    written: a zero-row run is a failed run, and a manifest would present it as a dataset)."""

    def __init__(self, plan: JobPlan) -> None:
        self._plan = plan

    def process(self, _: object, shards: list[dict], runs: list[dict], record_files: list[dict], coverage: Coverage, read: int, by_file: list[str]) -> Iterator[dict]:
        config, output = self._plan.config, self._plan.config.output
        by_file_entry = _merge_by_file(output, by_file)  # before the pieces under _runs/ go with the rest
        # Every shard is written: the sorted runs they were merged from, and the packing windows'
        # spilled rows (both under _runs/), are spent.
        spent = {run["path"] for run in runs} | {m.path for m in FileSystems.match([FileSystems.join(output, RUNS, "*")])[0].metadata_list}
        if spent:
            FileSystems.delete(sorted(spent))
        if FileSystems.exists(FileSystems.join(output, RUNS)):  # a local folder (object stores have none)
            FileSystems.delete([FileSystems.join(output, RUNS)])
        identity = {
            "config": config.recorded(),
            "tokenizer": self._plan.tokenizer,
            "template": {"name": self._plan.template.name, "sha256": sha256(self._plan.template.source.encode("utf-8")), "matched_tokenizer_template_sha256": self._plan.template.matched_sha256},
        }
        splits = SPLITS if config.validation_fraction else SPLITS[:1]
        report = coverage.report(read, sum(s["rows"] for s in shards), sources=_sources(self._plan), splits=splits, run=identity, gates=gate_limits(config))
        if config.limit is not None:  # a quick look (--limit): say so wherever the counts are read
            report["limit"] = config.limit
        problem = reconcile(report)
        reports = report_files(report, [] if problem else _first_rows(output, shards, config))
        for name, content in reports.items():
            _write(output, name, content)
        if problem:
            raise RuntimeError(problem)
        if not report["rows_written"]:
            yield report
            return
        layout = layout_files(output_schema(config.packing, config.stride), shards) if config.output_format == "arrow" else {}
        for name, content in layout.items():
            _write(output, name, content)
        manifest = {
            "masked_shards_version": masked_shards.__version__,
            **identity,
            "labels": {
                "ignore_index": IGNORE_INDEX,
                "shifted": False,
                "train_on": config.train_on,
                "train_on_eot": config.train_on_eot,
                "trained_on": describe_training(train_on=config.train_on, train_on_eot=config.train_on_eot, model_type=config.model_type, record_format=config.format),
            },
            "schema": schema_description(output_schema(config.packing, config.stride)),
            "shards": sorted(shards, key=lambda s: s["path"]),
            "record_files": sorted(record_files, key=lambda s: s["path"]),
            **({"dataset_files": [{"path": name, "bytes": len(content), "sha256": sha256(content)} for name, content in sorted(layout.items())]} if layout else {}),
            "report_files": sorted([{"path": name, "bytes": len(content), "sha256": sha256(content)} for name, content in reports.items()] + [by_file_entry], key=lambda entry: entry["path"]),
            "counts": manifest_counts(report, REPORT_JSON),
        }
        temporary = FileSystems.join(output, MANIFEST + ".partial")
        _write(output, MANIFEST + ".partial", manifest_json(manifest))
        FileSystems.rename([temporary], [FileSystems.join(output, MANIFEST)])
        yield report


def _sources(plan: JobPlan) -> dict[str, str]:
    """Each input's id name -> the source it counts under (a glob's files: the glob)."""
    return {unit.name: unit.source for unit in plan.files}


def _merge_by_file(output: str, pieces: list[str]) -> dict[str, object]:
    """REPORT_BY_FILE from its sorted pieces (CountByFile), streamed line by line; its manifest entry."""
    handles = [FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) for path in pieces]
    digest, size = hashlib.sha256(), 0
    try:
        with create_file(FileSystems.join(output, REPORT_BY_FILE)) as sink:
            for line in merge_pieces([iter(handle.readline, b"") for handle in handles]):
                sink.write(line)
                digest.update(line)
                size += len(line)
    finally:
        for handle in handles:
            handle.close()
    return {"path": REPORT_BY_FILE, "bytes": size, "sha256": digest.hexdigest()}


def _first_rows(output: str, shards: list[dict], config: PipelineConfig) -> list[tuple[str, str]]:
    """The first rows of the first shard, token by token, for the HTML report (decoder rows only:
    a seq2seq row's labels are another sequence than its input_ids)."""
    if not shards or config.model_type != "decoder":
        return []
    first = min(shards, key=lambda s: (s["split"] != "train", s["path"]))
    with FileSystems.open(FileSystems.join(output, first["path"])) as handle:  # those rows alone: a packed row group is 4M tokens, 0.1 s to read whole
        rows = pa.Table.from_batches([next(ShardReader(handle, first["path"]).iter_batches(EXAMPLE_ROWS, row_groups=[0]))])
    return example_views(rows, tokenizer_for(config.tokenizer))


def record_smoke_test(output: str) -> None:
    """The smoke-test stage's result (smoke_test.json, written by smoke_test.py after the job,
    passed or not) into the run's report: `smoke_test` in coverage_report.json, a table in the .md
    and at the end of the .html; then the manifest, rewritten last through `.partial` as at the
    end of the job, lists the report files as they now are and the stage's outcome."""

    def read(name: str) -> str:
        with FileSystems.open(FileSystems.join(output, name)) as handle:
            return handle.read().decode("utf-8")

    from masked_shards.check.smoke_test import steady  # torch: only once the stage has run

    result = json.loads(read(SMOKE_TEST_JSON))
    report = {**json.loads(read(REPORT_JSON)), "smoke_test": steady(result)}
    files = {REPORT_JSON: manifest_json(report), REPORT_MARKDOWN: report_markdown(report), REPORT_HTML: with_smoke_test(read(REPORT_HTML), report)}
    for name, content in files.items():
        _write(output, name, content)
    manifest = json.loads(read(MANIFEST))
    contents = {name: content.encode("utf-8") for name, content in files.items()}
    kept = [entry for entry in manifest["report_files"] if entry["path"] not in contents]  # the per-file counts
    manifest["report_files"] = sorted(kept + [{"path": name, "bytes": len(content), "sha256": sha256(content)} for name, content in contents.items()], key=lambda entry: entry["path"])
    manifest["smoke_test"] = {"passed": result["passed"], "device": result.get("device"), "file": SMOKE_TEST_JSON}
    _write(output, MANIFEST + ".partial", manifest_json(manifest))
    FileSystems.rename([FileSystems.join(output, MANIFEST + ".partial")], [FileSystems.join(output, MANIFEST)])


def _write(output: str, name: str, content: str | bytes) -> None:
    with create_file(FileSystems.join(output, name)) as handle:
        handle.write(content.encode("utf-8") if isinstance(content, str) else content)


def build(pipe: beam.Pipeline, plan: JobPlan) -> beam.PCollection:
    """Wire the whole job onto `pipe`; returns the PCollection holding the final report."""
    config = plan.config
    read = pipe | "ReadExamples" >> ReadExamples(plan.files, plan.parse_options, config.fail_fast)
    batches, sampled_out = read["batches"], []
    if config.mix:
        mixed = batches | "MixSources" >> MixSources(dict(config.mix), config.seed)
        batches, sampled_out = mixed["batches"], [mixed["sampled_out"]]
    tokenized = batches | "TokenizeExamples" >> TokenizeExamples(config, plan.template)
    rejected = (read["rejected"], tokenized["rejected"]) | "AllRejected" >> beam.Flatten()
    rows, reshaped = tokenized["rows"], []
    if config.packing != "none":
        packed = rows | "PackRows" >> PackRows(config)
        reshaped, runs = [packed["rows"]], packed["runs"]
    else:
        if config.stride is not None:
            rows = rows | "StrideRows" >> StrideRows(config)
            reshaped = [rows]
        runs = rows | "SpillRuns" >> beam.ParDo(SpillRunsFn(config.output, config.seed))
    shards = runs | "WriteShards" >> WriteShards(config.output, config)
    if plan.progress:
        _tap_progress(plan.progress, read, tokenized["rows"], rejected, tokenized["dropped"])
    record_files = (
        (rejected | "WriteRejected" >> WriteJsonLines(config.output, "rejected"), tokenized["dropped"] | "WriteDropped" >> WriteJsonLines(config.output, DROPPED))
        | "RecordFiles" >> beam.Flatten()
    )
    coverage = (tokenized["rows"], rejected, tokenized["dropped"], read["blank_lines"], *sampled_out, *reshaped) | "ReportCoverage" >> ReportCoverage()
    by_file = (tokenized["rows"], rejected, tokenized["dropped"]) | "CountByFile" >> CountByFile(config.output, _sources(plan))
    return (
        pipe
        | "Once" >> beam.Create([None])
        | "Finalize"
        >> beam.ParDo(
            FinalizeFn(plan),
            shards=beam.pvalue.AsList(shards),
            runs=beam.pvalue.AsList(runs),
            record_files=beam.pvalue.AsList(record_files),
            coverage=beam.pvalue.AsSingleton(coverage),
            read=beam.pvalue.AsSingleton(read["read"]),
            by_file=beam.pvalue.AsList(by_file),
        )
    )


def _tap_progress(folder: str, read: dict[str, beam.PCollection], rows: beam.PCollection, rejected: beam.PCollection, dropped: beam.PCollection) -> None:
    """Count into the progress tally beside the job (progress.py), changing none of its steps."""
    taps = (("Ranges", read["ranges"], range_tally), ("Total", read["counted"], count_tally), ("Rows", rows, rows_tally), ("Rejected", rejected, record_tally), ("Dropped", dropped, record_tally))
    for name, collection, count in taps:
        collection | f"Progress{name}" >> beam.ParDo(TallyFn(folder, count))


def _shows_progress(options: PipelineOptions, quiet: bool) -> bool:
    """A live line for runs whose workers share this machine: the default runner and the portable
    one (Flink's and Spark's too, when their job server is local; a remote worker's writes go
    nowhere, which is harmless). Not under --quiet, a dry run, or Dataflow."""
    runner = str(options.view_as(StandardOptions).runner or "")
    return not quiet and not options.view_as(TestOptions).dry_run and "Dataflow" not in runner


def for_remote_workers(config: PipelineConfig, beam_args: list[str]) -> list[str]:
    """On Dataflow the workers are other machines. They read the inputs, the tokenizer and the
    output themselves, so none may be a path on this machine (refused in one sentence, before
    anything is loaded); and they need this package, which the job stages from the checkout's
    pyproject.toml (Beam builds an sdist of it; workers pip-install it) unless the flags already
    bring it (--setup_file, --extra_package, or --sdk_container_image with it installed)."""
    options = PipelineOptions(beam_args)
    if "Dataflow" not in str(options.view_as(StandardOptions).runner or ""):
        return beam_args
    paths = [("--input", p) for p in config.inputs if not p.startswith(HF_PREFIX)] + [("--input-pair", p) for pair in config.input_pairs for p in pair] + [("--output", config.output)]
    if os.path.isdir(config.tokenizer) or looks_like_path(config.tokenizer):
        paths.append(("--tokenizer", config.tokenizer))
    for flag, path in paths:
        if "://" not in path:
            extra = ", or a hub id" if flag == "--tokenizer" else ""
            raise ConfigError(f"{flag} {path} is on this machine, where Dataflow's workers cannot read it; copy it to a gs:// bucket and pass that path{extra}")
    setup = options.view_as(SetupOptions)
    if setup.setup_file or setup.extra_packages or options.view_as(WorkerOptions).sdk_container_image:
        return beam_args
    project = Path(masked_shards.__file__).resolve().parent.parent / "pyproject.toml"
    if not project.is_file():  # installed from a wheel: no source tree to build from
        raise ConfigError("Dataflow's workers need masked-shards installed: pass --extra_package with a wheel or sdist of it, --setup_file with a checkout's pyproject.toml, or --sdk_container_image with an image that has it")
    return [*beam_args, f"--setup_file={project}"]


def with_default_runner(beam_args: list[str]) -> list[str]:
    """Without --runner we run on FnApiRunner, the local engine of Beam's DirectRunner.

    The DirectRunner itself first tries to download the Prism runner from the internet and falls
    back to FnApiRunner when that fails; going straight there keeps a local run offline, quick
    to start, and on the same runner the tests use. It honours --direct_num_workers and
    --direct_running_mode. Any --runner the user gives (DirectRunner, DataflowRunner, ...) wins.
    """
    if any(arg == "--runner" or arg.startswith("--runner=") for arg in beam_args):
        return beam_args
    return ["--runner=FnApiRunner", *beam_args]


def without_timed_flush() -> None:
    """Work around a Beam defect that corrupts and loses elements under `--direct_running_mode
    multi_threading` (benchmarks/repro_threads.py reproduces it without our code).

    In that mode FnApiRunner's SDK workers are threads of this process that exchange elements with
    the runner over loopback gRPC, and every data channel's output buffer is also flushed each
    `DATA_BUFFER_TIME_LIMIT_MS` (1000) by a timer thread that shares no lock with the thread
    writing elements into it. A flushed chunk can then end inside an element, and the runner,
    which decodes chunks one by one or deals them out to workers, hands the next step garbage
    (None elements, "Unknown type tag", MemoryError); bytes written between the timer's copy of
    the buffer and its clear are dropped (rows go missing). 0 is Beam's own "no timed flush", the
    SDK worker's default on Dataflow: buffers then go out by size, between elements, and when a
    bundle ends. Setting it touches only the local runner's worker handlers.
    """
    worker_handlers.DATA_BUFFER_TIME_LIMIT_MS = 0


def quick_bundle_ends() -> None:
    """End a local runner's long bundles at once instead of up to 200 ms later.

    Each bundle an SDK worker processes runs Beam's state sampler (statesampler.py): a thread
    that times the step at work, sleeping between looks for a period that grows from 2 ms to
    `sampling_period_ms` (200 by default). Ending the bundle joins that thread, so it waits out
    the sleep: the main stage, packing and the merge each stood still for up to 200 ms, 0.15 to
    0.3 s of a run of 55k chats. At 10 ms the sampler wakes 100 times a second, which costs no
    measurable time. Its timings feed only Beam's per-step metrics, which this job does not read.
    The default is bound when Beam defines the class, so it is replaced there; this touches only
    workers in this process (Dataflow's workers are other machines)."""
    statesampler.StateSampler.__init__.__defaults__ = (10,)


def run(config: PipelineConfig, beam_args: list[str] | None = None, files: list[InputFile] | None = None, before_swap: Callable[[str, dict], None] | None = None) -> dict[str, object] | None:
    """Plan, run to completion on the runner the Beam flags name, return the coverage report;
    raise NoRowsWritten (after the report and record files are written) if no row was written.
    Under `--dry_run` (Dataflow's: translate the job, submit nothing) there is no report: None.

    The run holds the output's lock from its first write to its last, writes under the staging
    prefix and replaces the finished run only once its own manifest is written (outputs.py).
    `files`: the preflight's answer when the caller already ran it (the command line does).
    `before_swap(staged folder, report)`: called, still holding the lock, once a run that wrote
    rows is complete under the staging prefix and before it replaces the previous run: the
    smoke-test stage, whose result goes into the report and manifest the swap then puts in place
    (run after the swap, it rewrote them in place, where a kill could leave them half written)."""
    with job_scope(), job_allocator(), tempfile.TemporaryDirectory(prefix="masked-shards-progress-") as scratch:
        beam_args = for_remote_workers(config, with_default_runner(beam_args or []))
        job = plan(config, files)
        data_flows()
        without_timed_flush()
        quick_bundle_ends()
        remember_introspection()
        options = PipelineOptions(beam_args)
        if options.view_as(TestOptions).dry_run:
            with beam.Pipeline(options=options) as pipe:
                build(pipe, job)
            return None
        if _shows_progress(options, config.quiet):
            job = replace(job, progress=scratch)
        with hold_output(config.output):
            check_output(config.output, config.overwrite)  # again: a run may have finished there since plan()
            recover(config.output)
            staged = replace(job, config=replace(config, output=staging(config.output)))
            with ProgressLine(scratch) if job.progress else nullcontext(), beam.Pipeline(options=options) as pipe:
                build(pipe, staged)
            if before_swap is not None and FileSystems.exists(FileSystems.join(staged.config.output, MANIFEST)):
                with FileSystems.open(FileSystems.join(staged.config.output, REPORT_JSON)) as handle:
                    before_swap(staged.config.output, json.loads(handle.read()))
            folder = config.output if promote(config.output) else staging(config.output)
    with FileSystems.open(FileSystems.join(folder, REPORT_JSON)) as handle:
        report = json.loads(handle.read())
    if not report["rows_written"]:
        raise NoRowsWritten(report, folder)
    return report

"""The job: check everything at start (`plan`), wire the composites (`build`), run (`run`).

`build(pipeline, plan)` takes any Beam pipeline, so tests hand it a `TestPipeline` and the command
line hands it one made from the user's runner flags. The last step, `FinalizeFn`, runs once after
every shard is written: it fills in empty shards, checks that the counts reconcile end to end
(records read = rows in shard files + rejected + dropped), and only then writes `manifest.json`.
A run that fails anywhere before that leaves no manifest.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

import pipeline
from pipeline.beam_transforms import DROPPED, ReadExamples, ReportCoverage, TokenizeExamples, WriteJsonLines, WriteShards, write_shard
from pipeline.config import ConfigError, PipelineConfig
from pipeline.formats import file_kind
from pipeline.label_coverage import Coverage, reconcile, report_png, report_text
from pipeline.masking import IGNORE_INDEX
from pipeline.rows import check_template
from pipeline.shards import SPLITS, manifest_json, schema_description, sha256, shard_count, shard_name
from pipeline.templates import ChatTemplate, TemplateError, resolve_template
from pipeline.tokenization import TokenizerError, fingerprint, load_tokenizer

MANIFEST, REPORT_JSON, REPORT_TEXT, REPORT_PNG = "manifest.json", "coverage_report.json", "coverage_report.txt", "coverage_report.png"
_OUTPUTS = ("data", "rejected", DROPPED, REPORT_JSON, REPORT_TEXT, REPORT_PNG, MANIFEST)


@dataclass(frozen=True)
class JobPlan:
    """What the driver settled before any data flows."""

    config: PipelineConfig
    files: list[tuple[str, str]]  # (name used in example ids, path)
    template: ChatTemplate
    tokenizer: dict[str, object]


def plan(config: PipelineConfig) -> JobPlan:
    """Resolve inputs, output folder, tokenizer and template; raise ConfigError on any problem."""
    files = expand_inputs(config.inputs)
    check_output(config.output, config.overwrite)
    try:
        tokenizer = load_tokenizer(config.tokenizer)
        template = resolve_template(config.template, getattr(tokenizer, "chat_template", None))
        check_template(template, tokenizer, config.tokenizer)
    except (TokenizerError, TemplateError) as err:
        raise ConfigError(str(err)) from None
    if config.pad_to and tokenizer.pad_token_id is None:
        raise ConfigError(f"--pad-to needs a pad token but tokenizer {config.tokenizer!r} has none")
    return JobPlan(config, files, template, fingerprint(tokenizer, config.tokenizer))


def expand_inputs(patterns: tuple[str, ...]) -> list[tuple[str, str]]:
    """Every file the patterns match, named by its path below the inputs' common folder."""
    paths: list[str] = []
    for pattern in patterns:
        matched = sorted(m.path for result in FileSystems.match([pattern]) for m in result.metadata_list)
        if not matched:
            raise ConfigError(f"--input {pattern} matches no file")
        for path in matched:
            if file_kind(path) is None:
                raise ConfigError(f"--input {path} is not a .jsonl or .json file")
            if path not in paths:
                paths.append(path)
    common = posixpath.dirname(paths[0]) if len(paths) == 1 else posixpath.commonpath(paths)
    return [(posixpath.relpath(path, common) if common else path, path) for path in paths]


def check_output(output: str, overwrite: bool) -> None:
    """Refuse a non-empty output folder unless overwriting; when overwriting, remove our old
    outputs first (the manifest before anything) so no stale manifest outlives a failed run."""
    if not FileSystems.exists(output):
        return
    existing = [m.path for result in FileSystems.match([FileSystems.join(output, "*")]) for m in result.metadata_list]
    if existing and not overwrite:
        raise ConfigError(f"--output {output} is not empty; pass --overwrite to replace it")
    for name in (MANIFEST, *_OUTPUTS):
        path = FileSystems.join(output, name)
        if FileSystems.exists(path):
            FileSystems.delete([path])


class FinalizeFn(beam.DoFn):
    """Runs once at the end: empty shards, report, reconciliation, then the manifest, last."""

    def __init__(self, plan: JobPlan) -> None:
        self._plan = plan

    def process(self, _: object, shards: list[dict], record_files: list[dict], coverage: Coverage, read: int) -> Iterator[dict]:
        config, output = self._plan.config, self._plan.config.output
        shards = shards + self._empty_shards(shards, coverage)
        report = coverage.report(read, sum(s["rows"] for s in shards))
        _write(output, REPORT_JSON, manifest_json(report))
        _write(output, REPORT_TEXT, report_text(report))
        _write(output, REPORT_PNG, report_png(report))
        problem = reconcile(report)
        if problem:
            raise RuntimeError(problem)
        manifest = {
            "masked_shards_version": pipeline.__version__,
            "config": config.recorded(),
            "tokenizer": self._plan.tokenizer,
            "template": {"name": self._plan.template.name, "sha256": sha256(self._plan.template.source.encode("utf-8"))},
            "labels": {"ignore_index": IGNORE_INDEX, "shifted": False, "trained_on": "assistant turns and their end-of-turn tokens"},
            "schema": schema_description(),
            "shards": sorted(shards, key=lambda s: s["path"]),
            "record_files": sorted(record_files, key=lambda s: s["path"]),
            "counts": report,
        }
        temporary = FileSystems.join(output, MANIFEST + ".partial")
        _write(output, MANIFEST + ".partial", manifest_json(manifest))
        FileSystems.rename([temporary], [FileSystems.join(output, MANIFEST)])
        yield report

    def _empty_shards(self, shards: list[dict], coverage: Coverage) -> list[dict]:
        """Hash assignment can leave a shard with no rows; write it empty so the set is whole."""
        config, written = self._plan.config, {(s["split"], s["index"]) for s in shards}
        wanted = [split for split in SPLITS if split == "train" or config.validation_fraction > 0]
        missing = []
        for split in wanted:
            count = shard_count(coverage.rows[split], config.num_shards, config.rows_per_shard)
            for index in range(count):
                if (split, index) not in written:
                    missing.append(write_shard(config.output, split, index, count, [], config.seed))
        return missing


def _write(output: str, name: str, content: str | bytes) -> None:
    with FileSystems.create(FileSystems.join(output, name)) as handle:
        handle.write(content.encode("utf-8") if isinstance(content, str) else content)


def build(pipe: beam.Pipeline, plan: JobPlan) -> beam.PCollection:
    """Wire the whole job onto `pipe`; returns the PCollection holding the final report."""
    config = plan.config
    read = pipe | "ReadExamples" >> ReadExamples(plan.files, config.format, config.fail_fast)
    tokenized = read["examples"] | "TokenizeExamples" >> TokenizeExamples(config, plan.template)
    rejected = (read["rejected"], tokenized["rejected"]) | "AllRejected" >> beam.Flatten()
    shards = tokenized["rows"] | "WriteShards" >> WriteShards(config.output, config)
    record_files = (
        (rejected | "WriteRejected" >> WriteJsonLines(config.output, "rejected"), tokenized["dropped"] | "WriteDropped" >> WriteJsonLines(config.output, DROPPED))
        | "RecordFiles" >> beam.Flatten()
    )
    coverage = (tokenized["rows"], rejected, tokenized["dropped"]) | "ReportCoverage" >> ReportCoverage()
    return (
        pipe
        | "Once" >> beam.Create([None])
        | "Finalize"
        >> beam.ParDo(
            FinalizeFn(plan),
            shards=beam.pvalue.AsList(shards),
            record_files=beam.pvalue.AsList(record_files),
            coverage=beam.pvalue.AsSingleton(coverage),
            read=beam.pvalue.AsSingleton(read["read"]),
        )
    )


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


def run(config: PipelineConfig, beam_args: list[str] | None = None) -> dict[str, object]:
    """Plan, run to completion on the runner the Beam flags name, return the coverage report."""
    job = plan(config)
    options = PipelineOptions(with_default_runner(beam_args or []))
    with beam.Pipeline(options=options) as pipe:
        build(pipe, job)
    with FileSystems.open(FileSystems.join(config.output, REPORT_JSON)) as handle:
        return json.loads(handle.read())

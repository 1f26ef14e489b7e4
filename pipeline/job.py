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
from templates import template_path
from pipeline.beam_transforms import DROPPED, MixSources, ReadExamples, ReportCoverage, TokenizeExamples, WriteJsonLines, WriteShards, write_shard
from pipeline.config import ConfigError, PipelineConfig
from pipeline.sources import HF_PREFIX, InputFile, count_lines, file_kind, parse_hf_spec, split_name
from pipeline.formats import ParseOptions
from pipeline.label_coverage import Coverage, reconcile, report_png, report_text
from pipeline.masking import IGNORE_INDEX
from pipeline.rows import check_template
from pipeline.shards import SPLITS, manifest_json, schema_description, sha256, shard_count
from pipeline.templates import ChatTemplate, TemplateError, resolve_template
from pipeline.tokenization import TokenizerError, fingerprint, load_tokenizer
from pipeline.translation import Seq2SeqRowBuilder, translation_prompt

MANIFEST, REPORT_JSON, REPORT_TEXT, REPORT_PNG = "manifest.json", "coverage_report.json", "coverage_report.txt", "coverage_report.png"
_OUTPUTS = ("data", "rejected", DROPPED, REPORT_JSON, REPORT_TEXT, REPORT_PNG, MANIFEST)


@dataclass(frozen=True)
class JobPlan:
    """What the driver settled before any data flows."""

    config: PipelineConfig
    files: list[InputFile]
    template: ChatTemplate
    tokenizer: dict[str, object]
    parse_options: ParseOptions


def plan(config: PipelineConfig) -> JobPlan:
    """Resolve inputs, output folder, tokenizer and template; raise ConfigError on any problem."""
    files = expand_inputs(config.inputs, config.input_pairs)
    check_mix(files, config.mix)
    check_output(config.output, config.overwrite)
    try:
        tokenizer = load_tokenizer(config.tokenizer)
        template = resolve_template(config.template, getattr(tokenizer, "chat_template", None))
        if config.format != "text" and config.model_type == "decoder":
            check_template(template, tokenizer, config.tokenizer)
        if config.model_type == "seq2seq":
            Seq2SeqRowBuilder(config, tokenizer)  # refuses a tokenizer without EOS (or pad, when padding)
    except (TokenizerError, TemplateError, ValueError) as err:
        raise ConfigError(str(err)) from None
    if (config.source_lang is None) != (config.target_lang is None):
        raise ConfigError("--source-lang and --target-lang must be given together")
    if config.pad_to and tokenizer.pad_token_id is None:
        raise ConfigError(f"--pad-to needs a pad token but tokenizer {config.tokenizer!r} has none")
    options = ParseOptions(
        format=config.format,
        field_map=config.field_map,
        role_map=config.role_map,
        system_prompt=config.system_prompt,
        source_lang=config.source_lang,
        target_lang=config.target_lang,
        translation_prompt=_translation_prompt(config.translate_template),
        max_length_ratio=config.max_length_ratio,
        model_type=config.model_type,
    )
    return JobPlan(config, files, template, fingerprint(tokenizer, config.tokenizer), options)


def _translation_prompt(path: str | None) -> str:
    """The decoder-only translation prompt template: the user's file or the bundled one."""
    try:
        with FileSystems.open(path or str(template_path("translate"))) as handle:
            source = handle.read().decode("utf-8")
    except (OSError, beam.io.filesystem.BeamIOError) as err:
        raise ConfigError(f"cannot read --translate-template {path} ({err})") from None
    try:  # a template that cannot render would fail every pair: find out now
        translation_prompt(source, "Hello.", "English", "German")
    except ValueError as err:
        raise ConfigError(f"--translate-template {path}: {err}") from None
    return source


def expand_inputs(specs: tuple[str, ...], pairs: tuple[tuple[str, str], ...] = ()) -> list[InputFile]:
    """Every readable unit the inputs name, each with its source name and its id name.

    File names in ids are paths below the common folder of all matched files, so ids stay short
    and stable wherever the data lives.
    """
    found: list[tuple[str | None, str, str, str | None]] = []  # (source name, path, kind, split)
    for spec in specs:
        name, target = split_name(spec)
        if target.startswith(HF_PREFIX):
            found.append((name, target, "hf_hub", None))
            continue
        splits = _saved_dataset_splits(target)
        if splits is not None:
            found += [(name, target, "hf_disk", split) for split in splits]
            continue
        matched = sorted(m.path for result in FileSystems.match([target]) for m in result.metadata_list)
        if not matched:
            raise ConfigError(f"--input {target} matches no file")
        for path in matched:
            kind = file_kind(path)
            if kind is None:
                raise ConfigError(f"--input {path} is not a .jsonl, .json, .parquet, .csv or .txt file, nor a save_to_disk folder")
            found.append((name, path, kind, None))
    short = _short_names(found)
    units = [_named_unit(name, path, kind, split, short) for name, path, kind, split in found]
    for source_path, target_path in pairs:
        source_lines, target_lines = count_lines(source_path, FileSystems.open), count_lines(target_path, FileSystems.open)
        if source_lines != target_lines:
            raise ConfigError(f"--input-pair {source_path} has {source_lines} lines but {target_path} has {target_lines}")
        short = posixpath.basename(source_path)
        units.append(InputFile(short, short, source_path, "line_pair", target_path=target_path))
    ids = [(u.name, u.split) for u in units]
    if len(set(ids)) != len(ids):
        raise ConfigError("two inputs name the same file; list each file once")
    return units


def _short_names(found: list[tuple[str | None, str, str, str | None]]) -> dict[str, str]:
    files = sorted({path for _, path, kind, _ in found if kind not in ("hf_hub",)})
    if not files:
        return {}
    common = posixpath.dirname(files[0]) if len(files) == 1 else posixpath.commonpath(files)
    return {path: posixpath.relpath(path, common) if common and path != common else posixpath.basename(path) for path in files}


def _named_unit(name: str | None, path: str, kind: str, split: str | None, short: dict[str, str]) -> InputFile:
    if kind == "hf_hub":
        dataset, config, hf_split = parse_hf_spec(path)
        id_name = "/".join(part for part in (dataset, config, hf_split) if part)
    else:
        id_name = short[path] + (f"/{split}" if split else "")
    return InputFile(name or id_name, id_name, path, kind, split)


def _saved_dataset_splits(path: str) -> list[str | None] | None:
    """The splits of a `save_to_disk` folder ([None] for a single Dataset), or None if it is not one."""
    if FileSystems.exists(FileSystems.join(path, "dataset_dict.json")):
        with FileSystems.open(FileSystems.join(path, "dataset_dict.json")) as handle:
            return list(json.loads(handle.read())["splits"])
    if FileSystems.exists(FileSystems.join(path, "state.json")):
        return [None]
    return None


def check_mix(units: list[InputFile], mix: tuple[tuple[str, float], ...]) -> None:
    """--mix must weigh exactly the named sources, so no source is silently left at weight 0."""
    if not mix:
        return
    sources, weighted = {u.source for u in units}, {name for name, _ in mix}
    if sources != weighted:
        raise ConfigError(f"--mix must give a weight to every source and only to them: sources are {sorted(sources)}, --mix names {sorted(weighted)}")


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
    read = pipe | "ReadExamples" >> ReadExamples(plan.files, plan.parse_options, config.fail_fast)
    examples, sampled_out = read["examples"], []
    if config.mix:
        mixed = examples | "MixSources" >> MixSources(dict(config.mix), config.seed)
        examples, sampled_out = mixed["examples"], [mixed["sampled_out"]]
    tokenized = examples | "TokenizeExamples" >> TokenizeExamples(config, plan.template)
    rejected = (read["rejected"], tokenized["rejected"]) | "AllRejected" >> beam.Flatten()
    shards = tokenized["rows"] | "WriteShards" >> WriteShards(config.output, config)
    record_files = (
        (rejected | "WriteRejected" >> WriteJsonLines(config.output, "rejected"), tokenized["dropped"] | "WriteDropped" >> WriteJsonLines(config.output, DROPPED))
        | "RecordFiles" >> beam.Flatten()
    )
    coverage = (tokenized["rows"], rejected, tokenized["dropped"], *sampled_out) | "ReportCoverage" >> ReportCoverage()
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

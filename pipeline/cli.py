"""The `masked-shards` command line; `python run_pipeline.py ARGS` is `masked-shards run ARGS`.

Our flags become a `PipelineConfig`; every other `--flag` must be a Beam pipeline option
(`--runner`, `--direct_num_workers`, `--direct_running_mode`, Dataflow's `--project`, ...) and is
passed to Beam untouched. A config problem prints one sentence and exits 2; a failed run (a bad
record under --fail-fast, counts that do not reconcile) prints one sentence and exits 1.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import re
import signal
import sys
import threading

from masked_shards.config import DEMO_INPUTS, DEMO_TOKENIZER, ConfigError, PipelineConfig
from masked_shards.read.sources import InputFile

EXIT_CONFIG, EXIT_FAILED, EXIT_INTERRUPTED = 2, 1, 130


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag as a ConfigError sentence instead of usage + exit."""

    def error(self, message: str) -> None:
        raise ConfigError(message[0].upper() + message[1:].rstrip(".") + ".")


def _run_parser(parser: argparse.ArgumentParser) -> None:
    defaults = PipelineConfig()
    add = parser.add_argument
    add("--input", action="append", dest="inputs", metavar="[NAME=]INPUT", help="file or glob (.jsonl .json .parquet .csv .txt; the text kinds also compressed: .jsonl.gz, .json.zst, ...), a save_to_disk folder, or hf:NAME[:CONFIG][:SPLIT]; repeatable; default: the bundled demo data")
    add("--input-pair", nargs=2, action="append", dest="input_pairs", metavar=("SRC.txt", "TGT.txt"), help="two line-aligned text files of translation pairs (repeatable)")
    add("--output", default=defaults.output, help="output folder (default: %(default)s)")
    add("--output-format", default=defaults.output_format, choices=("parquet", "arrow"), help="parquet shards, or arrow: data/ in the save_to_disk layout that datasets.load_from_disk(OUT/data) reads (default: %(default)s)")
    add("--tokenizer", default=DEMO_TOKENIZER, help="fast tokenizer folder or hub id (default: the bundled demo tokenizer)")
    add("--template", default=None, help="a bundled name (masked-shards templates lists them), auto (the bundled one that renders like the tokenizer's own chat template, else that one), tokenizer (its own) or PATH.jinja (default: auto with --tokenizer, chatml for the demo tokenizer)")
    add("--format", default=defaults.format, help="auto, alpaca, prompt_completion, messages, sharegpt, translation or text (default: %(default)s)")
    add("--field", action="append", default=[], metavar="CANONICAL=ACTUAL", help="read field CANONICAL from column ACTUAL, e.g. prompt=question, or from a dotted path with list indices, e.g. output=instances.0.output (repeatable)")
    add("--role-map", default="", metavar="FROM=ROLE,...", help="speaker aliases, e.g. human=user,gpt=assistant,bot=assistant")
    add("--system-prompt", default=None, help="add this system turn, or replace the one a conversation has")
    add("--train-on", default=defaults.train_on, help="assistant (every trainable assistant turn), last (the final assistant turn only, history masked; an example whose final turn is train: false is dropped) or all (every token) (default: %(default)s)")
    add("--train-on-eot", action=argparse.BooleanOptionalAction, default=True, help="supervise each assistant turn's end-of-turn token (default: on)")
    add("--mix", default="", metavar="NAME=W,...", help="share of each named source (--input NAME=PATH) among the examples kept, e.g. a=0.7,b=0.3")
    add("--source-lang", default=None, help="translation source language (key in {'translation': {...}} or flat records)")
    add("--target-lang", default=None, help="translation target language")
    add("--translate-template", default=None, metavar="PATH.jinja", help="prompt template for decoder-only translation (default: templates/translate.jinja)")
    add("--model-type", default=defaults.model_type, help="decoder (chat-templated rows) or seq2seq (encoder-decoder rows) (default: %(default)s)")
    add("--max-length-ratio", type=float, default=None, help="reject translation pairs whose lengths differ by more than this ratio (default: off)")
    add("--max-length", type=int, default=defaults.max_length, help="longest row in tokens (default: %(default)s)")
    add("--max-record-bytes", type=int, default=defaults.max_record_bytes, help="reject a record larger than this many bytes as it is read, before parsing or tokenizing (default: %(default)s, 8 MiB)")
    add("--allow-max-length-above-model", action="store_true", help="allow a --max-length above the tokenizer's model_max_length (refused by default)")
    add("--overlong", default=defaults.overlong, help="truncate or drop examples over --max-length, or split them into pieces that are each packed (with --packing) (default: %(default)s)")
    add("--packing", default=defaults.packing, help="none (one example a row), bfd (best-fit decreasing into rows of --max-length) or wrap (documents end to end, cut every --max-length tokens) (default: %(default)s)")
    add("--pack-window", type=int, default=defaults.pack_window, help="examples packed together; larger fills rows better and holds more in memory (default: %(default)s)")
    add("--stride", type=int, default=None, help="windows of --max-length tokens every STRIDE tokens over longer documents, each token scored once (default: off)")
    add("--pad-to", default=None, help="pad rows to max_length or multiple:K (default: unpadded)")
    add("--validation-fraction", type=float, default=defaults.validation_fraction, help="share of examples for the validation split (default: %(default)s)")
    add("--special-text", default=defaults.special_text, help="user text spelling a special token: reject the record or keep it as plain text (default: %(default)s)")
    add("--fail-fast", action="store_true", help="stop at the first bad record instead of writing it to rejected/")
    add("--overwrite", action="store_true", help="replace the outputs of an earlier run in --output")
    add("--quiet", action="store_true", help="no live progress line (the report is still printed at the end)")
    add("--seed", type=int, default=defaults.seed, help="salts row order within shards (default: %(default)s)")
    add("--num-shards", type=int, default=defaults.num_shards, help="at most this many shards per split (never more than its rows; no shard is empty); 0 = ceil(rows / --rows-per-shard) (default: %(default)s)")
    add("--rows-per-shard", type=int, default=defaults.rows_per_shard, help="target rows per shard when --num-shards is 0 (default: %(default)s)")
    add("--verbose", action="store_true", help="show Beam's progress logs")
    add("--batch-size", type=int, default=defaults.batch_size, help="examples per tokenizer call (default: %(default)s)")
    add("--limit", type=int, default=None, metavar="N", help="only the first N records of each input file, for a quick look; the manifest and report say so (default: all)")
    add("--min-supervised-fraction", type=float, default=None, metavar="F", help="quality gate: exit 1 (after writing shards and report) when fewer than F of the tokens are supervised (default: off)")
    add("--max-rejected-fraction", type=float, default=None, metavar="F", help="quality gate: exit 1 when more than F of the records read are rejected (default: off)")
    add("--max-truncated-fraction", type=float, default=None, metavar="F", help="quality gate: exit 1 when more than F of the examples are truncated (default: off)")
    add("--smoke-test", default="auto", choices=("auto", "cuda", "cpu", "off"), help="last stage: train a tiny random model on the shards and check the loss is the masked loss, on a GPU (cuda), the CPU (cpu), a GPU when there is one (auto), or skip it (off) (default: %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="masked-shards", description="Turn SFT chat data into correctly masked token shards.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _run_parser(commands.add_parser("run", help="run the pipeline (extra --flags go to Apache Beam)"))
    listing = commands.add_parser("templates", help="list the bundled chat templates, or show one rendered")
    listing.add_argument("name", nargs="?", help="show this template (a bundled name or PATH.jinja) rendered on a sample conversation")
    listing.add_argument("--tokenizer", default=None, help="take bos/eos from this tokenizer, whose own chat template NAME tokenizer shows (default: the template family's own bos/eos)")
    _directory_parsers(commands)
    smoke = commands.add_parser("smoke-test", help="train a tiny random model on a finished run's shards and check its loss is the masked loss (writes DIR/smoke_test.json; exit 1 on a failed check)")
    smoke.add_argument("directory", metavar="DIR", help="a --output folder of masked-shards")
    smoke.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"), help="cuda, cpu, or a GPU when torch sees one (default: %(default)s)")
    return parser


def _directory_parsers(commands: argparse._SubParsersAction) -> None:
    """`validate DIR` and `inspect DIR`: commands on a shard directory already written."""
    validate = commands.add_parser("validate", help="check a shard directory: columns, lengths, labels, packing, manifest row counts and sha256 (exit 1 on any violation)")
    validate.add_argument("directory", metavar="DIR", help="a --output folder of masked-shards, or with --bare any folder of Parquet shards with input_ids and labels")
    validate.add_argument("--bare", action="store_true", help="check a folder of shards without manifest.json (structural checks only); without it a folder with no manifest fails")
    inspect = commands.add_parser("inspect", help="show rows token by token: supervised, masked and pad tokens, and the decoded supervised text per turn")
    inspect.add_argument("directory", metavar="DIR", help="a --output folder of masked-shards (its manifest names the tokenizer)")
    inspect.add_argument("--rows", type=int, default=3, help="show the first N rows (default: %(default)s)")
    inspect.add_argument("--example-id", default=None, metavar="ID", help="show the row holding this example id (e.g. alpaca.jsonl:17)")
    inspect.add_argument("--ids", action="store_true", help="one line per token with its id and label")
    inspect.add_argument("--tokenizer", default=None, help="decode with this tokenizer instead of the one the manifest names")
    mode = inspect.add_mutually_exclusive_group()
    mode.add_argument("--plain", action="store_true", help="markers instead of colours: [[...]] around supervised runs, {pad} for padding (default when stdout is not a terminal)")
    mode.add_argument("--color", action="store_true", help="ANSI colours even when stdout is not a terminal")


def config_from_args(args: argparse.Namespace) -> PipelineConfig:
    return PipelineConfig(
        inputs=tuple(args.inputs or (() if args.input_pairs else DEMO_INPUTS)),
        input_pairs=tuple(tuple(pair) for pair in args.input_pairs or ()),
        field_map=tuple(_pair(item, "--field") for item in args.field),
        role_map=tuple(_pair(item, "--role-map") for item in _items(args.role_map)),
        system_prompt=args.system_prompt,
        train_on=args.train_on,
        train_on_eot=args.train_on_eot,
        mix=tuple((name, _weight(value)) for name, value in (_pair(item, "--mix") for item in _items(args.mix))),
        source_lang=args.source_lang,
        target_lang=args.target_lang,
        translate_template=args.translate_template,
        model_type=args.model_type,
        max_length_ratio=args.max_length_ratio,
        output=args.output,
        output_format=args.output_format,
        tokenizer=args.tokenizer,
        template=args.template or (PipelineConfig.template if args.tokenizer == DEMO_TOKENIZER else "auto"),
        format=args.format,
        max_length=args.max_length,
        max_record_bytes=args.max_record_bytes,
        allow_max_length_above_model=args.allow_max_length_above_model,
        overlong=args.overlong,
        packing=args.packing,
        pack_window=args.pack_window,
        stride=args.stride,
        pad_to=args.pad_to,
        validation_fraction=args.validation_fraction,
        special_text=args.special_text,
        fail_fast=args.fail_fast,
        overwrite=args.overwrite,
        quiet=args.quiet,
        seed=args.seed,
        num_shards=args.num_shards,
        rows_per_shard=args.rows_per_shard,
        batch_size=args.batch_size,
        min_supervised_fraction=args.min_supervised_fraction,
        max_rejected_fraction=args.max_rejected_fraction,
        max_truncated_fraction=args.max_truncated_fraction,
        limit=args.limit,
    )


def _items(text: str) -> list[str]:
    return [item for item in text.split(",") if item.strip()]


def _pair(item: str, flag: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise ConfigError(f"{flag} takes KEY=VALUE items, not {item!r}")
    return key.strip(), value.strip()


def _weight(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ConfigError(f"--mix weight {value!r} is not a number") from None


SAMPLE = (("system", "You are a helpful assistant."), ("user", "What is 2+2?"), ("assistant", "2 + 2 = 4."), ("user", "And 3+3?"), ("assistant", "3 + 3 = 6."))


def show_templates(name: str | None, tokenizer_name: str | None) -> str:
    """The list of bundled templates, or one template rendered with its trained text in [[ ]].

    BOS and EOS are the tokenizer's with --tokenizer (and `tokenizer` names its own chat template),
    else the family's own from the template's first line (templates/__init__.py), else <s> and </s>
    for a template file that names none.
    """
    from masked_shards import bundled_templates as templates
    from masked_shards.records import Example, Turn
    from masked_shards.build.templates import TOKENIZER_TEMPLATE, Renderer, TemplateError, renders_tools_and_reasoning, resolve_template
    from masked_shards.build.tokenization import TokenizerError, load_tokenizer, special_tokens

    if name is None:
        described = templates.bundled()
        width = max(map(len, described))
        lines = [f"{'NAME':<{width}}  TOOLS  REASONING  CHECKPOINTS AND FORMAT"]
        for n, description in described.items():
            source = templates.template_path(n).read_text(encoding="utf-8")
            bos, eos = templates.family_tokens(source) or (None, None)
            tools, reasoning = renders_tools_and_reasoning(source, {"bos_token": bos or "", "eos_token": eos or ""})
            lines.append(f"{n:<{width}}  {'yes' if tools else 'no':<5}  {'yes' if reasoning else 'no':<9}  {description}")
        return "\n".join(lines) + "\n\nmasked-shards templates NAME shows one rendered; --template auto picks the one that renders like the tokenizer's own."
    if name == TOKENIZER_TEMPLATE and not tokenizer_name:
        raise ConfigError("templates tokenizer needs --tokenizer to know whose chat template to show")
    try:
        tokenizer = load_tokenizer(tokenizer_name) if tokenizer_name else None
        template = resolve_template(name, getattr(tokenizer, "chat_template", None))
    except (TokenizerError, TemplateError) as err:
        raise ConfigError(str(err)) from None
    if tokenizer is not None:
        (bos, eos), specials, whose = (tokenizer.bos_token, tokenizer.eos_token), special_tokens(tokenizer), f"from tokenizer {tokenizer_name}"
    else:
        family = templates.family_tokens(template.source)
        (bos, eos), specials = family or ("<s>", "</s>"), ()
        whose = "the family's own" if family else "placeholders: the template names no family tokens"
    renderer = Renderer(template, bos_token=bos, eos_token=eos, special_tokens=specials)
    example = Example("sample:0", "sample", tuple(Turn(role, text, role == "assistant") for role, text in SAMPLE))
    try:
        try:
            rendered = renderer.render(example)
            note = ""
        except TemplateError as err:  # e.g. a family without a system role
            rendered = renderer.render(Example("sample:0", "sample", example.turns[1:]))
            note = f"(without the system turn: {err})\n"
    except TemplateError as err:
        raise ConfigError(str(err)) from None
    shown = "".join(f"[[{s.text}]]" if s.trainable else s.text for s in rendered.segments)
    return f"{note}{shown}\n\n[[...]] marks the trained tokens; bos {bos or 'none'}, eos {eos or 'none'} ({whose})."


def _on_directory(args: argparse.Namespace) -> int:
    """Run validate (exit 1 on any violation) or inspect (colours only on a terminal, unless asked)."""
    if args.command == "validate":
        from masked_shards.check.folder import RunFolder
        from masked_shards.check.validation import validate_directory, validation_text
        from masked_shards.write.replacing import JOURNAL

        fs = _filesystem_for(args.directory)
        folder = RunFolder.at(args.directory, fs)
        if not folder.is_folder():
            raise ConfigError(f"{args.directory} is not a folder")
        if folder.is_file(JOURNAL):  # a run was killed while swapping its files in: finish that first
            from masked_shards.beam.outputs import finish_interrupted

            if finish_interrupted(args.directory):
                print(f"masked-shards: completed the replacement a killed run left half done in {args.directory}; its new run is now in place", file=sys.stderr)
        result = validate_directory(args.directory, fs=fs, bare=args.bare)
        print(validation_text(result), end="")
        return 0 if result.ok else EXIT_FAILED
    from masked_shards.check.inspection import inspect_directory

    if args.rows < 1:
        raise ConfigError(f"--rows must be positive, not {args.rows}")
    color = args.color or (not args.plain and sys.stdout.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb")
    print(inspect_directory(args.directory, args.rows, args.example_id, args.tokenizer, color, args.ids, fs=_filesystem_for(args.directory)), end="")
    return 0


def _filesystem_for(directory: str):  # -> pyarrow.fs.FileSystem | None
    """Beam's filesystems for a path with a scheme (gs://, s3://, any a Beam plugin registers: the
    job wrote it through them), pyarrow's own for a local folder (None)."""
    if "://" not in directory:
        return None
    from masked_shards.beam.filesystem import beam_filesystem

    return beam_filesystem()


def run_smoke_test(output: str, device: str) -> int:
    """`masked-shards smoke-test DIR`: the stage on a finished run, its result recorded there."""
    from masked_shards.beam.outputs import hold_output

    with hold_output(output):  # it rewrites the report and manifest
        return _told(smoke_stage(output, device))


def smoke_stage(folder: str, device: str, named: str | None = None) -> tuple[int, str]:
    """The smoke-test stage (smoke_test.py) on the run in `folder`, its result recorded in the
    report and manifest there (job.record_smoke_test): (0, its summary line) or (1, its one
    failing sentence); the shards stay either way. `named`: where the failure says to look."""
    from masked_shards.beam.job import record_smoke_test
    from masked_shards.check.smoke_test import SmokeTestFailed, run_stage, summary_line

    try:
        result = run_stage(folder, device, named=named)
    except SmokeTestFailed as err:
        record_smoke_test(folder)
        return EXIT_FAILED, f"masked-shards: {err}"
    record_smoke_test(folder)
    return 0, summary_line(result)


def _told(outcome: tuple[int, str]) -> int:
    status, line = outcome
    print(line, file=sys.stderr if status else sys.stdout)
    return status


def main(argv: list[str] | None = None) -> int:
    # Beam and its optional GCP imports log warnings about extras a local run does not need;
    # only errors reach the user unless they ask for --verbose.
    verbose = "--verbose" in (argv if argv is not None else sys.argv)
    logging.basicConfig(level=logging.INFO if verbose else logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    if not verbose:  # a failed bundle's traceback is logged by Beam; we print its one sentence instead
        logging.getLogger("apache_beam").setLevel(logging.CRITICAL)
    try:
        args, extra = build_parser().parse_known_args(argv)
        if args.command == "templates":
            if extra:
                raise ConfigError(f"Unexpected argument {extra[0]!r}.")
            print(show_templates(args.name, args.tokenizer))
            return 0
        if args.command in ("validate", "inspect"):
            if extra:
                raise ConfigError(f"Unexpected argument {extra[0]!r}.")
            return _on_directory(args)
        if args.command == "smoke-test":
            if extra:
                raise ConfigError(f"Unexpected argument {extra[0]!r}.")
            return run_smoke_test(args.directory, args.device)
        if args.smoke_test == "cuda":  # refused now, before any data flows, not after the job
            from masked_shards.check.smoke_test import device_for

            device_for("cuda")
        config = config_from_args(args)
        from masked_shards.beam.options import check_beam_args
        from masked_shards.beam.preflight import preflight

        beam_args = check_beam_args(extra)  # imports Beam only when there are Beam flags to check
        if beam_args:  # e.g. a Dataflow run, which refuses paths on this machine before anything else
            from masked_shards.beam.job import for_remote_workers, with_default_runner

            for_remote_workers(config, with_default_runner(beam_args))
        files = preflight(config)  # without Beam flags, before Beam, transformers or the tokenizer load
    except ConfigError as err:
        print(f"masked-shards: {err}", file=sys.stderr)
        return EXIT_CONFIG
    return _run(config, beam_args, args.smoke_test, files)


def _run(config: PipelineConfig, beam_args: list[str], smoke_test: str = "off", files: list[InputFile] | None = None) -> int:
    """Run the job; a run that wrote no row failed (exit 1), after showing its report and the
    one sentence that says where the records went. A run that passed its gates ends with the
    smoke-test stage (`auto`: not for an output in an object store, which it would have to read
    back over the network; `cpu`/`cuda` run it anyway), on the staged run before it replaces the
    previous one (job.run's `before_swap`), so a kill in the stage leaves the previous run whole."""
    from masked_shards.beam.collector import job_scope

    with job_scope():  # no collections while Beam and transformers import (collector.py); run() has its own
        from masked_shards.beam.job import NoRowsWritten, run
        from masked_shards.beam.outputs import left_behind
        from masked_shards.report.label_coverage import gate_failure, report_text
    _interrupted.clear()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _on_interrupt)
    smoke: list[tuple[int, str]] = []

    def smoke_before_swap(folder: str, report: dict) -> None:
        """The stage on the staged run, under the lock, before it replaces the previous one: its
        result is in the report and manifest that the swap puts in place. A run its gates fail
        gets none."""
        if not gate_failure(report):
            smoke.append(smoke_stage(folder, smoke_test, named=config.output))

    wanted = smoke_test != "off" and not (smoke_test == "auto" and "://" in config.output)
    try:
        report = run(config, beam_args, files, smoke_before_swap if wanted else None)
        if report is None:
            print("dry run: the job was built and translated for the runner; nothing ran and nothing was written")
        else:
            print(report_text(report) + f"shards, report and manifest in {config.output}")
            if failed := gate_failure(report):  # the gates judge a finished run: its shards and report stay
                print(f"masked-shards: {failed}", file=sys.stderr)
                return EXIT_FAILED
            if smoke:
                return _told(smoke[0])
    except KeyboardInterrupt:  # Ctrl-C: say what is left, exit as shells expect of SIGINT
        print(f"\nmasked-shards: interrupted; {left_behind(config.output)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ConfigError as err:
        print(f"masked-shards: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except NoRowsWritten as err:
        print(report_text(err.report) + f"report and rejected/dropped records in {err.folder or config.output}; no shards, no manifest" + ("" if err.folder in ("", config.output) else f"; the finished run in {config.output} is kept"))
        print(f"masked-shards: {err}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as err:  # a failed Beam run: show its one meaningful sentence
        if _interrupted.is_set():  # Ctrl-C inside a Beam step, which wraps it in its own error
            print(f"\nmasked-shards: interrupted; {left_behind(config.output)}", file=sys.stderr)
            return EXIT_INTERRUPTED
        print(f"masked-shards: run failed: {_essence(err)}", file=sys.stderr)
        return EXIT_FAILED
    return 0


_interrupted = threading.Event()


def _on_interrupt(signum: int, frame: object) -> None:
    """Python's own Ctrl-C (KeyboardInterrupt), remembered: Beam turns it into a step's error."""
    _interrupted.set()
    signal.default_int_handler(signum, frame)


def _essence(err: BaseException) -> str:
    """Beam wraps worker errors in long tracebacks; keep our own sentence when there is one."""
    text = str(err)
    for pattern in (r"record \S+ is bad \(.*?\); stopping because of --fail-fast", r"records do not reconcile: [^\n']*", r"cannot write \S+: [^\n'\[]*"):
        found = re.search(pattern, text)
        if found:
            return found.group(0)
    return text.strip().splitlines()[-1][:500] if text.strip() else type(err).__name__


def command_line(argv: list[str] | None = None) -> int:
    """`main` for a process that ends when it returns (the console script, `python -m`,
    run_pipeline.py): everything alive is then frozen out of the garbage collector, whose passes
    over Beam's hundreds of thousands of objects at interpreter exit took 0.35 s of a 55k-chat run's
    8.5 s, to free memory the process gives back whole. Every file is closed when `main` returns;
    `atexit` handlers and stdio flushing still run. In-process callers (the tests) keep `main`."""
    status = main(argv)
    gc.freeze()
    return status


if __name__ == "__main__":
    sys.exit(command_line())

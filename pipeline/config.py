"""The one job configuration, checked before any data flows.

Every check raises `ConfigError` with one sentence naming the flag, so the command line can print
it and exit instead of showing a traceback. The choices of each flag live here too, so this module
imports nothing of ours that could import it back (formats.py, rows.py and the job read it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from masked_shards.build.masking import TRAIN_ON

ASSETS = Path(__file__).parent / "assets"
DEMO_INPUTS = (str(ASSETS / "demo_data" / "*.json"), str(ASSETS / "demo_data" / "*.jsonl"))
DEMO_TOKENIZER = str(ASSETS / "demo_tokenizer")
FORMATS = ("alpaca", "prompt_completion", "messages", "sharegpt", "translation", "text")  # formats.py reads each
OVERLONG_CHOICES = ("truncate", "drop", "split")  # split: only with packing (packing.py cuts the pieces)
PACKING_CHOICES = ("none", "bfd", "wrap")  # packing.py
SPECIAL_TEXT_CHOICES = ("reject", "plain")
MODEL_TYPES = ("decoder", "seq2seq")
OUTPUT_FORMATS = ("parquet", "arrow")  # write/arrow.py writes both


class ConfigError(Exception):
    """A bad flag or setting; its message is one sentence for the user."""


@dataclass(frozen=True)
class PipelineConfig:
    """Everything that decides the output bytes (and so goes into the manifest)."""

    inputs: tuple[str, ...] = DEMO_INPUTS
    """Inputs, each `[name=]PATH_OR_GLOB`, a `save_to_disk` folder, or `hf:NAME[:CONFIG][:SPLIT]`."""
    input_pairs: tuple[tuple[str, str], ...] = ()
    """Line-aligned (source, target) text files for translation."""
    output: str = "out"
    """Output folder; must be empty or absent unless overwrite is set."""
    output_format: str = "parquet"
    """parquet (zstd shards under data/) or arrow (data/ in the layout of `datasets`' save_to_disk,
    read by `load_from_disk`); write/arrow.py."""
    tokenizer: str = DEMO_TOKENIZER
    """Hugging Face fast tokenizer: a local folder or a hub id."""
    template: str = "chatml"
    """Bundled template name, `tokenizer` for the tokenizer's own, `auto` for the bundled one that renders like
    it (else it), or a path to a .jinja file. The command line defaults to `auto` with --tokenizer."""
    format: str = "auto"
    """Record format: auto (detected per record) or one of FORMATS."""
    field_map: tuple[tuple[str, str], ...] = ()
    """(canonical, actual) column renames, from --field canonical=actual."""
    role_map: tuple[tuple[str, str], ...] = ()
    """(speaker, role) aliases, from --role-map human=user,bot=assistant."""
    system_prompt: str | None = None
    """Adds a system turn, or replaces the one a conversation has."""
    train_on: str = "assistant"
    """assistant (every trainable assistant turn), last (only the final assistant turn, and only if it is
    trainable: a final turn marked `train: false` leaves the example nothing to train), or all (every token)."""
    train_on_eot: bool = True
    """Supervise each assistant turn's end-of-turn token (the model must learn to stop)."""
    mix: tuple[tuple[str, float], ...] = ()
    """(source name, weight): the share of each named source among the examples kept."""
    source_lang: str | None = None
    """Source language (code or name) of translation pairs."""
    target_lang: str | None = None
    """Target language of translation pairs."""
    translate_template: str | None = None
    """Jinja file for the decoder-only translation prompt; None uses templates/translate.jinja."""
    model_type: str = "decoder"
    """decoder (chat-templated rows) or seq2seq (encoder input, target labels) for translation."""
    max_length_ratio: float | None = None
    """Reject translation pairs whose character lengths differ by more than this ratio."""
    max_length: int = 2048
    """Longest row in tokens."""
    max_record_bytes: int = 8 << 20
    """Reject a record larger than this (its text, in UTF-8 bytes) as it is read, before it is
    parsed or tokenized: a record's cost in time and memory is then bounded (one 50 MB line took
    150 s and 10.8 GB to end as one truncated row). 8 MiB is about 2M tokens of text, far past any
    row's --max-length, and holds whole books."""
    allow_max_length_above_model: bool = False
    """Allow a max_length above the tokenizer's model_max_length. Refused by default: rows longer
    than the model's context are of no use to it, and padded to max_length they fill memory and
    disk for nothing (--pad-to max_length --max-length 100000 wrote 50M padding tokens)."""
    overlong: str = "truncate"
    """truncate (default) keeps the first max_length tokens: early turns of a long conversation are
    still complete, and a cut answer loses its end-of-turn token, so it never teaches the model to
    stop early. drop discards the example. Both are counted in the report."""
    pad_to: str | None = None
    """None (rows unpadded), `max_length`, or `multiple:K`."""
    packing: str = "none"
    """none (one example a row), bfd (best-fit decreasing of examples into rows of max_length) or
    wrap (documents end to end, cut every max_length tokens); packing.py."""
    pack_window: int = 20_000
    """Examples packed together (bfd/wrap): each split's examples go to windows of about this many by
    a seeded hash of their ids, and each window is packed on its own. Larger windows fill rows better
    and hold more in memory while packing (one window's rows, ~60 MB at 20,000 chat examples). On the
    shared chat mix (x20, 110k examples) at 2048 tokens the fill is 0.9923 with 1,000-example windows,
    0.9979 with 5,000, 0.9988 with 20,000 and 0.9992 packed all at once (README)."""
    stride: int | None = None
    """Cut documents longer than max_length into windows starting every `stride` tokens, each token
    scored once (striding.py); None: off."""
    validation_fraction: float = 0.0
    """Share of examples (by a stable hash of example_id) written to the validation split."""
    special_text: str = "reject"
    """What to do with user text that spells a special token: reject the record, or keep it as plain text."""
    fail_fast: bool = False
    """Stop at the first bad record instead of sending it to rejected/."""
    overwrite: bool = False
    """Replace the outputs of an earlier run in `output`."""
    quiet: bool = False
    """No live progress line (progress.py); the report is still printed at the end."""
    seed: int = 0
    """Salts the order of rows within shards."""
    num_shards: int = 0
    """At most this many shards per split (capped at its rows; empty hash buckets get no file);
    0 picks ceil(rows / rows_per_shard)."""
    rows_per_shard: int = 100_000
    """Target rows per shard when num_shards is 0."""
    batch_size: int = 1024
    """Examples per tokenizer call. The Rust tokenizer spreads a call over every core, and below
    about a thousand strings its start and end cost a third more CPU (Qwen2's vocabulary)."""
    limit: int | None = None
    """Read only the first N records of each input unit (file, `datasets` split, line pair) in index
    order, for a quick look before a long job; None reads everything. Recorded in the manifest."""
    min_supervised_fraction: float | None = None
    """Quality gate: the run fails (exit 1, after writing shards and report) when fewer of its
    tokens are supervised; catches a template or policy that masks the answers."""
    max_rejected_fraction: float | None = None
    """Quality gate: fail when more of the records read are rejected."""
    max_truncated_fraction: float | None = None
    """Quality gate: fail when more of the examples are truncated (kept, or dropped with nothing
    left to train)."""

    def __post_init__(self) -> None:
        _check(bool(self.inputs or self.input_pairs), "--input or --input-pair needs at least one file")
        _check(self.output_format in OUTPUT_FORMATS, f"--output-format must be parquet or arrow, not {self.output_format!r}")
        _check(self.format in ("auto", *FORMATS), f"--format must be one of auto, {', '.join(FORMATS)}, not {self.format!r}")
        _check(self.max_length >= 2, f"--max-length must be at least 2, not {self.max_length}")
        _check(self.max_record_bytes >= 1, f"--max-record-bytes must be positive, not {self.max_record_bytes}")
        _check(self.overlong in OVERLONG_CHOICES, f"--overlong must be truncate, drop or split, not {self.overlong!r}")
        _check(self.special_text in SPECIAL_TEXT_CHOICES, f"--special-text must be reject or plain, not {self.special_text!r}")
        _check(0.0 <= self.validation_fraction < 1.0, f"--validation-fraction must be in [0, 1), not {self.validation_fraction}")
        _check(self.num_shards >= 0, f"--num-shards must be 0 (auto) or positive, not {self.num_shards}")
        _check(self.rows_per_shard >= 1, f"--rows-per-shard must be positive, not {self.rows_per_shard}")
        _check(self.batch_size >= 1, f"--batch-size must be positive, not {self.batch_size}")
        _check(self.limit is None or self.limit >= 1, f"--limit must be positive, not {self.limit}")
        _check(self.train_on in TRAIN_ON, f"--train-on must be one of {', '.join(TRAIN_ON)}, not {self.train_on!r}")
        _check(self.model_type in MODEL_TYPES, f"--model-type must be decoder or seq2seq, not {self.model_type!r}")
        _check(all(w > 0 for _, w in self.mix), "--mix weights must be positive")
        _check(self.max_length_ratio is None or self.max_length_ratio >= 1, "--max-length-ratio must be at least 1")
        for flag, gate in (("--min-supervised-fraction", self.min_supervised_fraction), ("--max-rejected-fraction", self.max_rejected_fraction), ("--max-truncated-fraction", self.max_truncated_fraction)):
            _check(gate is None or 0.0 <= gate <= 1.0, f"{flag} must be a fraction between 0 and 1, not {gate}")
        self.pad_length(1)  # validates pad_to
        _check(self.packing in PACKING_CHOICES, f"--packing must be none, bfd or wrap, not {self.packing!r}")
        _check(self.pack_window >= 1, f"--pack-window must be positive, not {self.pack_window}")
        _check(self.packing == "none" or self.model_type == "decoder", "--packing works on decoder-only rows; encoder-decoder rows (--model-type seq2seq) would need per-example segment ids in both encoder and decoder, so they are not packed")
        _check(self.overlong != "split" or self.packing != "none", "--overlong split cuts long examples into pieces for packing, so it needs --packing bfd or wrap")
        if self.stride is not None:
            _check(1 <= self.stride <= self.max_length, f"--stride must be between 1 and --max-length {self.max_length}, not {self.stride}")
            _check(self.packing == "none", "--stride makes overlapping windows of whole rows for evaluation, so it cannot be combined with --packing")
            _check(self.model_type == "decoder", "--stride windows decoder-only rows, not encoder-decoder rows (--model-type seq2seq)")

    @property
    def reshapes_rows(self) -> bool:
        """Whether rows are made from example rows after tokenizing (packing or striding): example
        rows are then built unpadded, and the rows padded once made."""
        return self.packing != "none" or self.stride is not None

    @property
    def keeps_overlong(self) -> bool:
        """Whether an example over max_length is kept whole for a later step to cut (--overlong split,
        --packing wrap, --stride) instead of truncated; --overlong drop still drops it."""
        return self.overlong != "drop" and (self.overlong == "split" or self.packing == "wrap" or self.stride is not None)

    def pad_length(self, length: int) -> int:
        """The padded length of a row of `length` tokens under `pad_to`."""
        if self.pad_to is None:
            return length
        if self.pad_to == "max_length":
            return self.max_length
        kind, _, value = self.pad_to.partition(":")
        _check(kind == "multiple" and value.isdigit() and int(value) > 0, f"--pad-to must be max_length or multiple:K, not {self.pad_to!r}")
        multiple = int(value)
        _check(self.max_length % multiple == 0, f"--max-length {self.max_length} must be a multiple of K in --pad-to {self.pad_to}")
        return -(-length // multiple) * multiple

    def recorded(self) -> dict[str, object]:
        """Every setting, for the manifest, except where the run wrote, whether it could
        overwrite and whether it was quiet: the same data and settings give the same manifest in
        any folder."""
        settings = asdict(self)
        for where in ("output", "overwrite", "quiet"):
            settings.pop(where)
        return json_ready(settings)


def json_ready(value: object) -> object:
    """Tuples to lists, recursively, so the manifest's JSON reads like the config."""
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


def _check(ok: bool, sentence: str) -> None:
    if not ok:
        raise ConfigError(sentence)

"""The one job configuration, checked before any data flows.

Every check raises `ConfigError` with one sentence naming the flag, so the command line can print
it and exit instead of showing a traceback. The choices of each flag live here too, so this module
imports nothing of ours that could import it back (formats.py, rows.py and the job read it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from masked_shards.masking import TRAIN_ON

ASSETS = Path(__file__).parent / "assets"
DEMO_INPUTS = (str(ASSETS / "demo_data" / "*.json"), str(ASSETS / "demo_data" / "*.jsonl"))
DEMO_TOKENIZER = str(ASSETS / "demo_tokenizer")
FORMATS = ("alpaca", "prompt_completion", "messages", "sharegpt", "translation", "text")  # formats.py reads each
OVERLONG_CHOICES = ("truncate", "drop")
SPECIAL_TEXT_CHOICES = ("reject", "plain")
MODEL_TYPES = ("decoder", "seq2seq")


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
    tokenizer: str = DEMO_TOKENIZER
    """Hugging Face fast tokenizer: a local folder or a hub id."""
    template: str = "chatml"
    """Bundled template name, `tokenizer` for the tokenizer's own, or a path to a .jinja file."""
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
    validation_fraction: float = 0.0
    """Share of examples (by a stable hash of example_id) written to the validation split."""
    special_text: str = "reject"
    """What to do with user text that spells a special token: reject the record, or keep it as plain text."""
    fail_fast: bool = False
    """Stop at the first bad record instead of sending it to rejected/."""
    overwrite: bool = False
    """Replace the outputs of an earlier run in `output`."""
    seed: int = 0
    """Salts the order of rows within shards."""
    num_shards: int = 0
    """At most this many shards per split (capped at its rows; empty hash buckets get no file);
    0 picks ceil(rows / rows_per_shard)."""
    rows_per_shard: int = 100_000
    """Target rows per shard when num_shards is 0."""
    batch_size: int = 256
    """Examples per tokenizer call."""

    def __post_init__(self) -> None:
        _check(bool(self.inputs or self.input_pairs), "--input or --input-pair needs at least one file")
        _check(self.format in ("auto", *FORMATS), f"--format must be one of auto, {', '.join(FORMATS)}, not {self.format!r}")
        _check(self.max_length >= 2, f"--max-length must be at least 2, not {self.max_length}")
        _check(self.overlong in OVERLONG_CHOICES, f"--overlong must be truncate or drop, not {self.overlong!r}")
        _check(self.special_text in SPECIAL_TEXT_CHOICES, f"--special-text must be reject or plain, not {self.special_text!r}")
        _check(0.0 <= self.validation_fraction < 1.0, f"--validation-fraction must be in [0, 1), not {self.validation_fraction}")
        _check(self.num_shards >= 0, f"--num-shards must be 0 (auto) or positive, not {self.num_shards}")
        _check(self.rows_per_shard >= 1, f"--rows-per-shard must be positive, not {self.rows_per_shard}")
        _check(self.batch_size >= 1, f"--batch-size must be positive, not {self.batch_size}")
        _check(self.train_on in TRAIN_ON, f"--train-on must be one of {', '.join(TRAIN_ON)}, not {self.train_on!r}")
        _check(self.model_type in MODEL_TYPES, f"--model-type must be decoder or seq2seq, not {self.model_type!r}")
        _check(all(w > 0 for _, w in self.mix), "--mix weights must be positive")
        _check(self.max_length_ratio is None or self.max_length_ratio >= 1, "--max-length-ratio must be at least 1")
        self.pad_length(1)  # validates pad_to

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
        """Every setting, for the manifest, except where the run wrote and whether it could
        overwrite: the same data and settings give the same manifest in any folder."""
        settings = asdict(self)
        for where in ("output", "overwrite"):
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

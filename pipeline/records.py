"""The plain records every stage passes along: no Beam, no tokenizer, just data.

Every input shape (alpaca, prompt/completion, messages, sharegpt) becomes one currency, an
`Example` of role-tagged `Turn`s, before anything is rendered or tokenized. A record that cannot
become an `Example` becomes a `Rejected`, which keeps the raw input and where it came from so
nothing is ever lost silently. Tokenized rows travel a batch at a time as Arrow columns
(`RowBatch`, `BATCH_SCHEMA`), never one Python object per row or token.

The objects made for every record (`Turn`, `Example`, `Segment`; `RawRecord` and a line in
sources.py, `Rendered` in templates.py) are slotted dataclasses, not frozen ones, though nothing
changes them once made: a frozen dataclass sets each field through `object.__setattr__`, 1.0 µs
for a `Turn` against 0.24 µs, and a chat makes about nine of them (6 µs of the 70 µs of Python
a chat costs the worker's one thread). They hash by value as frozen ones do (`unsafe_hash`:
safe, as none is changed). The other records, made once per batch or per rejection, stay frozen.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import orjson
import pyarrow as pa

ROLES = ("system", "user", "assistant", "tool")  # `tool`: a tool's result, read back to the assistant
TEXT_ROLE = "text"  # the one turn of a `text` record: a document trained on whole
REASONING_KEYS = ("reasoning_content", "thinking")  # the names chat templates read an assistant's reasoning under

# Unicode noncharacters U+FDD0..U+FDEF are reserved by the renderer as in-band markers
# (see templates.py); text that already contains one is rejected rather than mis-masked.
RESERVED_CHARS = frozenset(chr(c) for c in range(0xFDD0, 0xFDF0))
_SURROGATE = re.compile("[\ud800-\udfff]")
_UNUSABLE = re.compile("[\ufdd0-\ufdef\ud800-\udfff]")  # either kind: one scan finds a text clean


@dataclass(slots=True, unsafe_hash=True)
class Turn:
    """One message. `trainable` is only ever true for assistant turns; `reasoning` is an
    assistant's thinking text, rendered by templates that know it. `tool_calls` are an
    assistant's calls, each normalised to the OpenAI / Hugging Face shape with `arguments` an
    object (formats.py decodes JSON strings):

        {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}, "id": "c1"}

    `extra` holds every other key the record gave the message (a tool result's `tool_call_id`
    and `name`, ...), so the template sees what the record said; nothing is dropped on the way."""

    role: str
    content: str
    trainable: bool = False
    reasoning: str | None = None
    tool_calls: tuple[dict[str, object], ...] = ()
    extra: tuple[tuple[str, object], ...] = ()

    def message(self) -> dict[str, object]:
        """The message as Hugging Face's `apply_chat_template` sees it: role, content, every other
        key the record gave, the tool calls, and the reasoning under both names templates read
        (Qwen3 and DeepSeek read `reasoning_content`, gpt-oss `thinking`)."""
        message: dict[str, object] = {"role": self.role, "content": self.content, **dict(self.extra)}
        if self.tool_calls:
            message["tool_calls"] = [dict(call) for call in self.tool_calls]
        if self.reasoning is not None:
            message.update(dict.fromkeys(REASONING_KEYS, self.reasoning))
        return message


@dataclass(slots=True, unsafe_hash=True)
class Example:
    """A conversation ready to render. `example_id` is `<input name>:<0-based record index>`;
    `tools` the record's tool definitions (JSON-schema functions), handed to the template as
    `tools`, or None when it gave none."""

    example_id: str
    source: str
    turns: tuple[Turn, ...]
    raw: object = field(default=None, compare=False)
    tools: list[dict[str, object]] | None = None


@dataclass(slots=True, unsafe_hash=True)
class Segment:
    """A run of the rendered training string; the segments of an example join to that string.

    `turn` is the index of the assistant turn a trainable segment belongs to, or None.
    """

    text: str
    trainable: bool
    turn: int | None = None


@dataclass(frozen=True)
class Rejected:
    """A record that did not become a training row, with why and where it came from.

    `reason` is a short machine-readable code (`invalid_json`, `missing_field`, ...), counted in
    the coverage report; `detail` is the human sentence; `raw` is the record as read.
    """

    source: str
    index: int | None
    reason: str
    detail: str
    raw: object = field(default=None, compare=False)

    @classmethod
    def internal_error(cls, source: str, index: int | None, error: BaseException, raw: object = None, *, during: str) -> Rejected:
        """A record on which our own code raised: it is set aside like any bad record, with the
        exception's type and message, so one unforeseen record can never end a whole job."""
        message = " ".join(str(error).split())[:300]
        return cls(source, index, "internal_error", f"{type(error).__name__} while {during}: {message}", raw)

    def to_json(self) -> dict[str, object]:
        return {
            "source": self.source,
            "index": self.index,
            "reason": self.reason,
            "detail": self.detail,
            "raw": self.raw,
        }


@dataclass(frozen=True)
class Dropped:
    """A well-formed example that produced no row (too long under `--overlong drop`, or nothing
    left to supervise). Not bad input, but still counted and listed."""

    example_id: str
    source: str
    reason: str
    detail: str

    def to_json(self) -> dict[str, object]:
        return {"example_id": self.example_id, "source": self.source, "reason": self.reason, "detail": self.detail}


@dataclass(frozen=True)
class SampledOut:
    """An example `--mix` left out to meet the source weights: counted, not listed (the same
    seed and weights leave out the same examples)."""

    source: str


@dataclass(frozen=True)
class BlankLines:
    """The blank lines of one line-based input file (blank rows of a CSV). They are no records, so
    neither read nor rejected, but counted (the report's `blank_lines`): in JSONL and text files
    each one still advances the line-number ids of the records after it (sources.py)."""

    source: str
    count: int


BATCH_SCHEMA = pa.schema(
    [
        ("input_ids", pa.list_(pa.int32())),  # decoder: aligned with labels; seq2seq: the source
        ("labels", pa.list_(pa.int32())),  # IGNORE_INDEX (-100) where not supervised; seq2seq: the target
        ("attention_mask", pa.list_(pa.int8())),
        ("example_id", pa.string()),
        ("source", pa.string()),
        ("split", pa.string()),  # "train" / "validation" (shards.split_for, seed-free)
        ("truncated", pa.bool_()),
        ("split_at_boundaries", pa.bool_()),
        ("tokens_before_truncation", pa.int32()),  # decoder: the whole encoding; seq2seq: source + target
        # What each message of the row became, for the coverage report only (shards.SCHEMA, the
        # written columns, leaves them out): per message in order, its role (an index into
        # TURN_ROLES), its tokens and supervised tokens left after truncation, and its end-of-turn
        # token (TURN_EOT). Tokens outside every message (headers, BOS, a template's default
        # system prompt) are the row's tokens minus the sum of `turn_tokens`.
        ("turn_roles", pa.list_(pa.int8())),
        ("turn_tokens", pa.list_(pa.int32())),
        ("turn_supervised", pa.list_(pa.int32())),
        ("turn_eot", pa.list_(pa.int8())),
        # Tool use and reasoning, per message as well: its tool calls (an assistant message that
        # makes calls has role TOOL_CALL), and its reasoning tokens supervised, or -n when the message
        # had n characters of reasoning the template did not render (Qwen3 leaves it out of history by design).
        ("turn_calls", pa.list_(pa.int16())),
        ("turn_reasoning", pa.list_(pa.int32())),
    ]
)
TOOL_CALL = "tool_call"  # the report's role of an assistant message that calls tools (its text, calls and end token)
TURN_ROLES = ("system", "user", "assistant", "tool", TEXT_ROLE, TOOL_CALL)  # `turn_roles` codes; seq2seq: source user, target assistant
MARKUP = "markup"  # the report's name for tokens outside every message: role headers, BOS, separators, default system prompts
TURN_EOT = ("none", "unsupervised", "supervised", "cut")  # `turn_eot` codes: no end-of-turn token, or it was masked, trained, or cut by truncation


@dataclass(frozen=True)
class RowBatch:
    """What one batch of examples became: the rows as Arrow columns, and the examples that gave
    none. This, not one object per row, is what crosses a Beam step: a row costs its tokens'
    bytes (4 + 4 + 1 per token, plus padding) when pickled, not a Python int per token.

        examples [e0, e1, e2, e3]  ->  rows: e0, e2, e3 (BATCH_SCHEMA)   others: (Rejected e1,)

    `rows` keeps the order of the examples that produced one, `others` (`Rejected`, `Dropped`)
    the order of theirs. `aligned` is False for encoder-decoder rows, whose `labels` are the
    target rather than `input_ids` masked, so the two columns may differ in length.
    """

    rows: pa.RecordBatch
    others: tuple[Rejected | Dropped, ...] = ()
    aligned: bool = True


class Invalid(Exception):
    """A field check failed: carries a reason code and a sentence, which the reader turns into a
    `Rejected` (formats.py for examples, translation.py for pairs)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def unusable_text(text: str) -> tuple[str, str] | None:
    """(reason, detail) when text cannot be trained on as it is, else None:

    * `reserved_character`: a Unicode noncharacter U+FDD0..U+FDEF, which the renderer uses as
      in-band markers (templates.py);
    * `invalid_unicode`: a lone UTF-16 surrogate (JSON allows the escape "\\ud800"), which is not
      a character and cannot be encoded as UTF-8 or tokenized.
    """
    if text.isascii() or not _UNUSABLE.search(text):  # isascii reads a flag: no scan for most texts
        return None
    if RESERVED_CHARS.intersection(text):
        return "reserved_character", "contains a Unicode noncharacter (U+FDD0..U+FDEF)"
    surrogate = _SURROGATE.search(text)
    if surrogate:
        return "invalid_unicode", f"contains a lone surrogate U+{ord(surrogate.group()):04X} at character {surrogate.start()}"
    return None


def json_bytes(value: object) -> bytes | None:
    """`value` as orjson writes it, or None where orjson refuses it (a lone surrogate, a key that
    is not a string, an integer past 64 bits, a type it does not know). Each string of `value`
    (`strings_in`, keys included) is in it, character by character: a character as itself, but
    `"`, `\\` and control characters escaped, each alike wherever it stands. So one C call
    answers what the strings of a tool call or a tool list hold, where walking them took 4 to 20
    us a record: none has a character past ASCII when the bytes have none, none is longer than
    the bytes, and none spells a text whose escaped form the bytes do not hold."""
    try:
        return orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError is one
        return None


def strings_in(value: object, keys: bool = True) -> Iterator[str]:
    """Every string inside a message field at any depth, in reading order (dict keys, unless
    `keys` is False, and values; list items): the texts of tool calls, tool definitions and other
    keys, which reach the template as well and so are checked like content."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            if keys:
                yield from strings_in(key)
            yield from strings_in(item, keys)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from strings_in(item, keys)

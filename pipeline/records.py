"""The plain records every stage passes along: no Beam, no tokenizer, just data.

Every input shape (alpaca, prompt/completion, messages, sharegpt) becomes one currency, an
`Example` of role-tagged `Turn`s, before anything is rendered or tokenized. A record that cannot
become an `Example` becomes a `Rejected`, which keeps the raw input and where it came from so
nothing is ever lost silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Turn:
    """One message. `trainable` is only ever true for assistant turns; `reasoning` is an
    assistant's thinking text (Qwen3-style `reasoning_content`), rendered by templates that know it."""

    role: str
    content: str
    trainable: bool = False
    reasoning: str | None = None

    def message(self) -> dict[str, str]:
        """The Hugging Face chat message a template sees."""
        message = {"role": self.role, "content": self.content}
        if self.reasoning is not None:
            message["reasoning_content"] = self.reasoning
        return message


@dataclass(frozen=True)
class Example:
    """A conversation ready to render. `example_id` is `<input name>:<0-based record index>`."""

    example_id: str
    source: str
    turns: tuple[Turn, ...]
    raw: object = field(default=None, compare=False)


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class TokenizedRow:
    """One output row before sharding. For decoder rows (`aligned`) the three lists align token
    for token (labels are not shifted); for encoder-decoder rows `input_ids`/`attention_mask`
    are the source and `labels` the target."""

    example_id: str
    source: str
    split: str
    input_ids: list[int]
    labels: list[int]
    attention_mask: list[int]
    truncated: bool = False
    split_at_boundaries: bool = False
    aligned: bool = True

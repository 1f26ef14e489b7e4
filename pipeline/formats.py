"""Raw input records to `Example`s: file kinds (JSONL, JSON array) and record formats.

Four record formats are understood, detected per record from its fields unless `--format` says:

    alpaca             {"instruction", "input"?, "output"}
    prompt_completion  {"prompt", "completion"}
    messages           {"messages": [{"role": "system"|"user"|"assistant", "content"}, ...]}
    sharegpt           {"conversations": [{"from": "system"|"human"|"gpt", "value"}, ...]}

Anything that cannot become a well-formed conversation (not JSON, a missing or mistyped field, an
empty answer, an unknown role, no assistant turn) becomes a `Rejected` with a reason code, never an
exception: bad input must not kill a job.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from pipeline.records import Example, Rejected, Turn

FORMATS = ("alpaca", "prompt_completion", "messages", "sharegpt")
FILE_KINDS = {".jsonl": "jsonl", ".json": "json"}

# Unicode noncharacters U+FDD0..U+FDEF are reserved by the renderer as in-band markers
# (see templates.py); text that already contains one is rejected rather than mis-masked.
RESERVED_CHARS = frozenset(chr(c) for c in range(0xFDD0, 0xFDF0))

_SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}


@dataclass(frozen=True)
class RawRecord:
    """A parsed JSON value and where it came from (`source` is the input's name in example ids)."""

    source: str
    index: int
    value: object


def file_kind(path: str) -> str | None:
    """`jsonl` or `json` from the file name, or None when the extension is not supported."""
    for suffix, kind in FILE_KINDS.items():
        if path.lower().endswith(suffix):
            return kind
    return None


def iter_records(source: str, stream: IO[bytes], kind: str) -> Iterator[RawRecord | Rejected]:
    """Yield every record of one file with its 0-based index.

    A `.json` file holding a JSON array yields its elements; a `.json` file that does not start
    with `[` is read as JSON Lines. A JSONL line that does not parse is rejected on its own; a
    JSON array that does not parse is one rejected record (index None), since no element can be
    recovered from it.
    """
    data = stream.read().decode("utf-8", errors="replace")
    if kind == "json" and data.lstrip().startswith("["):
        yield from _iter_json_array(source, data)
        return
    index = 0
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            yield RawRecord(source, index, json.loads(line))
        except json.JSONDecodeError as err:
            yield Rejected(source, index, "invalid_json", f"line is not valid JSON ({err.msg})", line)
        index += 1


def _iter_json_array(source: str, data: str) -> Iterator[RawRecord | Rejected]:
    try:
        values = json.loads(data)
    except json.JSONDecodeError as err:
        yield Rejected(source, None, "invalid_json", f"file is not a valid JSON array ({err.msg} at line {err.lineno})", None)
        return
    for index, value in enumerate(values):
        yield RawRecord(source, index, value)


def detect_format(value: dict[str, object]) -> str | None:
    """The record format its fields imply, or None."""
    if "messages" in value:
        return "messages"
    if "conversations" in value:
        return "sharegpt"
    if "instruction" in value or "output" in value:
        return "alpaca"
    if "prompt" in value or "completion" in value:
        return "prompt_completion"
    return None


class _Invalid(Exception):
    """Internal: carries a reason code and a sentence from a field check to `to_example`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def to_example(record: RawRecord, fmt: str = "auto") -> Example | Rejected:
    """Turn one raw record into an `Example`, or a `Rejected` saying why not."""
    value = record.value
    try:
        if not isinstance(value, dict):
            raise _Invalid("not_an_object", f"record is a JSON {type(value).__name__}, not an object")
        chosen = detect_format(value) if fmt == "auto" else fmt
        if chosen is None:
            raise _Invalid("unknown_format", f"cannot tell the format from fields {sorted(value)[:8]}")
        turns = _TURN_BUILDERS[chosen](value)
        _check_conversation(turns)
    except _Invalid as bad:
        return Rejected(record.source, record.index, bad.reason, bad.detail, value)
    return Example(f"{record.source}:{record.index}", record.source, turns, value)


def _text(value: dict[str, object], key: str, what: str, *, optional: bool = False) -> str:
    if key not in value or (optional and value[key] is None):
        if optional:
            return ""
        raise _Invalid("missing_field", f"{what} has no '{key}' field")
    text = value[key]
    if not isinstance(text, str):
        raise _Invalid("wrong_type", f"{what} field '{key}' is a {type(text).__name__}, not a string")
    return text


def _alpaca_turns(value: dict[str, object]) -> tuple[Turn, ...]:
    # Decision: a non-empty `input` follows the instruction after a blank line, as in the
    # Alpaca prompt; the chat template supplies any further framing.
    instruction = _text(value, "instruction", "alpaca record")
    extra = _text(value, "input", "alpaca record", optional=True)
    prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    return (Turn("user", prompt), Turn("assistant", _text(value, "output", "alpaca record"), True))


def _prompt_completion_turns(value: dict[str, object]) -> tuple[Turn, ...]:
    return (
        Turn("user", _text(value, "prompt", "prompt/completion record")),
        Turn("assistant", _text(value, "completion", "prompt/completion record"), True),
    )


def _message_list(value: dict[str, object], key: str) -> list[dict[str, object]]:
    messages = value.get(key)
    if messages is None:
        raise _Invalid("missing_field", f"record has no '{key}' field")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise _Invalid("wrong_type", f"'{key}' must be a list of objects")
    return messages


def _messages_turns(value: dict[str, object]) -> tuple[Turn, ...]:
    turns = []
    for n, message in enumerate(_message_list(value, "messages")):
        role = message.get("role")
        if role not in ("system", "user", "assistant"):
            raise _Invalid("unknown_role", f"message {n} has unknown role {role!r}")
        content = _text(message, "content", f"message {n}")
        turns.append(Turn(role, content, role == "assistant", _reasoning(message, n)))
    return tuple(turns)


def _reasoning(message: dict[str, object], n: int) -> str | None:
    """An assistant's thinking, under the names datasets use for it (first found wins)."""
    for key in ("reasoning_content", "reasoning", "thinking"):
        if message.get(key) is not None:
            return _text(message, key, f"message {n}")
    return None


def _sharegpt_turns(value: dict[str, object]) -> tuple[Turn, ...]:
    turns = []
    for n, message in enumerate(_message_list(value, "conversations")):
        speaker = message.get("from")
        role = _SHAREGPT_ROLES.get(speaker) if isinstance(speaker, str) else None
        if role is None:
            raise _Invalid("unknown_role", f"conversation turn {n} has unknown speaker {speaker!r}")
        content = _text(message, "value", f"conversation turn {n}")
        turns.append(Turn(role, content, role == "assistant"))
    return tuple(turns)


_TURN_BUILDERS = {
    "alpaca": _alpaca_turns,
    "prompt_completion": _prompt_completion_turns,
    "messages": _messages_turns,
    "sharegpt": _sharegpt_turns,
}


def _check_conversation(turns: tuple[Turn, ...]) -> None:
    if not any(t.role == "assistant" for t in turns):
        raise _Invalid("no_assistant_turn", "conversation has no assistant turn")
    for n, turn in enumerate(turns):
        if turn.role == "assistant" and not turn.content.strip():
            raise _Invalid("empty_answer", f"assistant turn {n} is empty")
        if RESERVED_CHARS.intersection(turn.content):
            raise _Invalid("reserved_character", f"turn {n} contains a Unicode noncharacter (U+FDD0..U+FDEF)")

"""Record formats: one raw record in, one `Example` (or a `Rejected` saying why not) out.

Formats, detected per record from its fields unless `--format` says:

    alpaca             {"instruction", "input"?, "output"}
    prompt_completion  {"prompt", "completion"}
    messages           {"messages": [{"role": "system"|"user"|"assistant", "content", "train"?}, ...]}
    sharegpt           {"conversations": [{"from": "system"|"human"|"gpt", "value", "train"?}, ...]}
    translation        {"src", "tgt"} | {"translation": {LANG: ...}} | {LANG: ..., LANG: ...}
    text               {"text"}  (continued pretraining: every token is trained)

Before detection, `--field canonical=actual` renames columns (top-level, and the role/content/
from/value keys inside messages; `actual` may be a dotted path such as `instances.0.output`, see
`_field_at`), `--role-map` adds speaker aliases, and `--system-prompt` adds or replaces the system
turn. A message with `"train": false` or `"weight": 0` stays unsupervised.

Anything that cannot become a well-formed conversation (a missing or mistyped field, an empty
answer, an unknown role, no assistant turn) becomes a `Rejected` with a reason code, never an
exception: bad input must not kill a job.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from masked_shards.config import PipelineConfig
from masked_shards.records import TEXT_ROLE, Example, Invalid, Rejected, Turn, unusable_text
from masked_shards.read.sources import RawRecord
from masked_shards.read.translation import TranslationPair, check_pair, pair_text, pair_to_example, translation_prompt

DEFAULT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}
_MESSAGE_KEYS = ("role", "content", "from", "value")
_ABSENT = object()  # what `_field_at` returns for a path that leads nowhere (None is a value)


@dataclass(frozen=True)
class ParseOptions:
    """How raw records become examples: the job's settings (`--format`, `--field`, `--role-map`,
    `--system-prompt`, languages, `--max-length-ratio`, read from `config`, never copied) and
    what the driver prepared from them once: the decoder-only translation prompt's Jinja text
    and the speaker table. The default config reads every format."""

    config: PipelineConfig = PipelineConfig()
    translation_prompt: str | None = None
    roles: dict[str, str] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "roles", DEFAULT_ROLES | dict(self.config.role_map))


def detect_format(value: dict[str, object], source_lang: str | None = None) -> str | None:
    """The record format its fields imply, or None."""
    if "messages" in value:
        return "messages"
    if "conversations" in value:
        return "sharegpt"
    if "instruction" in value or "output" in value:
        return "alpaca"
    if "prompt" in value or "completion" in value:
        return "prompt_completion"
    if "src" in value or "tgt" in value or "translation" in value or (source_lang and source_lang in value):
        return "translation"
    if "text" in value:
        return "text"
    return None


def to_example(record: RawRecord, options: ParseOptions = ParseOptions()) -> Example | Rejected:
    """Turn one raw record into an `Example`, or a `Rejected` saying why not."""
    value = record.value
    try:
        if not isinstance(value, dict):
            raise Invalid("not_an_object", f"record is a JSON {type(value).__name__}, not an object")
        config = options.config
        value = _renamed(value, config.field_map)
        chosen = detect_format(value, config.source_lang) if config.format == "auto" else config.format
        if chosen is None:
            raise Invalid("unknown_format", f"cannot tell the format from fields {_field_names(value)[:8]}")
        turns = _with_system_prompt(_TURN_BUILDERS[chosen](value, options), config.system_prompt)
        _check_conversation(turns)
    except Invalid as bad:
        return Rejected(record.name, record.index, bad.reason, bad.detail, record.value)
    return Example(record.example_id, record.source or record.name, turns, record.value)


def _field_names(value: dict[object, object]) -> list[str]:
    """The record's keys as sorted text, for messages. Keys need not be strings (a reader or a
    `datasets` row may hold None or numbers), and sorting mixed types raises TypeError."""
    return sorted(str(key) for key in value)


def _renamed(value: dict[str, object], field_map: tuple[tuple[str, str], ...]) -> dict[str, object]:
    """Apply `--field canonical=actual` to the record and to each message inside it."""
    if not field_map:
        return value
    value = _with_fields(value, [(c, a) for c, a in field_map if c not in _MESSAGE_KEYS])
    message_renames = [(c, a) for c, a in field_map if c in _MESSAGE_KEYS]
    for key in ("messages", "conversations"):
        if message_renames and isinstance(value.get(key), list):
            value[key] = [_with_fields(m, message_renames) if isinstance(m, dict) else m for m in value[key]]
    return value


def _with_fields(value: dict[str, object], renames: list[tuple[str, str]]) -> dict[str, object]:
    """A copy of `value` with each canonical field read from its actual key or path. A key is
    moved, so its old name cannot steer format detection; a path leaves its container in place.
    Where the key or path is absent the record is read as it is, so one `--field` set can serve
    inputs of several shapes and a record lacking the field gets its format's `missing_field`."""
    value = dict(value)
    for canonical, actual in renames:
        if actual in value:
            value[canonical] = value.pop(actual)
            continue
        found = _field_at(value, actual)
        if found is not _ABSENT:
            value[canonical] = found
    return value


def _field_at(value: dict[str, object], path: str) -> object:
    """`path` split at dots, each step a key of an object or a 0-based index of a list:
    `instances.0.output` is value["instances"][0]["output"], as `alpaca_seed_tasks` nests its
    answers. `_ABSENT` where a step does not exist. A key that itself contains dots is found
    before this is tried (`_with_fields`), so such keys keep working."""
    found: object = value
    for step in path.split("."):
        if isinstance(found, dict) and step in found:
            found = found[step]
        elif isinstance(found, list) and step.isascii() and step.isdigit() and int(step) < len(found):
            found = found[int(step)]
        else:
            return _ABSENT
    return found


def _text(value: dict[str, object], key: str, what: str, *, optional: bool = False) -> str:
    if key not in value or (optional and value[key] is None):
        if optional:
            return ""
        raise Invalid("missing_field", f"{what} has no '{key}' field")
    text = value[key]
    if not isinstance(text, str):
        raise Invalid("wrong_type", f"{what} field '{key}' is a {type(text).__name__}, not a string")
    return text


def _alpaca_turns(value: dict[str, object], options: ParseOptions) -> tuple[Turn, ...]:
    # Decision: a non-empty `input` follows the instruction after a blank line, as in the
    # Alpaca prompt; the chat template supplies any further framing.
    instruction = _text(value, "instruction", "alpaca record")
    extra = _text(value, "input", "alpaca record", optional=True)
    prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    return (Turn("user", prompt), Turn("assistant", _text(value, "output", "alpaca record"), True))


def _prompt_completion_turns(value: dict[str, object], options: ParseOptions) -> tuple[Turn, ...]:
    return (
        Turn("user", _text(value, "prompt", "prompt/completion record")),
        Turn("assistant", _text(value, "completion", "prompt/completion record"), True),
    )


def _message_list(value: dict[str, object], key: str) -> list[dict[str, object]]:
    messages = value.get(key)
    if messages is None:
        raise Invalid("missing_field", f"record has no '{key}' field")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise Invalid("wrong_type", f"'{key}' must be a list of objects")
    return messages


def _chat_turns(value: dict[str, object], options: ParseOptions, key: str, role_key: str, text_key: str) -> tuple[Turn, ...]:
    turns = []
    for n, message in enumerate(_message_list(value, key)):
        speaker = message.get(role_key)
        role = options.roles.get(speaker) if isinstance(speaker, str) else None
        if role is None:
            raise Invalid("unknown_role", f"message {n} has unknown {'speaker' if role_key == 'from' else 'role'} {speaker!r}")
        content = _text(message, text_key, f"message {n}")
        turns.append(Turn(role, content, role == "assistant" and _wants_training(message, n), _reasoning(message, n)))
    return tuple(turns)


def _wants_training(message: dict[str, object], n: int) -> bool:
    """Per-turn control: `"train": false` or `"weight": 0` keeps an assistant turn unsupervised."""
    train, weight = message.get("train", True), message.get("weight", 1)
    if not isinstance(train, bool) or not isinstance(weight, (int, float)) or isinstance(weight, bool) or weight not in (0, 1):
        raise Invalid("wrong_type", f"message {n}: 'train' must be true/false and 'weight' 0 or 1")
    return train and weight == 1


def _reasoning(message: dict[str, object], n: int) -> str | None:
    """An assistant's thinking, under the names datasets use for it (first found wins)."""
    for key in ("reasoning_content", "reasoning", "thinking"):
        if message.get(key) is not None:
            return _text(message, key, f"message {n}")
    return None


def _messages_turns(value: dict[str, object], options: ParseOptions) -> tuple[Turn, ...]:
    return _chat_turns(value, options, "messages", "role", "content")


def _sharegpt_turns(value: dict[str, object], options: ParseOptions) -> tuple[Turn, ...]:
    return _chat_turns(value, options, "conversations", "from", "value")


def _translation_turns(value: dict[str, object], options: ParseOptions) -> tuple[Turn, ...]:
    config = options.config
    src, tgt = pair_text(value, config.source_lang, config.target_lang)
    pair = TranslationPair("pair:0", "", src, tgt)
    problem = check_pair(pair, config.max_length_ratio)
    if problem:
        raise Invalid(problem.reason, problem.detail)
    return pair_to_example(pair, translation_prompt(options.translation_prompt, src, config.source_lang, config.target_lang)).turns


def _text_turns(value: dict[str, object], options: ParseOptions) -> tuple[Turn, ...]:
    text = _text(value, "text", "text record")
    if not text.strip():
        raise Invalid("empty_text", "text record is empty")
    return (Turn(TEXT_ROLE, text, True),)


_TURN_BUILDERS = {
    "alpaca": _alpaca_turns,
    "prompt_completion": _prompt_completion_turns,
    "messages": _messages_turns,
    "sharegpt": _sharegpt_turns,
    "translation": _translation_turns,
    "text": _text_turns,
}


def _with_system_prompt(turns: tuple[Turn, ...], system_prompt: str | None) -> tuple[Turn, ...]:
    """`--system-prompt` replaces the conversation's system turn, or adds one in front."""
    if system_prompt is None or (turns and turns[0].role == TEXT_ROLE):
        return turns
    rest = tuple(t for t in turns if t.role != "system")
    return (Turn("system", system_prompt), *rest)


def _check_conversation(turns: tuple[Turn, ...]) -> None:
    for n, turn in enumerate(turns):
        for what, text in (("text", turn.content), ("reasoning", turn.reasoning or "")):
            problem = unusable_text(text)
            if problem:
                raise Invalid(problem[0], f"turn {n} {what} {problem[1]}")
    if turns and turns[0].role == TEXT_ROLE:
        return
    if not any(t.role == "assistant" for t in turns):
        raise Invalid("no_assistant_turn", "conversation has no assistant turn")
    for n, turn in enumerate(turns):
        if turn.role == "assistant" and not turn.content.strip():
            raise Invalid("empty_answer", f"assistant turn {n} is empty")

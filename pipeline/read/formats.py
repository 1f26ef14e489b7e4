"""Record formats: one raw record in, one `Example` (or a `Rejected` saying why not) out.

Formats, detected per record from its fields unless `--format` says:

    alpaca             {"instruction", "input"?, "output"}
    prompt_completion  {"prompt", "completion"}
    messages           {"messages": [{"role": "system"|"user"|"assistant"|"tool", "content", ...}, ...], "tools"?}
    sharegpt           {"conversations": [{"from": "system"|"human"|"gpt"|"function_call"|"observation", "value"}, ...], "tools"?}
    translation        {"src", "tgt"} | {"translation": {LANG: ...}} | {LANG: ..., LANG: ...}
    text               {"text"}  (continued pretraining: every token is trained)

Before detection, `--field canonical=actual` renames columns (top-level, and the role/content/
from/value keys inside messages; `actual` may be a dotted path such as `instances.0.output`, see
`_field_at`), `--role-map` adds speaker aliases, and `--system-prompt` adds or replaces the system
turn. A message with `"train": false`, `"weight": 0` or `"loss_weight": 0` stays unsupervised.

Tool use, in the OpenAI / Hugging Face shape: an assistant message's `tool_calls` (arguments as an
object or a JSON string, decoded), a `tool` message's result (`tool_call_id`, `name` kept), the
record's `tools` (a list or its JSON text). ShareGPT tool data as LLaMA-Factory and glaive write
it: a `function_call` message (JSON `{"name", "arguments"}`, or a list of them) is an assistant
message of its own holding only the call, even right after a `gpt` message, and `observation`
(also `tool`, `ipython`) is a tool result. Content may be a list of parts (text joined, a
reasoning part is the reasoning, any other part rejected). A null field is an absent field.
Every other key of a message is passed on to the template (`Turn.extra`).

Anything that cannot become a well-formed conversation (a missing or mistyped field, an empty
answer, an unknown role, no assistant turn) becomes a `Rejected` with a reason code, never an
exception: bad input must not kill a job.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from itertools import repeat

from masked_shards.config import PipelineConfig
from masked_shards.records import TEXT_ROLE, Example, Invalid, Rejected, Turn, json_bytes, strings_in, unusable_text
from masked_shards.read.sources import RawRecord
from masked_shards.read.translation import TranslationPair, check_pair, pair_text, pair_to_example, translation_prompt

FUNCTION_CALL = "function_call"  # a speaker whose message is an assistant's tool call written as JSON (ShareGPT)
DEFAULT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "tool": "tool",
    "ipython": "tool",  # Llama 3.1's name for tool results
    "observation": "tool",  # ShareGPT tool data (LLaMA-Factory, glaive)
    FUNCTION_CALL: FUNCTION_CALL,
}
_REASONING_KEYS = ("reasoning_content", "reasoning", "thinking")
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
        value = _renamed(_present(value) if record.columnar else value, config.field_map)
        chosen = detect_format(value, config.source_lang) if config.format == "auto" else config.format
        if chosen is None:
            raise Invalid("unknown_format", f"cannot tell the format from fields {_field_names(value)[:8]}")
        turns = _with_system_prompt(_TURN_BUILDERS[chosen](value, options), config.system_prompt)
        tools = _tools(value) if chosen in ("messages", "sharegpt") else None
        _check_conversation(turns, tools)
    except Invalid as bad:
        return Rejected(record.name, record.index, bad.reason, bad.detail, record.value)
    return Example(record.example_id, record.source or record.name, turns, record.value, tools)


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
    if not isinstance(messages, list) or not all(map(isinstance, messages, repeat(dict))):  # map: no Python frame per message
        raise Invalid("wrong_type", f"'{key}' must be a list of objects")
    return messages


def _chat_turns(value: dict[str, object], options: ParseOptions, key: str, role_key: str, text_key: str) -> tuple[Turn, ...]:
    turns = []
    consumed = _consumed(role_key, text_key)
    for n, message in enumerate(_message_list(value, key)):
        if len(message) == 2 and type(message.get(text_key)) is str and type(message.get(role_key)) is str:
            role = options.roles.get(message[role_key])  # most messages: a role and a text, nothing else to read
            if role is not None and role != FUNCTION_CALL:
                turns.append(Turn(role, message[text_key], role == "assistant"))
                continue
        message = {k: v for k, v in message.items() if v is not None}  # a null field is an absent field
        speaker = message.get(role_key)
        role = options.roles.get(speaker) if isinstance(speaker, str) else None
        if role is None:
            raise Invalid("unknown_role", f"message {n} has unknown {'speaker' if role_key == 'from' else 'role'} {speaker!r}")
        trainable = _wants_training(message, n)
        if role == FUNCTION_CALL:  # ShareGPT: the value is the call itself, as JSON
            calls = _function_call_value(message.get(text_key), n)
            turns.append(Turn("assistant", "", trainable, None, calls, _extra(message, consumed)))
            continue
        content, part_reasoning = _content(message, text_key, n, has_calls=bool(message.get("tool_calls")))
        reasoning = _reasoning(message, n)
        if reasoning is None:
            reasoning = part_reasoning
        calls = _tool_calls(message.get("tool_calls"), n) if role == "assistant" else ()
        if role != "assistant" and "tool_calls" in message:
            raise Invalid("unexpected_field", f"message {n} has 'tool_calls' but is a {role} message; only assistant messages call tools")
        turns.append(Turn(role, content, role == "assistant" and trainable, reasoning, calls, _extra(message, consumed)))
    return tuple(turns)


@functools.cache
def _consumed(role_key: str, text_key: str) -> frozenset[str]:
    """The message keys read into a `Turn`'s own fields (the rest go to `extra`)."""
    return frozenset({role_key, text_key, "tool_calls", *_REASONING_KEYS})


def _present(value: object) -> object:
    """`value` with every null-valued key removed, at any depth, for a columnar record (Parquet,
    `datasets`): they store a list of messages as a list of structs, where a key one message lacks
    is null in the others, so a null field is an absent field (never the text "None"). A JSON
    record keeps its nulls below the message's own keys: `{"unit": null}` as a call's arguments
    is what the model must write. Only containers are descended into."""
    if isinstance(value, dict):
        return {k: _present(v) if isinstance(v, (dict, list)) else v for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_present(v) if isinstance(v, (dict, list)) else v for v in value]
    return value


def _extra(message: dict[str, object], consumed: frozenset[str]) -> tuple[tuple[str, object], ...]:
    """The message's other keys (a tool result's `tool_call_id` and `name`, ...), passed on to the
    template as the record gave them; `consumed`: the keys read into the `Turn`'s own fields."""
    if len(message) == 2 and all(k in consumed for k in message):  # the usual role and text alone
        return ()
    return tuple((k, v) for k, v in message.items() if k not in consumed)


def _content(message: dict[str, object], key: str, n: int, *, has_calls: bool) -> tuple[str, str | None]:
    """(text, reasoning given as a content part). Content is a string or a list of parts: text
    parts (`{"type": "text", "text"|"value": ...}`) are joined as they are, a `reasoning` part is
    the reasoning; any other part (an image) rejects the record, as we cannot train on it. Beside
    tool calls, content may be absent, null or empty (the message is only the calls)."""
    content = message.get(key)
    if content is None:
        if has_calls:
            return "", None
        raise Invalid("missing_field", f"message {n} has no '{key}' field")
    if isinstance(content, str):
        return content, None
    if not isinstance(content, list):
        raise Invalid("wrong_type", f"message {n} field '{key}' is a {type(content).__name__}, not a string or a list of parts")
    texts, reasoning = [], []
    for part in content:
        kind = part.get("type", "text") if isinstance(part, dict) else None
        if kind not in ("text", "reasoning"):
            what = repr(kind) if isinstance(part, dict) else f"a {type(part).__name__}"
            raise Invalid("unsupported_content", f"message {n} has a content part of type {what}; only text and reasoning parts can be trained on")
        text = next((part[k] for k in ("text", "value", "reasoning") if part.get(k) is not None), None)
        if not isinstance(text, str):
            raise Invalid("wrong_type", f"message {n} has a {kind} part without a string 'text'")
        (texts if kind == "text" else reasoning).append(text)
    return "".join(texts), "".join(reasoning) if reasoning else None


def _tool_calls(calls: object, n: int) -> tuple[dict[str, object], ...]:
    """An assistant's `tool_calls`, each normalised to {"type": "function", "function": {"name",
    "arguments": object}} with its `id` and any other key kept. `arguments` given as a JSON string
    is decoded, as Hugging Face and TRL do, so a template's `tojson` writes it once, not as a
    quoted string; one that is not a JSON object rejects the record."""
    if calls is None:
        return ()
    if not isinstance(calls, list) or not all(isinstance(c, dict) for c in calls):
        raise Invalid("wrong_type", f"message {n} 'tool_calls' must be a list of objects")
    normalised = []
    for k, call in enumerate(calls):
        function = call.get("function", call)  # a flat {"name", "arguments"} call is read as its function
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"].strip():
            raise Invalid("invalid_tool_call", f"message {n} tool call {k} has no function name")
        others = {key: v for key, v in call.items() if key not in ("function", "name", "arguments", "type") and v is not None}
        extra_function = {key: v for key, v in function.items() if key not in ("name", "arguments") and v is not None}
        arguments = _arguments(function.get("arguments", _ABSENT), f"message {n} tool call {k}")
        normalised.append({"type": "function", "function": {"name": function["name"], "arguments": arguments, **extra_function}, **others})
    return tuple(normalised)


def _arguments(arguments: object, where: str) -> dict[str, object]:
    if arguments is _ABSENT:
        raise Invalid("invalid_tool_call", f"{where} has no 'arguments'")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError as err:
            raise Invalid("invalid_tool_call", f"{where} 'arguments' is not valid JSON ({err})") from None
    if not isinstance(arguments, dict):
        raise Invalid("invalid_tool_call", f"{where} 'arguments' is a {type(arguments).__name__}, not an object")
    return arguments


def _function_call_value(value: object, n: int) -> tuple[dict[str, object], ...]:
    """A ShareGPT `function_call` message (LLaMA-Factory, glaive): its value is JSON of one call
    `{"name", "arguments"}`, or of a list of them (parallel calls)."""
    if not isinstance(value, str):
        raise Invalid("wrong_type", f"message {n} function_call value must be a JSON string")
    try:
        decoded = json.loads(value)
    except ValueError as err:
        raise Invalid("invalid_tool_call", f"message {n} function_call is not valid JSON ({err})") from None
    return _tool_calls(decoded if isinstance(decoded, list) else [decoded], n)


def _tools(value: dict[str, object]) -> list[dict[str, object]] | None:
    """The record's tool definitions (`tools`), a list of objects or its JSON text; None when absent or empty."""
    tools = value.get("tools")
    if isinstance(tools, str):
        if not tools.strip():
            return None
        try:
            tools = json.loads(tools)
        except ValueError as err:
            raise Invalid("invalid_tools", f"'tools' is not valid JSON ({err})") from None
    if tools is None:
        return None
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise Invalid("invalid_tools", "'tools' must be a list of objects (JSON-schema function definitions)")
    return tools or None


def _wants_training(message: dict[str, object], n: int) -> bool:
    """Per-turn control: `"train": false`, or `"weight"` / `"loss_weight"` 0, keeps an assistant
    turn unsupervised. Only 0 and 1 are honoured: a fractional weight cannot be expressed by a
    mask, so it rejects the record rather than being rounded."""
    if "train" not in message and "weight" not in message and "loss_weight" not in message:
        return True
    train = message.get("train", True)
    if not isinstance(train, bool):
        raise Invalid("invalid_weight", f"message {n}: 'train' must be true or false, not {train!r}")
    for key in ("weight", "loss_weight"):
        weight = message.get(key, 1)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight not in (0, 1):
            raise Invalid("invalid_weight", f"message {n}: '{key}' must be 0 or 1, not {weight!r}")
        train = train and weight == 1
    return train


def _reasoning(message: dict[str, object], n: int) -> str | None:
    """An assistant's thinking, under the names datasets use for it (first found wins)."""
    for key in _REASONING_KEYS:
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


def _ascii(value: object) -> bool:
    """Whether every string of `value` is ASCII (then none is unusable: `unusable_text`), told
    from its JSON in one call (`json_bytes`); False where that cannot tell."""
    shown = json_bytes(value)
    return shown is not None and shown.isascii()


def _check_conversation(turns: tuple[Turn, ...], tools: list[dict[str, object]] | None) -> None:
    """Reject a conversation with unusable text (every text checked in order: each turn's text,
    reasoning, tool calls and other fields, then the tools), else one that is not a document and
    has no assistant turn, else one with an empty answer. One pass over the turns for all three."""
    answered, empty = False, None
    for n, turn in enumerate(turns):
        problem = unusable_text(turn.content)
        if problem:
            raise Invalid(problem[0], f"turn {n} text {problem[1]}")
        if turn.reasoning or turn.tool_calls or turn.extra:
            texts = [("reasoning", turn.reasoning)] if turn.reasoning else []
            if not _ascii((turn.tool_calls, turn.extra)):
                texts += [*(("tool call", t) for t in strings_in(turn.tool_calls)), *(("field", t) for t in strings_in(turn.extra))]
            for what, text in texts:
                problem = unusable_text(text)
                if problem:
                    raise Invalid(problem[0], f"turn {n} {what} {problem[1]}")
        if turn.role == "assistant":
            answered = True
            if empty is None and not turn.tool_calls and not turn.content.strip():
                empty = n
    if tools is not None and not _ascii(tools):
        for text in strings_in(tools):
            problem = unusable_text(text)
            if problem:
                raise Invalid(problem[0], f"tools {problem[1]}")
    if turns and turns[0].role == TEXT_ROLE:
        return
    if not answered:
        raise Invalid("no_assistant_turn", "conversation has no assistant turn")
    if empty is not None:
        raise Invalid("empty_answer", f"assistant turn {empty} is empty")

"""The commonest bundled templates written out in Python: no Jinja call.

A Jinja render costs about 0.1 ms of Python per example (0.15 ms for a tool-calling one), most of
a batch's rendering; for the conversations most datasets hold (system, user and assistant
messages of plain text, no tools, no reasoning, no other fields) ChatML and Qwen2.5 lay out text
so simply that a few string joins give the same `Rendered`, segment for segment, as
`Renderer.render` (templates.py). Qwen2.5 is also written out for tool-calling conversations
(tools, calls, tool results), whose rendering then goes through the same checks as Jinja's
(`Renderer.checked`), so a conversation is refused exactly where Jinja's would be. Each writer is
pinned to the sha256 of the template source it was written from: a template edited since, or any
other template, is rendered by Jinja as before. So is any conversation outside a writer's shape
(its writer gives None): reasoning, extra message fields, other roles, a call that is
not a name with arguments, text kept as plain under `--special-text plain`, and for ChatML any
tool use. tests/build/test_direct_render.py holds each writer to the Jinja rendering over
generated conversations.

    chatml   [user "Hi", assistant "Hello"]
             "<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n" | "Hello<|im_end|>" | "\\n"
              trainable=False                                             trainable=True      False
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from masked_shards.build.templates import ChatTemplate, Rendered, Renderer, tojson
from masked_shards.records import Example, Segment, Turn

_PLAIN_ROLES = frozenset({"system", "user", "assistant"})
_QWEN_DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

Writer = Callable[[Example], Rendered]  # its spans start where the generation prompt ends and end with the stop token


def direct_renderer(template: ChatTemplate, renderer: Renderer) -> Callable[[Example], Rendered | None] | None:
    """The writer for this exact template source, or None (Jinja renders all); `renderer` (of the
    same template) checks what the tool-calling writer renders. The writer raises TemplateError
    where Jinja's rendering is refused, and gives None for what it does not cover."""
    digest = hashlib.sha256(template.source.encode("utf-8")).hexdigest()
    writer, calling = _WRITERS.get(digest), _CALLING_WRITERS.get(digest)
    if writer is None:
        return None

    def write(example: Example) -> Rendered | None:
        if _plain(example):
            return writer(example)
        if calling is not None and _calling(example):
            return calling(example, renderer)
        return None

    return write


def _plain(example: Example) -> bool:
    """Only text in system, user and assistant messages: what every writer here covers."""
    if example.tools is not None:
        return False
    for turn in example.turns:
        if turn.role not in _PLAIN_ROLES or turn.reasoning is not None or turn.tool_calls or turn.extra:
            return False
    return True


def _chatml(example: Example) -> Rendered:
    """templates/chatml.jinja without tools: every message `<|im_start|>ROLE\\nTEXT<|im_end|>\\n`,
    an assistant's text and `<|im_end|>` trained (no text: only `<|im_end|>`), its "\\n" not."""
    return _im_turns(example.turns, "", False)


def _qwen25(example: Example) -> Rendered:
    """templates/qwen2.5.jinja without tools: a system turn always first (the record's first
    message when it is a system one, else Qwen's default text), then the other messages as ChatML."""
    turns = example.turns
    first_system = bool(turns) and turns[0].role == "system"
    return _im_turns(turns, f"<|im_start|>system\n{turns[0].content if first_system else _QWEN_DEFAULT_SYSTEM}<|im_end|>\n", first_system)


def _im_turns(turns: tuple[Turn, ...], head: str, skip_first: bool) -> Rendered:
    """`head`, then each message as `<|im_start|>ROLE\\nTEXT<|im_end|>\\n` (the first left out with
    `skip_first`: `head` holds it), cut into segments as templates._finish cuts them: an assistant's
    text and `<|im_end|>` one trainable segment, the masked text between spans one segment each."""
    segments: list[Segment] = []
    masked = head
    for n, turn in enumerate(turns):
        if turn.role == "assistant":
            segments.append(Segment(masked + "<|im_start|>assistant\n", False))
            segments.append(Segment(turn.content + "<|im_end|>", turn.trainable, n))
            masked = "\n"
        elif n or not skip_first:
            masked += f"<|im_start|>{turn.role}\n{turn.content}<|im_end|>\n"
    if masked:
        segments.append(Segment(masked, False))
    return Rendered("".join([s.text for s in segments]), tuple(segments))


def _calling(example: Example) -> bool:
    """Tools, calls and tool results beside plain text, each call a name (a string) with
    arguments: what the tool-calling writer covers; no reasoning, no other fields or roles."""
    for turn in example.turns:
        if turn.role not in _CALLING_ROLES or turn.reasoning is not None or turn.extra:
            return False
        for call in turn.tool_calls or ():
            function = call.get("function", call) if isinstance(call, dict) else None
            if not isinstance(function, dict) or not isinstance(function.get("name"), str) or "arguments" not in function:
                return False
    return True


def _qwen25_calling(example: Example, renderer: Renderer) -> Rendered:
    """templates/qwen2.5.jinja with tools: the tools' JSON lines inside the system turn, each call
    `<tool_call>\\n{"name": NAME, "arguments": JSON}\\n</tool_call>` after the message's text and
    a "\\n", consecutive tool results in one user turn. The spans and segments, and every check,
    are `Renderer.checked`'s, given the messages as `Renderer.render` gives them to Jinja."""
    messages = [{key: value for key, value in turn.message().items() if value is not None} for turn in example.turns]
    first_system = messages[0]["role"] == "system"
    parts = ["<|im_start|>system\n", messages[0]["content"] if first_system else _QWEN_DEFAULT_SYSTEM]
    if example.tools:
        parts += [_QWEN_TOOLS_HEAD, *("\n" + tojson(tool) for tool in example.tools), _QWEN_TOOLS_TAIL]
    parts.append("<|im_end|>\n")
    text, spans, last = "".join(parts), [], len(messages) - 1
    for n, message in enumerate(messages):
        role, content = message["role"], message["content"]
        if role == "assistant":
            text += "<|im_start|>assistant\n"
            start = len(text)
            calls = message.get("tool_calls")
            if calls:
                functions = [call.get("function", call) for call in calls]
                text += (content + "\n" if content else "") + "\n".join(f'<tool_call>\n{{"name": "{f["name"]}", "arguments": {tojson(f["arguments"])}}}\n</tool_call>' for f in functions)
            else:
                text += content
            text += "<|im_end|>"
            spans.append((start, len(text), n))
            text += "\n"
        elif role == "tool":
            opens = n == 0 or messages[n - 1]["role"] != "tool"
            closes = n == last or messages[n + 1]["role"] != "tool"
            text += ("<|im_start|>user" if opens else "") + f"\n<tool_response>\n{content}\n</tool_response>" + ("<|im_end|>\n" if closes else "")
        elif role == "user" or n:
            text += f"<|im_start|>{role}\n{content}<|im_end|>\n"
    return renderer.checked(messages, [t.trainable for t in example.turns], example.tools, text, spans)


_CALLING_ROLES = frozenset({"system", "user", "assistant", "tool"})
_QWEN_TOOLS_HEAD = "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>"
_QWEN_TOOLS_TAIL = '\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'

# sha256 of the template source each writer reproduces -> the writer.
_CHATML, _QWEN25 = "d451561d19c3827a390b1c5922ef6d48d2a28326f73a92302426c3319dbb444a", "9ed32949ccc667739edbbedbcbfd60759353d57172029f62dbd0192d9e9abbc8"
_WRITERS: dict[str, Writer] = {_CHATML: _chatml, _QWEN25: _qwen25}
# The same, for the tool-calling writers.
_CALLING_WRITERS: dict[str, Callable[[Example, Renderer], Rendered]] = {_QWEN25: _qwen25_calling}

"""The commonest bundled templates written out in Python, for plain conversations: no Jinja call.

A Jinja render costs about 0.1 ms of Python per example, most of a batch's rendering; for the
conversations most datasets hold (system, user and assistant messages of plain text, no tools,
no reasoning, no other fields) ChatML and Qwen2.5 lay out text so simply that a few string joins
give the same `Rendered`, segment for segment, as `Renderer.render` (templates.py). Each writer is
pinned to the sha256 of the template source it was written from: a template edited since, or any
other template, is rendered by Jinja as before. So is any conversation outside the plain shape
(`render_directly` returns None): tools, tool calls, reasoning, extra message fields, other
roles, text kept as plain under `--special-text plain`. tests/build/test_direct_render.py holds
each writer to the Jinja rendering over generated conversations.

    chatml   [user "Hi", assistant "Hello"]
             "<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n" | "Hello<|im_end|>" | "\\n"
              trainable=False                                             trainable=True      False
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from masked_shards.build.templates import ChatTemplate, Rendered
from masked_shards.records import Example, Segment, Turn

_PLAIN_ROLES = frozenset({"system", "user", "assistant"})
_QWEN_DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

Writer = Callable[[Example], Rendered]  # its spans start where the generation prompt ends and end with the stop token


def direct_renderer(template: ChatTemplate) -> Callable[[Example], Rendered | None] | None:
    """The plain-conversation writer for this exact template source, or None (Jinja renders all)."""
    writer = _WRITERS.get(hashlib.sha256(template.source.encode("utf-8")).hexdigest())
    if writer is None:
        return None
    return lambda example: writer(example) if _plain(example) else None


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


# sha256 of the template source each writer reproduces -> the writer.
_WRITERS: dict[str, Writer] = {
    "d451561d19c3827a390b1c5922ef6d48d2a28326f73a92302426c3319dbb444a": _chatml,
    "9ed32949ccc667739edbbedbcbfd60759353d57172029f62dbd0192d9e9abbc8": _qwen25,
}

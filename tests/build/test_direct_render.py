"""The Python writers of direct_render.py give exactly what Jinja renders, or nothing.

Over generated conversations (any order of system, user and assistant messages, empty texts,
whitespace at the edges, special-token text, Jinja syntax, any Unicode, untrained turns), each
writer's `Rendered` equals `Renderer.render`'s for the bundled template, and has nothing for
rows.py to cut from its spans (`_generated` leaves it as it is); a conversation outside
the plain shape (tools, calls, reasoning, other fields or roles) gets None, so Jinja renders it.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from masked_shards.build.direct_render import direct_renderer
from masked_shards.build.rows import _generated, _prompt_tail
from masked_shards.build.templates import ChatTemplate, Renderer, resolve_template
from masked_shards.build.turn_counts import EndOfTurn
from masked_shards.records import RESERVED_CHARS, Example, Turn

WRITTEN = ("chatml", "qwen2.5")

_pieces = st.one_of(
    st.sampled_from([" ", "\n", "\n\n", "\t", "\r\n", "<|im_start|>", "<|im_end|>", "{{ x }}", "{% if %}", "</think>", "<tool_response>", "é", "你好", "🙂", "Hello"]),
    st.characters(exclude_categories=("Cs",), exclude_characters=RESERVED_CHARS),
)
_text = st.lists(_pieces, max_size=12).map("".join)
_turn = st.builds(
    lambda role, content, trainable: Turn(role, content, role == "assistant" and trainable),
    st.sampled_from(["system", "user", "assistant"]),
    _text,
    st.booleans(),
)
_conversation = st.lists(_turn, min_size=1, max_size=6).map(lambda turns: Example("data:0", "data", tuple(turns)))


def _renderers(name: str) -> tuple[Renderer, object]:
    template = resolve_template(name, None)
    return Renderer(template, bos_token=None, eos_token="<|im_end|>", special_tokens=("<|im_start|>", "<|im_end|>", "<|endoftext|>")), direct_renderer(template)


@pytest.mark.parametrize("name", WRITTEN)
def test_a_written_template_renders_plain_conversations_as_jinja_does(name):
    jinja, direct = _renderers(name)
    assert direct is not None, f"{name} lost its writer: its source changed, so direct_render.py must be checked against it again"

    end_of_turn = EndOfTurn(("<|im_start|>", "<|im_end|>", "<|endoftext|>"))
    assert _prompt_tail(jinja) == ""

    @settings(max_examples=300, deadline=None)
    @given(_conversation)
    def check(example):
        written = direct(example)
        assert written == jinja.render(example)
        assert _generated(written, "", end_of_turn) is written  # rows.py skips the cut for a written one

    check()


@pytest.mark.parametrize("name", WRITTEN)
@pytest.mark.parametrize(
    "odd",
    [
        Example("d:0", "d", (Turn("user", "Hi"), Turn("assistant", "Hello", True, reasoning="Think."))),
        Example("d:0", "d", (Turn("user", "Hi"), Turn("assistant", "", True, tool_calls=({"type": "function", "function": {"name": "f", "arguments": {}}},)))),
        Example("d:0", "d", (Turn("user", "Hi", extra=(("name", "ann"),)), Turn("assistant", "Hello", True))),
        Example("d:0", "d", (Turn("tool", "42"), Turn("assistant", "Hello", True))),
        Example("d:0", "d", (Turn("user", "Hi"), Turn("assistant", "Hello", True)), tools=[{"type": "function", "function": {"name": "f"}}]),
    ],
    ids=["reasoning", "tool call", "extra field", "tool role", "tools"],
)
def test_anything_but_plain_text_is_left_to_jinja(name, odd):
    assert _renderers(name)[1](odd) is None


def test_a_template_without_a_writer_or_edited_is_rendered_by_jinja():
    chatml = resolve_template("chatml", None)
    assert direct_renderer(resolve_template("llama3", None)) is None
    assert direct_renderer(ChatTemplate("chatml", chatml.source + " ")) is None

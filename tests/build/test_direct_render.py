"""The Python writers of direct_render.py give exactly what Jinja renders, or nothing.

Over generated conversations (any order of system, user and assistant messages, empty texts,
whitespace at the edges, special-token text, Jinja syntax, any Unicode, untrained turns), each
writer's `Rendered` equals `Renderer.render`'s for the bundled template, and has nothing for
rows.py to cut from its spans (`_generated` leaves it as it is); a conversation outside
a writer's shape (reasoning, other fields or roles; for ChatML, tools and calls) gets None, so
Jinja renders it. Qwen2.5's tool-calling writer is held to Jinja the same way over generated
tool-calling conversations (odd names, keys and values, parallel calls, runs of tool results),
refusals included: where Jinja's rendering is refused, the writer's is, for the same reason.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from masked_shards.build.direct_render import direct_renderer
from masked_shards.build.rows import _generated, _prompt_tail
from masked_shards.build.templates import ChatTemplate, Renderer, TemplateError, resolve_template
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
    renderer = Renderer(template, bos_token=None, eos_token="<|im_end|>", special_tokens=("<|im_start|>", "<|im_end|>", "<|endoftext|>"))
    return renderer, direct_renderer(template, renderer)


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


CALL = {"type": "function", "function": {"name": "f", "arguments": {}}}


@pytest.mark.parametrize("name", WRITTEN)
@pytest.mark.parametrize(
    "odd, calling",
    [
        (Example("d:0", "d", (Turn("user", "Hi"), Turn("assistant", "Hello", True, reasoning="Think."))), False),
        (Example("d:0", "d", (Turn("user", "Hi", extra=(("name", "ann"),)), Turn("assistant", "Hello", True))), False),
        (Example("d:0", "d", (Turn("user", "Hi"), Turn("assistant", "", True, tool_calls=({"type": "function", "function": {"name": 3, "arguments": {}}},)))), False),
        (Example("d:0", "d", (Turn("user", "Hi"), Turn("assistant", "", True, tool_calls=({"name": "f"},)))), False),
        (Example("d:0", "d", (Turn("user", "Hi"), Turn("assistant", "", True, tool_calls=(CALL,)))), True),
        (Example("d:0", "d", (Turn("tool", "42"), Turn("assistant", "Hello", True))), True),
        (Example("d:0", "d", (Turn("user", "Hi"), Turn("assistant", "Hello", True)), tools=[{"type": "function", "function": {"name": "f"}}]), True),
    ],
    ids=["reasoning", "extra field", "a name not a string", "no arguments", "tool call", "tool role", "tools"],
)
def test_what_a_writer_does_not_cover_is_left_to_jinja(name, odd, calling):
    jinja, direct = _renderers(name)
    if calling and name == "qwen2.5":
        assert direct(odd) == jinja.render(odd)
    else:
        assert direct(odd) is None


_names = st.one_of(st.sampled_from(["get_weather", "f", "a.b", "名前", "x y", 'say "hi"', "back\\slash", ""]), _text)
_keys = st.one_of(st.sampled_from(["city", "n", "é", 'q"uote', "new\nline", ""]), _text)
_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-5, 10**20), st.floats(allow_nan=False, allow_infinity=False), _text), lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_keys, inner, max_size=3)), max_leaves=6)
_call = st.builds(lambda name, arguments, wrapped: {"type": "function", "function": {"name": name, "arguments": arguments}} if wrapped else {"name": name, "arguments": arguments}, _names, st.one_of(st.dictionaries(_keys, _values, max_size=3), _text), st.booleans())
_calling_turn = st.one_of(
    _turn,
    st.builds(lambda content, calls, trainable: Turn("assistant", content, trainable, tool_calls=tuple(calls)), st.one_of(st.just(""), _text), st.lists(_call, min_size=1, max_size=3), st.booleans()),
    st.builds(lambda content: Turn("tool", content), _text),
)
_tool = st.fixed_dictionaries({"type": st.just("function"), "function": st.fixed_dictionaries({"name": _names, "description": _text, "parameters": st.dictionaries(_keys, _values, max_size=2)})})
_calling_conversation = st.builds(lambda turns, tools: Example("data:0", "data", tuple(turns), tools=tools), st.lists(_calling_turn, min_size=1, max_size=7), st.one_of(st.none(), st.lists(_tool, max_size=3)))


def test_qwen25_renders_tool_calling_conversations_as_jinja_does_and_refuses_the_same():
    jinja, direct = _renderers("qwen2.5")
    end_of_turn = EndOfTurn(("<|im_start|>", "<|im_end|>", "<|endoftext|>"))
    seen = {"written": 0, "refused": 0}

    @settings(max_examples=400, deadline=None)
    @given(_calling_conversation)
    def check(example):
        try:
            expected = jinja.render(example)
        except TemplateError as err:
            with pytest.raises(TemplateError) as raised:
                direct(example)
            assert (raised.value.reason, str(raised.value)) == (err.reason, str(err))
            seen["refused"] += 1
            return
        written = direct(example)
        assert written == expected
        assert _generated(written, "", end_of_turn) is written
        seen["written"] += 1

    check()
    assert seen["written"] > 100 and seen["refused"] > 0  # both paths were tried


def test_a_template_without_a_writer_or_edited_is_rendered_by_jinja():
    chatml = resolve_template("chatml", None)
    edited = ChatTemplate("chatml", chatml.source + " ")
    assert direct_renderer(resolve_template("llama3", None), None) is None
    assert direct_renderer(edited, None) is None

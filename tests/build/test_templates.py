"""Templates render the published formats, agree with Hugging Face, and yield the right spans."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import build_one
from masked_shards.config import PipelineConfig
from masked_shards.records import Example, Turn
from masked_shards.build.rows import RowBuilder, check_template
from masked_shards.build.template_probes import PROBES
from masked_shards.build.templates import ChatTemplate, Renderer, TemplateError, resolve_template
from masked_shards.build.tokenization import TokenizerError, special_tokens
from masked_shards.bundled_templates import bundled, family_tokens, template_path

CONVERSATIONS = {
    "single": (Turn("user", "What is 2+2?"), Turn("assistant", "4", True)),
    "system": (Turn("system", "Be brief."), Turn("user", "Hi"), Turn("assistant", " Hello! ", True)),
    "multi": (Turn("user", "A"), Turn("assistant", "B", True), Turn("user", "C\n"), Turn("assistant", "D", True)),
}

# Written out by hand from each family's published format.
EXPECTED = {
    ("chatml", "single"): "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n",
    ("chatml", "system"): "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n Hello! <|im_end|>\n",
    ("chatml", "multi"): "<|im_start|>user\nA<|im_end|>\n<|im_start|>assistant\nB<|im_end|>\n<|im_start|>user\nC\n<|im_end|>\n<|im_start|>assistant\nD<|im_end|>\n",
    ("llama3", "single"): "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n4<|eot_id|>",
    ("llama3", "system"): "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>",
    ("llama3", "multi"): "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nA<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nB<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nC<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nD<|eot_id|>",
}
EXPECTED_SPANS = {
    ("chatml", "single"): ["4<|im_end|>"],
    ("chatml", "system"): [" Hello! <|im_end|>"],
    ("chatml", "multi"): ["B<|im_end|>", "D<|im_end|>"],
    ("llama3", "single"): ["4<|eot_id|>"],
    ("llama3", "system"): ["Hello!<|eot_id|>"],
    ("llama3", "multi"): ["B<|eot_id|>", "D<|eot_id|>"],
}


def _renderer(template: ChatTemplate, tokenizer) -> Renderer:
    return Renderer(template, bos_token=tokenizer.bos_token, eos_token=tokenizer.eos_token, special_tokens=special_tokens(tokenizer))


def _messages(turns: tuple[Turn, ...]) -> list[dict[str, str]]:
    return [t.message() for t in turns]


@pytest.mark.parametrize("name,conversation", sorted(EXPECTED))
def test_renders_the_published_format(qwen2_tokenizer, name, conversation):
    rendered = _renderer(resolve_template(name, None), qwen2_tokenizer).render(Example("t:0", "t", CONVERSATIONS[conversation]))
    assert rendered.text == EXPECTED[(name, conversation)]
    assert [s.text for s in rendered.segments if s.trainable] == EXPECTED_SPANS[(name, conversation)]


@pytest.mark.parametrize("name", ["chatml", "llama3"])
@pytest.mark.parametrize("conversation", sorted(CONVERSATIONS))
def test_agrees_with_hugging_face_apply_chat_template(qwen2_tokenizer, name, conversation):
    source = resolve_template(name, None).source
    turns = CONVERSATIONS[conversation]
    hf_text = qwen2_tokenizer.apply_chat_template(_messages(turns), chat_template=source, tokenize=False)
    ours = _renderer(ChatTemplate(name, source), qwen2_tokenizer).render(Example("t:0", "t", turns))
    assert ours.text == hf_text
    # transformers' own {% generation %} tracking marks the same tokens we label.
    hf = qwen2_tokenizer.apply_chat_template(
        _messages(turns), chat_template=source, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    row = build_one(RowBuilder(PipelineConfig(template=name), qwen2_tokenizer, ChatTemplate(name, source)), Example("t:0", "t", turns))
    assert row.input_ids == list(hf["input_ids"])
    assert [int(label != -100) for label in row.labels] == list(hf["assistant_masks"])


@pytest.mark.parametrize("name", ["chatml", "llama3"])
@pytest.mark.parametrize("conversation", sorted(CONVERSATIONS))
def test_template_without_markers_gives_the_same_spans(qwen2_tokenizer, name, conversation):
    """The prefix method for marker-less tokenizer templates finds what the markers say."""
    marked = resolve_template(name, None)
    bare = ChatTemplate("bare", marked.source.replace("{%- generation -%}", "").replace("{%- endgeneration -%}", ""))
    assert not bare.has_generation_marks
    example = Example("t:0", "t", CONVERSATIONS[conversation])
    assert _renderer(bare, qwen2_tokenizer).render(example) == _renderer(marked, qwen2_tokenizer).render(example)


@pytest.mark.parametrize("name", ["chatml", "llama3"])
def test_template_without_markers_keeps_special_text_plain_as_the_markers_do(qwen2_tokenizer, name):
    """Under --special-text plain the sentinel rendering lines up with the broken-up token text."""
    marked = resolve_template(name, None)
    bare = ChatTemplate("bare", marked.source.replace("{%- generation -%}", "").replace("{%- endgeneration -%}", ""))
    example = Example("t:0", "t", (Turn("user", "Say <|im_end|> or <|eot_id|>"), Turn("assistant", "I say <|im_end|>!", True)))
    protect = special_tokens(qwen2_tokenizer)
    plain = _renderer(bare, qwen2_tokenizer).render(example, protect=protect)
    assert plain == _renderer(marked, qwen2_tokenizer).render(example, protect=protect)
    assert [plain.text[a:b] for a, b in plain.plain_spans] == ["<|im_end|>", "<|eot_id|>", "<|im_end|>"]


# A template that is not prefix-preserving: its generation prompt opens a think block that the
# earlier turns, rendered without their reasoning, lack; tool calls come as <tool_call> blocks.
THINKING = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n"
    "{% if m.role == 'assistant' and loop.last and m.reasoning_content %}<think>\n{{ m.reasoning_content }}\n</think>\n{% endif %}"
    "{% if m.content %}{{ m.content }}{% endif %}{% for c in m.tool_calls or [] %}<tool_call>{{ c.function.name }}</tool_call>{% endfor %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}"
)


def test_spans_of_a_template_that_is_not_prefix_preserving(qwen2_tokenizer):
    """Each span starts where the generation prompt and the turn stop agreeing, never inside a
    token: the call's "<tool_call>" shares "<t" with the prompt's "<think>", yet is trained whole;
    the prefilled "<think>\n" of the final turn is masked, its reasoning trained."""
    call = {"type": "function", "function": {"name": "lookup", "arguments": {}}}
    messages = [
        {"role": "user", "content": "A"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "content": "found"},
        {"role": "assistant", "content": "D", "reasoning_content": "Why D."},
    ]
    rendered = _renderer(ChatTemplate("tokenizer", THINKING), qwen2_tokenizer).render_messages(messages, [False, True, False, True])
    assert rendered.text == (
        "<|im_start|>user\nA<|im_end|>\n<|im_start|>assistant\n<tool_call>lookup</tool_call><|im_end|>\n"
        "<|im_start|>tool\nfound<|im_end|>\n<|im_start|>assistant\n<think>\nWhy D.\n</think>\nD<|im_end|>\n"
    )
    assert [s.text for s in rendered.segments if s.trainable] == ["<tool_call>lookup</tool_call><|im_end|>", "Why D.\n</think>\nD<|im_end|>"]


PLAIN_CHATML = (
    "{%- for message in messages -%}{{- '<|im_start|>' + message['role'] + '\\n' + (message['content'] or '') + '<|im_end|>\\n' -}}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)
"""ChatML that shows neither tool calls nor reasoning, as many tokenizers' own templates do."""


def test_a_tool_call_the_template_leaves_out_rejects_the_record(qwen2_tokenizer):
    call = {"type": "function", "function": {"name": "lookup", "arguments": {"word": "probe"}}}
    messages = [{"role": "user", "content": "A"}, {"role": "assistant", "content": "Let me check.", "tool_calls": [call]}]
    with pytest.raises(TemplateError, match="leaves out the tool call 'lookup' of message 1") as caught:
        _renderer(ChatTemplate("tokenizer", PLAIN_CHATML), qwen2_tokenizer).render_messages(messages, [False, True])
    assert caught.value.reason == "template_dropped_tool_calls"


@pytest.mark.parametrize(("name", "content"), [("get", "Let me get it."), ("im", ""), ("d", "")])
def test_a_left_out_call_is_not_found_in_the_turns_own_text_or_its_stop_token(qwen2_tokenizer, name, content):
    """The name of a call the template drops may be in the turn's text ("get" in "Let me get it.")
    or inside its stop token ("im", "d" in "<|im_end|>"): neither is the call."""
    call = {"type": "function", "function": {"name": name, "arguments": {}}}
    messages = [{"role": "user", "content": "A"}, {"role": "assistant", "content": content, "tool_calls": [call]}]
    with pytest.raises(TemplateError, match="leaves out the tool call") as caught:
        _renderer(ChatTemplate("tokenizer", PLAIN_CHATML), qwen2_tokenizer).render_messages(messages, [False, True])
    assert caught.value.reason == "template_dropped_tool_calls"


@pytest.mark.parametrize("reasoning", ["<", "think", "im_end", "t"])
def test_short_final_reasoning_found_only_in_the_templates_own_text_is_not_taken_for_rendered(qwen2_tokenizer, reasoning):
    """A template that writes an empty "<think></think>" (plain text in Qwen2's vocabulary) and
    never the reasoning: reasoning "<" or "think" is in the span, yet not rendered."""
    empty_think = PLAIN_CHATML.replace("(message['content'] or '')", "('<think></think>' if message['role'] == 'assistant' else '') + (message['content'] or '')")
    builder = RowBuilder(PipelineConfig(template="tokenizer"), qwen2_tokenizer, ChatTemplate("tokenizer", empty_think))
    result = build_one(builder, Example("t.jsonl:1", "t.jsonl", (Turn("user", "A"), Turn("assistant", "B", True, reasoning))))
    assert result.reason == "template_dropped_reasoning", result


def test_final_reasoning_the_template_never_renders_rejects_the_record(qwen2_tokenizer):
    builder = RowBuilder(PipelineConfig(template="tokenizer"), qwen2_tokenizer, ChatTemplate("tokenizer", PLAIN_CHATML))
    turns = (Turn("user", "A"), Turn("assistant", "B", True, "Because."))
    result = build_one(builder, Example("bad.jsonl:3", "bad.jsonl", turns))
    assert (result.index, result.reason) == (3, "template_dropped_reasoning")
    # A thought the answer repeats word for word is still not rendered (hypothesis found "é" / "é").
    same = build_one(builder, Example("bad.jsonl:4", "bad.jsonl", (Turn("user", "A"), Turn("assistant", "é", True, "é"))))
    assert (same.index, same.reason) == (4, "template_dropped_reasoning")
    # Left out of a past turn (a user message follows it), it is no error.
    assert build_one(builder, Example("ok.jsonl:0", "ok.jsonl", (*turns, Turn("user", "C"), Turn("assistant", "D", True)))).labels


def test_tokenizer_template_of_the_demo_tokenizer(demo_tokenizer):
    template = resolve_template("tokenizer", demo_tokenizer.chat_template)
    assert not template.has_generation_marks
    check_template(template, demo_tokenizer, "demo")
    rendered = _renderer(template, demo_tokenizer).render(Example("t:0", "t", CONVERSATIONS["multi"]))
    assert [s.text for s in rendered.segments if s.trainable] == EXPECTED_SPANS[("chatml", "multi")]


def test_template_that_ignores_add_generation_prompt_is_refused_at_start(demo_tokenizer):
    no_prompt = ChatTemplate("tokenizer", "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}")
    with pytest.raises(TemplateError, match="no usable assistant span"):
        check_template(no_prompt, demo_tokenizer, "demo")


def test_end_of_turn_token_missing_from_tokenizer_is_refused_at_start(demo_tokenizer, tmp_path):
    odd = ChatTemplate("odd", resolve_template("chatml", None).source.replace("<|im_end|>", "<|end|>"))
    with pytest.raises(TokenizerError, match="'<\\|end\\|>'.*one special token"):
        check_template(odd, demo_tokenizer, "demo")


def test_unknown_template_is_one_sentence():
    with pytest.raises(TemplateError, match=r"unknown template 'chatm'; choose one of .*chatml, .*llama3, .*tokenizer, or a path"):
        resolve_template("chatm", None)


def test_tokenizer_template_needs_one():
    with pytest.raises(TemplateError, match="has no chat template"):
        resolve_template("tokenizer", None)


def test_raise_exception_in_a_template_rejects_the_record(qwen2_tokenizer):
    strict = ChatTemplate("strict", "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}" + resolve_template("chatml", None).source)
    renderer = _renderer(strict, qwen2_tokenizer)
    with pytest.raises(TemplateError, match="System role not supported"):
        renderer.render(Example("t:0", "t", CONVERSATIONS["system"]))


# --- masked-shards templates ------------------------------------------------------------------


def test_templates_command_shows_the_tokenizers_own_chat_template(capsys):
    from masked_shards.cli import main
    from masked_shards.config import DEMO_TOKENIZER

    assert main(["templates", "tokenizer", "--tokenizer", DEMO_TOKENIZER]) == 0
    shown = capsys.readouterr().out
    assert "<|im_start|>assistant\n[[2 + 2 = 4.<|im_end|>]]\n<|im_start|>user\nAnd 3+3?" in shown
    assert f"bos <|begin_of_text|>, eos <|im_end|> (from tokenizer {DEMO_TOKENIZER})" in shown


@pytest.mark.parametrize(
    "name,start,end",
    [("llama3", "<|begin_of_text|><|start_header_id|>system", "[[3 + 3 = 6.<|eot_id|>]]\n"), ("phi3", "<|system|>\n", "[[3 + 3 = 6.<|end|>]]\n<|endoftext|>\n")],
)
def test_templates_command_renders_with_the_familys_own_bos_and_eos(capsys, name, start, end):
    from masked_shards.cli import main

    assert main(["templates", name]) == 0
    rendering, note = capsys.readouterr().out.split("\n[[...]] marks the trained tokens; ")
    assert rendering.startswith(start) and rendering.endswith(end) and "<s>" not in rendering and "</s>" not in rendering
    bos, eos = family_tokens(template_path(name).read_text(encoding="utf-8"))
    assert note == f"bos {bos}, eos {eos} (the family's own).\n"


def test_readme_lists_the_bos_and_eos_each_template_names():
    """Each template's first line is the one record of its family's BOS/EOS; the README's
    renderings quote them ("-" for none)."""
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    listed = re.findall(r"^`([^`]+)` \(bos `([^`]+)`, eos `([^`]+)`\):$", readme, flags=re.MULTILINE)
    assert {name: (None if bos == "-" else bos, eos) for name, bos, eos in listed} == {
        name: family_tokens(template_path(name).read_text(encoding="utf-8")) for name in bundled()
    }


# Mistral-Nemo's layout: the system text goes into the LAST user turn only, so a shorter
# conversation puts it elsewhere than the full one does.
SYSTEM_LAST = (
    "{% set system = messages[0].content if messages[0].role == 'system' else none %}{% set chat = messages[1:] if system else messages %}"
    "{% set last_user = namespace(i=-1) %}{% for m in chat %}{% if m.role == 'user' %}{% set last_user.i = loop.index0 %}{% endif %}{% endfor %}"
    "{{ bos_token }}{% for m in chat %}{% if m.role == 'user' %}[INST]{% if system and loop.index0 == last_user.i %}{{ system }}\n\n{% endif %}{{ m.content }}[/INST]"
    "{% else %}{{ m.content }}{{ eos_token }}{% endif %}{% endfor %}"
)


def test_spans_when_the_system_text_moves_to_the_last_user_turn(qwen2_tokenizer):
    turns = (Turn("system", "Be brief."), Turn("user", "A"), Turn("assistant", "B", True), Turn("user", "C"), Turn("assistant", "D", True))
    renderer = Renderer(ChatTemplate("tokenizer", SYSTEM_LAST), bos_token="<|begin_of_text|>", eos_token="<|im_end|>", special_tokens=special_tokens(qwen2_tokenizer))
    rendered = renderer.render(Example("t:0", "t", turns))
    assert rendered.text == "<|begin_of_text|>[INST]A[/INST]B<|im_end|>[INST]Be brief.\n\nC[/INST]D<|im_end|>"
    assert [s.text for s in rendered.segments if s.trainable] == ["B<|im_end|>", "D<|im_end|>"]


NAMED_DEFAULT = (
    "{{ bos_token }}{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + (m['content'] or '') + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
"""Hermes 2 Pro's and Hermes 3's `default`: ChatML after the BOS, no tools."""


def test_named_templates_render_tool_use_when_tools_are_given_as_apply_chat_template_does(qwen2_tokenizer):
    """Hermes 2 Pro and 3 ship {"default": ..., "tool_use": ...}; apply_chat_template takes
    `tool_use` when tools are given. Reading `default` alone would train tool records in a format
    the model is not served in. The `tool_use` here is our hermes template without its marks."""
    tool_use = re.sub(r"\{%-?\s*(end)?generation\s*-?%\}", "", resolve_template("hermes", None).source)
    named = {"default": NAMED_DEFAULT, "tool_use": tool_use}
    saved = qwen2_tokenizer.chat_template
    qwen2_tokenizer.chat_template = named
    try:
        renderer = _renderer(resolve_template("tokenizer", named), qwen2_tokenizer)
        for messages, tools in PROBES.values():
            expected = qwen2_tokenizer.apply_chat_template(messages, tools=tools, tokenize=False)
            assert renderer.render_text(messages, add_generation_prompt=False, tools=tools) == expected
    finally:
        qwen2_tokenizer.chat_template = saved
    assert any(tools is not None for _, tools in PROBES.values()) and any(tools is None for _, tools in PROBES.values())
    # auto compares the tool probes with `tool_use`, the rest with `default`: hermes renders both
    assert resolve_template("auto", named, qwen2_tokenizer.bos_token, qwen2_tokenizer.eos_token).name == "hermes"
    assert resolve_template("auto", {"default": NAMED_DEFAULT}, qwen2_tokenizer.bos_token, qwen2_tokenizer.eos_token).name == "tokenizer"


"""The product's invariant, as a property over generated conversations:

for every row, decoding each run of supervised tokens gives exactly one assistant turn's text
followed by its end-of-turn token, in order, and nothing else is supervised.

Checked for both bundled templates, and for tool calls (parallel too), tool results and
reasoning through TRL's Qwen2.5 and Qwen3 training templates, on the small demo vocabulary and
on Qwen2's production 151k byte-level BPE vocabulary, with awkward text: leading/trailing spaces and newlines, tabs,
carriage returns, any Unicode, empty system prompts and long turns.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import Row, build_one
from expected import SUPERVISED, normalized, supervised_runs
from masked_shards.config import PipelineConfig
from masked_shards.build.masking import build_labels, crossed_boundaries, generated_part, span_edges
from masked_shards.records import RESERVED_CHARS, TOOL_CALL, TURN_ROLES, Example, Turn
from masked_shards.read.formats import to_example
from masked_shards.read.sources import RawRecord
from masked_shards.build.rows import RowBuilder
from masked_shards.build.templates import resolve_template

_pieces = st.one_of(
    st.sampled_from([" ", "  ", "\n", "\n\n", "\t", "\r\n", "é", "e\u0301", "你好", "🙂", "👩‍💻", "ß", "'s", "<", "|", ">", "0", "Hello", " world"]),
    st.characters(exclude_categories=("Cs",), exclude_characters=RESERVED_CHARS),
)
# ASCII-only text too: on Qwen2's vocabulary it is encoded through tiktoken (build/same_bpe.py).
_ascii_pieces = st.sampled_from([" ", "\n", "\t", "\r\n", "'s", "'LL", "<", "|", ">", "0", "Hello", " world"]) | st.characters(max_codepoint=127, exclude_characters=RESERVED_CHARS)
text = st.lists(_pieces, max_size=30).map("".join) | st.lists(_pieces, min_size=150, max_size=400).map("".join) | st.lists(_ascii_pieces, max_size=60).map("".join)
answer = text.filter(lambda s: s.strip() != "")


def test_labels_and_crossed_edges_come_from_token_starts():
    """The rule on arrays: a token is supervised when its first character is inside a span; an
    edge is crossed when a token starts before it and ends after it."""
    offsets = np.array([[0, 4], [4, 6], [6, 9], [9, 12]], dtype=np.int32)
    assert build_labels(np.array([10, 11, 12, 13], dtype=np.int32), offsets, [(4, 9)]).tolist() == [-100, 11, 12, -100]
    assert build_labels(np.array([10, 11, 12, 13], dtype=np.int32), offsets, []).tolist() == [-100] * 4
    assert crossed_boundaries(offsets, span_edges([(4, 9)])).tolist() == []
    assert crossed_boundaries(offsets, span_edges([(5, 10), (11, 12)])).tolist() == [5, 10, 11]  # two edges in one token


@st.composite
def _tokens_and_spans(draw):
    """Token offsets as tokenizers give them (starts never going back; a token may share its last
    character with the next, as a byte-level token splitting a character does) and sorted,
    disjoint spans, some empty, some ending past the text."""
    widths = draw(st.lists(st.integers(0, 4), max_size=40))
    starts = np.cumsum([0, *widths])[:-1] if widths else np.zeros(0, dtype=np.int64)
    ends = starts + np.array(widths, dtype=np.int64) + np.array(draw(st.lists(st.integers(0, 1), min_size=len(widths), max_size=len(widths))), dtype=np.int64)
    cuts = sorted(draw(st.lists(st.integers(0, int(ends.max(initial=0)) + 3), max_size=8)))
    spans = [(cuts[k], cuts[k + 1]) for k in range(0, len(cuts) - 1, 2)]
    return np.stack([starts, ends], axis=1).reshape(-1, 2), spans


@given(_tokens_and_spans(), st.randoms(use_true_random=False))
@settings(max_examples=300, deadline=None)
def test_labels_and_crossed_edges_match_a_token_by_token_reading(case, random):
    """Both searches (from the spans for tokens in text order, from the tokens otherwise) give
    what reading token by token gives: the span holding each token's first character, and the
    edges some token strictly contains. Shuffled tokens take the second search."""
    offsets, spans = case
    ids = np.arange(100, 100 + len(offsets), dtype=np.int32)
    expected_labels = [int(i) if any(a <= s < b for a, b in spans) else -100 for i, (s, _) in zip(ids, offsets.tolist())]
    edges = span_edges(spans) if spans else np.zeros(0, dtype=np.int64)
    expected_crossed = sorted({int(e) for e in edges.tolist() for s, t in offsets.tolist() if s < e < t})
    order = list(range(len(offsets)))
    random.shuffle(order)
    for tokens in (np.arange(len(offsets)), np.array(order, dtype=np.int64)):
        assert build_labels(ids[tokens], offsets[tokens], spans).tolist() == [expected_labels[k] for k in tokens.tolist()]
        assert crossed_boundaries(offsets[tokens], edges).tolist() == expected_crossed


def test_a_span_is_cut_to_what_the_model_generates():
    """The generation prompt's tail a template repeats inside its span, and whitespace after the
    closing special token, are not generated; whitespace not after a special token may be the
    answer's own and stays."""
    text = "A\nHi<|im_end|>\n"
    assert generated_part(text, 1, 15, "\n", len("<|im_end|>")) == (2, 14)
    assert generated_part(text, 1, 15, "", len("<|im_end|>")) == (1, 14)
    assert generated_part("A\nHi \n", 1, 7, "\n", 0) == (2, 7)
    assert generated_part("A\n", 1, 2, "\n", 0) == (1, 2)  # a span that is only the tail is left whole


@st.composite
def conversations(draw) -> Example:
    turns = []
    if draw(st.booleans()):
        turns.append(Turn("system", draw(st.just("") | text)))
    for _ in range(draw(st.integers(1, 4))):
        turns.append(Turn("user", draw(text)))
        turns.append(Turn("assistant", draw(answer), True))
    return Example("generated:0", "generated", tuple(turns))


@pytest.mark.parametrize("template,train_on_eot", [("chatml", True), ("llama3", True), ("chatml", False)])
def test_supervised_tokens_decode_to_assistant_turns(tokenizer, template, train_on_eot):
    config = PipelineConfig(template=template, max_length=100_000, special_text="plain", train_on_eot=train_on_eot)
    builder = RowBuilder(config, tokenizer, resolve_template(template, None))
    specials = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}

    @settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(conversations())
    def check(example: Example) -> None:
        row = build_one(builder, example)
        assert isinstance(row, Row), row
        expected = [normalized(tokenizer, SUPERVISED[template](t.content)) for t in example.turns if t.role == "assistant"]
        if not train_on_eot:  # the closing token and the whitespace right before it stay unsupervised
            expected = [e.removesuffix("<|im_end|>").rstrip() or e.removesuffix("<|im_end|>") for e in expected]
        runs = supervised_runs(row.input_ids, row.labels)
        decoded = [tokenizer.decode(run, skip_special_tokens=False, clean_up_tokenization_spaces=False) for run in runs]
        assert decoded == expected
        # Only the template's control tokens are special: one per header/turn marker, never from text.
        control = sum(1 for i in row.input_ids if i in specials)
        per_turn = {"chatml": 2, "llama3": 3}[template]
        assert control == per_turn * len(example.turns) + (template == "llama3")

    check()


@pytest.mark.parametrize("template", ["chatml", "llama3"])
def test_one_encode_unless_a_token_crosses_a_span_edge(tokenizer, template):
    """Rows are the single whole-string encoding whenever no token straddles a span edge."""
    builder = RowBuilder(PipelineConfig(template=template, max_length=100_000), tokenizer, resolve_template(template, None))

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(conversations())
    def check(example: Example) -> None:
        row = build_one(builder, example)
        rendered = builder.encoding._renderer.render(example)
        whole = tokenizer(rendered.text, add_special_tokens=False)["input_ids"]
        if not row.split_at_boundaries:
            assert row.input_ids == whole
        else:
            assert row.input_ids != whole
        assert tokenizer.decode(row.input_ids, clean_up_tokenization_spaces=False) == normalized(tokenizer, rendered.text)

    check()


# Tool use and reasoning through TRL's training templates for Qwen2.5 and Qwen3 (marked with
# {% generation %}, tools in the system turn, Hermes-style <tool_call> blocks, <tool_response>
# results in a user turn), read from the installed trl wheel, never copied. What the model
# generates is written below from Qwen's published format, not from those templates.


def trl_template(name: str) -> str:
    import trl

    return str(Path(trl.__file__).parent / "chat_templates" / name)


def _hermes_call(call: dict) -> str:
    function = call["function"]
    return '<tool_call>\n{"name": "' + function["name"] + '", "arguments": ' + json.dumps(function["arguments"], ensure_ascii=False) + "}\n</tool_call>"


def _qwen25_generated(turn: Turn) -> str:
    """Qwen2.5: the text, then each call on its own line after it, then <|im_end|>."""
    if not turn.tool_calls:
        return turn.content + "<|im_end|>"
    calls = "".join("\n" + _hermes_call(c) for c in turn.tool_calls)
    return (turn.content + calls if turn.content else calls[1:]) + "<|im_end|>"


def _qwen3_generated(turn: Turn) -> str:
    """Qwen3: a think block (empty without reasoning), the text, the calls, then <|im_end|>."""
    think = "<think>\n" + (turn.reasoning or "").strip("\n") + "\n</think>\n\n" + turn.content.lstrip("\n")
    calls = "".join(("\n" if n or turn.content else "") + _hermes_call(c) for n, c in enumerate(turn.tool_calls))
    return think + calls + "<|im_end|>"


def _chatml_generated(turn: Turn) -> str:
    """Our chatml (its header comment): reasoning in a think block on every turn that has it, the
    text, each call on a line of its own, then <|im_end|>."""
    think = "<think>\n" + turn.reasoning + "\n</think>\n\n" if turn.reasoning else ""
    calls = "".join(("\n" if n or turn.content else "") + _hermes_call(c) for n, c in enumerate(turn.tool_calls))
    return think + turn.content + calls + "<|im_end|>"


TOOL_TEMPLATES = {"qwen2_5_training.jinja": _qwen25_generated, "qwen3_training.jinja": _qwen3_generated, "chatml": _chatml_generated}
no_think = text.filter(lambda s: "think>" not in s)
names = st.from_regex(r"[a-z][a-z_]{0,11}", fullmatch=True)
values = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | no_think, lambda inner: st.lists(inner, max_size=3), max_leaves=5)
arguments = st.dictionaries(names, values, max_size=3)


@st.composite
def tool_conversations(draw, reasoning: bool) -> dict:
    """A raw record in the OpenAI / Hugging Face shape: user turns, rounds of (parallel) tool
    calls with their results, answers; sometimes ending on a call-only turn; arguments given as
    objects or JSON text; reasoning on assistant turns when the template renders it."""
    tools = [{"type": "function", "function": {"name": n, "parameters": {"type": "object"}}} for n in draw(st.lists(names, min_size=1, max_size=3, unique=True))]
    messages = [{"role": "system", "content": draw(no_think)}] if draw(st.booleans()) else []
    for round_ in range(draw(st.integers(1, 3))):
        messages.append({"role": "user", "content": draw(no_think)})
        for step in range(draw(st.integers(0, 2))):
            calls = [
                {"type": "function", "function": {"name": draw(st.sampled_from(tools))["function"]["name"], "arguments": args if draw(st.booleans()) else json.dumps(args)}}
                for args in draw(st.lists(arguments, min_size=1, max_size=3))
            ]
            message = {"role": "assistant", "content": draw(st.none() | st.just("") | no_think), "tool_calls": calls}
            if reasoning and draw(st.booleans()):
                message["reasoning_content"] = draw(no_think)
            messages.append(message)
            if round_ == 0 or draw(st.integers(0, 4)):  # else the conversation may end on the call
                messages += [{"role": "tool", "content": draw(no_think)} for _ in calls]
        if messages[-1]["role"] != "assistant" or draw(st.booleans()):
            answer_message = {"role": "assistant", "content": draw(answer.filter(lambda s: "think>" not in s))}
            if reasoning and draw(st.booleans()):
                answer_message["reasoning_content"] = draw(no_think)
            messages.append(answer_message)
    return {"tools": tools, "messages": messages}


@pytest.mark.parametrize("template", sorted(TOOL_TEMPLATES))
def test_tool_calls_and_reasoning_are_trained_exactly_and_results_masked(tokenizer, template):
    """Supervised runs decode to each assistant turn's generated text (reasoning, text, every
    call in the template's syntax, <|im_end|>) and nothing else: not the tools, not a result, not
    the header, not the newline the training template puts inside its generation block."""
    path = trl_template(template) if template.endswith(".jinja") else template
    builder = RowBuilder(PipelineConfig(template=path, max_length=100_000, special_text="plain"), tokenizer, resolve_template(path, None))
    generated = TOOL_TEMPLATES[template]

    @settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(tool_conversations(reasoning=template.startswith("qwen3") or template == "chatml"))
    def check(record: dict) -> None:
        example = to_example(RawRecord("generated", 0, record, "generated"))
        assert isinstance(example, Example), example
        row = build_one(builder, example)
        assert isinstance(row, Row), row
        assistant = [t for t in example.turns if t.role == "assistant"]
        expected = [normalized(tokenizer, generated(t)) for t in assistant]
        runs = supervised_runs(row.input_ids, row.labels)
        assert [tokenizer.decode(run, skip_special_tokens=False, clean_up_tokenization_spaces=False) for run in runs] == expected
        roles = [TURN_ROLES[r] for r in row.turn_roles]
        assert roles == [TOOL_CALL if t.tool_calls else t.role for t in example.turns]
        assert all(s == 0 for r, s in zip(roles, row.turn_supervised) if r in ("system", "user", "tool"))
        assert row.turn_calls == [len(t.tool_calls) for t in example.turns]
        assert all(eot == 2 for r, eot in zip(roles, row.turn_eot) if r in ("assistant", TOOL_CALL))  # every stop token trained

    check()

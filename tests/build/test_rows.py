"""Per-example rules: special-token injection, length limits, padding, one BOS."""

from __future__ import annotations

import json
import pickle

import pytest

from conftest import Row, build_all, build_one
from expected import supervised_runs
from masked_shards.config import ConfigError, PipelineConfig
from masked_shards.records import Dropped, Example, Rejected, Turn
from masked_shards.build.rows import RowBuilder
from masked_shards.build.templates import resolve_template


def _build(tokenizer, example: Example, **settings) -> Row | Rejected | Dropped:
    config = PipelineConfig(**settings)
    return build_one(RowBuilder(config, tokenizer, resolve_template(config.template, None)), example)


def _chat(user: str, answer: str) -> Example:
    return Example("f.jsonl:3", "f.jsonl", (Turn("user", user), Turn("assistant", answer, True)))


@pytest.mark.parametrize("template,token", [("chatml", "<|im_end|>"), ("llama3", "<|eot_id|>"), ("chatml", "<|im_start|>")])
def test_special_token_typed_by_a_user_is_rejected_by_default(tokenizer, template, token):
    result = _build(tokenizer, _chat(f"please print {token} now", "ok"), template=template)
    assert isinstance(result, Rejected)
    assert (result.source, result.index, result.reason) == ("f.jsonl", 3, "special_token_in_text")
    assert token in result.detail


@pytest.mark.parametrize("template,token", [("chatml", "<|im_end|>"), ("llama3", "<|eot_id|>")])
def test_special_text_plain_never_becomes_a_control_token(tokenizer, template, token):
    injected = _build(tokenizer, _chat(f"say {token} twice: {token}", f"Here: {token}"), template=template, special_text="plain")
    clean = _build(tokenizer, _chat("say x twice: x", "Here: x"), template=template)
    control_id = tokenizer.convert_tokens_to_ids(token)
    # The clean conversation holds the template's own control tokens; the injected one no more.
    assert injected.input_ids.count(control_id) == clean.input_ids.count(control_id)
    decoded = tokenizer.decode(supervised_runs(injected.input_ids, injected.labels)[0], clean_up_tokenization_spaces=False)
    assert decoded.startswith(f"Here: {token}") and decoded.count(token) == 2


def test_llama3_rows_have_exactly_one_bos(tokenizer):
    row = _build(tokenizer, _chat("hi", "hello"), template="llama3")
    bos = tokenizer.convert_tokens_to_ids("<|begin_of_text|>")
    assert row.input_ids[0] == bos and row.input_ids.count(bos) == 1


def test_overlong_is_truncated_by_default_and_counted(demo_tokenizer):
    row = _build(demo_tokenizer, _chat("short question", "word " * 300), max_length=64)
    assert isinstance(row, Row) and row.truncated
    assert len(row.input_ids) == len(row.labels) == len(row.attention_mask) == 64
    whole = _build(demo_tokenizer, _chat("short question", "word " * 300), max_length=4096)
    assert row.tokens_before_truncation == whole.tokens_before_truncation == len(whole.input_ids) > 64


def test_overlong_dropped_when_asked(demo_tokenizer):
    dropped = _build(demo_tokenizer, _chat("short question", "word " * 300), max_length=64, overlong="drop")
    assert isinstance(dropped, Dropped) and dropped.reason == "overlong"


def test_truncation_that_leaves_no_answer_drops_the_example(demo_tokenizer):
    dropped = _build(demo_tokenizer, _chat("long question " * 100, "answer"), max_length=32)
    assert isinstance(dropped, Dropped) and dropped.reason == "no_supervised_tokens_after_truncation"


def test_unpadded_by_default(demo_tokenizer):
    row = _build(demo_tokenizer, _chat("hi", "hello"))
    assert all(row.attention_mask) and len(row.input_ids) < 64


@pytest.mark.parametrize("pad_to,expected_length", [("max_length", 128), ("multiple:16", None)])
def test_padding_uses_pad_id_ignored_labels_and_zero_attention(demo_tokenizer, pad_to, expected_length):
    unpadded = _build(demo_tokenizer, _chat("hi", "hello"))
    row = _build(demo_tokenizer, _chat("hi", "hello"), max_length=128, pad_to=pad_to)
    length = len(unpadded.input_ids)
    assert len(row.input_ids) == (expected_length or -(-length // 16) * 16)
    assert row.input_ids[:length] == unpadded.input_ids and row.labels[:length] == unpadded.labels
    assert set(row.input_ids[length:]) == {demo_tokenizer.pad_token_id}
    assert set(row.labels[length:]) == {-100}
    assert row.attention_mask == [1] * length + [0] * (len(row.input_ids) - length)


@pytest.mark.parametrize(
    "settings,fragment",
    [
        ({"pad_to": "multiple:7", "max_length": 64}, "must be a multiple of K"),
        ({"pad_to": "longest"}, "--pad-to must be max_length or multiple:K"),
        ({"max_length": 0}, "--max-length must be at least 2"),
        ({"overlong": "cut"}, "--overlong must be truncate, drop or split"),
        ({"format": "csv"}, "--format must be one of"),
        ({"validation_fraction": 1.5}, "--validation-fraction"),
    ],
)
def test_bad_settings_are_one_sentence(settings, fragment):
    with pytest.raises(ConfigError, match=fragment):
        PipelineConfig(**settings)


def test_special_token_in_reasoning_is_caught_too(qwen2_tokenizer):
    example = Example("f.jsonl:3", "f.jsonl", (Turn("user", "q"), Turn("assistant", "a", True, reasoning="then <|im_end|> appears")))
    rejected = _build(qwen2_tokenizer, example, template="qwen3")
    assert isinstance(rejected, Rejected) and rejected.reason == "special_token_in_text"
    row = _build(qwen2_tokenizer, example, template="qwen3", special_text="plain")
    end = qwen2_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert row.input_ids.count(end) == 2  # the user's and the assistant's turn ends, not the reasoning text
    assert "then <|im_end|> appears" in qwen2_tokenizer.decode(row.input_ids)


def test_a_batch_keeps_example_order_and_pickles_as_its_token_bytes(demo_tokenizer):
    """What crosses a Beam step: rows in the order of their examples, the examples without a row
    in theirs, and, pickled, about 4 + 4 + 1 bytes a token (ids, labels, mask) plus a little a row
    (ids and offsets), where rows of Python ints cost several times that."""
    examples = [Example(f"f.jsonl:{n}", "f.jsonl", (Turn("user", f"question {n} " * 5), Turn("assistant", "an answer " * 10, True))) for n in range(40)]
    examples[5] = Example("f.jsonl:5", "f.jsonl", (Turn("user", "say <|im_end|>"), Turn("assistant", "no", True)))
    examples[9] = Example("f.jsonl:9", "f.jsonl", (Turn("user", "long " * 100), Turn("assistant", "yes", True)))
    builder = RowBuilder(PipelineConfig(max_length=96, overlong="drop"), demo_tokenizer, resolve_template("chatml", None))
    batch = builder.build(examples)
    assert batch.rows.column("example_id").to_pylist() == [e.example_id for n, e in enumerate(examples) if n not in (5, 9)]
    assert [(type(o), o.reason) for o in batch.others] == [(Rejected, "special_token_in_text"), (Dropped, "overlong")]
    assert batch.others[0].index == 5 and batch.others[1].example_id == "f.jsonl:9"
    tokens, data = len(batch.rows.column("input_ids").values), pickle.dumps(batch)
    messages = len(batch.rows.column("turn_roles").values)  # the report's counts: 1 + 4 + 4 + 1 + 2 + 4 bytes a message, 4 buffers a column
    assert len(data) < 9 * tokens + 16 * messages + 3_000 + 80 * batch.rows.num_rows
    assert pickle.loads(data).rows.equals(batch.rows)


@pytest.mark.parametrize("where", ["arguments", "tools", "result id"])
def test_a_special_token_in_a_tool_call_its_tools_or_a_result_field_is_text_too(demo_tokenizer, where):
    """Tool-call arguments, tool definitions and other message keys reach the template as well,
    so a special token spelled there is rejected by default and kept as plain text under
    --special-text plain, like content (TRL's Qwen2.5 training template renders all three)."""
    import trl
    from pathlib import Path

    token = "<|im_end|>"
    template = str(Path(trl.__file__).parent / "chat_templates" / "qwen2_5_training.jinja")
    arguments = {"text": f"say {token}"} if where == "arguments" else {"text": "hi"}
    tools = [{"type": "function", "function": {"name": "echo", "description": f"writes {token}" if where == "tools" else "writes"}}]
    turns = (
        Turn("user", "Echo it."),
        Turn("assistant", "", True, tool_calls=({"type": "function", "function": {"name": "echo", "arguments": arguments}},)),
        Turn("tool", "done", extra=(("tool_call_id", f"c{token}" if where == "result id" else "c1"),)),
        Turn("assistant", "Done.", True),
    )
    example = Example("f.jsonl:3", "f.jsonl", turns, tools=tools)
    rejected = _build(demo_tokenizer, example, template=template)
    assert isinstance(rejected, Rejected) and rejected.reason == "special_token_in_text"
    row = _build(demo_tokenizer, example, template=template, special_text="plain")
    control = demo_tokenizer.convert_tokens_to_ids(token)
    clean = _build(demo_tokenizer, Example("f.jsonl:3", "f.jsonl", turns[:1] + turns[3:]), template=template)
    assert row.input_ids.count(control) == 5 and clean.input_ids.count(control) == 3  # one per message (system, user, call, result, answer), never from text
    call = demo_tokenizer.decode(supervised_runs(row.input_ids, row.labels)[0], clean_up_tokenization_spaces=False)
    assert call == '<tool_call>\n{"name": "echo", "arguments": ' + json.dumps(arguments) + "}\n</tool_call>" + token


def test_a_call_only_final_turn_trains_the_call_and_its_end_token(demo_tokenizer):
    """--train-on last on a conversation ending in a tool call: the call in the template's syntax
    and <|im_end|> are trained, the earlier answer and the result are not."""
    import trl
    from pathlib import Path

    template = str(Path(trl.__file__).parent / "chat_templates" / "qwen2_5_training.jinja")
    call = {"type": "function", "function": {"name": "lookup", "arguments": {"q": "tides"}}}
    turns = (Turn("user", "Tides?"), Turn("assistant", "Which coast?", True), Turn("user", "North."), Turn("assistant", "", True, tool_calls=(call,)))
    row = _build(demo_tokenizer, Example("f.jsonl:3", "f.jsonl", turns), template=template, train_on="last")
    runs = [demo_tokenizer.decode(run, clean_up_tokenization_spaces=False) for run in supervised_runs(row.input_ids, row.labels)]
    assert runs == ['<tool_call>\n{"name": "lookup", "arguments": {"q": "tides"}}\n</tool_call><|im_end|>']
    assert row.turn_eot[-1] == 2 and row.turn_calls == [0, 0, 0, 1]


def test_batches_started_before_the_last_is_finished_give_the_rows_built_one_at_a_time(tokenizer):
    """TokenizeFn starts batches k + 1 and k + 2 (their encodes queued in a thread) before it
    finishes batch k; each batch's rows and records without a row are then exactly those of
    building it alone."""
    builder = RowBuilder(PipelineConfig(max_length=64, overlong="drop"), tokenizer, resolve_template("chatml", None))
    batches = [
        [Example(f"f.jsonl:{10 * b + n}", "f.jsonl", (Turn("user", f"question {b} {n} " * (n + 1)), Turn("assistant", f"answer {n} " * (20 * n + 1), True))) for n in range(6)]
        for b in range(3)
    ]
    batches[1][2] = Example("f.jsonl:12", "f.jsonl", (Turn("user", "say <|im_end|>"), Turn("assistant", "no", True)))
    alone = [builder.build(batch) for batch in batches]
    finishes = [builder.start(batch) for batch in batches]
    together = [finish() for finish in finishes]
    for one, other in zip(alone, together):
        assert one.rows.equals(other.rows) and one.others == other.others
    assert any(isinstance(o, Dropped) for batch in together for o in batch.others)  # an overlong example among them
    assert [o.reason for o in together[1].others if isinstance(o, Rejected)] == ["special_token_in_text"]


def test_a_row_encoded_alone_in_a_batch_counts_its_own_messages(qwen2_tokenizer):
    """In a batch, a string a token crosses a span edge in (an answer opening with a newline,
    which merges with the header's) and one with special-token text kept plain are encoded alone;
    each row's per-message counts are its own, as when it is built on its own."""
    config = PipelineConfig(special_text="plain")
    builder = RowBuilder(config, qwen2_tokenizer, resolve_template("chatml", None))
    examples = [
        Example(f"f.jsonl:{n}", "f.jsonl", turns)
        for n, turns in enumerate(
            [
                (Turn("system", "Be brief."), Turn("user", "hi"), Turn("assistant", "hello", True)),
                (Turn("user", "a"), Turn("assistant", "\n\nb", True), Turn("user", "c"), Turn("assistant", "\nd", True)),
                (Turn("user", "say <|im_end|>"), Turn("assistant", "<|im_end|> said", True)),
                (Turn("user", "x y z"), Turn("assistant", "\n\n\nw", True)),
            ]
        )
    ]
    together = build_all(builder, examples)
    columns = ("input_ids", "labels", "turn_roles", "turn_tokens", "turn_supervised", "turn_eot")
    for row, example in zip(together, examples):
        alone = build_one(builder, example)
        assert isinstance(row, Row) and [getattr(row, c) for c in columns] == [getattr(alone, c) for c in columns]
        assert len(row.turn_roles) == len(example.turns) and sum(row.turn_supervised) > 0

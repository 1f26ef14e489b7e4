"""Every input format becomes role-tagged turns; every defect becomes a reasoned rejection."""

from __future__ import annotations

import pytest

from masked_shards.config import PipelineConfig
from masked_shards.read.formats import ParseOptions, detect_format, to_example
from masked_shards.records import Example, Rejected, Turn
from masked_shards.read.sources import RawRecord


def _example(value: object, fmt: str = "auto", **options) -> Example | Rejected:
    return to_example(RawRecord("f.jsonl", 7, value, "mine"), ParseOptions(PipelineConfig(format=fmt, **options)))


def test_alpaca_with_and_without_input():
    with_input = _example({"instruction": "Translate.", "input": "Hallo", "output": "Hello"})
    assert with_input.turns == (Turn("user", "Translate.\n\nHallo"), Turn("assistant", "Hello", True))
    assert with_input.example_id == "f.jsonl:7" and with_input.source == "mine"
    bare = _example({"instruction": "Say hi.", "input": "", "output": "hi"})
    assert bare.turns[0] == Turn("user", "Say hi.")
    assert _example({"instruction": "Say hi.", "output": "hi"}).turns[0] == Turn("user", "Say hi.")


def test_prompt_completion():
    assert _example({"prompt": "Q", "completion": " A"}).turns == (Turn("user", "Q"), Turn("assistant", " A", True))


def test_messages_train_on_every_assistant_turn():
    value = {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "U1"}, {"role": "assistant", "content": "A1"}, {"role": "user", "content": "U2"}, {"role": "assistant", "content": "A2"}]}
    turns = _example(value).turns
    assert [(t.role, t.trainable) for t in turns] == [("system", False), ("user", False), ("assistant", True), ("user", False), ("assistant", True)]


def test_sharegpt_roles_map_to_chat_roles():
    value = {"conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "H"}, {"from": "gpt", "value": "G"}]}
    assert _example(value).turns == (Turn("system", "S"), Turn("user", "H"), Turn("assistant", "G", True))


@pytest.mark.parametrize(
    "value,expected",
    [
        ({"messages": []}, "messages"),
        ({"conversations": []}, "sharegpt"),
        ({"instruction": "", "output": ""}, "alpaca"),
        ({"prompt": "", "completion": ""}, "prompt_completion"),
        ({"text": ""}, "text"),
        ({"src": "a", "tgt": "b"}, "translation"),
        ({"translation": {}}, "translation"),
        ({"other": ""}, None),
    ],
)
def test_detect_format(value, expected):
    assert detect_format(value) == expected


@pytest.mark.parametrize(
    "value,reason,fragment",
    [
        ([1, 2], "not_an_object", "JSON list"),
        ({"body": "x"}, "unknown_format", "cannot tell the format"),
        ({"text": "  "}, "empty_text", "empty"),
        ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 0.5}]}, "wrong_type", "'weight' 0 or 1"),
        ({"instruction": "x"}, "missing_field", "no 'output'"),
        ({"instruction": "x", "output": 3}, "wrong_type", "'output' is a int"),
        ({"instruction": "x", "output": "  \n"}, "empty_answer", "assistant turn 1 is empty"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "unknown_role", "unknown role 'tool'"),
        ({"messages": [{"role": "user", "content": "x"}]}, "no_assistant_turn", "no assistant turn"),
        ({"messages": "hi"}, "wrong_type", "list of objects"),
        ({"messages": [{"role": "user"}]}, "missing_field", "no 'content'"),
        ({"conversations": [{"from": "bot", "value": "x"}]}, "unknown_role", "unknown speaker 'bot'"),
        ({"prompt": "a", "completion": "b\ufdd0"}, "reserved_character", "noncharacter"),
    ],
)
def test_bad_records_are_rejected_with_a_reason(value, reason, fragment):
    rejected = _example(value)
    assert isinstance(rejected, Rejected)
    assert (rejected.source, rejected.index, rejected.reason) == ("f.jsonl", 7, reason)
    assert fragment in rejected.detail
    assert rejected.raw == value


def test_forced_format_rejects_records_of_another_shape():
    assert _example({"prompt": "a", "completion": "b"}, fmt="alpaca").reason == "missing_field"


def test_field_mapping_renames_columns_and_message_keys():
    mapped = _example({"question": "Q", "answer": "A"}, field_map=(("prompt", "question"), ("completion", "answer")))
    assert mapped.turns == (Turn("user", "Q"), Turn("assistant", "A", True))
    nested = {"dialog": [{"speaker": "user", "text": "hi"}, {"speaker": "assistant", "text": "yo"}]}
    renamed = _example(nested, field_map=(("messages", "dialog"), ("role", "speaker"), ("content", "text")))
    assert renamed.turns == (Turn("user", "hi"), Turn("assistant", "yo", True))


def test_role_map_adds_speaker_aliases():
    value = {"conversations": [{"from": "person", "value": "hi"}, {"from": "bot", "value": "yo"}]}
    assert _example(value).reason == "unknown_role"
    mapped = _example(value, role_map=(("person", "user"), ("bot", "assistant")))
    assert mapped.turns == (Turn("user", "hi"), Turn("assistant", "yo", True))


def test_system_prompt_is_added_or_replaces():
    added = _example({"prompt": "Q", "completion": "A"}, system_prompt="Be kind.")
    assert added.turns[0] == Turn("system", "Be kind.") and len(added.turns) == 3
    value = {"messages": [{"role": "system", "content": "old"}, {"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]}
    replaced = _example(value, system_prompt="new")
    assert [t.content for t in replaced.turns] == ["new", "Q", "A"]


@pytest.mark.parametrize("flag", [{"train": False}, {"weight": 0}])
def test_a_turn_can_opt_out_of_training(flag):
    value = {"messages": [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1", **flag}, {"role": "user", "content": "Q2"}, {"role": "assistant", "content": "A2"}]}
    assert [t.trainable for t in _example(value).turns if t.role == "assistant"] == [False, True]


def test_text_records_are_one_trained_document():
    assert _example({"text": "Once upon a time."}).turns == (Turn("text", "Once upon a time.", True),)


def test_reasoning_is_kept_for_templates_that_render_it():
    value = {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A", "reasoning_content": "think"}]}
    assert _example(value).turns[1].reasoning == "think"


def test_unknown_format_with_a_non_string_key_is_rejected_not_raised():
    rejected = _example({"a": "1", None: ["extra"]})
    assert isinstance(rejected, Rejected) and rejected.reason == "unknown_format"
    assert "['None', 'a']" in rejected.detail


SEED_TASK = {"instruction": "Sort these.", "instances": [{"input": "3, 1, 2", "output": "1, 2, 3"}]}
SEED_FIELDS = (("input", "instances.0.input"), ("output", "instances.0.output"))


def test_dotted_field_paths_reach_nested_fields_and_list_items():
    example = _example(SEED_TASK, field_map=SEED_FIELDS)
    assert example.turns == (Turn("user", "Sort these.\n\n3, 1, 2"), Turn("assistant", "1, 2, 3", True))
    assert example.raw == SEED_TASK


@pytest.mark.parametrize(
    "value",
    [
        {"instruction": "x", "instances": []},
        {"instruction": "x", "instances": [{"input": "y"}]},
        {"instruction": "x", "instances": {"0": "not a record"}},
        {"instruction": "x", "instances": "text"},
        {"instruction": "x"},
    ],
)
def test_a_missing_path_step_is_a_missing_field(value):
    rejected = _example(value, field_map=SEED_FIELDS)
    assert isinstance(rejected, Rejected) and rejected.reason == "missing_field" and "no 'output'" in rejected.detail


def test_a_literal_dotted_key_wins_over_a_path():
    value = {"q.text": "literal", "q": {"text": "nested"}, "a": "A"}
    assert _example(value, field_map=(("prompt", "q.text"), ("completion", "a"))).turns[0] == Turn("user", "literal")
    assert _example({"q": {"text": "nested"}, "a": "A"}, field_map=(("prompt", "q.text"), ("completion", "a"))).turns[0] == Turn("user", "nested")


def test_message_keys_can_be_paths_too():
    value = {"messages": [{"role": "user", "parts": [{"text": "hi"}]}, {"role": "assistant", "parts": [{"text": "yo"}]}]}
    assert _example(value, field_map=(("content", "parts.0.text"),)).turns == (Turn("user", "hi"), Turn("assistant", "yo", True))

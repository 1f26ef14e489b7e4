"""Every input format becomes role-tagged turns; every defect becomes a reasoned rejection."""

from __future__ import annotations

import io
import json

import pytest

from pipeline.formats import RawRecord, detect_format, iter_records, to_example
from pipeline.records import Example, Rejected, Turn


def _example(value: object, fmt: str = "auto") -> Example | Rejected:
    return to_example(RawRecord("f.jsonl", 7, value), fmt)


def test_alpaca_with_and_without_input():
    with_input = _example({"instruction": "Translate.", "input": "Hallo", "output": "Hello"})
    assert with_input.turns == (Turn("user", "Translate.\n\nHallo"), Turn("assistant", "Hello", True))
    assert with_input.example_id == "f.jsonl:7" and with_input.source == "f.jsonl"
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
        ({"text": ""}, None),
    ],
)
def test_detect_format(value, expected):
    assert detect_format(value) == expected


@pytest.mark.parametrize(
    "value,reason,fragment",
    [
        ([1, 2], "not_an_object", "JSON list"),
        ({"text": "x"}, "unknown_format", "cannot tell the format"),
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


def test_jsonl_lines_keep_their_index_and_bad_lines_are_rejected():
    data = '{"prompt": "a", "completion": "b"}\nnot json\n\n{"prompt": "c", "completion": "d"}\n'
    items = list(iter_records("f.jsonl", io.BytesIO(data.encode()), "jsonl"))
    assert [type(i).__name__ for i in items] == ["RawRecord", "Rejected", "RawRecord"]
    assert [i.index for i in items] == [0, 1, 2]
    assert items[1].reason == "invalid_json" and items[1].raw == "not json"


def test_json_array_and_json_lines_in_a_json_file():
    array = json.dumps([{"prompt": "a", "completion": "b"}, {"prompt": "c", "completion": "d"}])
    assert [i.value["prompt"] for i in iter_records("a.json", io.BytesIO(array.encode()), "json")] == ["a", "c"]
    lines = '{"prompt": "a", "completion": "b"}\n{"prompt": "c", "completion": "d"}\n'
    assert [i.value["prompt"] for i in iter_records("a.json", io.BytesIO(lines.encode()), "json")] == ["a", "c"]


def test_broken_json_array_is_one_rejected_record():
    (item,) = iter_records("a.json", io.BytesIO(b'[{"prompt": "a", '), "json")
    assert isinstance(item, Rejected) and item.index is None and item.reason == "invalid_json"

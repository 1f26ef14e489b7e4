"""Every input format becomes role-tagged turns; every defect becomes a reasoned rejection."""

from __future__ import annotations

import json

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
        ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 0.5}]}, "invalid_weight", "'weight' must be 0 or 1, not 0.5"),
        ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "loss_weight": 2}]}, "invalid_weight", "'loss_weight' must be 0 or 1"),
        ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "train": "no"}]}, "invalid_weight", "'train' must be true or false"),
        ({"instruction": "x"}, "missing_field", "no 'output'"),
        ({"instruction": "x", "output": 3}, "wrong_type", "'output' is a int"),
        ({"instruction": "x", "output": "  \n"}, "empty_answer", "assistant turn 1 is empty"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "unknown_role", "unknown role 'robot'"),
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
    turns = _example(value, field_map=(("content", "parts.0.text"),)).turns
    assert [(t.role, t.content, t.trainable) for t in turns] == [("user", "hi", False), ("assistant", "yo", True)]
    assert turns[0].message()["parts"] == [{"text": "hi"}]  # a path leaves its container, which the template sees too


WEATHER_TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather now", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]


def _call(name: str, arguments: object, **more) -> dict[str, object]:
    return {"type": "function", "function": {"name": name, "arguments": arguments}, **more}


@pytest.mark.parametrize("arguments", [{"city": "Paris"}, '{"city": "Paris"}'])
@pytest.mark.parametrize("content", [None, "", "Let me check."])
def test_tool_calls_and_results_reach_the_template_as_hugging_face_sees_them(arguments, content):
    """Arguments as an object or a JSON string both become an object (a template's tojson then
    writes them once); content null or empty beside the calls; results keep id and name."""
    value = {
        "tools": WEATHER_TOOLS,
        "messages": [
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {"role": "assistant", "content": content, "tool_calls": [_call("get_weather", arguments, id="c1"), _call("get_weather", {"city": "Rome"}, id="c2")]},
            {"role": "tool", "content": "21C", "tool_call_id": "c1", "name": "get_weather"},
            {"role": "tool", "content": "25C", "tool_call_id": "c2", "name": "get_weather"},
            {"role": "assistant", "content": "Paris 21C, Rome 25C."},
        ],
    }
    example = _example(value)
    assert example.tools == WEATHER_TOOLS
    assert [(t.role, t.trainable) for t in example.turns] == [("user", False), ("assistant", True), ("tool", False), ("tool", False), ("assistant", True)]
    assert example.turns[1].message() == {
        "role": "assistant",
        "content": content or "",
        "tool_calls": [_call("get_weather", {"city": "Paris"}, id="c1"), _call("get_weather", {"city": "Rome"}, id="c2")],
    }
    assert example.turns[3].message() == {"role": "tool", "content": "25C", "tool_call_id": "c2", "name": "get_weather"}


def test_a_flat_call_and_the_tools_column_as_json_text():
    value = {"tools": json.dumps(WEATHER_TOOLS), "messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "tool_calls": [{"name": "get_weather", "arguments": {}}]}]}
    example = _example(value)
    assert example.tools == WEATHER_TOOLS
    assert example.turns[1].tool_calls == (_call("get_weather", {}),)
    assert _example({**value, "functions": value.pop("tools")}, field_map=(("tools", "functions"),)).tools == WEATHER_TOOLS


@pytest.mark.parametrize(
    "change,reason,fragment",
    [
        ({"tool_calls": [_call("f", "{not json")]}, "invalid_tool_call", "tool call 0 'arguments' is not valid JSON"),
        ({"tool_calls": [_call("f", "[1, 2]")]}, "invalid_tool_call", "'arguments' is a list, not an object"),
        ({"tool_calls": [{"type": "function", "function": {"name": "f"}}]}, "invalid_tool_call", "has no 'arguments'"),
        ({"tool_calls": [_call("", {})]}, "invalid_tool_call", "no function name"),
        ({"tool_calls": "f()"}, "wrong_type", "'tool_calls' must be a list of objects"),
        ({"content": "", "tool_calls": []}, "empty_answer", "assistant turn 1 is empty"),
        ({"content": [{"type": "image", "image": "x.png"}]}, "unsupported_content", "content part of type 'image'"),
        ({"content": [{"type": "text", "text": 3}]}, "wrong_type", "text part without a string"),
        ({"content": 3}, "wrong_type", "not a string or a list of parts"),
        ({"tool_calls": [_call("f", {"x": "a\ufdd0"})]}, "reserved_character", "turn 1 tool call"),
    ],
)
def test_bad_tool_calls_and_content_parts_are_rejected(change, reason, fragment):
    value = {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"} | change]}
    rejected = _example(value)
    assert isinstance(rejected, Rejected) and rejected.reason == reason and fragment in rejected.detail, rejected


@pytest.mark.parametrize(
    "tools,fragment",
    [("[oops", "'tools' is not valid JSON"), ({"name": "f"}, "must be a list of objects"), ('"f"', "must be a list of objects")],
)
def test_bad_tools_are_rejected(tools, fragment):
    rejected = _example({"tools": tools, "messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]})
    assert isinstance(rejected, Rejected) and rejected.reason == "invalid_tools" and fragment in rejected.detail


def test_a_tool_call_on_a_user_message_is_rejected():
    rejected = _example({"messages": [{"role": "user", "content": "Q", "tool_calls": [_call("f", {})]}, {"role": "assistant", "content": "A"}]})
    assert rejected.reason == "unexpected_field"


def test_sharegpt_tool_data_as_llama_factory_and_glaive_write_it():
    """`function_call` is an assistant message of its own holding the call (also right after a
    gpt message, and a JSON list is parallel calls); `observation` is a tool result."""
    value = {
        "tools": json.dumps(WEATHER_TOOLS),
        "conversations": [
            {"from": "human", "value": "Weather in Paris?"},
            {"from": "gpt", "value": "Checking."},
            {"from": "function_call", "value": '{"name": "get_weather", "arguments": {"city": "Paris"}}'},
            {"from": "observation", "value": '{"temp": 21}'},
            {"from": "function_call", "value": '[{"name": "get_weather", "arguments": "{\\"city\\": \\"Rome\\"}"}, {"name": "get_weather", "arguments": {"city": "Oslo"}}]'},
            {"from": "ipython", "value": "25"},
            {"from": "tool", "value": "3"},
            {"from": "gpt", "value": "21, 25 and 3."},
        ],
    }
    example = _example(value)
    assert example.tools == WEATHER_TOOLS
    assert [(t.role, t.content, t.trainable, len(t.tool_calls)) for t in example.turns] == [
        ("user", "Weather in Paris?", False, 0),
        ("assistant", "Checking.", True, 0),
        ("assistant", "", True, 1),
        ("tool", '{"temp": 21}', False, 0),
        ("assistant", "", True, 2),
        ("tool", "25", False, 0),
        ("tool", "3", False, 0),
        ("assistant", "21, 25 and 3.", True, 0),
    ]
    assert example.turns[4].tool_calls == (_call("get_weather", {"city": "Rome"}), _call("get_weather", {"city": "Oslo"}))
    assert _example({"conversations": [{"from": "human", "value": "Q"}, {"from": "function_call", "value": "{bad"}]}).reason == "invalid_tool_call"
    mapped = _example({"conversations": [{"from": "q", "value": "Q"}, {"from": "call", "value": '{"name": "f", "arguments": {}}'}, {"from": "result", "value": "r"}]}, role_map=(("q", "user"), ("call", "function_call"), ("result", "tool")))
    assert [(t.role, len(t.tool_calls)) for t in mapped.turns] == [("user", 0), ("assistant", 1), ("tool", 0)]


def test_content_parts_are_joined_and_a_reasoning_part_is_reasoning():
    value = {"messages": [
        {"role": "user", "content": [{"type": "text", "text": "Hello "}, {"type": "text", "value": "there"}]},
        {"role": "assistant", "content": [{"type": "reasoning", "text": "They greet."}, {"type": "text", "text": "Hi!"}]},
    ]}
    turns = _example(value).turns
    assert (turns[0].content, turns[1].content, turns[1].reasoning) == ("Hello there", "Hi!", "They greet.")


@pytest.mark.parametrize("key", ["reasoning_content", "reasoning", "thinking"])
def test_reasoning_reaches_templates_under_both_names_they_read(key):
    value = {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A", key: "think"}]}
    assert _example(value).turns[1].message() == {"role": "assistant", "content": "A", "reasoning_content": "think", "thinking": "think"}


def test_loss_weight_zero_keeps_a_turn_unsupervised():
    value = {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A1", "loss_weight": 0}, {"role": "user", "content": "Q"}, {"role": "assistant", "content": "A2", "loss_weight": 1.0}]}
    assert [t.trainable for t in _example(value).turns if t.role == "assistant"] == [False, True]


def test_a_null_field_is_an_absent_field(tmp_path):
    """Messages as `datasets` stores them: a list of structs, every key in every message, null
    where a message lacks it, down to the arguments of calls given as objects. Read back from a
    real Parquet file through our reader, nulls never become fields."""
    import datasets

    from masked_shards.read.sources import InputFile, read_records

    rows = [{"messages": [
        {"role": "user", "content": "Weather?", "tool_calls": None, "tool_call_id": None, "reasoning_content": None},
        {"role": "assistant", "content": None, "tool_calls": [{"id": None, "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": None}}}, {"id": "c2", "type": "function", "function": {"name": "get_time", "arguments": {"city": None, "days": 2}}}], "tool_call_id": None, "reasoning_content": "Look it up."},
        {"role": "tool", "content": "21C", "tool_calls": None, "tool_call_id": "c1", "reasoning_content": None},
        {"role": "assistant", "content": "21C.", "tool_calls": None, "tool_call_id": None, "reasoning_content": None},
    ]}]
    datasets.Dataset.from_list(rows).to_parquet(tmp_path / "chat.parquet")
    record = datasets.load_dataset("parquet", data_files=str(tmp_path / "chat.parquet"), split="train")[0]
    assert record["messages"][0]["tool_calls"] is None  # the shape we must read
    [read] = read_records(InputFile("src", "chat.parquet", str(tmp_path / "chat.parquet"), "parquet"), lambda p: open(p, "rb"))
    turns = to_example(read).turns
    assert [t.message() for t in turns] == [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "", "tool_calls": [_call("get_weather", {"city": "Paris"}), {**_call("get_time", {"days": 2}), "id": "c2"}], "reasoning_content": "Look it up.", "thinking": "Look it up."},
        {"role": "tool", "content": "21C", "tool_call_id": "c1"},
        {"role": "assistant", "content": "21C."},
    ]


def test_a_null_in_json_below_a_messages_keys_is_the_records_own_value():
    """In JSON a null is written on purpose: a call's `{"unit": null}` argument, a schema's
    `"default": null`, are what the model must see and write; a message's own null keys (and a
    call's null id) are still absent fields."""
    call = {"id": None, "type": "function", "function": {"name": "convert", "arguments": {"value": 3, "unit": None}}}
    tools = [{"type": "function", "function": {"name": "convert", "parameters": {"type": "object", "properties": {"unit": {"type": ["string", "null"], "default": None}}}}}]
    example = _example({"tools": tools, "messages": [{"role": "user", "content": "3?", "name": None}, {"role": "assistant", "content": None, "tool_calls": [call]}]})
    assert [t.message() for t in example.turns] == [
        {"role": "user", "content": "3?"},
        {"role": "assistant", "content": "", "tool_calls": [_call("convert", {"value": 3, "unit": None})]},
    ]
    assert example.tools == tools


def test_strings_in_reads_every_string_in_reading_order():
    """Keys and values, lists and tuples, at any depth, in the order a reader meets them (the
    first special token an author spelled out is reported where it stands); other values are no text."""
    from masked_shards.records import strings_in

    call = [{"name": "get_weather", "arguments": {"city": "Paris", "days": 3, "units": ["C", ("K", None)]}}, "tail"]
    assert list(strings_in(call)) == ["name", "get_weather", "arguments", "city", "Paris", "days", "units", "C", "K", "tail"]
    assert list(strings_in(call, keys=False)) == ["get_weather", "Paris", "C", "K", "tail"]
    assert list(strings_in("alone")) == ["alone"]
    assert list(strings_in({1: "one", None: ["two"]})) == ["one", "two"]
    assert list(strings_in([[], {}, 4.5, None])) == []

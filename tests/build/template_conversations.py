"""Conversations by class for comparing bundled templates with the originals they reproduce.

Each class holds a few conversations in the Hugging Face message shape, with the tools passed to
`apply_chat_template`. They extend `--template auto`'s probes with the variants a family renders
differently: string arguments, a call with text before it, reasoning beside a call, reasoning in
history, whitespace at content edges.
"""

from __future__ import annotations

from masked_shards.build.template_probes import PROBES, TOOLS, tool_call, tool_result

USER_Q = {"role": "user", "content": "Weather in Rome?"}
ROME_CALL = tool_call("get_weather", {"city": "Rome"}, "call_9")
ROME_RESULT = tool_result('{"temp_c": 21, "sky": "clear"}', "get_weather", "call_9")

# A tool whose parameters use the JSON-schema shapes templates translate (gpt-oss writes TypeScript).
RICH_TOOL = {
    "type": "function",
    "function": {
        "name": "search_flights",
        "description": "Find flights.",
        "parameters": {
            "type": "object",
            "properties": {
                "origin": {"type": "string", "description": "IATA code"},
                "cabin": {"type": "string", "enum": ["economy", "business"], "default": "economy"},
                "passengers": {"type": "integer", "default": 1},
                "max_price": {"type": "number", "nullable": True},
                "airlines": {"type": "array", "items": {"type": "string"}},
                "legs": {"type": "array", "items": {"type": "object", "properties": {"date": {"type": "string"}}, "required": ["date"]}},
                "flexible": {"type": "boolean", "default": False},
                "window": {"type": "object", "properties": {"start": {"type": "string"}, "days": {"type": "integer"}}, "required": ["start"]},
                "note": {"type": ["string", "null"]},
                "seat": {"oneOf": [{"type": "string", "description": "a seat"}, {"type": "integer", "default": 0}]},
            },
            "required": ["origin"],
        },
    },
}
NO_PARAMETERS_TOOL = {"type": "function", "function": {"name": "ping", "description": "Check the service.", "parameters": {"type": "object", "properties": {}}}}

CLASSES: dict[str, dict[str, tuple[list[dict], list[dict] | None]]] = {
    "plain": {
        "single": PROBES["plain"],
        "multi": (
            [
                {"role": "user", "content": "A"},
                {"role": "assistant", "content": "1"},
                {"role": "user", "content": " C\n"},
                {"role": "assistant", "content": " 2 ways. "},
            ],
            None,
        ),
    },
    "system": {
        "multi": PROBES["system"],
        "empty": PROBES["empty_system"],
        "single": ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}], None),
    },
    "reasoning": {
        "history": PROBES["reasoning"],
        "final": ([{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4", "reasoning_content": "\nAdd them.\n"}], None),
        "with_call": (
            [
                USER_Q,
                {"role": "assistant", "content": "", "reasoning_content": "I should look it up.", "tool_calls": [ROME_CALL]},
                ROME_RESULT,
                {"role": "assistant", "content": "Clear, 21 °C.", "reasoning_content": "The tool says clear."},
            ],
            TOOLS,
        ),
    },
    "tools": {
        "single": PROBES["tools"],
        "call_only": PROBES["call_only"],
        "string_arguments": ([USER_Q, {"role": "assistant", "content": "", "tool_calls": [tool_call("get_weather", '{"city": "Rome"}', "call_9")]}, ROME_RESULT, {"role": "assistant", "content": "Clear."}], TOOLS),
        "null_content": ([USER_Q, {"role": "assistant", "content": None, "tool_calls": [ROME_CALL]}, ROME_RESULT, {"role": "assistant", "content": "Clear."}], TOOLS),
        "string_arguments_null_content": (
            [USER_Q, {"role": "assistant", "content": None, "tool_calls": [tool_call("get_weather", '{"city": "Rome"}', "call_9")]}, ROME_RESULT, {"role": "assistant", "content": "Clear."}],
            TOOLS,
        ),
        "text_and_call": ([{"role": "system", "content": "Be brief."}, USER_Q, {"role": "assistant", "content": "Let me check.", "tool_calls": [ROME_CALL]}, ROME_RESULT, {"role": "assistant", "content": "Clear."}], TOOLS),
        "rich_schema": (
            [
                {"role": "user", "content": "Flights from OSL?"},
                {"role": "assistant", "content": "", "tool_calls": [tool_call("search_flights", {"origin": "OSL", "airlines": ["SK"], "flexible": True}, "f1")]},
                tool_result('[{"price": 120}]', "search_flights", "f1"),
                {"role": "assistant", "content": "One at 120."},
            ],
            [RICH_TOOL, NO_PARAMETERS_TOOL],
        ),
        "two_rounds": (
            [
                USER_Q,
                {"role": "assistant", "content": "", "tool_calls": [ROME_CALL]},
                ROME_RESULT,
                {"role": "assistant", "content": "Clear."},
                {"role": "user", "content": "And the time there?"},
                {"role": "assistant", "content": "", "tool_calls": [tool_call("get_time", {"zone": "Europe/Rome"}, "call_10")]},
                tool_result('{"time": "14:05"}', "get_time", "call_10"),
                {"role": "assistant", "content": "14:05."},
            ],
            TOOLS,
        ),
    },
    "parallel": {
        "with_text": PROBES["parallel"],
        "no_text": (
            [
                {"role": "user", "content": "Weather in Oslo and Rome?"},
                {"role": "assistant", "content": "", "tool_calls": [tool_call("get_weather", {"city": "Oslo"}, "a"), tool_call("get_weather", {"city": "Rome"}, "b")]},
                tool_result('{"temp_c": 3}', "get_weather", "a"),
                tool_result('{"temp_c": 21}', "get_weather", "b"),
                {"role": "assistant", "content": "Oslo 3 °C, Rome 21 °C."},
            ],
            TOOLS,
        ),
        "string_arguments": (
            [
                {"role": "user", "content": "Weather in Oslo and Rome?"},
                {"role": "assistant", "content": None, "tool_calls": [tool_call("get_weather", '{"city": "Oslo"}', "a"), tool_call("get_weather", '{"city": "Rome"}', "b")]},
                tool_result('{"temp_c": 3}', "get_weather", "a"),
                tool_result('{"temp_c": 21}', "get_weather", "b"),
                {"role": "assistant", "content": "Oslo 3 °C, Rome 21 °C."},
            ],
            TOOLS,
        ),
        "call_only": (
            [{"role": "user", "content": "Time in Oslo and Lima?"}, {"role": "assistant", "content": "", "tool_calls": [tool_call("get_time", {"zone": "Europe/Oslo"}, "a"), tool_call("get_time", {"zone": "America/Lima"}, "b")]}],
            TOOLS,
        ),
    },
}

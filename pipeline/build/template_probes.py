"""The probe conversations `--template auto` renders to recognise a tokenizer's chat template.

A bundled template is chosen when it renders every probe exactly as the tokenizer's own template
does, so the probes cover what tells families apart: a default system prompt or none, a system
message, reasoning (shown or dropped), tool definitions, one tool call and its result, parallel
calls with their results in one turn, and a conversation ending on a call:

    plain      user, assistant
    system     system, user, assistant, user, assistant
    two_systems   system, system, user, assistant (DeepSeek-R1 joins them, its distills keep the last)
    inline_reasoning  user, assistant ("<think>...</think>" in its text: R1-0528 cuts it, V3-0324 does not)
    empty_system  system (empty), user, assistant
    reasoning  user, assistant (reasoning_content), user, assistant (reasoning_content)
    tools      tools; user, assistant (one call), tool, assistant
    parallel   tools; system, user, assistant (text + two calls, one with a boolean argument), tool, tool, assistant
    call_only  tools; user, assistant (one call, no text; its id is 9 letters and digits, the only
               ids Mistral's formats accept, so they show they write calls)
    string_arguments  tools; user, assistant (one call, its arguments a JSON string), tool, assistant
    parallel_string_arguments  tools; user, assistant (two calls, arguments as JSON strings), tool,
               tool, assistant: how results follow each other in families that write arguments only
               as given (DeepSeek-R1 runs them together, R1-0528 puts a newline between)

PROMPT_PROBE, a user message with the generation prompt, breaks a tie: two families whose
conversations render alike can differ in what the prompt opens for the model (Qwen3's plain
assistant header, Qwen3-2507 Thinking's `<think>\n`), which decides what is trained. It only
ranks templates that match every probe, since one bundled template may stand for originals that
differ in their prompt alone (Qwen3.5's thinking and non-thinking checkpoints).

Messages are in the Hugging Face shape `apply_chat_template` takes (`tool_calls` with arguments
as an object, `role: "tool"` results), so any template sees what it would see at inference.
"""

from __future__ import annotations

Message = dict[str, object]

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"}}, "required": ["city"]},
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Local time in a time zone.",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string"}, "hour24": {"type": "boolean"}}, "required": ["zone"]},
    },
}
TOOLS = [WEATHER_TOOL, TIME_TOOL]


def tool_call(name: str, arguments: dict[str, object] | str, call_id: str) -> dict[str, object]:
    """One call as OpenAI and Hugging Face write it: {"type": "function", "function": {...}}."""
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def tool_result(content: str, name: str, call_id: str) -> Message:
    return {"role": "tool", "content": content, "name": name, "tool_call_id": call_id}


PROBES: dict[str, tuple[list[Message], list[dict[str, object]] | None]] = {
    "plain": ([{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}], None),
    "system": (
        [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "Name a colour."},
            {"role": "assistant", "content": "Blue."},
        ],
        None,
    ),
    # Templates differ on a second system message: DeepSeek-R1 joins them, its distills keep the last.
    "two_systems": (
        [
            {"role": "system", "content": "You are terse."},
            {"role": "system", "content": "Answer in French."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Bonjour."},
        ],
        None,
    ),
    # Reasoning written inline: DeepSeek-R1-0528 cuts an answer at its last </think>, V3-0324 keeps it whole.
    "inline_reasoning": ([{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "<think>2 and 2.</think>4"}], None),
    "empty_system": ([{"role": "system", "content": ""}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}], None),
    "reasoning": (
        [
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "4", "reasoning_content": "2 plus 2 makes 4."},
            {"role": "user", "content": "And 3+3?"},
            {"role": "assistant", "content": "6", "reasoning_content": "3 plus 3 makes 6."},
        ],
        None,
    ),
    "tools": (
        [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": "", "tool_calls": [tool_call("get_weather", {"city": "Paris"}, "call_1")]},
            tool_result('{"temp_c": 18}', "get_weather", "call_1"),
            {"role": "assistant", "content": "It is 18 °C in Paris."},
        ],
        TOOLS,
    ),
    "parallel": (
        [
            {"role": "system", "content": "Use tools when they help."},
            {"role": "user", "content": "Weather in Oslo and the time in Tokyo?"},
            {
                "role": "assistant",
                "content": "Checking both.",
                "tool_calls": [tool_call("get_weather", {"city": "Oslo"}, "call_1"), tool_call("get_time", {"zone": "Asia/Tokyo", "hour24": True}, "call_2")],
            },
            tool_result('{"temp_c": 3}', "get_weather", "call_1"),
            tool_result('{"time": "09:30"}', "get_time", "call_2"),
            {"role": "assistant", "content": "Oslo is at 3 °C; it is 09:30 in Tokyo."},
        ],
        TOOLS,
    ),
    "call_only": (
        [{"role": "user", "content": "Time in Lima?"}, {"role": "assistant", "content": "", "tool_calls": [tool_call("get_time", {"zone": "America/Lima"}, "call00001")]}],
        TOOLS,
    ),
    # Some templates write arguments only as given (a string) and fail on an object (DeepSeek-V3).
    "string_arguments": (
        [
            {"role": "user", "content": "Weather in Bergen?"},
            {"role": "assistant", "content": "", "tool_calls": [tool_call("get_weather", '{"city": "Bergen"}', "call_1")]},
            tool_result('{"temp_c": 9}', "get_weather", "call_1"),
            {"role": "assistant", "content": "9 °C in Bergen."},
        ],
        TOOLS,
    ),
    "parallel_string_arguments": (
        [
            {"role": "user", "content": "Weather in Bergen and Lima?"},
            {"role": "assistant", "content": "", "tool_calls": [tool_call("get_weather", '{"city": "Bergen"}', "call_1"), tool_call("get_weather", '{"city": "Lima"}', "call_2")]},
            tool_result('{"temp_c": 9}', "get_weather", "call_1"),
            tool_result('{"temp_c": 19}', "get_weather", "call_2"),
            {"role": "assistant", "content": "9 °C in Bergen, 19 °C in Lima."},
        ],
        TOOLS,
    ),
}
PROMPT_PROBE: list[Message] = [{"role": "user", "content": "What is 2+2?"}]

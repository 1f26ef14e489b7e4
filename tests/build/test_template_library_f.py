"""Template library F: Llama 4, Phi-4, Phi-4-mini, Granite 3.1/3.2/3.3, Granite 4 (and Gemma 3n,
which `gemma3` already renders), and LFM2, LFM2.5, Nemotron 3 and Nemotron 3 Ultra, whose originals
the `trl` wheel ships (section 6 compares them byte for byte, as test_template_library_c.py does).

Each template must render its family's published format byte for byte, mark exactly what the model
generates, refuse what the original refuses, and pass `check_template` with the family tokenizer.
The expected strings and supervised runs below are written out by hand from the published formats,
never produced by running our templates. Sources:

* llama4: meta-llama/Llama-4-Scout-17B-16E-Instruct and Llama-4-Maverick-17B-128E-Instruct,
  `chat_template` in tokenizer_config.json (also the default `chat_template` of transformers'
  `models/llama4/processing_llama4.py`, which the installed transformers ships: the one original of
  these families we can compare with directly, below); Meta's Llama 4 prompt-format page. BOS
  "<|begin_of_text|>"; "<|header_start|>ROLE<|header_end|>\\n\\n" + content + "<|eot|>"; a system
  block only for a given system message (trimmed), "Environment: ipython\\n" first when tools are
  given; tools (JSON, indent 4, each followed by "\\n\\n") after an instruction in the first
  message after the system one (trimmed); a tool-call turn "<|python_start|>" + text +
  "<|python_end|>" + one `{"name": N, "parameters": ARGS}` per call with no separator; results in an
  "ipython" turn passed through tojson (a string result becomes a JSON string). The template
  computes a date it never writes: nothing depends on today's date.
* phi4: microsoft/phi-4, `chat_template` in tokenizer_config.json: "<|im_start|>ROLE<|im_sep|>" +
  content + "<|im_end|>" for system, user and assistant messages, nothing between them, other roles
  render nothing; generation prompt "<|im_start|>assistant<|im_sep|>".
* phi4-mini: microsoft/Phi-4-mini-instruct, `chat_template` in tokenizer_config.json and the model
  card's function-calling section: "<|ROLE|>" + content + "<|end|>" for every message (a result is
  "<|tool|>…<|end|>"); a system message's `tools` string inside "<|tool|>…<|/tool|>"; the model
  writes its calls in its text as "<|tool_call|>…<|/tool_call|>"; eos_token after the last message
  unless a generation prompt "<|assistant|>" is asked for. The `tools` argument and OpenAI-style
  `tool_calls` are not rendered, as officially: such records are rejected, never trained without
  their calls.
* granite3.3: ibm-granite/granite-3.3-2b-instruct and -8b-instruct, `chat_template` in
  tokenizer_config.json (a copy: llama.cpp's models/templates/ibm-granite-granite-3.3-2B-Instruct.jinja):
  "<|start_of_role|>ROLE<|end_of_role|>" + content + "<|end_of_text|>\\n" for every message; without a
  system message "Knowledge Cutoff Date: April 2024. Today's Date: " + today as "%B %d, %Y" + ". You
  are Granite, developed by IBM." + " You are a helpful AI assistant." (or the tools sentence, or
  the thinking instructions with `thinking`); tools as one JSON list (indent 4) in an
  "available_tools" turn; tool calls and reasoning are not written (the model writes "<|tool_call|>"
  and "<think>…</think><response>…</response>" in its text). The date is today's, as in the original:
  the expected strings take it from the clock around the rendering.
* granite3.2: ibm-granite/granite-3.2-2b-instruct and -8b-instruct, `chat_template` in
  tokenizer_config.json: as 3.3, but the default text on three lines ("Knowledge Cutoff Date: April
  2024.\\nToday's Date: {DATE}.\\nYou are Granite, developed by IBM."), thinking instructions asking
  for "Here is my thought process:" / "Here is my response:", content parts' texts joined.
* granite3.1: ibm-granite/granite-3.1-2b-instruct and -8b-instruct, `chat_template` in
  tokenizer_config.json (quoted in IBM's granite-io Granite 3.1 input processor): the three-line
  default text, the tools sentence " You are a helpful AI assistant with access to the following
  tools. ... respond with <|tool_call|> ...", the tools list in a "tools" turn, no thinking.
* granite4: ibm-granite/granite-4.0-h-small, -h-tiny, -h-micro, -micro, `chat_template` (a copy: llama.cpp's
  models/templates/ibm-granite-granite-4.0.jinja; Berkeley function-calling leaderboard's Granite 4
  handler quotes it): a system turn always (the given text, or "You are a helpful assistant. Please
  ensure responses are professional, accurate, and safe." when it is empty or missing and no tools
  are given), tools as one JSON line each inside <tools></tools> with an instruction, appended to the
  system text after "\\n\\n"; assistant text, then each call as "<tool_call>\\n{"name": N,
  "arguments": ARGS}\\n</tool_call>", one per line; consecutive results in one user turn, each
  "\\n<tool_response>\\n…\\n</tool_response>". Our family tokenizer has <tool_call> and friends as
  added, not special, tokens.
* Gemma 3n (google/gemma-3n-E2B-it, gemma-3n-E4B-it, chat_template.jinja): for text it is Gemma 3's
  format byte for byte (they differ only in the tokens an image or audio part becomes), so it is
  served by `gemma3`, checked here on hand-written Gemma 3n strings.

No family here renders reasoning; a record whose final answer carries reasoning is rejected
(`template_dropped_reasoning`), checked below.

`--template auto`: for phi4, phi4-mini and the Granites no original ships in an installed package, so auto is
checked against our own template with its generation marks stripped (the published text), which
is all it can be checked against here; llama4 is also picked from transformers' original.
"""

from __future__ import annotations

import copy
import json
import re
import textwrap
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
import trl
from transformers.models.llama4 import processing_llama4

from conftest import Row, build_one
from expected import normalized, supervised_runs
from template_conversations import CLASSES
from test_masking_property import text, tool_conversations
from test_template_library_a import _family
from test_template_library_e import test_auto_picks_the_family_from_its_template_without_marks as auto_picks_the_family
from test_template_library_e import test_check_template_passes_with_the_family_tokenizer as check_template_passes
from masked_shards.build.rows import RowBuilder, check_template
from masked_shards.build.templates import resolve_template
from masked_shards.bundled_templates import bundled, family_tokens, template_path
from masked_shards.config import PipelineConfig
from masked_shards.read.formats import to_example
from masked_shards.read.sources import RawRecord
from masked_shards.records import TOOL_CALL, TURN_ROLES, Example, Rejected

NAMES = ("llama4", "phi4", "phi4-mini", "granite3.1", "granite3.2", "granite3.3", "granite4")
LLAMA4 = ["<|begin_of_text|>", "<|end_of_text|>", "<|header_start|>", "<|header_end|>", "<|eot|>", "<|eom|>", "<|python_start|>", "<|python_end|>", "<|image|>"]
PHI4 = ["<|im_sep|>"]  # Qwen2 already has <|im_start|>, <|im_end|> and <|endoftext|>
GRANITE = ["<|start_of_role|>", "<|end_of_role|>", "<|end_of_text|>", "<|tool_call|>", "<|start_of_cite|>", "<|end_of_cite|>"]
GRANITE4_PLAIN = ("<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>")
PHI4_MINI = ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<|tool|>", "<|/tool|>", "<|tool_call|>", "<|/tool_call|>", "<|tool_response|>"]


@pytest.fixture(scope="module")
def tokenizers(qwen2_tokenizer):
    """Qwen2's 151k vocabulary with each family's special tokens, BOS and EOS."""
    return {
        "llama4": _family(qwen2_tokenizer, LLAMA4, bos="<|begin_of_text|>", eos="<|eot|>"),
        "phi4": _family(qwen2_tokenizer, PHI4, bos="<|endoftext|>", eos="<|im_end|>"),
        "phi4-mini": _family(qwen2_tokenizer, PHI4_MINI, bos="<|endoftext|>", eos="<|endoftext|>"),
        **{name: _family(qwen2_tokenizer, GRANITE, bos=None, eos="<|end_of_text|>") for name in ("granite3.1", "granite3.2", "granite3.3")},
        "granite4": _family(qwen2_tokenizer, GRANITE[:3], bos=None, eos="<|end_of_text|>", plain=GRANITE4_PLAIN),
    }


@pytest.fixture(scope="module")
def builders(tokenizers):
    """One RowBuilder per template (no length limit, special-token text kept as plain text); the
    three share nothing but Qwen2's vocabulary, so each builds its own Encoder once."""
    config = {"max_length": 100_000, "special_text": "plain"}
    return {name: RowBuilder(PipelineConfig(template=name, **config), tokenizers[name], resolve_template(name, None)) for name in NAMES}


def _render(tokenizer, name: str, messages: list[dict], tools=None, **extra) -> str:
    return tokenizer.apply_chat_template(copy.deepcopy(messages), tools=tools, chat_template=resolve_template(name, None).source, tokenize=False, **extra)


def _runs(tokenizer, name: str, messages: list[dict], tools=None, **extra) -> list[str]:
    """The supervised runs transformers finds from our generation marks, decoded."""
    encoded = tokenizer.apply_chat_template(
        copy.deepcopy(messages), tools=tools, chat_template=resolve_template(name, None).source, return_dict=True, return_assistant_tokens_mask=True, **extra
    )
    ids, mask = list(encoded["input_ids"]), list(encoded["assistant_masks"])
    return [tokenizer.decode(run, skip_special_tokens=False) for run in supervised_runs(ids, [t if on else -100 for t, on in zip(ids, mask)])]


def test_each_template_is_bundled_with_its_header():
    library = bundled()
    heads = {
        "llama4": ("<|begin_of_text|>", "<|eot|>"),
        "phi4": ("<|endoftext|>", "<|im_end|>"),
        "phi4-mini": ("<|endoftext|>", "<|endoftext|>"),
        "granite3.1": (None, "<|end_of_text|>"),
        "granite3.2": (None, "<|end_of_text|>"),
        "granite3.3": (None, "<|end_of_text|>"),
        "granite4": (None, "<|end_of_text|>"),
    }
    for name, tokens in heads.items():
        first = template_path(name).read_text(encoding="utf-8").splitlines()[0]
        assert re.fullmatch(r"\{#- " + re.escape(name) + r": .+ -#\}", first), first
        assert library[name] and not library[name].startswith(name)
        assert family_tokens(first) == tokens


# ---------------------------------------------------------------------------------------------
# 1. The published formats, written out by hand.

H = "<|header_start|>{}<|header_end|>\n\n".format
INSTRUCTION = (
    "Given the following functions, please respond with a JSON for a function call with its proper arguments that best answers the given prompt.\n\n"
    'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.Do not use variables.\n\n'
)
# The two probe tools as Llama 4 lists them: tojson(indent=4) with Python's separators, "\n\n" after each.
WEATHER_JSON = (
    '{\n    "type": "function",\n    "function": {\n        "name": "get_weather",\n        "description": "Current weather in a city.",\n'
    '        "parameters": {\n            "type": "object",\n            "properties": {\n                "city": {\n'
    '                    "type": "string",\n                    "description": "City name"\n                }\n            },\n'
    '            "required": [\n                "city"\n            ]\n        }\n    }\n}'
)
TIME_JSON = (
    '{\n    "type": "function",\n    "function": {\n        "name": "get_time",\n        "description": "Local time in a time zone.",\n'
    '        "parameters": {\n            "type": "object",\n            "properties": {\n                "zone": {\n'
    '                    "type": "string"\n                },\n                "hour24": {\n                    "type": "boolean"\n'
    '                }\n            },\n            "required": [\n                "zone"\n            ]\n        }\n    }\n}'
)
TOOLS_USER = H("user") + INSTRUCTION + WEATHER_JSON + "\n\n" + TIME_JSON + "\n\n"
B = "<|begin_of_text|>"


# --- Granite: "<|start_of_role|>ROLE<|end_of_role|>" … "<|end_of_text|>\n" --------------------------
def R(role: str) -> str:
    return f"<|start_of_role|>{role}<|end_of_role|>"


E = "<|end_of_text|>\n"
# Granite 3.3's default system text; {DATE} is today's date, "%B %d, %Y", filled in at the test.
G33_DEFAULT = "Knowledge Cutoff Date: April 2024. Today's Date: {DATE}. You are Granite, developed by IBM."
G33_TOOLS_SENTENCE = (
    " You are a helpful assistant with access to the following tools. When a tool is required to answer the user's query, respond only with"
    " <|tool_call|> followed by a JSON list of tools used. If a tool does not exist in the provided list of tools, notify the user that you do"
    " not have the ability to fulfill the request."
)
G33_THINKING = (
    " You are a helpful AI assistant.\nRespond to every user query in a comprehensive and detailed way. You can write down your thoughts and"
    " reasoning process before responding. In the thought process, engage in a comprehensive cycle of analysis, summarization, exploration,"
    " reassessment, reflection, backtracing, and iteration to develop well-considered thinking process. In the response section, based on"
    " various attempts, explorations, and reflections from the thoughts section, systematically present the final solution that you deem"
    " correct. The response should summarize the thought process. Write your thoughts between <think></think> and write your response between"
    " <response></response> for each user query."
)
# The tools as one JSON list indented by 4: each tool as Llama 4 lists it, one level deeper.
G33_TOOLS = R("available_tools") + "[\n" + textwrap.indent(WEATHER_JSON, "    ") + ",\n" + textwrap.indent(TIME_JSON, "    ") + "\n]" + E
# Granite 3.x after the system and tools turns: the call is not written, a result is a "tool" turn.
G3_PARIS = R("user") + "Weather in Paris?" + E + R("assistant") + E + R("tool") + '{"temp_c": 18}' + E + R("assistant") + "It is 18 °C in Paris." + E
G3_PARIS_RUNS = ["<|end_of_text|>", "It is 18 °C in Paris.<|end_of_text|>"]
G3_ROME = R("user") + "Weather in Rome?" + E + R("assistant") + "Let me check." + E + R("tool") + '{"temp_c": 21, "sky": "clear"}' + E + R("assistant") + "Clear." + E
G3_ROME_RUNS = ["Let me check.<|end_of_text|>", "Clear.<|end_of_text|>"]
G32_DEFAULT = "Knowledge Cutoff Date: April 2024.\nToday's Date: {DATE}.\nYou are Granite, developed by IBM."
G32_THINKING = G33_THINKING.replace(
    "Write your thoughts between <think></think> and write your response between <response></response>",
    "Write your thoughts after 'Here is my thought process:' and write your response after 'Here is my response:'",
)
G31_TOOLS_SENTENCE = G33_TOOLS_SENTENCE.replace("You are a helpful assistant", "You are a helpful AI assistant").replace("respond only with", "respond with")
G31_TOOLS = G33_TOOLS.replace(R("available_tools"), R("tools"))
G4_DEFAULT = "You are a helpful assistant. Please ensure responses are professional, accurate, and safe."
G4_TOOLS = (
    "You are a helpful assistant with access to the following tools. You may call one or more tools to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
    '{"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city.", "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"}}, "required": ["city"]}}}\n'
    '{"type": "function", "function": {"name": "get_time", "description": "Local time in a time zone.", "parameters": {"type": "object", "properties": {"zone": {"type": "string"}, "hour24": {"type": "boolean"}}, "required": ["zone"]}}}\n'
    "</tools>\n\nFor each tool call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n"
    '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>. If a tool does not exist in the provided list of tools,'
    " notify the user that you do not have the ability to fulfill the request."
)
G4_CALL = '<tool_call>\n{{"name": "{}", "arguments": {}}}\n</tool_call>'.format
G4_RESULTS = lambda *results: R("user") + "".join(f"\n<tool_response>\n{result}\n</tool_response>" for result in results) + E

PHI4_MINI_TOOLS = '[{"name": "get_weather", "description": "Current weather in a city.", "parameters": {"city": {"type": "str"}}}]'
PHI4_MINI_CALL = '<|tool_call|>[{"name": "get_weather", "arguments": {"city": "Paris"}}]<|/tool_call|>'
# Phi-4-mini's function calling as its model card shows it: tools in the system message, the call in the answer's text.
PHI4_MINI_TOOL_USE = [
    {"role": "system", "content": "You are a helpful assistant with some tools.", "tools": PHI4_MINI_TOOLS},
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": PHI4_MINI_CALL},
    {"role": "tool", "content": '{"temp_c": 18}'},
    {"role": "assistant", "content": "It is 18 °C in Paris."},
]

# (template, class, case) -> (the rendering, the supervised runs). Conversations from
# template_conversations.py, except the `own` class (below each family's own).
EXPECTED = {
    # --- llama4 -------------------------------------------------------------------------------
    ("llama4", "plain", "single"): (B + H("user") + "What is 2+2?<|eot|>" + H("assistant") + "4<|eot|>", ["4<|eot|>"]),
    # Content is written untrimmed (only the system text and a message that carries the tools are trimmed).
    ("llama4", "plain", "multi"): (
        B + H("user") + "A<|eot|>" + H("assistant") + "1<|eot|>" + H("user") + " C\n<|eot|>" + H("assistant") + " 2 ways. <|eot|>",
        ["1<|eot|>", " 2 ways. <|eot|>"],
    ),
    ("llama4", "system", "single"): (B + H("system") + "Be brief.<|eot|>" + H("user") + "Hi<|eot|>" + H("assistant") + "Hello!<|eot|>", ["Hello!<|eot|>"]),
    ("llama4", "system", "empty"): (B + H("system") + "<|eot|>" + H("user") + "Hi<|eot|>" + H("assistant") + "Hello.<|eot|>", ["Hello.<|eot|>"]),
    ("llama4", "system", "multi"): (
        B + H("system") + "You are terse.<|eot|>" + H("user") + "Hi<|eot|>" + H("assistant") + "Hello.<|eot|>" + H("user") + "Name a colour.<|eot|>" + H("assistant") + "Blue.<|eot|>",
        ["Hello.<|eot|>", "Blue.<|eot|>"],
    ),
    # Reasoning is not part of the format: the answer alone.
    ("llama4", "reasoning", "final"): (B + H("user") + "What is 2+2?<|eot|>" + H("assistant") + "4<|eot|>", ["4<|eot|>"]),
    ("llama4", "tools", "single"): (
        B + TOOLS_USER + "Weather in Paris?<|eot|>" + H("assistant") + '<|python_start|><|python_end|>{"name": "get_weather", "parameters": {"city": "Paris"}}<|eot|>'
        + H("ipython") + '"{\\"temp_c\\": 18}"<|eot|>' + H("assistant") + "It is 18 °C in Paris.<|eot|>",
        ['<|python_start|><|python_end|>{"name": "get_weather", "parameters": {"city": "Paris"}}<|eot|>', "It is 18 °C in Paris.<|eot|>"],
    ),
    ("llama4", "tools", "call_only"): (
        B + TOOLS_USER + "Time in Lima?<|eot|>" + H("assistant") + '<|python_start|><|python_end|>{"name": "get_time", "parameters": {"zone": "America/Lima"}}<|eot|>',
        ['<|python_start|><|python_end|>{"name": "get_time", "parameters": {"zone": "America/Lima"}}<|eot|>'],
    ),
    # With a system message and tools: "Environment: ipython" opens the system block; the text beside a call is inside the python block.
    ("llama4", "tools", "text_and_call"): (
        B + H("system") + "Environment: ipython\nBe brief.<|eot|>" + TOOLS_USER + "Weather in Rome?<|eot|>"
        + H("assistant") + '<|python_start|>Let me check.<|python_end|>{"name": "get_weather", "parameters": {"city": "Rome"}}<|eot|>'
        + H("ipython") + '"{\\"temp_c\\": 21, \\"sky\\": \\"clear\\"}"<|eot|>' + H("assistant") + "Clear.<|eot|>",
        ['<|python_start|>Let me check.<|python_end|>{"name": "get_weather", "parameters": {"city": "Rome"}}<|eot|>', "Clear.<|eot|>"],
    ),
    # Arguments given as a string go through tojson: a JSON string.
    ("llama4", "tools", "string_arguments"): (
        B + TOOLS_USER + "Weather in Rome?<|eot|>" + H("assistant") + '<|python_start|><|python_end|>{"name": "get_weather", "parameters": "{\\"city\\": \\"Rome\\"}"}<|eot|>'
        + H("ipython") + '"{\\"temp_c\\": 21, \\"sky\\": \\"clear\\"}"<|eot|>' + H("assistant") + "Clear.<|eot|>",
        ['<|python_start|><|python_end|>{"name": "get_weather", "parameters": "{\\"city\\": \\"Rome\\"}"}<|eot|>', "Clear.<|eot|>"],
    ),
    ("llama4", "parallel", "with_text"): (
        B + H("system") + "Environment: ipython\nUse tools when they help.<|eot|>" + TOOLS_USER + "Weather in Oslo and the time in Tokyo?<|eot|>"
        + H("assistant") + '<|python_start|>Checking both.<|python_end|>{"name": "get_weather", "parameters": {"city": "Oslo"}}{"name": "get_time", "parameters": {"zone": "Asia/Tokyo", "hour24": true}}<|eot|>'
        + H("ipython") + '"{\\"temp_c\\": 3}"<|eot|>' + H("ipython") + '"{\\"time\\": \\"09:30\\"}"<|eot|>' + H("assistant") + "Oslo is at 3 °C; it is 09:30 in Tokyo.<|eot|>",
        [
            '<|python_start|>Checking both.<|python_end|>{"name": "get_weather", "parameters": {"city": "Oslo"}}{"name": "get_time", "parameters": {"zone": "Asia/Tokyo", "hour24": true}}<|eot|>',
            "Oslo is at 3 °C; it is 09:30 in Tokyo.<|eot|>",
        ],
    ),
    ("llama4", "parallel", "call_only"): (
        B + TOOLS_USER + "Time in Oslo and Lima?<|eot|>"
        + H("assistant") + '<|python_start|><|python_end|>{"name": "get_time", "parameters": {"zone": "Europe/Oslo"}}{"name": "get_time", "parameters": {"zone": "America/Lima"}}<|eot|>',
        ['<|python_start|><|python_end|>{"name": "get_time", "parameters": {"zone": "Europe/Oslo"}}{"name": "get_time", "parameters": {"zone": "America/Lima"}}<|eot|>'],
    ),
    # --- phi4 ---------------------------------------------------------------------------------
    ("phi4", "plain", "single"): ("<|im_start|>user<|im_sep|>What is 2+2?<|im_end|><|im_start|>assistant<|im_sep|>4<|im_end|>", ["4<|im_end|>"]),
    ("phi4", "plain", "multi"): (
        "<|im_start|>user<|im_sep|>A<|im_end|><|im_start|>assistant<|im_sep|>1<|im_end|><|im_start|>user<|im_sep|> C\n<|im_end|><|im_start|>assistant<|im_sep|> 2 ways. <|im_end|>",
        ["1<|im_end|>", " 2 ways. <|im_end|>"],
    ),
    ("phi4", "system", "single"): (
        "<|im_start|>system<|im_sep|>Be brief.<|im_end|><|im_start|>user<|im_sep|>Hi<|im_end|><|im_start|>assistant<|im_sep|>Hello!<|im_end|>",
        ["Hello!<|im_end|>"],
    ),
    ("phi4", "system", "empty"): (
        "<|im_start|>system<|im_sep|><|im_end|><|im_start|>user<|im_sep|>Hi<|im_end|><|im_start|>assistant<|im_sep|>Hello.<|im_end|>",
        ["Hello.<|im_end|>"],
    ),
    ("phi4", "system", "multi"): (
        "<|im_start|>system<|im_sep|>You are terse.<|im_end|><|im_start|>user<|im_sep|>Hi<|im_end|><|im_start|>assistant<|im_sep|>Hello.<|im_end|>"
        "<|im_start|>user<|im_sep|>Name a colour.<|im_end|><|im_start|>assistant<|im_sep|>Blue.<|im_end|>",
        ["Hello.<|im_end|>", "Blue.<|im_end|>"],
    ),
    # No tool syntax: the call is not written and the result renders as nothing (the pipeline rejects such a record).
    ("phi4", "tools", "single"): (
        "<|im_start|>user<|im_sep|>Weather in Paris?<|im_end|><|im_start|>assistant<|im_sep|><|im_end|><|im_start|>assistant<|im_sep|>It is 18 °C in Paris.<|im_end|>",
        ["<|im_end|>", "It is 18 °C in Paris.<|im_end|>"],
    ),
    # --- phi4-mini ----------------------------------------------------------------------------
    ("phi4-mini", "plain", "single"): ("<|user|>What is 2+2?<|end|><|assistant|>4<|end|><|endoftext|>", ["4<|end|>"]),
    ("phi4-mini", "plain", "multi"): ("<|user|>A<|end|><|assistant|>1<|end|><|user|> C\n<|end|><|assistant|> 2 ways. <|end|><|endoftext|>", ["1<|end|>", " 2 ways. <|end|>"]),
    ("phi4-mini", "system", "single"): ("<|system|>Be brief.<|end|><|user|>Hi<|end|><|assistant|>Hello!<|end|><|endoftext|>", ["Hello!<|end|>"]),
    # Unlike Phi-3.5, an empty system message is written.
    ("phi4-mini", "system", "empty"): ("<|system|><|end|><|user|>Hi<|end|><|assistant|>Hello.<|end|><|endoftext|>", ["Hello.<|end|>"]),
    ("phi4-mini", "system", "multi"): (
        "<|system|>You are terse.<|end|><|user|>Hi<|end|><|assistant|>Hello.<|end|><|user|>Name a colour.<|end|><|assistant|>Blue.<|end|><|endoftext|>",
        ["Hello.<|end|>", "Blue.<|end|>"],
    ),
    # The `tools` argument and OpenAI `tool_calls` are not rendered; the result is a <|tool|> turn.
    ("phi4-mini", "tools", "single"): (
        '<|user|>Weather in Paris?<|end|><|assistant|><|end|><|tool|>{"temp_c": 18}<|end|><|assistant|>It is 18 °C in Paris.<|end|><|endoftext|>',
        ["<|end|>", "It is 18 °C in Paris.<|end|>"],
    ),
    ("phi4-mini", "own", "tool_use"): (
        "<|system|>You are a helpful assistant with some tools.<|tool|>" + PHI4_MINI_TOOLS + "<|/tool|><|end|><|user|>Weather in Paris?<|end|>"
        "<|assistant|>" + PHI4_MINI_CALL + '<|end|><|tool|>{"temp_c": 18}<|end|><|assistant|>It is 18 °C in Paris.<|end|><|endoftext|>',
        [PHI4_MINI_CALL + "<|end|>", "It is 18 °C in Paris.<|end|>"],
    ),
    # --- granite3.3 -------------------------------------------------------------------------
    ("granite3.3", "plain", "single"): (
        R("system") + G33_DEFAULT + " You are a helpful AI assistant." + E + R("user") + "What is 2+2?" + E + R("assistant") + "4" + E,
        ["4<|end_of_text|>"],
    ),
    ("granite3.3", "plain", "multi"): (
        R("system") + G33_DEFAULT + " You are a helpful AI assistant." + E + R("user") + "A" + E + R("assistant") + "1" + E + R("user") + " C\n" + E + R("assistant") + " 2 ways. " + E,
        ["1<|end_of_text|>", " 2 ways. <|end_of_text|>"],
    ),
    ("granite3.3", "system", "single"): (R("system") + "Be brief." + E + R("user") + "Hi" + E + R("assistant") + "Hello!" + E, ["Hello!<|end_of_text|>"]),
    # A given system message is used as it is, even empty.
    ("granite3.3", "system", "empty"): (R("system") + E + R("user") + "Hi" + E + R("assistant") + "Hello." + E, ["Hello.<|end_of_text|>"]),
    ("granite3.3", "system", "multi"): (
        R("system") + "You are terse." + E + R("user") + "Hi" + E + R("assistant") + "Hello." + E + R("user") + "Name a colour." + E + R("assistant") + "Blue." + E,
        ["Hello.<|end_of_text|>", "Blue.<|end_of_text|>"],
    ),
    ("granite3.3", "reasoning", "final"): (
        R("system") + G33_DEFAULT + " You are a helpful AI assistant." + E + R("user") + "What is 2+2?" + E + R("assistant") + "4" + E,
        ["4<|end_of_text|>"],
    ),
    # Tools: the default text names them, the list follows; the OpenAI call is not written; a result is a "tool" turn.
    ("granite3.3", "tools", "single"): (R("system") + G33_DEFAULT + G33_TOOLS_SENTENCE + E + G33_TOOLS + G3_PARIS, G3_PARIS_RUNS),
    ("granite3.3", "tools", "text_and_call"): (R("system") + "Be brief." + E + G33_TOOLS + G3_ROME, G3_ROME_RUNS),
    # With thinking=true and no system message: the thinking instructions; the model writes its thoughts in its text.
    ("granite3.3", "own", "thinking"): (
        R("system") + G33_DEFAULT + G33_THINKING + E + R("user") + "What is 2+2?" + E + R("assistant") + "<think>Add them.</think><response>4</response>" + E,
        ["<think>Add them.</think><response>4</response><|end_of_text|>"],
    ),
    # --- granite3.2: the three-line default text, its own thinking instructions -----------------
    ("granite3.2", "plain", "single"): (
        R("system") + G32_DEFAULT + " You are a helpful AI assistant." + E + R("user") + "What is 2+2?" + E + R("assistant") + "4" + E,
        ["4<|end_of_text|>"],
    ),
    ("granite3.2", "system", "single"): (R("system") + "Be brief." + E + R("user") + "Hi" + E + R("assistant") + "Hello!" + E, ["Hello!<|end_of_text|>"]),
    ("granite3.2", "system", "empty"): (R("system") + E + R("user") + "Hi" + E + R("assistant") + "Hello." + E, ["Hello.<|end_of_text|>"]),
    ("granite3.2", "tools", "single"): (R("system") + G32_DEFAULT + G33_TOOLS_SENTENCE + E + G33_TOOLS + G3_PARIS, G3_PARIS_RUNS),
    ("granite3.2", "tools", "text_and_call"): (R("system") + "Be brief." + E + G33_TOOLS + G3_ROME, G3_ROME_RUNS),
    ("granite3.2", "own", "thinking_3_2"): (
        R("system") + G32_DEFAULT + G32_THINKING + E + R("user") + "What is 2+2?" + E + R("assistant") + "Here is my thought process: add.\nHere is my response: 4" + E,
        ["Here is my thought process: add.\nHere is my response: 4<|end_of_text|>"],
    ),
    # --- granite3.1: the three-line default text, "tools" turn ------------------------------------
    ("granite3.1", "plain", "single"): (
        R("system") + G32_DEFAULT + " You are a helpful AI assistant." + E + R("user") + "What is 2+2?" + E + R("assistant") + "4" + E,
        ["4<|end_of_text|>"],
    ),
    ("granite3.1", "plain", "multi"): (
        R("system") + G32_DEFAULT + " You are a helpful AI assistant." + E + R("user") + "A" + E + R("assistant") + "1" + E + R("user") + " C\n" + E + R("assistant") + " 2 ways. " + E,
        ["1<|end_of_text|>", " 2 ways. <|end_of_text|>"],
    ),
    ("granite3.1", "system", "single"): (R("system") + "Be brief." + E + R("user") + "Hi" + E + R("assistant") + "Hello!" + E, ["Hello!<|end_of_text|>"]),
    ("granite3.1", "system", "multi"): (
        R("system") + "You are terse." + E + R("user") + "Hi" + E + R("assistant") + "Hello." + E + R("user") + "Name a colour." + E + R("assistant") + "Blue." + E,
        ["Hello.<|end_of_text|>", "Blue.<|end_of_text|>"],
    ),
    ("granite3.1", "tools", "single"): (R("system") + G32_DEFAULT + G31_TOOLS_SENTENCE + E + G31_TOOLS + G3_PARIS, G3_PARIS_RUNS),
    ("granite3.1", "tools", "text_and_call"): (R("system") + "Be brief." + E + G31_TOOLS + G3_ROME, G3_ROME_RUNS),
    # --- granite4 -----------------------------------------------------------------------------
    ("granite4", "plain", "single"): (R("system") + G4_DEFAULT + E + R("user") + "What is 2+2?" + E + R("assistant") + "4" + E, ["4<|end_of_text|>"]),
    ("granite4", "plain", "multi"): (
        R("system") + G4_DEFAULT + E + R("user") + "A" + E + R("assistant") + "1" + E + R("user") + " C\n" + E + R("assistant") + " 2 ways. " + E,
        ["1<|end_of_text|>", " 2 ways. <|end_of_text|>"],
    ),
    ("granite4", "system", "single"): (R("system") + "Be brief." + E + R("user") + "Hi" + E + R("assistant") + "Hello!" + E, ["Hello!<|end_of_text|>"]),
    # An empty system text (and no tools) gets the default one.
    ("granite4", "system", "empty"): (R("system") + G4_DEFAULT + E + R("user") + "Hi" + E + R("assistant") + "Hello." + E, ["Hello.<|end_of_text|>"]),
    ("granite4", "system", "multi"): (
        R("system") + "You are terse." + E + R("user") + "Hi" + E + R("assistant") + "Hello." + E + R("user") + "Name a colour." + E + R("assistant") + "Blue." + E,
        ["Hello.<|end_of_text|>", "Blue.<|end_of_text|>"],
    ),
    ("granite4", "reasoning", "final"): (R("system") + G4_DEFAULT + E + R("user") + "What is 2+2?" + E + R("assistant") + "4" + E, ["4<|end_of_text|>"]),
    ("granite4", "tools", "single"): (
        R("system") + G4_TOOLS + E + R("user") + "Weather in Paris?" + E + R("assistant") + G4_CALL("get_weather", '{"city": "Paris"}') + E
        + G4_RESULTS('{"temp_c": 18}') + R("assistant") + "It is 18 °C in Paris." + E,
        [G4_CALL("get_weather", '{"city": "Paris"}') + "<|end_of_text|>", "It is 18 °C in Paris.<|end_of_text|>"],
    ),
    ("granite4", "tools", "call_only"): (
        R("system") + G4_TOOLS + E + R("user") + "Time in Lima?" + E + R("assistant") + G4_CALL("get_time", '{"zone": "America/Lima"}') + E,
        [G4_CALL("get_time", '{"zone": "America/Lima"}') + "<|end_of_text|>"],
    ),
    # Text, "\n", the call; the system text, "\n\n", the tools.
    ("granite4", "tools", "text_and_call"): (
        R("system") + "Be brief.\n\n" + G4_TOOLS + E + R("user") + "Weather in Rome?" + E + R("assistant") + "Let me check.\n" + G4_CALL("get_weather", '{"city": "Rome"}') + E
        + G4_RESULTS('{"temp_c": 21, "sky": "clear"}') + R("assistant") + "Clear." + E,
        ["Let me check.\n" + G4_CALL("get_weather", '{"city": "Rome"}') + "<|end_of_text|>", "Clear.<|end_of_text|>"],
    ),
    # A string of arguments is written as it is (here the same text as the object's JSON); content None is no text.
    ("granite4", "tools", "string_arguments_null_content"): (
        R("system") + G4_TOOLS + E + R("user") + "Weather in Rome?" + E + R("assistant") + G4_CALL("get_weather", '{"city": "Rome"}') + E
        + G4_RESULTS('{"temp_c": 21, "sky": "clear"}') + R("assistant") + "Clear." + E,
        [G4_CALL("get_weather", '{"city": "Rome"}') + "<|end_of_text|>", "Clear.<|end_of_text|>"],
    ),
    ("granite4", "parallel", "with_text"): (
        R("system") + "Use tools when they help.\n\n" + G4_TOOLS + E + R("user") + "Weather in Oslo and the time in Tokyo?" + E
        + R("assistant") + "Checking both.\n" + G4_CALL("get_weather", '{"city": "Oslo"}') + "\n" + G4_CALL("get_time", '{"zone": "Asia/Tokyo", "hour24": true}') + E
        + G4_RESULTS('{"temp_c": 3}', '{"time": "09:30"}') + R("assistant") + "Oslo is at 3 °C; it is 09:30 in Tokyo." + E,
        [
            "Checking both.\n" + G4_CALL("get_weather", '{"city": "Oslo"}') + "\n" + G4_CALL("get_time", '{"zone": "Asia/Tokyo", "hour24": true}') + "<|end_of_text|>",
            "Oslo is at 3 °C; it is 09:30 in Tokyo.<|end_of_text|>",
        ],
    ),
    # No text: the first call opens the turn, the next one follows a "\n".
    ("granite4", "parallel", "no_text"): (
        R("system") + G4_TOOLS + E + R("user") + "Weather in Oslo and Rome?" + E
        + R("assistant") + G4_CALL("get_weather", '{"city": "Oslo"}') + "\n" + G4_CALL("get_weather", '{"city": "Rome"}') + E
        + G4_RESULTS('{"temp_c": 3}', '{"temp_c": 21}') + R("assistant") + "Oslo 3 °C, Rome 21 °C." + E,
        [G4_CALL("get_weather", '{"city": "Oslo"}') + "\n" + G4_CALL("get_weather", '{"city": "Rome"}') + "<|end_of_text|>", "Oslo 3 °C, Rome 21 °C.<|end_of_text|>"],
    ),
    ("granite4", "parallel", "call_only"): (
        R("system") + G4_TOOLS + E + R("user") + "Time in Oslo and Lima?" + E
        + R("assistant") + G4_CALL("get_time", '{"zone": "Europe/Oslo"}') + "\n" + G4_CALL("get_time", '{"zone": "America/Lima"}') + E,
        [G4_CALL("get_time", '{"zone": "Europe/Oslo"}') + "\n" + G4_CALL("get_time", '{"zone": "America/Lima"}') + "<|end_of_text|>"],
    ),
}
OWN = {
    "tool_use": (PHI4_MINI_TOOL_USE, None),
    "thinking": ([{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "<think>Add them.</think><response>4</response>"}], None),
    "thinking_3_2": ([{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "Here is my thought process: add.\nHere is my response: 4"}], None),
}
OWN_EXTRA = {"thinking": {"thinking": True}, "thinking_3_2": {"thinking": True}}


def _conversation(cls: str, case: str):
    return OWN[case] if cls == "own" else CLASSES[cls][case]


def _today() -> str:
    return datetime.now().strftime("%B %d, %Y")


def _dated(render, expected: str | list[str]):
    """Renders and returns (rendering, expected with {DATE} filled in): today's date as read just
    before or just after rendering, so a rendering across midnight still compares exactly."""
    before = _today()
    rendered = render()
    fill = lambda date: [e.replace("{DATE}", date) for e in expected] if isinstance(expected, list) else expected.replace("{DATE}", date)
    return rendered, fill(before) if rendered == fill(before) else fill(_today())


@pytest.mark.parametrize("name,cls,case", sorted(EXPECTED))
def test_renders_the_published_format(tokenizers, name, cls, case):
    messages, tools = _conversation(cls, case)
    extra = OWN_EXTRA.get(case, {}) if cls == "own" else {}
    text, runs = EXPECTED[(name, cls, case)]
    assert "{DATE}" not in "".join(runs)
    rendered, expected = _dated(lambda: _render(tokenizers[name], name, messages, tools, **extra), text)
    assert rendered == expected
    assert _runs(tokenizers[name], name, messages, tools, **extra) == runs


def test_llama4_tools_in_the_system_block(tokenizers):
    """tools_in_user_message=false moves the instruction and the tools into the system block."""
    messages, tools = CLASSES["tools"]["text_and_call"]
    expected = (
        B + H("system") + "Environment: ipython\nYou have access to the following functions. To call a function, please respond with JSON for a function call."
        'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.Do not use variables.\n\n'
        + WEATHER_JSON + "\n\n" + TIME_JSON + "\n\nBe brief.<|eot|>" + H("user") + "Weather in Rome?<|eot|>"
        + H("assistant") + '<|python_start|>Let me check.<|python_end|>{"name": "get_weather", "parameters": {"city": "Rome"}}<|eot|>'
        + H("ipython") + '"{\\"temp_c\\": 21, \\"sky\\": \\"clear\\"}"<|eot|>' + H("assistant") + "Clear.<|eot|>"
    )
    assert _render(tokenizers["llama4"], "llama4", messages, tools, tools_in_user_message=False) == expected


PROMPTS = {
    "llama4": B + H("user") + "Hi<|eot|>" + H("assistant"),
    "phi4": "<|im_start|>user<|im_sep|>Hi<|im_end|><|im_start|>assistant<|im_sep|>",
    "phi4-mini": "<|user|>Hi<|end|><|assistant|>",  # and no eos_token
    "granite3.1": R("system") + G32_DEFAULT + " You are a helpful AI assistant." + E + R("user") + "Hi" + E + R("assistant"),
    "granite3.2": R("system") + G32_DEFAULT + " You are a helpful AI assistant." + E + R("user") + "Hi" + E + R("assistant"),
    "granite3.3": R("system") + G33_DEFAULT + " You are a helpful AI assistant." + E + R("user") + "Hi" + E + R("assistant"),
    "granite4": R("system") + G4_DEFAULT + E + R("user") + "Hi" + E + R("assistant"),
}


@pytest.mark.parametrize("name", NAMES)
def test_generation_prompt_is_the_published_one(tokenizers, name):
    rendered, expected = _dated(lambda: _render(tokenizers[name], name, [{"role": "user", "content": "Hi"}], add_generation_prompt=True), PROMPTS[name])
    assert rendered == expected


def test_granite33_generation_prompt_carries_the_controls(tokenizers):
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}]
    text = _render(tokenizers["granite3.3"], "granite3.3", messages, add_generation_prompt=True, controls={"length": "short"})
    assert text == R("system") + "S" + E + R("user") + "Hi" + E + '<|start_of_role|>assistant {"length": "short"}<|end_of_role|>'


# Gemma 3n's text format, by hand: as Gemma 3 (system text + "\n\n" opens the first user turn, content trimmed).
GEMMA3N = {
    "single": ([{"role": "user", "content": " What is 2+2? "}, {"role": "assistant", "content": "4\n"}], "<bos><start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n4<end_of_turn>\n"),
    "system": (
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Bye."}],
        "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\nBye.<end_of_turn>\n",
    ),
}


@pytest.mark.parametrize("case", GEMMA3N)
def test_gemma3_renders_gemma_3n_text_conversations(qwen2_tokenizer, case):
    tokenizer = _family(qwen2_tokenizer, ["<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"], bos="<bos>", eos="<eos>")
    messages, expected = GEMMA3N[case]
    assert tokenizer.apply_chat_template(messages, chat_template=resolve_template("gemma3", None).source, tokenize=False) == expected


# ---------------------------------------------------------------------------------------------
# 2. Llama 4 against the original transformers ships, on every conversation class.

CASES = [(cls, case) for cls, cases in CLASSES.items() for case in cases]


@pytest.mark.parametrize("cls,case", CASES)
@pytest.mark.parametrize("extra", [{}, {"tools_in_user_message": False}, {"add_generation_prompt": True}], ids=["default", "tools_in_system", "prompt"])
def test_llama4_renders_byte_identical_to_transformers_original(tokenizers, cls, case, extra):
    messages, tools = CLASSES[cls][case]
    render = lambda source: tokenizers["llama4"].apply_chat_template(copy.deepcopy(messages), tools=tools, chat_template=source, tokenize=False, **extra)
    try:
        expected = render(processing_llama4.chat_template)
    except Exception:  # the original refuses it (content None beside a call): so must ours
        with pytest.raises(Exception):
            render(resolve_template("llama4", None).source)
        return
    assert render(resolve_template("llama4", None).source) == expected


# ---------------------------------------------------------------------------------------------
# 3. Rows agree with Hugging Face: same ids, and our labels are transformers' assistant mask.


def _example(messages: list[dict], tools) -> Example:
    record = {"messages": copy.deepcopy(messages), **({"tools": tools} if tools else {})}
    example = to_example(RawRecord("t.jsonl", 0, record, "t.jsonl"))
    assert isinstance(example, Example), example
    return example


# Rows of every hand-written case but those the pipeline rejects (tested below: tool calls the format
# does not write, reasoning, Phi-4-mini's calls as special tokens in the text) and those with today's
# date (rendered twice, by the pipeline and by transformers, they could straddle midnight).
WRITES_CALLS = {"llama4", "granite4"}
AGREEMENT = sorted(
    key for key in EXPECTED if not (key[0] not in WRITES_CALLS and key[1] == "tools") and key[1] not in ("reasoning", "own") and "{DATE}" not in EXPECTED[key][0]
)


@pytest.mark.parametrize("name,cls,case", AGREEMENT)
def test_rows_agree_with_hugging_face(tokenizers, builders, name, cls, case):
    messages, tools = _conversation(cls, case)
    tokenizer = tokenizers[name]
    hf = tokenizer.apply_chat_template(
        copy.deepcopy(messages), tools=tools, chat_template=resolve_template(name, None).source, return_dict=True, return_assistant_tokens_mask=True
    )
    row = build_one(builders[name], _example(messages, tools))
    assert isinstance(row, Row), row
    if case == "string_arguments":  # the pipeline decodes string arguments to an object first (issue 15), as peers do
        assert '"parameters": {"city": "Rome"}' in tokenizer.decode(row.input_ids)
        return
    assert row.input_ids == list(hf["input_ids"])
    assert [int(label != -100) for label in row.labels] == list(hf["assistant_masks"])


@pytest.mark.parametrize("name", ["phi4", "phi4-mini", "granite3.1", "granite3.2", "granite3.3"])
def test_tool_calls_the_format_does_not_write_reject_the_record(builders, name):
    messages, tools = CLASSES["tools"]["single"]
    result = build_one(builders[name], _example(messages, tools))
    assert isinstance(result, Rejected) and result.reason == "template_dropped_tool_calls", result


def test_phi4_mini_calls_in_the_text_are_special_text(tokenizers):
    """Phi-4-mini's calls are <|tool_call|> special tokens inside the answer's text: by default such
    text rejects the record (the model must emit the tokens, and text never becomes a special
    token); with --special-text plain it would be trained as ordinary characters."""
    builder = RowBuilder(PipelineConfig(template="phi4-mini", max_length=100_000), tokenizers["phi4-mini"], resolve_template("phi4-mini", None))
    result = build_one(builder, _example(*OWN["tool_use"]))
    assert isinstance(result, Rejected) and result.reason == "special_token_in_text", result


@pytest.mark.parametrize("name", NAMES)
def test_reasoning_the_format_does_not_write_rejects_the_record(builders, name):
    messages, tools = CLASSES["reasoning"]["final"]
    result = build_one(builders[name], _example(messages, tools))
    assert isinstance(result, Rejected) and result.reason == "template_dropped_reasoning", result


# ---------------------------------------------------------------------------------------------
# 4. Property: supervised tokens decode exactly to what the assistant generates.


@st.composite
def chats(draw) -> dict:
    """An optional system message (maybe empty), then user/assistant pairs."""
    messages = [{"role": "system", "content": draw(st.just("") | text)}] if draw(st.booleans()) else []
    for _ in range(draw(st.integers(1, 3))):
        messages += [{"role": "user", "content": draw(text)}, {"role": "assistant", "content": draw(text.filter(lambda s: s.strip()))}]
    return {"messages": messages}


def _llama4_generated(turn) -> str:
    """Llama 4: the untrimmed text, or the python block with the text and the calls; then <|eot|>."""
    if not turn.tool_calls:
        return turn.content + "<|eot|>"
    calls = "".join('{"name": "' + call["function"]["name"] + '", "parameters": ' + json.dumps(call["function"]["arguments"], ensure_ascii=False) + "}" for call in turn.tool_calls)
    return "<|python_start|>" + turn.content + "<|python_end|>" + calls + "<|eot|>"


def _granite4_generated(turn) -> str:
    """Granite 4: the text, each call on its own line (the first right after the header when there
    is no text), then <|end_of_text|>."""
    calls = "".join(
        ("\n" if n or turn.content else "") + '<tool_call>\n{"name": "' + call["function"]["name"] + '", "arguments": ' + json.dumps(call["function"]["arguments"], ensure_ascii=False) + "}\n</tool_call>"
        for n, call in enumerate(turn.tool_calls)
    )
    return turn.content + calls + "<|end_of_text|>"


def _every_stop_token_trained(row: Row) -> None:
    """The report's view of the same row: each answer and each call turn ends in a trained stop token."""
    roles = [TURN_ROLES[r] for r in row.turn_roles]
    assert all(eot == 2 for role, eot in zip(roles, row.turn_eot) if role in ("assistant", TOOL_CALL)), (roles, row.turn_eot)


GENERATED = {
    "llama4": (_llama4_generated, tool_conversations(reasoning=False) | chats()),
    "phi4": (lambda turn: turn.content + "<|im_end|>", chats()),
    "phi4-mini": (lambda turn: turn.content + "<|end|>", chats()),
    **{name: (lambda turn: turn.content + "<|end_of_text|>", chats()) for name in ("granite3.1", "granite3.2", "granite3.3")},
    "granite4": (_granite4_generated, tool_conversations(reasoning=False) | chats()),
}


@pytest.mark.parametrize("name", NAMES)
def test_supervised_tokens_are_what_the_assistant_generates(tokenizers, builders, name):
    tokenizer, (generated, records) = tokenizers[name], GENERATED[name]

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(records)
    def check(record: dict) -> None:
        example = to_example(RawRecord("generated", 0, record, "generated"))
        assert isinstance(example, Example), example
        row = build_one(builders[name], example)
        assert isinstance(row, Row), row
        runs = supervised_runs(row.input_ids, row.labels)
        decoded = [tokenizer.decode(run, skip_special_tokens=False, clean_up_tokenization_spaces=False) for run in runs]
        assert decoded == [normalized(tokenizer, generated(t)) for t in example.turns if t.role == "assistant"]
        _every_stop_token_trained(row)

    check()


# ---------------------------------------------------------------------------------------------
# 5. Start-up check and --template auto.


@pytest.mark.parametrize("name", NAMES)
def test_check_template_passes_with_the_family_tokenizer(tokenizers, name):
    check_template_passes(tokenizers, name)


@pytest.mark.parametrize("name", NAMES)
def test_auto_picks_each_template_from_its_published_text(tokenizers, name):
    """As in library E: our template without its generation marks is the published text, all auto
    can be checked against for families whose original no installed package ships."""
    auto_picks_the_family(tokenizers, name)


def test_auto_picks_llama4_from_transformers_original(tokenizers):
    tokenizer = tokenizers["llama4"]
    assert resolve_template("auto", processing_llama4.chat_template, tokenizer.bos_token, tokenizer.eos_token).name == "llama4"


# ---------------------------------------------------------------------------------------------
# 6. LFM2, LFM2.5 and Nemotron 3, against the originals the `trl` wheel ships (read from the
#    installed package, never copied here).

ORIGINALS = Path(trl.__file__).parent / "chat_templates"
LFM = ["<|startoftext|>", "<|tool_list_start|>", "<|tool_list_end|>", "<|tool_call_start|>", "<|tool_call_end|>", "<|tool_response_start|>", "<|tool_response_end|>"]
# bundled name -> the originals it reproduces (the later revision first; LFM2.5's first revision reads
# reasoning from `thinking` only, which transformers fills from `reasoning_content`; Nemotron 3 Super's
# differs from Nano's only by `low_effort`, which ours takes; 3.5 Lightning's from Ultra's by lacking
# `medium_effort`)
LFM_FAMILIES = {
    "lfm2": ("lfm2_v2.jinja",),
    "lfm2.5": ("lfm2_2_5_v2.jinja", "lfm2_2_5.jinja"),
    "nemotron3": ("nemotron_3_nano.jinja", "nemotron_3_super.jinja"),
    "nemotron3-ultra": ("nemotron_3_ultra.jinja", "nemotron_3_5_lightning.jinja"),
}
LFM_PAIRS = [(name, original) for name, originals in LFM_FAMILIES.items() for original in originals]
NEMOTRON_PLAIN = ("<think>", "</think>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>")


@pytest.fixture(scope="module")
def trl_tokenizers(qwen2_tokenizer):
    """LiquidAI's tokens for LFM2 and LFM2.5; Nemotron 3's ChatML tokens are Qwen2's own."""
    lfm = _family(qwen2_tokenizer, LFM, bos="<|startoftext|>", eos="<|im_end|>", plain=("<think>", "</think>"))
    nemotron = _family(qwen2_tokenizer, [], bos=None, eos="<|im_end|>", plain=NEMOTRON_PLAIN)
    return {"lfm2": lfm, "lfm2.5": lfm, "nemotron3": nemotron, "nemotron3-ultra": nemotron}


@pytest.mark.parametrize("name,original", LFM_PAIRS)
@pytest.mark.parametrize("cls,case", CASES)
@pytest.mark.parametrize(
    "extra",
    [{}, {"add_generation_prompt": True}, {"preserve_thinking": True}, {"add_generation_prompt": True, "enable_thinking": False}, {"truncate_history_thinking": False}],
    ids=["default", "prompt", "preserve", "prompt_no_thinking", "history_thinking"],
)
def test_lfm_renders_byte_identical_to_the_original(trl_tokenizers, name, original, cls, case, extra):
    messages, tools = CLASSES[cls][case]
    render = lambda source: trl_tokenizers[name].apply_chat_template(copy.deepcopy(messages), tools=tools, chat_template=source, tokenize=False, **extra)
    try:
        expected = render((ORIGINALS / original).read_text(encoding="utf-8"))
    except Exception:  # the original refuses it (arguments as a JSON string): so must ours
        with pytest.raises(Exception):
            render(resolve_template(name, None).source)
        return
    assert render(resolve_template(name, None).source) == expected


# Written from the formats: each assistant turn's supervised run, after "<|im_start|>assistant\n".
LFM_SUPERVISED = {
    ("lfm2", "plain", "multi"): ["1<|im_end|>", " 2 ways. <|im_end|>"],
    ("lfm2", "tools", "single"): ['<|tool_call_start|>[get_weather(city=\'Paris\')]<|tool_call_end|><|im_end|>', "It is 18 °C in Paris.<|im_end|>"],
    ("lfm2", "parallel", "with_text"): [
        "Checking both.<|tool_call_start|>[get_weather(city='Oslo'), get_time(zone='Asia/Tokyo', hour24=True)]<|tool_call_end|><|im_end|>",
        "Oslo is at 3 °C; it is 09:30 in Tokyo.<|im_end|>",
    ],
    ("lfm2", "tools", "rich_schema"): ['<|tool_call_start|>[search_flights(origin=\'OSL\', airlines=["SK"], flexible=True)]<|tool_call_end|><|im_end|>', "One at 120.<|im_end|>"],
    # LFM2.5: lists as Python writes them; the think block only after the last user message.
    ("lfm2.5", "tools", "rich_schema"): ["<|tool_call_start|>[search_flights(origin='OSL', airlines=['SK'], flexible=True)]<|tool_call_end|><|im_end|>", "One at 120.<|im_end|>"],
    ("lfm2.5", "reasoning", "history"): ["4<|im_end|>", "<think>3 plus 3 makes 6.</think>6<|im_end|>"],
    ("lfm2.5", "reasoning", "with_call"): [
        "<think>I should look it up.</think><|tool_call_start|>[get_weather(city='Rome')]<|tool_call_end|><|im_end|>",
        "<think>The tool says clear.</think>Clear, 21 °C.<|im_end|>",
    ],
    ("lfm2.5", "parallel", "call_only"): ["<|tool_call_start|>[get_time(zone='Europe/Oslo'), get_time(zone='America/Lima')]<|tool_call_end|><|im_end|>"],
    # Nemotron 3: after the prompt's "<think>\n" the reasoning and "\n</think>\n"; after "<think></think>" (no reasoning, or a turn
    # before the last user message) the rest; calls each "<tool_call>\n<function=…>\n<parameter=…>\n…\n</parameter>\n</function>\n</tool_call>\n".
    ("nemotron3", "plain", "multi"): ["1<|im_end|>", " 2 ways.<|im_end|>"],
    ("nemotron3", "reasoning", "history"): ["\n4<|im_end|>", "3 plus 3 makes 6.\n</think>\n6<|im_end|>"],
    ("nemotron3", "reasoning", "with_call"): [
        "I should look it up.\n</think>\n<tool_call>\n<function=get_weather>\n<parameter=city>\nRome\n</parameter>\n</function>\n</tool_call>\n<|im_end|>",
        "The tool says clear.\n</think>\nClear, 21 °C.<|im_end|>",
    ],
    ("nemotron3", "tools", "text_and_call"): ["Let me check.\n<tool_call>\n<function=get_weather>\n<parameter=city>\nRome\n</parameter>\n</function>\n</tool_call>\n<|im_end|>", "Clear.<|im_end|>"],
    # Nemotron 3 Ultra: "</think>" right after the reasoning, the text right after it.
    ("nemotron3-ultra", "reasoning", "history"): ["4<|im_end|>", "3 plus 3 makes 6.</think>6<|im_end|>"],
    ("nemotron3-ultra", "reasoning", "with_call"): [
        "I should look it up.</think>\n<tool_call>\n<function=get_weather>\n<parameter=city>\nRome\n</parameter>\n</function>\n</tool_call>\n<|im_end|>",
        "The tool says clear.</think>Clear, 21 °C.<|im_end|>",
    ],
    ("nemotron3", "parallel", "call_only"): [
        "\n<tool_call>\n<function=get_time>\n<parameter=zone>\nEurope/Oslo\n</parameter>\n</function>\n</tool_call>"
        "\n<tool_call>\n<function=get_time>\n<parameter=zone>\nAmerica/Lima\n</parameter>\n</function>\n</tool_call>\n<|im_end|>"
    ],
}


@pytest.mark.parametrize("name,cls,case", sorted(LFM_SUPERVISED))
def test_lfm_supervised_tokens_are_what_the_model_generates(trl_tokenizers, name, cls, case):
    messages, tools = CLASSES[cls][case]
    assert _runs(trl_tokenizers[name], name, messages, tools) == LFM_SUPERVISED[(name, cls, case)]


def _python_call(call: dict, value) -> str:
    return call["function"]["name"] + "(" + ", ".join(f"{key}={value(v)}" for key, v in call["function"]["arguments"].items()) + ")"


def _lfm2_generated(turn) -> str:
    """LFM2: the text, then all calls in one block, strings quoted and escaped, lists and objects as JSON."""
    quote = lambda s: "'" + s.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n").replace("\r", "\\r") + "'"
    value = lambda v: quote(v) if isinstance(v, str) else json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else str(v)
    calls = "<|tool_call_start|>[" + ", ".join(_python_call(c, value) for c in turn.tool_calls) + "]<|tool_call_end|>" if turn.tool_calls else ""
    return turn.content + calls + "<|im_end|>"


def _lfm25_generated(turn, shown: bool) -> str:
    """LFM2.5: the think block when shown and non-empty, the text, the calls (strings quoted as they are,
    objects as JSON, other values as Python writes them)."""
    value = lambda v: "'" + v + "'" if isinstance(v, str) else json.dumps(v, ensure_ascii=False) if isinstance(v, dict) else str(v)
    think = f"<think>{turn.reasoning}</think>" if shown and turn.reasoning else ""
    calls = "<|tool_call_start|>[" + ", ".join(_python_call(c, value) for c in turn.tool_calls) + "]<|tool_call_end|>" if turn.tool_calls else ""
    return think + turn.content + calls + "<|im_end|>"


def _nemotron_generated(turn, history: bool, ultra: bool = False) -> str:
    """Nemotron 3: "<think>\\n" reasoning "\\n</think>\\n" + text when the turn has reasoning, else
    "<think></think>" + text; trimmed (with calls: "\\n" and the calls after it); a turn before the last
    user message keeps "<think></think>" + its text; the model writes what follows the prompt's
    "<think>\\n" or "<think></think>". Ultra: "</think>" right after the reasoning, no newline after it,
    and a past call turn's text untrimmed."""
    closing = "</think>" if ultra else "\n</think>\n"
    full = ("<think>\n" + turn.reasoning + closing if turn.reasoning and turn.reasoning.strip() else "<think></think>") + turn.content
    if history:
        full = "<think></think>" + full.split("</think>")[-1]
    if turn.tool_calls:
        value = lambda v: json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else str(v)
        calls = "".join(
            f"<tool_call>\n<function={c['function']['name']}>\n" + "".join(f"<parameter={k}>\n{value(v)}\n</parameter>\n" for k, v in c["function"]["arguments"].items()) + "</function>\n</tool_call>\n"
            for c in turn.tool_calls
        )
        past = full.split("</think>")[-1]
        text = ("<think></think>" + (past if ultra else past.strip()) if history else full.strip()) + "\n" + calls
    else:
        text = full.strip()
    opened = next((p for p in ("<think>\n", "<think></think>") if text.startswith(p)), "")
    return text[len(opened) :] + "<|im_end|>"


@pytest.mark.parametrize("name", LFM_FAMILIES)
def test_lfm_supervised_runs_on_generated_conversations(trl_tokenizers, name):
    tokenizer = trl_tokenizers[name]
    builder = RowBuilder(PipelineConfig(template=name, max_length=100_000, special_text="plain"), tokenizer, resolve_template(name, None))

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(tool_conversations(reasoning=name != "lfm2") | chats())
    def check(record: dict) -> None:
        example = to_example(RawRecord("generated", 0, record, "generated"))
        assert isinstance(example, Example), example
        row = build_one(builder, example)
        assert isinstance(row, Row), row
        last_user = max(n for n, t in enumerate(example.turns) if t.role == "user")
        generated = {
            "lfm2": lambda t, n: _lfm2_generated(t),
            "lfm2.5": lambda t, n: _lfm25_generated(t, shown=n > last_user),
            "nemotron3": lambda t, n: _nemotron_generated(t, history=n < last_user),
            "nemotron3-ultra": lambda t, n: _nemotron_generated(t, history=n < last_user, ultra=True),
        }[name]
        expected = [generated(t, n) for n, t in enumerate(example.turns) if t.role == "assistant"]
        decoded = [tokenizer.decode(run, skip_special_tokens=False, clean_up_tokenization_spaces=False) for run in supervised_runs(row.input_ids, row.labels)]
        assert decoded == [normalized(tokenizer, e) for e in expected]
        _every_stop_token_trained(row)

    check()


@pytest.mark.parametrize("name,original", [pair for pair in LFM_PAIRS if pair[1] != "lfm2_2_5.jinja"])
def test_auto_picks_lfm_from_its_original(trl_tokenizers, name, original):
    tokenizer = trl_tokenizers[name]
    source = (ORIGINALS / original).read_text(encoding="utf-8")
    assert resolve_template("auto", source, tokenizer.bos_token, tokenizer.eos_token).name == name


def test_auto_falls_back_for_lfm25_first_revision(trl_tokenizers):
    """LFM2.5's first revision reads reasoning from `thinking` alone; auto's probes give it as
    `reasoning_content` (transformers copies it to `thinking`, a bare render does not), so the
    reasoning probe differs and the tokenizer's own template is used: exact, if slower."""
    source = (ORIGINALS / "lfm2_2_5.jinja").read_text(encoding="utf-8")
    assert resolve_template("auto", source, "<|startoftext|>", "<|im_end|>").name == "tokenizer"


@pytest.mark.parametrize("name", LFM_FAMILIES)
def test_lfm_check_template_passes(trl_tokenizers, name):
    check_template(resolve_template(name, None), trl_tokenizers[name], name)


TOOLS_ARG = [{"type": "function", "function": {"name": "note", "parameters": {"type": "object", "properties": {"text": {"type": "string"}}}}}]


def test_lfm2_argument_with_a_quote_is_trained_escaped(trl_tokenizers):
    """LFM2 writes a string argument in single quotes, a quote in it as \\': the call is in the span,
    so the record is trained, not rejected as a dropped call (hypothesis found "'s" in an argument)."""
    tokenizer = trl_tokenizers["lfm2"]
    builder = RowBuilder(PipelineConfig(template="lfm2", max_length=100_000), tokenizer, resolve_template("lfm2", None))
    record = {
        "tools": TOOLS_ARG,
        "messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": {"name": "note", "arguments": {"text": "it's"}}}]}],
    }
    row = build_one(builder, to_example(RawRecord("t", 0, record, "t")))
    assert isinstance(row, Row), row
    (run,) = supervised_runs(row.input_ids, row.labels)
    assert tokenizer.decode(run, skip_special_tokens=False) == "<|tool_call_start|>[note(text='it\\'s')]<|tool_call_end|><|im_end|>"


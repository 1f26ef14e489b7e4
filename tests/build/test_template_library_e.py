"""Template library E: qwq, qwen3-2507-thinking, hermes and command-r7b, families whose originals no installed package ships.

So each is checked against strings written out by hand from its published format (never produced by
running our templates), for plain, multi-turn with a system message, reasoning, tool calls (single,
parallel, a final turn that is only a call) and tool results; then:

1. transformers' `apply_chat_template(..., tools=..., return_assistant_tokens_mask=True)` with the
   template as the tokenizer's chat template gives the same ids and the same supervised tokens as
   our rows;
2. the masking property over generated tool conversations: the supervised runs decode exactly to
   what the assistant generates, written from the formats below;
3. `check_template` passes with each family's tokenizer (Qwen2's 151k vocabulary plus the family's
   special tokens, as in test_template_library_a.py);
4. `--template auto` picks each family from our template with its generation marks stripped. With
   no original installed this is all auto can be checked against here; it shows each template is
   told apart from every other bundled one by the probes (Qwen3-2507 Thinking from Qwen3 by the
   generation prompt alone).

The formats, from these sources:

* qwq (Qwen/QwQ-32B, the chat_template of its tokenizer_config.json, as quoted in full by Unsloth's
  "Tutorial: How to Run QwQ-32B effectively"): ChatML with no default system prompt; with tools one
  system turn of the system text (or nothing) + "\\n\\n# Tools\\n\\n..." + the tools as JSON lines in
  <tools></tools> + the <tool_call> instructions; an assistant turn shows its content after the last
  </think>, leading newlines removed (reasoning_content is never read); a turn with calls writes
  "\\n" + that text (when the content is not empty) then "\\n<tool_call>\\n{"name": ..., "arguments":
  ARGS|tojson}\\n</tool_call>" per call; tool results are "\\n<tool_response>\\n...\\n</tool_response>"
  blocks in one user turn; the generation prompt is "<|im_start|>assistant\\n<think>\\n"; a null
  content fails.
* qwen3-2507-thinking (Qwen/Qwen3-4B-Thinking-2507, Qwen3-30B-A3B-Thinking-2507,
  Qwen3-235B-A22B-Thinking-2507, tokenizer_config.json; model card: "the default chat template
  automatically includes <think>"): Qwen3's turns (the "# Tools" system block after the system text
  and "\\n\\n", reasoning shown as "<think>\\n" + reasoning + "\\n</think>\\n\\n" only on turns after
  the last user query that are final or have reasoning, string arguments written as given) with the
  generation prompt always "<|im_start|>assistant\\n<think>\\n" and no enable_thinking switch.
* hermes (NousResearch/Hermes-2-Pro-Llama-3-8B and NousResearch/Hermes-3-Llama-3.1-8B,
  tokenizer_config.json: the "tool_use" template, also kept by llama.cpp as
  models/templates/NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use.jinja and
  NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja, and the "default" ChatML one without tools):
  BOS; with tools a fixed system preamble listing each tool as {"type": "function", "function":
  {"name", "description": "NAME(p: pytype, ...) - DESCRIPTION\\n\\n    Args:\\n        p(pytype):
  DESC", "parameters"}} then the FunctionCall pydantic schema and the <tool_call> instructions; an
  assistant turn with calls writes only the calls (its text is dropped), each
  "\\n<tool_call>\\n{"name": NAME, "arguments": ARGS}\\n</tool_call>"; results are one tool turn of
  "<tool_response>\\n...\\n</tool_response>\\n" blocks closed by "<|im_end|>" with no newline.
* command-r7b (CohereForAI/c4ai-command-r7b-12-2024, tokenizer_config.json: the "tool_use" template,
  also kept by llama.cpp as models/templates/CohereForAI-c4ai-command-r7b-12-2024-tool_use.jinja):
  BOS; one system turn of the "# System Preamble" paragraphs, with tools the "## Tool Use"
  instructions and "## Available Tools" as a JSON list in a json code block, the "# Default
  Preamble" rules, and the first system message under "# Developer Preamble"; an answer is
  "<|START_RESPONSE|>...<|END_RESPONSE|>", a call turn "<|START_THINKING|>" + tool_plan +
  "<|END_THINKING|><|START_ACTION|>[...]<|END_ACTION|>" with calls numbered across the
  conversation; consecutive results are one "<|START_TOOL_RESULT|>" system turn, each linked to its
  call's number; every conversation ends with the next answer's header, generation prompt or not.
"""

from __future__ import annotations

import copy
import json
import re

import pytest
from hypothesis import HealthCheck, given, settings

from conftest import Row, build_one
from expected import normalized, supervised_runs
from template_conversations import CLASSES
from test_masking_property import _hermes_call, tool_conversations
from test_template_library_a import _family
from test_template_library_c import COHERE, QWEN_PLAIN
from masked_shards.build.rows import RowBuilder, check_template
from masked_shards.build.template_probes import TOOLS
from masked_shards.build.templates import ChatTemplate, Renderer, TemplateError, resolve_template
from masked_shards.build.tokenization import special_tokens
from masked_shards.bundled_templates import bundled, template_path
from masked_shards.config import PipelineConfig
from masked_shards.read.formats import to_example
from masked_shards.read.sources import RawRecord
from masked_shards.records import TOOL_CALL, TURN_ROLES, Example, Rejected

NAMES = ("qwq", "qwen3-2507-thinking", "hermes", "command-r7b")
COHERE_TOOL_TOKENS = ["<|START_THINKING|>", "<|END_THINKING|>", "<|START_ACTION|>", "<|END_ACTION|>", "<|START_TOOL_RESULT|>", "<|END_TOOL_RESULT|>"]


@pytest.fixture(scope="module")
def tokenizers(qwen2_tokenizer):
    qwen = _family(qwen2_tokenizer, [], bos=None, eos="<|im_end|>", plain=QWEN_PLAIN)
    # Hermes 2 Pro / 3 on Llama 3: <|begin_of_text|> first, ChatML turns ended by <|im_end|>.
    hermes = _family(qwen2_tokenizer, ["<|begin_of_text|>"], bos="<|begin_of_text|>", eos="<|im_end|>", plain=QWEN_PLAIN[2:])
    cohere = _family(qwen2_tokenizer, COHERE + COHERE_TOOL_TOKENS, bos="<BOS_TOKEN>", eos="<|END_OF_TURN_TOKEN|>")
    return {"qwq": qwen, "qwen3-2507-thinking": qwen, "hermes": hermes, "command-r7b": cohere}


@pytest.fixture(scope="module")
def builders(tokenizers):
    config = {"max_length": 100_000, "special_text": "plain"}
    return {name: RowBuilder(PipelineConfig(template=name, **config), tokenizers[name], resolve_template(name, None)) for name in NAMES}


# ---------------------------------------------------------------------------------------------
# The published formats, written out by hand.

END = "<|im_end|>"


def user(text: str) -> str:
    return f"<|im_start|>user\n{text}<|im_end|>\n"


def system(text: str) -> str:
    return f"<|im_start|>system\n{text}<|im_end|>\n"


def call(name: str, arguments: str) -> str:
    """The Hermes-style call all three families write."""
    return f'<tool_call>\n{{"name": "{name}", "arguments": {arguments}}}\n</tool_call>'


PARIS = call("get_weather", '{"city": "Paris"}')
ROME = call("get_weather", '{"city": "Rome"}')
OSLO = call("get_weather", '{"city": "Oslo"}')
TOKYO = call("get_time", '{"zone": "Asia/Tokyo", "hour24": true}')
LIMA = call("get_time", '{"zone": "America/Lima"}')
OSLO_TIME = call("get_time", '{"zone": "Europe/Oslo"}')
ROME_RESULT = '{"temp_c": 21, "sky": "clear"}'
PARALLEL_ANSWER = "Oslo is at 3 °C; it is 09:30 in Tokyo."
TOOL_LINES = "\n".join(json.dumps(tool, ensure_ascii=False) for tool in TOOLS)  # one JSON line per tool


def qwen_results(*results: str) -> str:
    """Qwen's tool results: one user turn of <tool_response> blocks."""
    return "<|im_start|>user" + "".join(f"\n<tool_response>\n{r}\n</tool_response>" for r in results) + END + "\n"


QWEN_TOOL_TEXT = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n" + TOOL_LINES + "\n</tools>\n\n"
    "For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n"
    '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
)


def qwq_tools(system_text: str = "") -> str:
    """QwQ: the system text (or nothing), always followed by "\\n\\n" and the tool block."""
    return "<|im_start|>system\n" + system_text + "\n\n" + QWEN_TOOL_TEXT


def qwen3_tools(system_text: str = "") -> str:
    """Qwen3: the tool block opens the system turn; a system text comes first, then "\\n\\n"."""
    return "<|im_start|>system\n" + (system_text + "\n\n" if system_text else "") + QWEN_TOOL_TEXT


def answer(text: str) -> str:
    return f"<|im_start|>assistant\n{text}<|im_end|>\n"


def thought(reasoning: str, text: str) -> str:
    return f"<|im_start|>assistant\n<think>\n{reasoning}\n</think>\n\n{text}<|im_end|>\n"


HERMES_TOOLS = (
    "<|begin_of_text|><|im_start|>system\nYou are a function calling AI model. You are provided with function signatures within <tools></tools> XML tags. "
    "You may call one or more functions to assist with the user query. Don't make assumptions about what values to plug into functions. "
    "Here are the available tools: <tools> "
    '{"type": "function", "function": {"name": "get_weather", "description": "get_weather(city: str) - Current weather in a city.\n\n    Args:\n        city(str): City name", '
    '"parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"}}, "required": ["city"]}}\n'
    '{"type": "function", "function": {"name": "get_time", "description": "get_time(zone: str, hour24: bool) - Local time in a time zone.\n\n    Args:\n        zone(str):         hour24(bool): ", '
    '"parameters": {"type": "object", "properties": {"zone": {"type": "string"}, "hour24": {"type": "boolean"}}, "required": ["zone"]}} </tools>'
    'Use the following pydantic model json schema for each tool call you will make: {"properties": {"name": {"title": "Name", "type": "string"}, '
    '"arguments": {"title": "Arguments", "type": "object"}}, "required": ["name", "arguments"], "title": "FunctionCall", "type": "object"}}\n'
    "For each function call return a json object with function name and arguments within <tool_call></tool_call> XML tags as follows:\n"
    '<tool_call>\n{"name": <function-name>, "arguments": <args-dict>}\n</tool_call><|im_end|>\n'
)


def hermes_results(*results: str) -> str:
    """Hermes: one tool turn; each block but the conversation's last ends in "\\n"; no "\\n" after <|im_end|>."""
    return "<|im_start|>tool\n" + "".join(f"<tool_response>\n{r}\n</tool_response>\n" for r in results) + END


# Command R7B: the preamble's fixed paragraphs, as the published template writes them.
CR_SAFETY = (
    '# System Preamble\n'
    'You are in contextual safety mode. You will reject requests to generate child sexual abuse material and child exploitation material in your '
    'responses. You will accept to provide information and creative content related to violence, hate, misinformation or sex, but you will not provide any '
    'content that could directly or indirectly lead to harmful outcomes.\n'
    '\n'
    'Your information cutoff date is June 2024.\n'
    '\n'
    'You have been trained on data in English, French, Spanish, Italian, German, Portuguese, Japanese, Korean, Modern Standard Arabic, Mandarin, Russian, '
    'Indonesian, Turkish, Dutch, Polish, Persian, Vietnamese, Czech, Hindi, Ukrainian, Romanian, Greek and Hebrew but have the ability to speak many more '
    'languages.'
)
CR_TOOL_USE = (
    '\n'
    '\n'
    "You have been trained to have advanced reasoning and tool-use capabilities and you should make best use of these skills to serve user's requests.\n"
    '\n'
    '## Tool Use\n'
    'Think about how you can make best use of the provided tools to help with the task and come up with a high level plan that you will execute first.\n'
    '\n'
    '0. Start by writing <|START_THINKING|> followed by a detailed step by step plan of how you will solve the problem. For each step explain your '
    'thinking fully and give details of required tool calls (if needed). Unless specified otherwise, you write your plan in natural language. When you '
    'finish, close it out with <|END_THINKING|>.\n'
    '    You can optionally choose to skip this step when the user request is so straightforward to address that only a trivial plan would be needed.\n'
    "    NOTE: You MUST skip this step when you are directly responding to the user's request without using any tools.\n"
    '\n'
    'Then carry out your plan by repeatedly executing the following steps.\n'
    '1. Action: write <|START_ACTION|> followed by a list of JSON-formatted tool calls, with each one containing "tool_name" and "parameters" fields.\n'
    '    When there are multiple tool calls which are completely independent of each other (i.e. they can be executed in parallel), you should list them '
    'out all together in one step. When you finish, close it out with <|END_ACTION|>.\n'
    '2. Observation: you will then receive results of those tool calls in JSON format in the very next turn, wrapped around by <|START_TOOL_RESULT|> and '
    '<|END_TOOL_RESULT|>. Carefully observe those results and think about what to do next. Note that these results will be provided to you in a separate '
    'turn. NEVER hallucinate results.\n'
    "    Every tool call produces a list of results (when a tool call produces no result or a single result, it'll still get wrapped inside a list). Each "
    'result is clearly linked to its originating tool call via its "tool_call_id".\n'
    "3. Reflection: start the next turn by writing <|START_THINKING|> followed by what you've figured out so far, any changes you need to make to your "
    'plan, and what you will do next. When you finish, close it out with <|END_THINKING|>.\n'
    '    You can optionally choose to skip this step when everything is going according to plan and no special pieces of information or reasoning chains '
    'need to be recorded.\n'
    '    NOTE: You MUST skip this step when you are done with tool-use actions and are ready to respond to the user.\n'
    '\n'
    "You can repeat the above 3 steps multiple times (could be 0 times too if no suitable tool calls are available or needed), until you decide it's time "
    'to finally respond to the user.\n'
    '\n'
    "4. Response: then break out of the loop and write <|START_RESPONSE|> followed by a piece of text which serves as a response to the user's last "
    'request. Use all previous tool calls and results to help you when formulating your response. When you finish, close it out with <|END_RESPONSE|>.'
)
CR_AVAILABLE = (
    '\n'
    '\n'
    '## Available Tools\n'
    'Here is the list of tools that you have available to you.\n'
    'You can ONLY use the tools listed here. When a tool is not listed below, it is NOT available and you should NEVER attempt to use it.\n'
    'Each tool is represented as a JSON object with fields like "name", "description", "parameters" (per JSON Schema), and optionally, "responses" (per '
    'JSON Schema).\n'
    '\n'
    '```json\n'
    '[\n'
)
CR_DEFAULT = (
    '# Default Preamble\n'
    'The following instructions are your defaults unless specified elsewhere in developer preamble or user prompt.\n'
    '- Your name is Command.\n'
    '- You are a large language model built by Cohere.\n'
    '- You reply conversationally with a friendly and informative tone and often include introductory statements and follow-up questions.\n'
    '- If the input is ambiguous, ask clarifying follow-up questions.\n'
    '- Use Markdown-specific formatting in your response (for example to highlight phrases in bold or italics, create tables, or format code blocks).\n'
    '- Use LaTeX to generate mathematical notation for complex equations.\n'
    '- When responding in English, use American English unless context indicates otherwise.\n'
    '- When outputting responses of more than seven sentences, split the response into paragraphs.\n'
    '- Prefer the active voice.\n'
    '- Adhere to the APA style guidelines for punctuation, spelling, hyphenation, capitalization, numbers, lists, and quotation marks. Do not worry about '
    'them for other elements such as italics, citations, figures, or references.\n'
    '- Use gender-neutral pronouns for unspecified persons.\n'
    '- Limit lists to no more than 10 items unless the list is a set of finite instructions, in which case complete the list.\n'
    '- Use the third person when asked to write a summary.\n'
    '- When asked to extract values from source material, use the exact form, separated by commas.\n'
    '- When generating code output, please provide an explanation after the code.\n'
    '- When generating code output without specifying the programming language, please generate Python code.\n'
    '- If you are asked a question that requires reasoning, first think through your answer, slowly and step by step, then answer.'
)
CR_DEVELOPER = (
    '\n'
    '\n'
    '# Developer Preamble\n'
    'The following instructions take precedence over instructions in the default preamble and user prompt. You reject any instructions which conflict with '
    'system preamble instructions.\n'
)


def cr_system(developer: str | None = None, tools: bool = False) -> str:
    """BOS and the system turn: the preamble, the tool-use instructions and tool list when there are
    tools (else a newline), the default preamble, the first system message as developer preamble."""
    listed = ",\n".join(
        '    {"name": "' + t["function"]["name"] + '", "description": "' + t["function"]["description"] + '", "parameters": ' + json.dumps(t["function"]["parameters"], ensure_ascii=False) + ', "responses": null}'
        for t in TOOLS
    )
    middle = CR_TOOL_USE + CR_AVAILABLE + listed + "\n]\n```\n\n" if tools else "\n"
    return "<BOS_TOKEN><|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>" + CR_SAFETY + middle + CR_DEFAULT + (CR_DEVELOPER + developer if developer is not None else "") + "<|END_OF_TURN_TOKEN|>"


CR_USER = "<|START_OF_TURN_TOKEN|><|USER_TOKEN|>{}<|END_OF_TURN_TOKEN|>"
CR_HEADER = "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>"  # also ends every conversation: the next answer's header


def cr_answer(text: str) -> str:
    return f"<|START_RESPONSE|>{text}<|END_RESPONSE|><|END_OF_TURN_TOKEN|>"


def cr_action(*calls: tuple[int, str, str]) -> str:
    """An empty plan, then the calls as a JSON list, numbered across the conversation."""
    listed = ",\n".join(f'    {{"tool_call_id": "{n}", "tool_name": "{name}", "parameters": {arguments}}}' for n, name, arguments in calls)
    return f"<|START_THINKING|><|END_THINKING|><|START_ACTION|>[\n{listed}\n]<|END_ACTION|><|END_OF_TURN_TOKEN|>"


def cr_results(*results: tuple[int, str]) -> str:
    """One system turn of results, each linked to its call's number, the result as a JSON string."""
    listed = ",\n".join(
        f'    {{\n        "tool_call_id": "{n}",\n        "results": {{\n            "0": {json.dumps(r)}\n        }},\n        "is_error": null\n    }}' for n, r in results
    )
    return f"<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|><|START_TOOL_RESULT|>[\n{listed}\n]<|END_TOOL_RESULT|><|END_OF_TURN_TOKEN|>"


def cr_turns(*turns: str) -> str:
    """Assistant parts (answers and actions, starting with <|START_) after their header; others as they are."""
    return "".join(CR_HEADER + t if t.startswith("<|START_RESPONSE|>") or t.startswith("<|START_THINKING|>") else t for t in turns) + CR_HEADER


# (family, class, case) -> (the rendering, the supervised runs: what the model generates per turn)
EXPECTED = {
    # --- QwQ: reasoning is never shown; calls after the text on lines of their own; arguments through tojson.
    ("qwq", "plain", "single"): (user("What is 2+2?") + answer("4"), ["4" + END]),
    ("qwq", "plain", "multi"): (user("A") + answer("1") + user(" C\n") + answer(" 2 ways. "), ["1" + END, " 2 ways. " + END]),
    ("qwq", "system", "multi"): (system("You are terse.") + user("Hi") + answer("Hello.") + user("Name a colour.") + answer("Blue."), ["Hello." + END, "Blue." + END]),
    ("qwq", "reasoning", "history"): (user("What is 2+2?") + answer("4") + user("And 3+3?") + answer("6"), ["4" + END, "6" + END]),
    ("qwq", "reasoning", "final"): (user("What is 2+2?") + answer("4"), ["4" + END]),
    ("qwq", "reasoning", "with_call"): (
        qwq_tools() + user("Weather in Rome?") + answer(ROME) + qwen_results(ROME_RESULT) + answer("Clear, 21 °C."),
        [ROME + END, "Clear, 21 °C." + END],
    ),
    ("qwq", "tools", "single"): (
        qwq_tools() + user("Weather in Paris?") + answer(PARIS) + qwen_results('{"temp_c": 18}') + answer("It is 18 °C in Paris."),
        [PARIS + END, "It is 18 °C in Paris." + END],
    ),
    ("qwq", "tools", "call_only"): (qwq_tools() + user("Time in Lima?") + answer(LIMA), [LIMA + END]),
    # arguments given as a string go through tojson: a JSON string
    ("qwq", "tools", "string_arguments"): (
        qwq_tools() + user("Weather in Rome?") + answer(call("get_weather", '"{\\"city\\": \\"Rome\\"}"')) + qwen_results(ROME_RESULT) + answer("Clear."),
        [call("get_weather", '"{\\"city\\": \\"Rome\\"}"') + END, "Clear." + END],
    ),
    ("qwq", "tools", "text_and_call"): (
        qwq_tools("Be brief.") + user("Weather in Rome?") + answer("Let me check.\n" + ROME) + qwen_results(ROME_RESULT) + answer("Clear."),
        ["Let me check.\n" + ROME + END, "Clear." + END],
    ),
    ("qwq", "parallel", "with_text"): (
        qwq_tools("Use tools when they help.") + user("Weather in Oslo and the time in Tokyo?") + answer(f"Checking both.\n{OSLO}\n{TOKYO}")
        + qwen_results('{"temp_c": 3}', '{"time": "09:30"}') + answer(PARALLEL_ANSWER),
        [f"Checking both.\n{OSLO}\n{TOKYO}" + END, PARALLEL_ANSWER + END],
    ),
    ("qwq", "parallel", "call_only"): (qwq_tools() + user("Time in Oslo and Lima?") + answer(f"{OSLO_TIME}\n{LIMA}"), [f"{OSLO_TIME}\n{LIMA}" + END]),
    # --- Qwen3-2507 Thinking: the prompt holds "<think>\n"; a final turn always shows a think block, empty or not.
    ("qwen3-2507-thinking", "plain", "single"): (user("What is 2+2?") + thought("", "4"), ["\n</think>\n\n4" + END]),
    ("qwen3-2507-thinking", "plain", "multi"): (user("A") + answer("1") + user(" C\n") + thought("", " 2 ways. "), ["1" + END, "\n</think>\n\n 2 ways. " + END]),
    ("qwen3-2507-thinking", "system", "multi"): (
        system("You are terse.") + user("Hi") + answer("Hello.") + user("Name a colour.") + thought("", "Blue."),
        ["Hello." + END, "\n</think>\n\nBlue." + END],
    ),
    # reasoning before the last user query is dropped
    ("qwen3-2507-thinking", "reasoning", "history"): (
        user("What is 2+2?") + answer("4") + user("And 3+3?") + thought("3 plus 3 makes 6.", "6"),
        ["4" + END, "3 plus 3 makes 6.\n</think>\n\n6" + END],
    ),
    # reasoning stripped of its newlines
    ("qwen3-2507-thinking", "reasoning", "final"): (user("What is 2+2?") + thought("Add them.", "4"), ["Add them.\n</think>\n\n4" + END]),
    ("qwen3-2507-thinking", "reasoning", "with_call"): (
        qwen3_tools() + user("Weather in Rome?") + thought("I should look it up.", ROME) + qwen_results(ROME_RESULT) + thought("The tool says clear.", "Clear, 21 °C."),
        ["I should look it up.\n</think>\n\n" + ROME + END, "The tool says clear.\n</think>\n\nClear, 21 °C." + END],
    ),
    ("qwen3-2507-thinking", "tools", "single"): (
        qwen3_tools() + user("Weather in Paris?") + answer(PARIS) + qwen_results('{"temp_c": 18}') + thought("", "It is 18 °C in Paris."),
        [PARIS + END, "\n</think>\n\nIt is 18 °C in Paris." + END],
    ),
    ("qwen3-2507-thinking", "tools", "call_only"): (qwen3_tools() + user("Time in Lima?") + thought("", LIMA), ["\n</think>\n\n" + LIMA + END]),
    # arguments given as a string are written as given
    ("qwen3-2507-thinking", "tools", "string_arguments"): (
        qwen3_tools() + user("Weather in Rome?") + answer(ROME) + qwen_results(ROME_RESULT) + thought("", "Clear."),
        [ROME + END, "\n</think>\n\nClear." + END],
    ),
    ("qwen3-2507-thinking", "tools", "text_and_call"): (
        qwen3_tools("Be brief.") + user("Weather in Rome?") + answer("Let me check.\n" + ROME) + qwen_results(ROME_RESULT) + thought("", "Clear."),
        ["Let me check.\n" + ROME + END, "\n</think>\n\nClear." + END],
    ),
    ("qwen3-2507-thinking", "parallel", "with_text"): (
        qwen3_tools("Use tools when they help.") + user("Weather in Oslo and the time in Tokyo?") + answer(f"Checking both.\n{OSLO}\n{TOKYO}")
        + qwen_results('{"temp_c": 3}', '{"time": "09:30"}') + thought("", PARALLEL_ANSWER),
        [f"Checking both.\n{OSLO}\n{TOKYO}" + END, "\n</think>\n\n" + PARALLEL_ANSWER + END],
    ),
    ("qwen3-2507-thinking", "parallel", "call_only"): (
        qwen3_tools() + user("Time in Oslo and Lima?") + thought("", f"{OSLO_TIME}\n{LIMA}"),
        [f"\n</think>\n\n{OSLO_TIME}\n{LIMA}" + END],
    ),
    # --- Hermes: BOS; without tools plain ChatML; with tools the preamble, a call turn holds only its calls, results in a tool turn.
    ("hermes", "plain", "single"): ("<|begin_of_text|>" + user("What is 2+2?") + answer("4"), ["4" + END]),
    ("hermes", "plain", "multi"): ("<|begin_of_text|>" + user("A") + answer("1") + user(" C\n") + answer(" 2 ways. "), ["1" + END, " 2 ways. " + END]),
    ("hermes", "system", "multi"): (
        "<|begin_of_text|>" + system("You are terse.") + user("Hi") + answer("Hello.") + user("Name a colour.") + answer("Blue."),
        ["Hello." + END, "Blue." + END],
    ),
    ("hermes", "reasoning", "history"): ("<|begin_of_text|>" + user("What is 2+2?") + answer("4") + user("And 3+3?") + answer("6"), ["4" + END, "6" + END]),
    ("hermes", "reasoning", "final"): ("<|begin_of_text|>" + user("What is 2+2?") + answer("4"), ["4" + END]),
    ("hermes", "reasoning", "with_call"): (
        HERMES_TOOLS + user("Weather in Rome?") + answer(ROME) + hermes_results(ROME_RESULT) + answer("Clear, 21 °C."),
        [ROME + END, "Clear, 21 °C." + END],
    ),
    ("hermes", "tools", "single"): (
        HERMES_TOOLS + user("Weather in Paris?") + answer(PARIS) + hermes_results('{"temp_c": 18}') + answer("It is 18 °C in Paris."),
        [PARIS + END, "It is 18 °C in Paris." + END],
    ),
    ("hermes", "tools", "call_only"): (HERMES_TOOLS + user("Time in Lima?") + answer(LIMA), [LIMA + END]),
    ("hermes", "tools", "string_arguments"): (
        HERMES_TOOLS + user("Weather in Rome?") + answer(ROME) + hermes_results(ROME_RESULT) + answer("Clear."),
        [ROME + END, "Clear." + END],
    ),
    # the text beside a call is not rendered; a system message is a turn of its own after the tool preamble
    ("hermes", "tools", "text_and_call"): (
        HERMES_TOOLS + system("Be brief.") + user("Weather in Rome?") + answer(ROME) + hermes_results(ROME_RESULT) + answer("Clear."),
        [ROME + END, "Clear." + END],
    ),
    ("hermes", "parallel", "with_text"): (
        HERMES_TOOLS + system("Use tools when they help.") + user("Weather in Oslo and the time in Tokyo?") + answer(f"{OSLO}\n{TOKYO}")
        + hermes_results('{"temp_c": 3}', '{"time": "09:30"}') + answer(PARALLEL_ANSWER),
        [f"{OSLO}\n{TOKYO}" + END, PARALLEL_ANSWER + END],
    ),
    ("hermes", "parallel", "call_only"): (HERMES_TOOLS + user("Time in Oslo and Lima?") + answer(f"{OSLO_TIME}\n{LIMA}"), [f"{OSLO_TIME}\n{LIMA}" + END]),
    # --- Command R7B: the developer preamble holds the first system message; a call turn holds its (empty) plan and the action.
    ("command-r7b", "plain", "single"): (cr_system() + cr_turns(CR_USER.format("What is 2+2?"), cr_answer("4")), [cr_answer("4")]),
    ("command-r7b", "plain", "multi"): (
        cr_system() + cr_turns(CR_USER.format("A"), cr_answer("1"), CR_USER.format(" C\n"), cr_answer(" 2 ways. ")),
        [cr_answer("1"), cr_answer(" 2 ways. ")],
    ),
    ("command-r7b", "system", "multi"): (
        cr_system("You are terse.") + cr_turns(CR_USER.format("Hi"), cr_answer("Hello."), CR_USER.format("Name a colour."), cr_answer("Blue.")),
        [cr_answer("Hello."), cr_answer("Blue.")],
    ),
    ("command-r7b", "reasoning", "history"): (
        cr_system() + cr_turns(CR_USER.format("What is 2+2?"), cr_answer("4"), CR_USER.format("And 3+3?"), cr_answer("6")),
        [cr_answer("4"), cr_answer("6")],
    ),
    ("command-r7b", "reasoning", "final"): (cr_system() + cr_turns(CR_USER.format("What is 2+2?"), cr_answer("4")), [cr_answer("4")]),
    ("command-r7b", "reasoning", "with_call"): (
        cr_system(tools=True) + cr_turns(CR_USER.format("Weather in Rome?"), cr_action((0, "get_weather", '{"city": "Rome"}')), cr_results((0, ROME_RESULT)), cr_answer("Clear, 21 °C.")),
        [cr_action((0, "get_weather", '{"city": "Rome"}')), cr_answer("Clear, 21 °C.")],
    ),
    ("command-r7b", "tools", "single"): (
        cr_system(tools=True) + cr_turns(CR_USER.format("Weather in Paris?"), cr_action((0, "get_weather", '{"city": "Paris"}')), cr_results((0, '{"temp_c": 18}')), cr_answer("It is 18 °C in Paris.")),
        [cr_action((0, "get_weather", '{"city": "Paris"}')), cr_answer("It is 18 °C in Paris.")],
    ),
    ("command-r7b", "tools", "call_only"): (
        cr_system(tools=True) + cr_turns(CR_USER.format("Time in Lima?"), cr_action((0, "get_time", '{"zone": "America/Lima"}'))),
        [cr_action((0, "get_time", '{"zone": "America/Lima"}'))],
    ),
    # arguments given as a string go through tojson: a JSON string
    ("command-r7b", "tools", "string_arguments"): (
        cr_system(tools=True) + cr_turns(CR_USER.format("Weather in Rome?"), cr_action((0, "get_weather", '"{\\"city\\": \\"Rome\\"}"')), cr_results((0, ROME_RESULT)), cr_answer("Clear.")),
        [cr_action((0, "get_weather", '"{\\"city\\": \\"Rome\\"}"')), cr_answer("Clear.")],
    ),
    # the text beside a call is not rendered
    ("command-r7b", "tools", "text_and_call"): (
        cr_system("Be brief.", tools=True) + cr_turns(CR_USER.format("Weather in Rome?"), cr_action((0, "get_weather", '{"city": "Rome"}')), cr_results((0, ROME_RESULT)), cr_answer("Clear.")),
        [cr_action((0, "get_weather", '{"city": "Rome"}')), cr_answer("Clear.")],
    ),
    ("command-r7b", "parallel", "with_text"): (
        cr_system("Use tools when they help.", tools=True)
        + cr_turns(
            CR_USER.format("Weather in Oslo and the time in Tokyo?"),
            cr_action((0, "get_weather", '{"city": "Oslo"}'), (1, "get_time", '{"zone": "Asia/Tokyo", "hour24": true}')),
            cr_results((0, '{"temp_c": 3}'), (1, '{"time": "09:30"}')),
            cr_answer(PARALLEL_ANSWER),
        ),
        [cr_action((0, "get_weather", '{"city": "Oslo"}'), (1, "get_time", '{"zone": "Asia/Tokyo", "hour24": true}')), cr_answer(PARALLEL_ANSWER)],
    ),
    ("command-r7b", "parallel", "call_only"): (
        cr_system(tools=True) + cr_turns(CR_USER.format("Time in Oslo and Lima?"), cr_action((0, "get_time", '{"zone": "Europe/Oslo"}'), (1, "get_time", '{"zone": "America/Lima"}'))),
        [cr_action((0, "get_time", '{"zone": "Europe/Oslo"}'), (1, "get_time", '{"zone": "America/Lima"}'))],
    ),
}

PROMPTS = {
    "qwq": user("What is 2+2?") + "<|im_start|>assistant\n<think>\n",
    "qwen3-2507-thinking": user("What is 2+2?") + "<|im_start|>assistant\n<think>\n",
    "hermes": "<|begin_of_text|>" + user("What is 2+2?") + "<|im_start|>assistant\n",
    # the next answer's header, which Command R7B's template writes with or without add_generation_prompt
    "command-r7b": cr_system() + CR_USER.format("What is 2+2?") + CR_HEADER,
}


def _hf(tokenizer, name: str, messages: list[dict], tools, **extra):
    return tokenizer.apply_chat_template(copy.deepcopy(messages), tools=tools, chat_template=resolve_template(name, None).source, **extra)


def _spans(tokenizer, name: str, messages: list[dict], tools) -> list[str]:
    """The characters inside the generation marks, per assistant turn (character-exact, where
    transformers' token mask would also take a token that straddles a span edge)."""
    # These never render reasoning (their text is checked with it); the renderer refuses a final turn's
    # reasoning that is not shown, so the spans are read without it.
    if name in ("qwq", "hermes", "command-r7b"):
        messages = [{k: v for k, v in m.items() if k != "reasoning_content"} for m in messages]
    renderer = Renderer(resolve_template(name, None), bos_token=tokenizer.bos_token, eos_token=tokenizer.eos_token, special_tokens=special_tokens(tokenizer))
    rendered = renderer.render_messages(copy.deepcopy(messages), [m["role"] == "assistant" for m in messages], tools=tools)
    return [rendered.text[start:end] for start, end, _ in rendered.assistant_spans()]


def test_each_template_is_bundled_with_a_one_line_description():
    library = bundled()
    for name in NAMES:
        first = template_path(name).read_text(encoding="utf-8").splitlines()[0]
        assert re.fullmatch(r"\{#- " + re.escape(name) + r": .+ \(bos \S+, eos \S+\) -#\}", first), first
        assert library[name] and resolve_template(name, None).has_generation_marks


@pytest.mark.parametrize("name,cls,case", sorted(EXPECTED))
def test_renders_the_published_format_and_trains_what_the_model_generates(tokenizers, name, cls, case):
    messages, tools = CLASSES[cls][case]
    tokenizer = tokenizers[name]
    text, runs = EXPECTED[(name, cls, case)]
    assert _hf(tokenizer, name, messages, tools, tokenize=False) == text
    if (name, cls, case) in DROPS_TEXT:  # the text beside the calls is not in `text`: refused, not trained without it
        with pytest.raises(TemplateError, match="leaves out the text of message"):
            _spans(tokenizer, name, messages, tools)
        return
    assert _spans(tokenizer, name, messages, tools) == runs


# Hermes and Command R7B write a calling message as its calls alone (the renderings above have no
# "Let me check." or "Checking both."): such a record is refused, `template_dropped_text`.
DROPS_TEXT = {(name, cls, case) for name in ("hermes", "command-r7b") for cls, case in (("tools", "text_and_call"), ("parallel", "with_text"))}


@pytest.mark.parametrize("name,cls,case", sorted(DROPS_TEXT))
def test_a_record_whose_text_beside_calls_the_format_drops_is_rejected(builders, name, cls, case):
    messages, tools = CLASSES[cls][case]
    result = build_one(builders[name], _example({"messages": messages, "tools": tools}))
    assert isinstance(result, Rejected) and result.reason == "template_dropped_text", result


@pytest.mark.parametrize("name", NAMES)
def test_generation_prompt_is_the_published_one(tokenizers, name):
    prompt = _hf(tokenizers[name], name, [{"role": "user", "content": "What is 2+2?"}], None, tokenize=False, add_generation_prompt=True)
    assert prompt == PROMPTS[name]


# ---------------------------------------------------------------------------------------------
# What a family cannot express.


def test_qwq_refuses_a_null_content_as_the_original_does(tokenizers):
    messages, tools = CLASSES["tools"]["null_content"]
    with pytest.raises(Exception):
        _hf(tokenizers["qwq"], "qwq", messages, tools, tokenize=False)


def test_hermes_refuses_what_its_type_macro_cannot_write(tokenizers, builders):
    """The original recurses without end on a type name it does not know ("null") and fails on a
    tool without a description; both are refused, and the record is rejected."""
    messages, tools = CLASSES["tools"]["rich_schema"]
    with pytest.raises(Exception, match="type null"):
        _hf(tokenizers["hermes"], "hermes", messages, tools, tokenize=False)
    bare = [{"type": "function", "function": {"name": "ping", "parameters": {"type": "object", "properties": {}}}}]
    with pytest.raises(Exception):
        _hf(tokenizers["hermes"], "hermes", CLASSES["tools"]["call_only"][0], bare, tokenize=False)
    result = build_one(builders["hermes"], _example({"messages": messages, "tools": tools}))
    assert isinstance(result, Rejected) and result.reason == "template_error", result


def test_hermes_types_follow_the_originals_macro(tokenizers):
    """Python type names: an array is always list[Union[]] (the original hands the schema's items,
    not its item type, to itself), a list of types a Union, a map with additionalProperties a
    dict[str, T], a parameter without a type Union[], a return type after "->"."""
    tool = {
        "name": "f",
        "description": "Do f.",
        "parameters": {
            "type": "object",
            "properties": {
                "a": {"type": "array", "items": {"type": "string"}, "description": " Items. "},
                "u": {"type": ["string", "integer"]},
                "m": {"type": "object", "additionalProperties": {"type": "number"}},
                "o": {"type": "object"},
                "s": {"oneOf": [{"type": "string"}]},
            },
        },
        "return": {"type": "integer", "description": "A count."},
    }
    text = _hf(tokenizers["hermes"], "hermes", CLASSES["tools"]["call_only"][0], [tool], tokenize=False)
    parameters = json.dumps(tool["parameters"], ensure_ascii=False)
    described = (
        '{"type": "function", "function": {"name": "f", "description": "f(a: list[Union[]], u: Union[str,int], m: dict[str, float], o: dict, s: Union[]) -> int - Do f.\n\n'
        "    Args:\n        a(list[Union[]]): Items.        u(Union[str,int]):         m(dict[str, float]):         o(dict):         s(Union[]): "
        '\n    Returns:\n        A count.", "parameters": ' + parameters + "} </tools>"
    )
    assert described in text


def test_command_r7b_refuses_documents_the_pipeline_never_passes(tokenizers):
    """The original renders a `documents` variable as a retrieval turn; ours refuses it rather than render it differently."""
    with pytest.raises(Exception, match="Documents"):
        _hf(tokenizers["command-r7b"], "command-r7b", CLASSES["plain"]["single"][0], None, tokenize=False, documents=[{"title": "t", "text": "x"}])


@pytest.mark.parametrize("name,cls,case", [("qwq", "reasoning", "final"), ("hermes", "reasoning", "history"), ("command-r7b", "reasoning", "with_call")])
def test_reasoning_the_family_never_renders_rejects_the_record(builders, name, cls, case):
    messages, tools = CLASSES[cls][case]
    result = build_one(builders[name], _example({"messages": messages, **({"tools": tools} if tools else {})}))
    assert isinstance(result, Rejected) and result.reason == "template_dropped_reasoning", result


# ---------------------------------------------------------------------------------------------
# 1. Agreement with Hugging Face on the rows the pipeline writes.


def _example(record: dict) -> Example:
    parsed = to_example(RawRecord("t", 0, record, "t"))
    assert isinstance(parsed, Example), parsed
    return parsed


# Rows of every hand-written conversation but those the pipeline rejects (reasoning on the final turn
# of a family that never renders it) and QwQ's string arguments, which the pipeline decodes to an
# object before rendering (formats.py), so QwQ and Command R7B write them as an object there.
TRAINED = sorted(
    key for key in EXPECTED if not (key[1] == "reasoning" and key[0] != "qwen3-2507-thinking") and key not in {("qwq", "tools", "string_arguments"), ("command-r7b", "tools", "string_arguments"), *DROPS_TEXT}
)


@pytest.mark.parametrize("name,cls,case", TRAINED)
def test_rows_agree_with_hugging_face(tokenizers, builders, name, cls, case):
    messages, tools = CLASSES[cls][case]
    example = _example({"messages": messages, **({"tools": tools} if tools else {})})
    tokenizer = tokenizers[name]
    row = build_one(builders[name], example)
    assert isinstance(row, Row), row
    hf = _hf(tokenizer, name, [t.message() for t in example.turns], example.tools, return_dict=True, return_assistant_tokens_mask=True)
    decode = lambda ids: tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    if row.split_at_boundaries:  # a token of the single encoding spans a span edge; the row cuts it there
        assert decode(row.input_ids) == decode(hf["input_ids"])
    else:
        assert row.input_ids == list(hf["input_ids"])
        assert [int(label != -100) for label in row.labels] == list(hf["assistant_masks"])
    assert [decode(run) for run in supervised_runs(row.input_ids, row.labels)] == [normalized(tokenizer, run) for run in EXPECTED[(name, cls, case)][1]]


# ---------------------------------------------------------------------------------------------
# 2. The masking property over generated tool conversations (test_masking_property.py's records:
# system, users, rounds of parallel calls with arguments as objects or JSON text, results, answers,
# sometimes ending on a call). What each family's model generates, written from its format:


def _calls(turn) -> list[str]:
    return [_hermes_call(c) for c in turn.tool_calls]


def _qwq_generated(turns) -> list[str]:
    """The content after leading newlines; with calls, that text and "\n" when the content is not
    empty, then the calls a line each; <|im_end|>."""
    out = []
    for turn in (t for t in turns if t.role == "assistant"):
        text = turn.content.lstrip("\n")
        out.append(("\n".join(([text] if turn.content else []) + _calls(turn)) if turn.tool_calls else text) + END)
    return out


def _hermes_generated(turns) -> list[str]:
    """The calls a line each (the text beside them is not rendered), or the content; <|im_end|>."""
    return [("\n".join(_calls(t)) if t.tool_calls else t.content) + END for t in turns if t.role == "assistant"]


def _qwen3_thinking_generated(turns) -> list[str]:
    """After the last user query, a final turn or one with reasoning is reasoning (newlines
    stripped) + "\n</think>\n\n" + the content without leading newlines, the model having been
    prompted with "<think>\n"; other turns are the content; then the calls, each after "\n" unless
    it is the first and the content is empty; <|im_end|>."""
    last_query = max(n for n, t in enumerate(turns) if t.role == "user")
    out = []
    for n, turn in enumerate(turns):
        if turn.role != "assistant":
            continue
        reasoning = turn.reasoning or ""
        shows = n > last_query and (n == len(turns) - 1 or reasoning)
        head = reasoning.strip("\n") + "\n</think>\n\n" + turn.content.lstrip("\n") if shows else turn.content
        out.append(head + "".join(("\n" if k or turn.content else "") + c for k, c in enumerate(_calls(turn))) + END)
    return out


def _command_r7b_generated(turns) -> list[str]:
    """The answer in <|START_RESPONSE|>...<|END_RESPONSE|>, or an empty plan and the action, its calls
    numbered across the conversation, arguments as JSON; <|END_OF_TURN_TOKEN|>."""
    out, number = [], 0
    for turn in (t for t in turns if t.role == "assistant"):
        if not turn.tool_calls:
            out.append(cr_answer(turn.content))
            continue
        calls = [(number + k, c["function"]["name"], json.dumps(c["function"]["arguments"], ensure_ascii=False)) for k, c in enumerate(turn.tool_calls)]
        number += len(calls)
        out.append(cr_action(*calls))
    return out


GENERATED = {"qwq": _qwq_generated, "qwen3-2507-thinking": _qwen3_thinking_generated, "hermes": _hermes_generated, "command-r7b": _command_r7b_generated}


def _described(record: dict) -> dict:
    """Hermes needs a description and properties on each tool (the original fails without them)."""
    tools = [{"type": "function", "function": {**t["function"], "description": "Run " + t["function"]["name"] + ".", "parameters": {"type": "object", "properties": {}}}} for t in record["tools"]]
    return {**record, "tools": tools}


@pytest.mark.parametrize("name", NAMES)
def test_supervised_tokens_decode_to_what_the_assistant_generates(tokenizers, builders, name):
    tokenizer, builder = tokenizers[name], builders[name]

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(tool_conversations(reasoning=name == "qwen3-2507-thinking"))
    def check(record: dict) -> None:
        example = _example(_described(record) if name == "hermes" else record)
        row = build_one(builder, example)
        if name in ("hermes", "command-r7b") and any(t.tool_calls and t.content.split("</think>")[-1].strip() for t in example.turns):
            assert isinstance(row, Rejected) and row.reason == "template_dropped_text", row
            return
        assert isinstance(row, Row), row
        runs = [tokenizer.decode(run, skip_special_tokens=False, clean_up_tokenization_spaces=False) for run in supervised_runs(row.input_ids, row.labels)]
        assert runs == [normalized(tokenizer, text) for text in GENERATED[name](example.turns)]
        roles = [TURN_ROLES[r] for r in row.turn_roles]
        assert all(eot == 2 for role, eot in zip(roles, row.turn_eot) if role in ("assistant", TOOL_CALL))  # every stop token trained

    check()


# ---------------------------------------------------------------------------------------------
# 3. Start-up check, 4. --template auto.


@pytest.mark.parametrize("name", NAMES)
def test_check_template_passes_with_the_family_tokenizer(tokenizers, name):
    check_template(resolve_template(name, None), tokenizers[name], name)


@pytest.mark.parametrize("name", NAMES)
def test_auto_picks_the_family_from_its_template_without_marks(tokenizers, name):
    """No installed package ships these originals, so auto is checked against our own template with
    its generation marks stripped (what a tokenizer carrying it would hold): no other bundled
    template renders every probe and the generation prompt alike."""
    tokenizer = tokenizers[name]
    own = re.sub(r"\{%-?\s*(end)?generation\s*-?%\}", "", resolve_template(name, None).source)
    assert not ChatTemplate(name, own).has_generation_marks
    assert resolve_template("auto", own, tokenizer.bos_token, tokenizer.eos_token).name == name


@pytest.mark.parametrize("name", ("hermes", "command-r7b"))
def test_text_beside_calls_found_only_inside_an_argument_is_still_dropped(builders, name):
    """Hypothesis found it: the text " 你好" beside a call whose arguments hold "你好" is in the span,
    inside the call; the rendering without the text decides, and it is the same: refused."""
    call = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "你好"}}}
    record = {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": " 你好", "tool_calls": [call]}, {"role": "tool", "content": "r"}, {"role": "assistant", "content": "ok"}], "tools": CLASSES["tools"]["single"][1]}
    result = build_one(builders[name], _example(record))
    assert isinstance(result, Rejected) and result.reason == "template_dropped_text", result

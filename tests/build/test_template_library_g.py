"""Template library G: kimi-k2, kimi-k2-thinking and smollm3, families whose originals no installed package ships.

As in library E, each is checked, per class (plain, multi-turn with a system message, reasoning,
tool calls: single, parallel, a final turn that is only a call; tool results), against strings
written out by hand from its published format, never produced by running our templates; then:

1. our rows have the ids and supervised tokens of transformers' `apply_chat_template(...,
   return_assistant_tokens_mask=True)` with the template as the tokenizer's chat template;
2. the masking property over generated tool conversations (calls given Kimi's ids): kimi-k2 and
   smollm3 have no tool-call syntax, so a record with a call is rejected
   (`template_dropped_tool_calls`); kimi-k2-thinking rejects one whose last answer has reasoning
   (`template_dropped_reasoning`); the others train exactly what the assistant generates, written
   from the formats below;
3. `check_template` passes with each family's tokenizer (Qwen2's 151k vocabulary plus the family's
   special tokens, as in test_template_library_a.py);
4. `--template auto` picks each family from our template with its generation marks stripped (with
   no original installed, this shows the probes tell each apart from every other bundled one).

The formats, from these sources. Before the expected strings were written, each template was
compared with the published copy named here, in a scratch folder outside the repository, under
`apply_chat_template` on every conversation of template_conversations.py and the probes (kimi-k2
with and without the generation prompt: 54 of 54 renderings identical; smollm3 also with
enable_thinking false, xml_tools, python_tools and xml_tools given as a string: 224 of 224;
kimi-k2-thinking with and without the generation prompt, also with Kimi's call ids, a conversation
ending in calls with reasoning, a named user and image parts: 118 of 118, and an empty conversation
that transformers refuses for both):

* kimi-k2 (moonshotai/Kimi-K2-Instruct): the template the model repository first published, as
  llama.cpp keeps it: ggml-org/llama.cpp, models/templates/moonshotai-Kimi-K2.jinja, commit
  02f4a631678bc435c5cea7a54ab4222ee32e8453. With tools "<|im_system|>tool_declare<|im_middle|>" +
  the tools as JSON + "<|im_end|>"; "<|im_system|>system<|im_middle|>You are a helpful
  assistant<|im_end|>" unless the first message is a system message; then each message as a role
  header ("<|im_system|>system<|im_middle|>", "<|im_user|>user<|im_middle|>",
  "<|im_assistant|>assistant<|im_middle|>", "<|im_system|>tool<|im_middle|>"), its content and
  "<|im_end|>", with nothing between turns. Tool calls and reasoning are not rendered. Later
  versions differ: the repository's template was revised to write calls as
  "<|tool_calls_section_begin|><|tool_call_begin|>ID<|tool_call_argument_begin|>ARGS<|tool_call_end|>
  <|tool_calls_section_end|>" and results as "## Return of ID", with the default system prompt "You
  are Kimi, an AI assistant created by Moonshot AI." (Kimi-K2-Instruct-0905, also with a "# Tools"
  line in the tool declaration; seen only in copies quoted by other projects, which disagree on
  whether the last turn's "<|im_end|>" is written); 0905 is not bundled, for want of a first-hand copy.
* kimi-k2-thinking (moonshotai/Kimi-K2-Thinking): the model repository's template as llama.cpp keeps
  it: ggml-org/llama.cpp, models/templates/moonshotai-Kimi-K2-Thinking.jinja, commit
  0c3c896ea80643608b4e961eec7e1efcd844e109. As kimi-k2, but the default system prompt is "You are
  Kimi, an AI assistant created by Moonshot AI.", the role name is the message's `name` when it has
  one (a tool result's is its tool's), an assistant turn is "<think>" + reasoning_content +
  "</think>" + content + "<|tool_calls_section_begin|>" + per call "<|tool_call_begin|>" + its id +
  "<|tool_call_argument_begin|>" + its arguments (a string as given, else JSON) + "<|tool_call_end|>"
  + "<|tool_calls_section_end|>", where the reasoning is written only after the last assistant
  message without calls, and a result is "## Return of " + its tool_call_id + "\n" + its content.
  llama.cpp's other copy, models/templates/Kimi-K2-Thinking.jinja (commit
  f519483d521b6e5fceba303bebac36e90bda0d6d), differs: it makes up "functions.NAME:IDX" ids for calls
  without one and takes results' ids from the calls in order, and its search for the last answer
  without calls lacks the `break`, so it finds the first; it is llama.cpp's, not the model's.
* smollm3 (HuggingFaceTB/SmolLM3-3B, chat_template.jinja of the main revision, as quoted in full by
  huggingface/swift-jinja's chat-template tests (`static let smollm3`) and reproduced for revision
  a07cc9a0 by a Rust port whose tests compare it with apply_chat_template): a "<|im_start|>system\\n"
  block of "## Metadata" (knowledge cutoff June 2025, today's date as strftime_now("%d %B %Y"), the
  reasoning mode "/think" unless enable_thinking is false or the system message says "/no_think")
  and "## Custom Instructions" (the system message without the mode markers, or a default persona
  per mode), closed by "<|im_end|>\\n" only with xml_tools or python_tools; ChatML user turns; tool
  results as user turns; an assistant turn is its content without leading newlines (after an empty
  think block in /no_think mode); the `tools` argument, tool calls and reasoning_content are not
  read. A pre-release version (quoted by the Berkeley function-calling leaderboard's SmolLM3
  handler) differs: "## Tools" / "### XML Tools" / "### Python Tools" sections that say "None" and a
  system turn always closed; the model repository ships the one above.

The date: both templates and transformers call strftime_now at render time, so the expected strings
hold today's date, formatted as the format writes it, when the test runs.
"""

from __future__ import annotations

import copy
import json
import re
from datetime import datetime

import pytest
from hypothesis import HealthCheck, given, settings

from conftest import Row, build_one
from expected import normalized, supervised_runs
from template_conversations import CLASSES
from test_masking_property import tool_conversations
from test_template_library_a import _family
from test_template_library_c import QWEN_PLAIN
from test_template_library_e import _example, _hf
from test_template_library_e import _spans as library_e_spans
from test_template_library_e import test_auto_picks_the_family_from_its_template_without_marks as auto_picks_the_family
from test_template_library_e import test_check_template_passes_with_the_family_tokenizer as check_template_passes
from masked_shards.build.rows import RowBuilder, check_template
from masked_shards.build.template_probes import TOOLS
from masked_shards.build.templates import ChatTemplate, Renderer, resolve_template
from masked_shards.build.tokenization import special_tokens
from masked_shards.bundled_templates import bundled, template_path
from masked_shards.config import PipelineConfig
from masked_shards.read.formats import to_example
from masked_shards.read.sources import RawRecord
from masked_shards.records import TOOL_CALL, TURN_ROLES, Example, Rejected

NAMES = ("kimi-k2", "kimi-k2-thinking", "smollm3")
KIMI = [
    "[BOS]", "[EOS]", "<|im_system|>", "<|im_user|>", "<|im_assistant|>", "<|im_middle|>", "<|media_start|>", "<|media_content|>", "<|media_pad|>", "<|media_end|>",
    "<|tool_calls_section_begin|>", "<|tool_call_begin|>", "<|tool_call_argument_begin|>", "<|tool_call_end|>", "<|tool_calls_section_end|>",
]  # fmt: skip


@pytest.fixture(scope="module")
def tokenizers(qwen2_tokenizer):
    # Kimi K2's turns end with <|im_end|> (Qwen2 has it); SmolLM3 is ChatML with <think> as plain added tokens and no BOS.
    kimi = _family(qwen2_tokenizer, KIMI, bos="[BOS]", eos="<|im_end|>")
    smollm3 = _family(qwen2_tokenizer, [], bos=None, eos="<|im_end|>", plain=QWEN_PLAIN)
    return {"kimi-k2": kimi, "kimi-k2-thinking": _family(qwen2_tokenizer, KIMI, bos="[BOS]", eos="<|im_end|>", plain=("<think>", "</think>")), "smollm3": smollm3}


@pytest.fixture(scope="module")
def builders(tokenizers):
    config = {"max_length": 100_000, "special_text": "plain"}
    return {name: RowBuilder(PipelineConfig(template=name, **config), tokenizers[name], resolve_template(name, None)) for name in NAMES}


# ---------------------------------------------------------------------------------------------
# The published formats, written out by hand.

ROME_RESULT = '{"temp_c": 21, "sky": "clear"}'
PARALLEL_ANSWER = "Oslo is at 3 °C; it is 09:30 in Tokyo."
IM_END = "<|im_end|>"

# Kimi K2: role tokens, the role name, <|im_middle|>, the content, <|im_end|>; nothing between turns.
K_SYSTEM = "<|im_system|>system<|im_middle|>"
K_DEFAULT = K_SYSTEM + "You are a helpful assistant<|im_end|>"
K_TOOLS = "<|im_system|>tool_declare<|im_middle|>" + json.dumps(TOOLS, ensure_ascii=False) + IM_END  # the list as one JSON text


def k_system(text: str) -> str:
    return K_SYSTEM + text + IM_END


def k_user(text: str) -> str:
    return f"<|im_user|>user<|im_middle|>{text}<|im_end|>"


def k_answer(text: str) -> str:
    return f"<|im_assistant|>assistant<|im_middle|>{text}<|im_end|>"


def k_result(text: str) -> str:
    return f"<|im_system|>tool<|im_middle|>{text}<|im_end|>"


# Kimi K2 Thinking: the same role tokens, the message's name as role name, a think block on every answer.
KT_DEFAULT = K_SYSTEM + "You are Kimi, an AI assistant created by Moonshot AI.<|im_end|>"


def kt_answer(text: str, calls: str = "", reasoning: str = "") -> str:
    return f"<|im_assistant|>assistant<|im_middle|><think>{reasoning}</think>{text}{calls}<|im_end|>"


def kt_calls(*calls: tuple[str, str]) -> str:
    """(id, arguments as JSON) per call, in one section."""
    listed = "".join(f"<|tool_call_begin|>{call_id}<|tool_call_argument_begin|>{arguments}<|tool_call_end|>" for call_id, arguments in calls)
    return f"<|tool_calls_section_begin|>{listed}<|tool_calls_section_end|>"


def kt_result(name: str, call_id: str, text: str) -> str:
    """A result: the tool's name as role name, "## Return of" its call's id."""
    return f"<|im_system|>{name}<|im_middle|>## Return of {call_id}\n{text}<|im_end|>"


def generated(rendered: str) -> str:
    """What follows the assistant header: what the model writes."""
    return rendered.removeprefix("<|im_assistant|>assistant<|im_middle|>")


KT_ROME = kt_calls(("call_9", '{"city": "Rome"}'))
KT_LIMA = kt_calls(("call00001", '{"zone": "America/Lima"}'))


# SmolLM3: the metadata block; the date is filled in when a test runs (module docstring).
TODAY = "\x00today\x00"
THINK_PERSONA = (
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face. Your role as an assistant involves thoroughly exploring questions through a "
    "systematic thinking process before providing the final precise and accurate solutions. This requires engaging in a comprehensive cycle of analysis, "
    "summarizing, exploration, reassessment, reflection, backtracking, and iteration to develop well-considered thinking process. Please structure your "
    "response into two main sections: Thought and Solution using the specified format: <think> Thought section </think> Solution section. In the Thought "
    "section, detail your reasoning process in steps. Each step should include detailed considerations such as analysing questions, summarizing relevant "
    "findings, brainstorming new ideas, verifying the accuracy of the current steps, refining any errors, and revisiting previous steps. In the Solution "
    "section, based on various attempts, explorations, and reflections from the Thought section, systematically present the final solution that you deem "
    "correct. The Solution section should be logical, accurate, and concise and detail necessary steps needed to reach the conclusion."
)
NO_THINK_PERSONA = "You are a helpful AI assistant named SmolLM, trained by Hugging Face."


def s_head(instructions: str = THINK_PERSONA, mode: str = "/think") -> str:
    """The system block; without xml_tools or python_tools it is never closed by <|im_end|>."""
    return (
        "<|im_start|>system\n## Metadata\n\nKnowledge Cutoff Date: June 2025\nToday Date: " + TODAY + "\nReasoning Mode: " + mode + "\n\n"
        "## Custom Instructions\n\n" + instructions + "\n\n"
    )


def s_user(text: str) -> str:
    """A user turn; a tool result is one too."""
    return f"<|im_start|>user\n{text}<|im_end|>\n"


def s_answer(text: str, think: str = "") -> str:
    return f"<|im_start|>assistant\n{think}{text}<|im_end|>\n"


def _dated(text: str) -> str:
    return text.replace(TODAY, datetime.now().strftime("%d %B %Y"))


# (family, class, case) -> (the rendering, the supervised runs per assistant turn, or None where the
# pipeline rejects the record for its tool call: kimi-k2 and smollm3 write none, kimi-k2-thinking
# writes a call by its id alone, and these ids ("call_9") do not name the function)
EXPECTED = {
    # --- Kimi K2: the default system prompt unless a system message comes first; calls not rendered, results in tool turns.
    ("kimi-k2", "plain", "single"): (K_DEFAULT + k_user("What is 2+2?") + k_answer("4"), ["4" + IM_END]),
    ("kimi-k2", "plain", "multi"): (K_DEFAULT + k_user("A") + k_answer("1") + k_user(" C\n") + k_answer(" 2 ways. "), ["1" + IM_END, " 2 ways. " + IM_END]),
    ("kimi-k2", "system", "multi"): (
        k_system("You are terse.") + k_user("Hi") + k_answer("Hello.") + k_user("Name a colour.") + k_answer("Blue."),
        ["Hello." + IM_END, "Blue." + IM_END],
    ),
    # an empty system message is still a turn, and replaces the default
    ("kimi-k2", "system", "empty"): (k_system("") + k_user("Hi") + k_answer("Hello."), ["Hello." + IM_END]),
    ("kimi-k2", "reasoning", "history"): (K_DEFAULT + k_user("What is 2+2?") + k_answer("4") + k_user("And 3+3?") + k_answer("6"), ["4" + IM_END, "6" + IM_END]),
    ("kimi-k2", "reasoning", "final"): (K_DEFAULT + k_user("What is 2+2?") + k_answer("4"), ["4" + IM_END]),
    ("kimi-k2", "reasoning", "with_call"): (K_TOOLS + K_DEFAULT + k_user("Weather in Rome?") + k_answer("") + k_result(ROME_RESULT) + k_answer("Clear, 21 °C."), None),
    ("kimi-k2", "tools", "single"): (K_TOOLS + K_DEFAULT + k_user("Weather in Paris?") + k_answer("") + k_result('{"temp_c": 18}') + k_answer("It is 18 °C in Paris."), None),
    ("kimi-k2", "tools", "call_only"): (K_TOOLS + K_DEFAULT + k_user("Time in Lima?") + k_answer(""), None),
    ("kimi-k2", "tools", "string_arguments"): (K_TOOLS + K_DEFAULT + k_user("Weather in Rome?") + k_answer("") + k_result(ROME_RESULT) + k_answer("Clear."), None),
    ("kimi-k2", "tools", "text_and_call"): (K_TOOLS + k_system("Be brief.") + k_user("Weather in Rome?") + k_answer("Let me check.") + k_result(ROME_RESULT) + k_answer("Clear."), None),
    ("kimi-k2", "parallel", "with_text"): (
        K_TOOLS + k_system("Use tools when they help.") + k_user("Weather in Oslo and the time in Tokyo?") + k_answer("Checking both.")
        + k_result('{"temp_c": 3}') + k_result('{"time": "09:30"}') + k_answer(PARALLEL_ANSWER),
        None,
    ),
    ("kimi-k2", "parallel", "call_only"): (K_TOOLS + K_DEFAULT + k_user("Time in Oslo and Lima?") + k_answer(""), None),
    # --- Kimi K2 Thinking: the reasoning of answers up to the last one without calls is dropped (an empty think block); calls by id.
    ("kimi-k2-thinking", "plain", "single"): (KT_DEFAULT + k_user("What is 2+2?") + kt_answer("4"), [generated(kt_answer("4"))]),
    ("kimi-k2-thinking", "plain", "multi"): (
        KT_DEFAULT + k_user("A") + kt_answer("1") + k_user(" C\n") + kt_answer(" 2 ways. "),
        [generated(kt_answer("1")), generated(kt_answer(" 2 ways. "))],
    ),
    ("kimi-k2-thinking", "system", "multi"): (
        k_system("You are terse.") + k_user("Hi") + kt_answer("Hello.") + k_user("Name a colour.") + kt_answer("Blue."),
        [generated(kt_answer("Hello.")), generated(kt_answer("Blue."))],
    ),
    ("kimi-k2-thinking", "system", "empty"): (k_system("") + k_user("Hi") + kt_answer("Hello."), [generated(kt_answer("Hello."))]),
    ("kimi-k2-thinking", "reasoning", "history"): (
        KT_DEFAULT + k_user("What is 2+2?") + kt_answer("4") + k_user("And 3+3?") + kt_answer("6"),
        [generated(kt_answer("4")), generated(kt_answer("6"))],
    ),
    ("kimi-k2-thinking", "reasoning", "final"): (KT_DEFAULT + k_user("What is 2+2?") + kt_answer("4"), [generated(kt_answer("4"))]),
    # the call turn comes before the last answer: its reasoning is dropped too
    ("kimi-k2-thinking", "reasoning", "with_call"): (
        K_TOOLS + KT_DEFAULT + k_user("Weather in Rome?") + kt_answer("", KT_ROME) + kt_result("get_weather", "call_9", ROME_RESULT) + kt_answer("Clear, 21 °C."),
        None,
    ),
    ("kimi-k2-thinking", "tools", "single"): (
        K_TOOLS + KT_DEFAULT + k_user("Weather in Paris?") + kt_answer("", kt_calls(("call_1", '{"city": "Paris"}')))
        + kt_result("get_weather", "call_1", '{"temp_c": 18}') + kt_answer("It is 18 °C in Paris."),
        None,
    ),
    ("kimi-k2-thinking", "tools", "call_only"): (K_TOOLS + KT_DEFAULT + k_user("Time in Lima?") + kt_answer("", KT_LIMA), None),
    # arguments given as a string are written as given
    ("kimi-k2-thinking", "tools", "string_arguments"): (
        K_TOOLS + KT_DEFAULT + k_user("Weather in Rome?") + kt_answer("", KT_ROME) + kt_result("get_weather", "call_9", ROME_RESULT) + kt_answer("Clear."),
        None,
    ),
    ("kimi-k2-thinking", "tools", "text_and_call"): (
        K_TOOLS + k_system("Be brief.") + k_user("Weather in Rome?") + kt_answer("Let me check.", KT_ROME) + kt_result("get_weather", "call_9", ROME_RESULT) + kt_answer("Clear."),
        None,
    ),
    ("kimi-k2-thinking", "parallel", "with_text"): (
        K_TOOLS + k_system("Use tools when they help.") + k_user("Weather in Oslo and the time in Tokyo?")
        + kt_answer("Checking both.", kt_calls(("call_1", '{"city": "Oslo"}'), ("call_2", '{"zone": "Asia/Tokyo", "hour24": true}')))
        + kt_result("get_weather", "call_1", '{"temp_c": 3}') + kt_result("get_time", "call_2", '{"time": "09:30"}') + kt_answer(PARALLEL_ANSWER),
        None,
    ),
    ("kimi-k2-thinking", "parallel", "call_only"): (
        K_TOOLS + KT_DEFAULT + k_user("Time in Oslo and Lima?") + kt_answer("", kt_calls(("a", '{"zone": "Europe/Oslo"}'), ("b", '{"zone": "America/Lima"}'))),
        None,
    ),
    # --- SmolLM3 (thinking mode, the default): the system message is the custom instructions; tools not listed, calls not rendered.
    ("smollm3", "plain", "single"): (s_head() + s_user("What is 2+2?") + s_answer("4"), ["4" + IM_END]),
    ("smollm3", "plain", "multi"): (s_head() + s_user("A") + s_answer("1") + s_user(" C\n") + s_answer(" 2 ways. "), ["1" + IM_END, " 2 ways. " + IM_END]),
    ("smollm3", "system", "multi"): (
        s_head("You are terse.") + s_user("Hi") + s_answer("Hello.") + s_user("Name a colour.") + s_answer("Blue."),
        ["Hello." + IM_END, "Blue." + IM_END],
    ),
    # an empty system message leaves the default persona
    ("smollm3", "system", "empty"): (s_head() + s_user("Hi") + s_answer("Hello."), ["Hello." + IM_END]),
    ("smollm3", "reasoning", "history"): (s_head() + s_user("What is 2+2?") + s_answer("4") + s_user("And 3+3?") + s_answer("6"), ["4" + IM_END, "6" + IM_END]),
    ("smollm3", "reasoning", "final"): (s_head() + s_user("What is 2+2?") + s_answer("4"), ["4" + IM_END]),
    ("smollm3", "reasoning", "with_call"): (s_head() + s_user("Weather in Rome?") + s_answer("") + s_user(ROME_RESULT) + s_answer("Clear, 21 °C."), None),
    ("smollm3", "tools", "single"): (s_head() + s_user("Weather in Paris?") + s_answer("") + s_user('{"temp_c": 18}') + s_answer("It is 18 °C in Paris."), None),
    ("smollm3", "tools", "call_only"): (s_head() + s_user("Time in Lima?") + s_answer(""), None),
    ("smollm3", "tools", "string_arguments"): (s_head() + s_user("Weather in Rome?") + s_answer("") + s_user(ROME_RESULT) + s_answer("Clear."), None),
    ("smollm3", "tools", "text_and_call"): (s_head("Be brief.") + s_user("Weather in Rome?") + s_answer("Let me check.") + s_user(ROME_RESULT) + s_answer("Clear."), None),
    ("smollm3", "parallel", "with_text"): (
        s_head("Use tools when they help.") + s_user("Weather in Oslo and the time in Tokyo?") + s_answer("Checking both.")
        + s_user('{"temp_c": 3}') + s_user('{"time": "09:30"}') + s_answer(PARALLEL_ANSWER),
        None,
    ),
    ("smollm3", "parallel", "call_only"): (s_head() + s_user("Time in Oslo and Lima?") + s_answer(""), None),
}

PROMPTS = {
    "kimi-k2": K_DEFAULT + k_user("What is 2+2?") + "<|im_assistant|>assistant<|im_middle|>",
    "kimi-k2-thinking": KT_DEFAULT + k_user("What is 2+2?") + "<|im_assistant|>assistant<|im_middle|>",
    "smollm3": s_head() + s_user("What is 2+2?") + "<|im_start|>assistant\n",
}


def _spans(tokenizer, name: str, messages: list[dict], tools) -> list[str]:
    """Library E's spans (inside the generation marks, per assistant turn), read without
    reasoning: neither family renders it (its text is checked with it), and the renderer refuses
    a final turn's reasoning that is not shown."""
    return library_e_spans(tokenizer, name, [{k: v for k, v in m.items() if k != "reasoning_content"} for m in messages], tools)


@pytest.mark.parametrize("name", NAMES)
def test_each_template_is_bundled_with_a_one_line_description(name):
    first = template_path(name).read_text(encoding="utf-8").splitlines()[0]
    assert re.fullmatch(r"\{#- " + re.escape(name) + r": .+ \(bos \S+, eos \S+\) -#\}", first), first
    assert bundled()[name] and resolve_template(name, None).has_generation_marks


@pytest.mark.parametrize("name,cls,case", sorted(EXPECTED))
def test_renders_the_published_format_and_trains_what_the_model_generates(tokenizers, name, cls, case):
    messages, tools = CLASSES[cls][case]
    tokenizer = tokenizers[name]
    text, runs = EXPECTED[(name, cls, case)]
    assert _hf(tokenizer, name, messages, tools, tokenize=False) == _dated(text)
    if runs is not None:
        assert _spans(tokenizer, name, messages, tools) == runs


@pytest.mark.parametrize("name", NAMES)
def test_generation_prompt_is_the_published_one(tokenizers, name):
    prompt = _hf(tokenizers[name], name, [{"role": "user", "content": "What is 2+2?"}], None, tokenize=False, add_generation_prompt=True)
    assert prompt == _dated(PROMPTS[name])


# ---------------------------------------------------------------------------------------------
# What each family writes beyond the common classes, and what it cannot express.


def test_kimi_writes_content_parts_and_an_image_placeholder(tokenizers):
    messages = [{"role": "user", "content": [{"type": "text", "text": "What is "}, {"type": "image"}, {"type": "text", "text": "?"}]}, {"role": "assistant", "content": "A cat."}]
    expected = K_DEFAULT + k_user("What is <|media_start|>image<|media_content|><|media_pad|><|media_end|>?") + k_answer("A cat.")
    assert _hf(tokenizers["kimi-k2"], "kimi-k2", messages, None, tokenize=False) == expected


SMOL_CHAT = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "\n\nHello"}]


def test_smollm3_without_thinking_writes_an_empty_think_block_the_model_does_not_generate(tokenizers):
    """enable_thinking false: the /no_think persona, an empty think block in each assistant turn and
    in the generation prompt; leading newlines of an answer are dropped."""
    tokenizer = tokenizers["smollm3"]
    head = s_head(NO_THINK_PERSONA, "/no_think")
    empty = "<think>\n\n</think>\n"
    assert _hf(tokenizer, "smollm3", SMOL_CHAT, None, tokenize=False, enable_thinking=False) == _dated(head + s_user("Hi") + s_answer("Hello", empty))
    prompt = _hf(tokenizer, "smollm3", SMOL_CHAT[:1], None, tokenize=False, enable_thinking=False, add_generation_prompt=True)
    assert prompt == _dated(head + s_user("Hi") + "<|im_start|>assistant\n" + empty)


@pytest.mark.parametrize(
    "system,head",
    [
        ("Be brief. /no_think  ", lambda: s_head("Be brief.", "/no_think")),  # the marker sets the mode and leaves the instructions
        ("/think Be brief.", lambda: s_head(" Be brief.", "/think")),
        ("Only this. /system_override /no_think", lambda: "<|im_start|>system\nOnly this.<|im_end|>\n"),  # no metadata, the turn closed
    ],
)
def test_smollm3_reads_the_mode_and_override_from_the_system_message(tokenizers, system, head):
    messages = [{"role": "system", "content": system}, *SMOL_CHAT]
    think = "" if "/think" in system else "<think>\n\n</think>\n"
    assert _hf(tokenizers["smollm3"], "smollm3", messages, None, tokenize=False) == _dated(head() + s_user("Hi") + s_answer("Hello", think))


def test_smollm3_lists_xml_and_python_tools_as_python_values_and_closes_the_system_turn(tokenizers):
    """xml_tools and python_tools (the template's own arguments; `tools` is not read) are written
    each as the Python text of its value, and only then is the system turn closed."""
    tool = {"name": "f", "parameters": {"x": True}}
    text = _hf(tokenizers["smollm3"], "smollm3", SMOL_CHAT, [tool], tokenize=False, xml_tools=[tool], python_tools=["def g(): ..."])
    tools = (
        "### Tools\n\nYou may call one or more functions to assist with the user query.\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n\n<tools>\n{'name': 'f', 'parameters': {'x': True}}\n</tools>\n\n"
        "For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n"
        '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
        "When you send a message containing Python code between '<code>' and '</code>' tags, it will be executed in a stateful Jupyter notebook "
        "environment, and you will then be given the output to continued reasoning in an agentic loop.\n\n"
        "You can use the following tools in your python code like regular functions:\n<tools>\ndef g(): ...\n</tools>\n\n"
        "The state persists between code executions: so variables that you define in one step are still available thereafter.\n\n<|im_end|>\n"
    )
    assert text == _dated(s_head() + tools + s_user("Hi") + s_answer("Hello"))


def test_smollm3_rows_train_no_empty_think_block(builders, tokenizers):
    """A system message with /no_think renders an empty think block before each answer; it is the
    prompt's (the generation prompt holds it), so only the answer and <|im_end|> are trained."""
    row = build_one(builders["smollm3"], _example({"messages": [{"role": "system", "content": "Be brief. /no_think"}, *SMOL_CHAT]}))
    assert isinstance(row, Row), row
    tokenizer = tokenizers["smollm3"]
    runs = [tokenizer.decode(run, skip_special_tokens=False) for run in supervised_runs(row.input_ids, row.labels)]
    assert runs == ["Hello<|im_end|>"]
    assert "<think>\n\n</think>\n" in tokenizer.decode(row.input_ids, skip_special_tokens=False)


@pytest.mark.parametrize("name,cls,case", sorted(key for key, (_, runs) in EXPECTED.items() if runs is None))
def test_a_tool_call_the_format_cannot_write_rejects_the_record(builders, name, cls, case):
    """kimi-k2 and smollm3 write no calls; kimi-k2-thinking writes none of these calls' names."""
    messages, tools = CLASSES[cls][case]
    result = build_one(builders[name], _example({"messages": messages, "tools": tools}))
    assert isinstance(result, Rejected) and result.reason == "template_dropped_tool_calls", result


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("case", ["history", "final"])
def test_reasoning_the_family_never_renders_rejects_the_record(builders, name, case):
    messages, _ = CLASSES["reasoning"][case]
    result = build_one(builders[name], _example({"messages": messages}))
    assert isinstance(result, Rejected) and result.reason == "template_dropped_reasoning", result


# ---------------------------------------------------------------------------------------------
# 1. Agreement with Hugging Face on the rows the pipeline writes.

# Rows of every hand-written conversation the pipeline writes: none with a tool call, none with reasoning.
TRAINED = sorted(key for key, (_, runs) in EXPECTED.items() if runs is not None and key[1] != "reasoning")


def _agrees_with_hugging_face(tokenizer, builder, name: str, messages: list[dict], tools, runs: list[str]) -> None:
    """The same ids and supervised tokens as transformers gives for the record's own messages; every
    span edge of these formats falls between two tokens of the one encoding, so nothing is split."""
    row = build_one(builder, _example({"messages": messages, **({"tools": tools} if tools else {})}))
    assert isinstance(row, Row) and not row.split_at_boundaries, row
    hf = _hf(tokenizer, name, messages, tools, return_dict=True, return_assistant_tokens_mask=True)
    assert (row.input_ids, [int(label != -100) for label in row.labels]) == (list(hf["input_ids"]), list(hf["assistant_masks"]))
    assert [tokenizer.decode(run, skip_special_tokens=False) for run in supervised_runs(row.input_ids, row.labels)] == [normalized(tokenizer, run) for run in runs]


@pytest.mark.parametrize("name,cls,case", TRAINED)
def test_rows_agree_with_hugging_face(tokenizers, builders, name, cls, case):
    messages, tools = CLASSES[cls][case]
    _agrees_with_hugging_face(tokenizers[name], builders[name], name, messages, tools, EXPECTED[(name, cls, case)][1])


def _kimi_ids(messages: list[dict]) -> list[dict]:
    """The conversation with Kimi's call ids, "functions.NAME:IDX" counted across it, in calls and results."""
    messages = copy.deepcopy(messages)
    calls = [call for message in messages for call in message.get("tool_calls") or []]
    ids = {call["id"]: f"functions.{call['function']['name']}:{n}" for n, call in enumerate(calls)}
    for message in messages:
        for call in message.get("tool_calls") or []:
            call["id"] = ids[call["id"]]
        if message["role"] == "tool":
            message["tool_call_id"] = ids[message["tool_call_id"]]
    return messages


WEATHER_0 = ("functions.get_weather:0", '{"city": "Rome"}')
# Kimi K2 Thinking with Kimi's ids: the calls are trained, by id; what the model writes after each header.
KIMI_CALLS = {
    ("tools", "single"): [generated(kt_answer("", kt_calls(("functions.get_weather:0", '{"city": "Paris"}')))), generated(kt_answer("It is 18 °C in Paris."))],
    ("tools", "call_only"): [generated(kt_answer("", kt_calls(("functions.get_time:0", '{"zone": "America/Lima"}'))))],
    ("tools", "text_and_call"): [generated(kt_answer("Let me check.", kt_calls(WEATHER_0))), generated(kt_answer("Clear."))],
    ("tools", "two_rounds"): [
        generated(kt_answer("", kt_calls(WEATHER_0))),
        generated(kt_answer("Clear.")),
        generated(kt_answer("", kt_calls(("functions.get_time:1", '{"zone": "Europe/Rome"}')))),
        generated(kt_answer("14:05.")),
    ],
    ("parallel", "with_text"): [
        generated(kt_answer("Checking both.", kt_calls(("functions.get_weather:0", '{"city": "Oslo"}'), ("functions.get_time:1", '{"zone": "Asia/Tokyo", "hour24": true}')))),
        generated(kt_answer(PARALLEL_ANSWER)),
    ],
    ("parallel", "call_only"): [generated(kt_answer("", kt_calls(("functions.get_time:0", '{"zone": "Europe/Oslo"}'), ("functions.get_time:1", '{"zone": "America/Lima"}'))))],
    # ending on the call: after the last answer without calls (there is none), so its reasoning is shown and trained
    ("reasoning", "with_call"): [generated(kt_answer("", kt_calls(WEATHER_0), "I should look it up."))],
}


@pytest.mark.parametrize("cls,case", sorted(KIMI_CALLS))
def test_kimi_thinking_trains_calls_whose_ids_name_the_function(tokenizers, builders, cls, case):
    messages, tools = CLASSES[cls][case]
    messages = _kimi_ids(messages[:2] if cls == "reasoning" else messages)
    _agrees_with_hugging_face(tokenizers["kimi-k2-thinking"], builders["kimi-k2-thinking"], "kimi-k2-thinking", messages, tools, KIMI_CALLS[(cls, case)])


# ---------------------------------------------------------------------------------------------
# 2. The masking property over generated tool conversations (test_masking_property.py's records:
# system, users, rounds of parallel calls, results, answers, sometimes ending on a call, sometimes
# with no call at all). What each family's model generates, written from its format:

def _kimi_thinking_generated(turns) -> list[str]:
    """"<think>" + the reasoning, written only after the last answer without calls, + "</think>",
    the content, the calls by id with their arguments as JSON, <|im_end|>."""
    last = max((n for n, t in enumerate(turns) if t.role == "assistant" and not t.tool_calls), default=-1)
    calls = lambda turn: kt_calls(*[(c["id"], json.dumps(c["function"]["arguments"], ensure_ascii=False)) for c in turn.tool_calls]) if turn.tool_calls else ""
    return [generated(kt_answer(t.content, calls(t), t.reasoning if n > last and t.reasoning else "")) for n, t in enumerate(turns) if t.role == "assistant"]


GENERATED = {
    "kimi-k2": lambda turns: [t.content + IM_END for t in turns if t.role == "assistant"],  # the content as given
    "kimi-k2-thinking": _kimi_thinking_generated,
    "smollm3": lambda turns: [t.content.lstrip("\n") + IM_END for t in turns if t.role == "assistant"],  # thinking mode: no leading newlines
}


def _rejected_for(name: str, turns) -> str | None:
    """kimi-k2 and smollm3 write no calls; kimi-k2-thinking never shows the last answer's reasoning."""
    if name != "kimi-k2-thinking":
        return "template_dropped_tool_calls" if any(t.tool_calls for t in turns) else None
    final = [t for t in turns if t.role == "assistant"][-1]
    return "template_dropped_reasoning" if not final.tool_calls and (final.reasoning or "").strip() else None


def _named_apart(record: dict) -> dict:
    """The record with each call given Kimi's id, "functions.NAME:IDX", counted across the
    conversation."""
    record = copy.deepcopy(record)
    for number, call in enumerate(c for m in record["messages"] for c in m.get("tool_calls", [])):
        call["id"] = f"functions.{call['function']['name']}:{number}"
    return record


@pytest.mark.parametrize("name", NAMES)
def test_supervised_tokens_decode_to_what_the_assistant_generates(tokenizers, builders, name):
    tokenizer, builder = tokenizers[name], builders[name]

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(tool_conversations(reasoning=name == "kimi-k2-thinking"))
    def check(record: dict) -> None:
        example = _example(_named_apart(record))
        result = build_one(builder, example)
        if reason := _rejected_for(name, example.turns):
            assert isinstance(result, Rejected) and result.reason == reason, result
            return
        assert isinstance(result, Row), result
        runs = [tokenizer.decode(run, skip_special_tokens=False, clean_up_tokenization_spaces=False) for run in supervised_runs(result.input_ids, result.labels)]
        assert runs == [normalized(tokenizer, text) for text in GENERATED[name](example.turns)]
        roles = [TURN_ROLES[r] for r in result.turn_roles]
        assert all(eot == 2 for role, eot in zip(roles, result.turn_eot) if role in ("assistant", TOOL_CALL))  # every stop token trained

    check()


@pytest.mark.parametrize("name", ["kimi-k2", "smollm3"])
def test_a_call_named_like_part_of_the_stop_token_is_not_taken_for_written(builders, name):
    """A call named "d" with no arguments, which neither format writes, is not "found" in the
    turn's "<|im_end|>": the record is rejected, not trained without its call."""
    call = {"type": "function", "function": {"name": "d", "arguments": {}}}
    record = {"tools": [{"type": "function", "function": {"name": "d", "parameters": {"type": "object"}}}], "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "", "tool_calls": [call]}]}
    result = build_one(builders[name], _example(record))
    assert isinstance(result, Rejected) and result.reason == "template_dropped_tool_calls", result


# ---------------------------------------------------------------------------------------------
# 3. Start-up check, 4. --template auto.


@pytest.mark.parametrize("name", NAMES)
def test_check_template_passes_with_the_family_tokenizer(tokenizers, name):
    check_template_passes(tokenizers, name)


@pytest.mark.parametrize("name", NAMES)
def test_auto_picks_the_family_from_its_template_without_marks(tokenizers, name):
    """As in library E: our template with its generation marks stripped (no original is installed)."""
    auto_picks_the_family(tokenizers, name)


def test_short_reasoning_the_template_leaves_out_hides_no_call(tokenizers, builders):
    """Hypothesis found it: reasoning "a" on a calling message that Kimi K2 Thinking does not render
    (an answer follows), and a call named "a". Cutting the reasoning out of the span before the
    calls are looked for cut the "a" of `functions.a:0` and rejected the record; reasoning the
    template leaves out is now not cut."""
    record = {
        "tools": [{"type": "function", "function": {"name": "a", "parameters": {"type": "object"}}}],
        "messages": [
            {"role": "user", "content": "Q"},
            {"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": {"name": "a", "arguments": "{}"}}], "reasoning_content": "a"},
            {"role": "tool", "content": "r"},
            {"role": "assistant", "content": "é"},
        ],
    }
    example = _example(_named_apart(record))
    row = build_one(builders["kimi-k2-thinking"], example)
    assert isinstance(row, Row), row
    tokenizer = tokenizers["kimi-k2-thinking"]
    runs = [tokenizer.decode(run, skip_special_tokens=False, clean_up_tokenization_spaces=False) for run in supervised_runs(row.input_ids, row.labels)]
    assert runs == [normalized(tokenizer, text) for text in GENERATED["kimi-k2-thinking"](example.turns)]

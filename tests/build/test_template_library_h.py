"""Template library H: DeepSeek-R1 (through `deepseek-v3`) and DeepSeek-R1-0528 (`deepseek-r1-0528`).

No installed package ships R1-0528's template. trl ships R1's own, as `deepseekv3.jinja`: it is
byte for byte the chat template of deepseek-ai/DeepSeek-R1 since 2025-02-09, whose generation
prompt opens "<think>\\n" (a non-reasoning V3 template would not), and `deepseek-v3` reproduces it
(test_template_library_c.py). So, as in library E, each is checked against strings written out by
hand from its published format, never produced by running our templates, per class (plain,
multi-turn with a system message, reasoning, tool calls: single, text beside a call, two rounds,
parallel, a final turn that is only a call; tool results); then:

1. our rows have the ids and supervised tokens of transformers' `apply_chat_template(...,
   return_assistant_tokens_mask=True)` with the template as the tokenizer's chat template;
2. the masking property over generated tool conversations: each answer and each calling
   message is trained exactly as the format writes it, its results and the markup around masked;
3. `check_template` passes with the family tokenizer (Qwen2's 151k vocabulary plus DeepSeek's
   special tokens, as in test_template_library_c.py);
4. `--template auto` picks `deepseek-r1-0528` from our template with its generation marks
   stripped, and `deepseek-v3` from R1's first revision (trl's copy with that revision's prompt).

The formats, from these sources. Before the expected strings were written, the templates were
compared with the published copies, in a scratch folder outside the repository, under
`apply_chat_template` on every conversation of template_conversations.py and the auto probes, each
also with its call arguments given as JSON strings, with and without the generation prompt:
`deepseek-r1-0528` against R1-0528's, 58 renderings identical and 36 refused by both (arguments
as objects, a calling message without content), 0 different (plain 6, system 10, reasoning 8,
tools 22, parallel 12 identical), and on 13 edge conversations (`</think>` inside answers and
calls, a conversation ending on a user message or on results, two answers in a row, an empty or
null `tool_calls`, system messages between turns, three rounds of parallel calls), 26 of 26
identical; `deepseek-v3` against R1's (2025-02-09), 58 identical, 36 refused by both, 0 different,
and 24 of the 26 edge renderings (an empty `tool_calls` list: R1 writes the end of a calls block
after nothing, ours nothing).

* DeepSeek-R1 (deepseek-ai/DeepSeek-R1, tokenizer_config.json; its first revision of 2025-01-20
  as llama.cpp prints it when loading the DeepSeek-R1 GGUF, the later one as mirrored at commit
  94cb583c of 2025-02-09 and as trl ships it): BOS, every system message's text joined by
  "\\n\\n"; "<｜User｜>" + text per user message; an answer is "<｜Assistant｜>" + the text after its
  last </think> + "<｜end▁of▁sentence｜>"; the first message with calls in the conversation writes
  "<｜Assistant｜>" + its text + "<｜tool▁calls▁begin｜>", later ones only "\\n", each call
  "<｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\\n```json\\nARGUMENTS\\n```<｜tool▁call▁end｜>" (calls
  of one message joined by "\\n") and "<｜tool▁calls▁end｜><｜end▁of▁sentence｜>" after them; only
  the conversation's first result opens "<｜tool▁outputs▁begin｜>", each is "<｜tool▁output▁begin｜>"
  + RESULT + "<｜tool▁output▁end｜>" with nothing between; the answer after results is
  "<｜tool▁outputs▁end｜>" + text (not cut at </think>) + "<｜end▁of▁sentence｜>". The generation
  prompt is "<｜Assistant｜><think>\\n" (the first revision's was "<｜Assistant｜>"; its renderings
  are otherwise the same). The R1 distills ship another template (`deepseek-r1-distill`: the last
  system message only, calls only for a null content); the two agree on plain chats with at most
  one system message, not on tools (22 of 94 renderings identical, 12 refused by both, 60 not).
* DeepSeek-R1-0528 (deepseek-ai/DeepSeek-R1-0528, tokenizer_config.json, the template
  DeepSeek-R1-0528-Qwen3-8B ships too; checked against two copies quoted by other projects, each
  changed in one place, that agree on the rest; vLLM's and SGLang's
  tool_chat_template_deepseekr1.jinja are adapted from it): the system messages as R1; a user
  message is "<｜User｜>" + text + "<｜Assistant｜>"; an assistant message's text is the part after
  its last </think>, calls or not; an answer is that text + "<｜end▁of▁sentence｜>"; every message
  with calls writes its text + "<｜tool▁calls▁begin｜>" + its calls (as R1's, joined by "\\n") +
  "<｜tool▁calls▁end｜><｜end▁of▁sentence｜>"; the results of each calling message open
  "<｜tool▁outputs▁begin｜>" and are joined by "\\n"; whatever follows results (an answer or more
  calls) starts "<｜tool▁outputs▁end｜>", which also ends a conversation that stops on results; the
  generation prompt is "<｜Assistant｜>", written only after an assistant message (after a user
  message it is already there, after results nothing is).

Both write ARGUMENTS as given: a JSON string (DeepSeek's API shape) renders, an object makes the
template fail, as does a calling message without content. The pipeline reads arguments as objects
(formats.py); a template that fails on them and renders them as a string is found at start and
given each call's arguments as `json.dumps` writes them (templates.Renderer), so through
`masked-shards run` the calls render and train as `apply_chat_template` renders those strings.
Neither renders `reasoning_content`.
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
from test_masking_property import tool_conversations
from test_template_library_a import _family
from test_template_library_c import DEEPSEEK, ORIGINALS
from test_template_library_e import _example, _hf
from test_template_library_e import test_auto_picks_the_family_from_its_template_without_marks as auto_picks_the_family
from test_template_library_e import test_check_template_passes_with_the_family_tokenizer as check_template_passes
from test_template_library_g import _agrees_with_hugging_face, _spans
from masked_shards.build.rows import RowBuilder
from masked_shards.build.templates import renders_tools_and_reasoning, resolve_template
from masked_shards.bundled_templates import bundled, template_path
from masked_shards.config import PipelineConfig
from masked_shards.records import TOOL_CALL, TURN_ROLES, Rejected

R1, R1_0528 = "deepseek-v3", "deepseek-r1-0528"
NAMES = (R1, R1_0528)


@pytest.fixture(scope="module")
def tokenizers(qwen2_tokenizer):
    deepseek = _family(qwen2_tokenizer, DEEPSEEK, bos="<｜begin▁of▁sentence｜>", eos="<｜end▁of▁sentence｜>")
    return {name: deepseek for name in NAMES}


@pytest.fixture(scope="module")
def builders(tokenizers):
    config = {"max_length": 100_000, "special_text": "plain"}
    return {name: RowBuilder(PipelineConfig(template=name, **config), tokenizers[name], resolve_template(name, None)) for name in NAMES}


def _with_string_arguments(messages: list[dict]) -> list[dict]:
    """The conversation with every call's arguments as JSON text, the shape these formats write."""
    messages = copy.deepcopy(messages)
    for message in messages:
        for call in message.get("tool_calls") or []:
            if not isinstance(call["function"]["arguments"], str):
                call["function"]["arguments"] = json.dumps(call["function"]["arguments"], ensure_ascii=False)
    return messages


# ---------------------------------------------------------------------------------------------
# The published formats, written out by hand.

BOS, EOS = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"
ASSISTANT = "<｜Assistant｜>"
OUTPUTS_END = "<｜tool▁outputs▁end｜>"
ROME = '{"temp_c": 21, "sky": "clear"}'
PARALLEL_ANSWER = "Oslo is at 3 °C; it is 09:30 in Tokyo."


def user(text: str) -> str:
    return "<｜User｜>" + text


def call(name: str, arguments: str) -> str:
    return f"<｜tool▁call▁begin｜>function<｜tool▁sep｜>{name}\n```json\n{arguments}\n```<｜tool▁call▁end｜>"


def calls(text: str, *written: str) -> str:
    """A calling message as generated: its text, the calls a line apart, their end and the end of sentence."""
    return text + "<｜tool▁calls▁begin｜>" + "\n".join(written) + "<｜tool▁calls▁end｜>" + EOS


def output(result: str) -> str:
    return f"<｜tool▁output▁begin｜>{result}<｜tool▁output▁end｜>"


def results(*given: str, between: str) -> str:
    """One block of results: R1 runs them together (between=""), R1-0528 puts "\\n" between."""
    return "<｜tool▁outputs▁begin｜>" + between.join(map(output, given))


ROME_CALL = call("get_weather", '{"city": "Rome"}')
LIMA_CALL = call("get_time", '{"zone": "America/Lima"}')
OSLO_TIME, LIMA_TIME = call("get_time", '{"zone": "Europe/Oslo"}'), call("get_time", '{"zone": "America/Lima"}')
OSLO_WEATHER = call("get_weather", '{"city": "Oslo"}')
TOKYO_TIME = call("get_time", '{"zone": "Asia/Tokyo", "hour24": true}')
FLIGHTS = call("search_flights", '{"origin": "OSL", "airlines": ["SK"], "flexible": true}')
TIME_THERE = call("get_time", '{"zone": "Europe/Rome"}')

# Conversations on which R1 and R1-0528 render alike: every user turn is followed by an assistant
# turn, one round of calls with one result at most. R1's "<｜Assistant｜>" opens the answer, R1-0528's
# closes the user turn: the same text.
SHARED = {
    ("plain", "single"): (BOS + user("What is 2+2?") + ASSISTANT + "4" + EOS, ["4" + EOS]),
    ("plain", "multi"): (BOS + user("A") + ASSISTANT + "1" + EOS + user(" C\n") + ASSISTANT + " 2 ways. " + EOS, ["1" + EOS, " 2 ways. " + EOS]),
    ("system", "multi"): (
        BOS + "You are terse." + user("Hi") + ASSISTANT + "Hello." + EOS + user("Name a colour.") + ASSISTANT + "Blue." + EOS,
        ["Hello." + EOS, "Blue." + EOS],
    ),
    ("system", "empty"): (BOS + user("Hi") + ASSISTANT + "Hello." + EOS, ["Hello." + EOS]),
    ("system", "single"): (BOS + "Be brief." + user("Hi") + ASSISTANT + "Hello!" + EOS, ["Hello!" + EOS]),
    # reasoning_content is not rendered
    ("reasoning", "history"): (BOS + user("What is 2+2?") + ASSISTANT + "4" + EOS + user("And 3+3?") + ASSISTANT + "6" + EOS, ["4" + EOS, "6" + EOS]),
    ("reasoning", "final"): (BOS + user("What is 2+2?") + ASSISTANT + "4" + EOS, ["4" + EOS]),
    ("reasoning", "with_call"): (
        BOS + user("Weather in Rome?") + ASSISTANT + calls("", ROME_CALL) + results(ROME, between="") + OUTPUTS_END + "Clear, 21 °C." + EOS,
        [calls("", ROME_CALL), "Clear, 21 °C." + EOS],
    ),
    ("tools", "single"): (
        BOS + user("Weather in Paris?") + ASSISTANT + calls("", call("get_weather", '{"city": "Paris"}')) + results('{"temp_c": 18}', between="")
        + OUTPUTS_END + "It is 18 °C in Paris." + EOS,
        [calls("", call("get_weather", '{"city": "Paris"}')), "It is 18 °C in Paris." + EOS],
    ),
    ("tools", "call_only"): (BOS + user("Time in Lima?") + ASSISTANT + calls("", LIMA_CALL), [calls("", LIMA_CALL)]),
    ("tools", "string_arguments"): (
        BOS + user("Weather in Rome?") + ASSISTANT + calls("", ROME_CALL) + results(ROME, between="") + OUTPUTS_END + "Clear." + EOS,
        [calls("", ROME_CALL), "Clear." + EOS],
    ),
    ("tools", "text_and_call"): (
        BOS + "Be brief." + user("Weather in Rome?") + ASSISTANT + calls("Let me check.", ROME_CALL) + results(ROME, between="") + OUTPUTS_END + "Clear." + EOS,
        [calls("Let me check.", ROME_CALL), "Clear." + EOS],
    ),
    # the tools themselves are not written
    ("tools", "rich_schema"): (
        BOS + user("Flights from OSL?") + ASSISTANT + calls("", FLIGHTS) + results('[{"price": 120}]', between="") + OUTPUTS_END + "One at 120." + EOS,
        [calls("", FLIGHTS), "One at 120." + EOS],
    ),
}


def _parallel(between: str, pieces: bool) -> dict:
    """Parallel calls; `pieces`: bundled as R1's template writes them, each call on its own (a generation
    block each, adjacent, so one run of tokens), R1-0528's as one block."""

    def split(text: str, first: str, second: str) -> list[str]:
        if not pieces:
            return [calls(text, first, second)]
        return [text + "<｜tool▁calls▁begin｜>" + first, "\n" + second + "<｜tool▁calls▁end｜>" + EOS]

    return {
        ("parallel", "with_text"): (
            BOS + "Use tools when they help." + user("Weather in Oslo and the time in Tokyo?") + ASSISTANT + calls("Checking both.", OSLO_WEATHER, TOKYO_TIME)
            + results('{"temp_c": 3}', '{"time": "09:30"}', between=between) + OUTPUTS_END + PARALLEL_ANSWER + EOS,
            [*split("Checking both.", OSLO_WEATHER, TOKYO_TIME), PARALLEL_ANSWER + EOS],
        ),
        ("parallel", "no_text"): (
            BOS + user("Weather in Oslo and Rome?") + ASSISTANT + calls("", OSLO_WEATHER, ROME_CALL)
            + results('{"temp_c": 3}', '{"temp_c": 21}', between=between) + OUTPUTS_END + "Oslo 3 °C, Rome 21 °C." + EOS,
            [*split("", OSLO_WEATHER, ROME_CALL), "Oslo 3 °C, Rome 21 °C." + EOS],
        ),
        ("parallel", "call_only"): (BOS + user("Time in Oslo and Lima?") + ASSISTANT + calls("", OSLO_TIME, LIMA_TIME), split("", OSLO_TIME, LIMA_TIME)),
    }


# (family, class, case) -> (the rendering with string arguments, the supervised runs per assistant turn)
EXPECTED = {
    **{(name, *key): value for name in NAMES for key, value in SHARED.items()},
    **{(R1, *key): value for key, value in _parallel(between="", pieces=True).items()},
    **{(R1_0528, *key): value for key, value in _parallel(between="\n", pieces=False).items()},
    # R1: the second round's calls follow the user's text after "\n" alone, and its result joins the first block.
    (R1, "tools", "two_rounds"): (
        BOS + user("Weather in Rome?") + ASSISTANT + calls("", ROME_CALL) + results(ROME, between="") + OUTPUTS_END + "Clear." + EOS
        + user("And the time there?") + "\n" + TIME_THERE + "<｜tool▁calls▁end｜>" + EOS + output('{"time": "14:05"}') + OUTPUTS_END + "14:05." + EOS,
        [calls("", ROME_CALL), "Clear." + EOS, "\n" + TIME_THERE + "<｜tool▁calls▁end｜>" + EOS, "14:05." + EOS],
    ),
    # R1-0528: every round its own calls block and results block.
    (R1_0528, "tools", "two_rounds"): (
        BOS + user("Weather in Rome?") + ASSISTANT + calls("", ROME_CALL) + results(ROME, between="\n") + OUTPUTS_END + "Clear." + EOS
        + user("And the time there?") + ASSISTANT + calls("", TIME_THERE) + results('{"time": "14:05"}', between="\n") + OUTPUTS_END + "14:05." + EOS,
        [calls("", ROME_CALL), "Clear." + EOS, calls("", TIME_THERE), "14:05." + EOS],
    ),
}

# Conversations beyond the shared classes, where R1-0528's layout shows (name, R1-0528's rendering, its runs).
CALL = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
LOOKUP = {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "{}"}}
EDGES = [
    # the text after the last </think> of every assistant message, calls or not
    (
        "think_cut_everywhere",
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": "<think>look</think>ok", "tool_calls": [CALL]}, {"role": "tool", "content": "r"}, {"role": "assistant", "content": "<think>\nsure\n</think>\n\nfine"}],
        BOS + user("q") + ASSISTANT + calls("ok", call("f", '{"a": 1}')) + results("r", between="\n") + OUTPUTS_END + "\n\nfine" + EOS,
        [calls("ok", call("f", '{"a": 1}')), "\n\nfine" + EOS],
    ),
    # calls right after results: "<｜tool▁outputs▁end｜>" first, then a new calls block and a new results block
    (
        "calls_after_results",
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": "", "tool_calls": [CALL]}, {"role": "tool", "content": "r1"}, {"role": "assistant", "content": "more", "tool_calls": [LOOKUP]}, {"role": "tool", "content": "r2"}],
        BOS + user("q") + ASSISTANT + calls("", call("f", '{"a": 1}')) + results("r1", between="\n") + OUTPUTS_END + calls("more", call("g", "{}")) + results("r2", between="\n") + OUTPUTS_END,
        [calls("", call("f", '{"a": 1}')), calls("more", call("g", "{}"))],
    ),
    # an answer right after another: nothing between; a system message anywhere joins the first text
    (
        "two_answers_late_system",
        [{"role": "system", "content": "A"}, {"role": "user", "content": "q"}, {"role": "system", "content": "B"}, {"role": "assistant", "content": "x"}, {"role": "assistant", "content": "y"}],
        BOS + "A\n\nB" + user("q") + ASSISTANT + "x" + EOS + "y" + EOS,
        ["x" + EOS, "y" + EOS],
    ),
    # a conversation ending on a user message still closes it with the assistant header
    ("ends_on_user", [{"role": "user", "content": "q"}, {"role": "assistant", "content": "x"}, {"role": "user", "content": "again"}], BOS + user("q") + ASSISTANT + "x" + EOS + user("again") + ASSISTANT, ["x" + EOS]),
]


@pytest.mark.parametrize("name", NAMES)
def test_each_template_is_bundled_with_a_one_line_description(name):
    first = template_path(name).read_text(encoding="utf-8").splitlines()[0]
    assert re.fullmatch(r"\{#- " + re.escape(name) + r": .+ \(bos <｜begin▁of▁sentence｜>, eos <｜end▁of▁sentence｜>\) -#\}", first), first
    assert "DeepSeek-R1" in bundled()[name] and resolve_template(name, None).has_generation_marks


@pytest.mark.parametrize("name,cls,case", sorted(EXPECTED))
def test_renders_the_published_format_and_trains_what_the_model_generates(tokenizers, name, cls, case):
    messages, tools = CLASSES[cls][case]
    messages = _with_string_arguments(messages)
    text, runs = EXPECTED[(name, cls, case)]
    assert _hf(tokenizers[name], name, messages, tools, tokenize=False) == text
    assert _spans(tokenizers[name], name, messages, tools) == runs


@pytest.mark.parametrize("case,messages,text,runs", EDGES, ids=[edge[0] for edge in EDGES])
def test_r1_0528_layout_beyond_the_shared_classes(tokenizers, case, messages, text, runs):
    assert _hf(tokenizers[R1_0528], R1_0528, messages, None, tokenize=False) == text
    assert _spans(tokenizers[R1_0528], R1_0528, messages, None) == runs


PROMPT_AFTER_USER = BOS + user("What is 2+2?")


@pytest.mark.parametrize(
    "name,messages,expected",
    [
        (R1, CLASSES["plain"]["single"][0][:1], PROMPT_AFTER_USER + ASSISTANT + "<think>\n"),
        (R1_0528, CLASSES["plain"]["single"][0][:1], PROMPT_AFTER_USER + ASSISTANT),  # already there: nothing added
        (R1_0528, CLASSES["plain"]["single"][0], PROMPT_AFTER_USER + ASSISTANT + "4" + EOS + ASSISTANT),
        (R1_0528, CLASSES["tools"]["call_only"][0] + [{"role": "tool", "content": "r"}], BOS + user("Time in Lima?") + ASSISTANT + calls("", LIMA_CALL) + results("r", between="\n") + OUTPUTS_END),
    ],
    ids=["r1", "r1_0528_after_user", "r1_0528_after_answer", "r1_0528_after_results"],
)
def test_generation_prompt_is_the_published_one(tokenizers, name, messages, expected):
    prompt = _hf(tokenizers[name], name, _with_string_arguments(messages), None, tokenize=False, add_generation_prompt=True)
    assert prompt == expected


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("cls,case", [("tools", "single"), ("tools", "null_content"), ("parallel", "string_arguments")])
def test_what_the_original_cannot_write_is_refused(tokenizers, name, cls, case):
    """Arguments as an object, and a calling message without content (transformers leaves a null
    content out), make the published templates fail; so do ours."""
    messages, tools = CLASSES[cls][case]
    with pytest.raises(Exception):
        _hf(tokenizers[name], name, messages, tools, tokenize=False)


# ---------------------------------------------------------------------------------------------
# 1. Agreement with Hugging Face on the rows the pipeline writes: the conversations without calls.

# R1's later calls follow the user's text after "\n" alone, which Qwen2's vocabulary joins to the
# text before it ("?\n" is one token): that row is cut there (its own test below).
SPLIT = (R1, "tools", "two_rounds")


@pytest.mark.parametrize("name,cls,case", sorted(set(EXPECTED) - {SPLIT}))
def test_rows_agree_with_hugging_face(tokenizers, builders, name, cls, case):
    """Calls included: the reader makes their arguments objects, the renderer gives them to these
    templates as JSON strings again, and the rows are those of the string arguments through
    `apply_chat_template` (reasoning left out: neither template renders it)."""
    messages, tools = CLASSES[cls][case]
    messages = _with_string_arguments([{k: v for k, v in m.items() if k != "reasoning_content"} for m in messages])
    runs = EXPECTED[(name, cls, case)][1]
    if (name, cls) == (R1, "parallel"):  # R1's two call blocks are adjacent: one run of tokens
        runs = [runs[0] + runs[1], *runs[2:]]
    _agrees_with_hugging_face(tokenizers[name], builders[name], name, messages, tools, runs)


def test_r1_later_calls_are_cut_from_the_users_text_they_follow(tokenizers, builders):
    """The generated "\\n" that opens R1's second round of calls is tokenized apart from the user's
    "?" (split_at_boundaries), so the model is trained to write it, and the runs are the format's."""
    messages, tools = CLASSES["tools"]["two_rounds"]
    row = build_one(builders[R1], _example({"messages": _with_string_arguments(messages), "tools": tools}))
    assert isinstance(row, Row) and row.split_at_boundaries, row
    text, runs = EXPECTED[SPLIT]
    tokenizer = tokenizers[R1]
    assert tokenizer.decode(row.input_ids, skip_special_tokens=False) == normalized(tokenizer, text)
    assert [tokenizer.decode(run, skip_special_tokens=False) for run in supervised_runs(row.input_ids, row.labels)] == [normalized(tokenizer, run) for run in runs]


@pytest.mark.parametrize("name", NAMES)
def test_calls_given_as_objects_train_as_their_json_strings(tokenizers, builders, name):
    """A record whose arguments are objects (most datasets hold them so) trains the calls the
    hand-written way, the arguments as `json.dumps` writes them, though the published template
    itself fails on an object."""
    messages, tools = CLASSES["parallel"]["with_text"]
    assert not isinstance(messages[2]["tool_calls"][0]["function"]["arguments"], str)
    row = build_one(builders[name], _example({"messages": messages, "tools": tools}))
    assert isinstance(row, Row), row
    runs = EXPECTED[(name, "parallel", "with_text")][1]
    decoded = [tokenizers[name].decode(run, skip_special_tokens=False) for run in supervised_runs(row.input_ids, row.labels)]
    assert "".join(decoded) == normalized(tokenizers[name], "".join(runs))
    assert row.turn_calls == [0, 0, 2, 0, 0, 0]


# ---------------------------------------------------------------------------------------------
# 2. The masking property over generated tool conversations (test_masking_property.py's records:
# system, users, rounds of parallel calls, results, answers, sometimes no call at all).


@pytest.mark.parametrize("name", NAMES)
def test_supervised_tokens_decode_to_what_the_assistant_generates(tokenizers, builders, name):
    tokenizer, builder = tokenizers[name], builders[name]

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(tool_conversations(reasoning=False))
    def check(record: dict) -> None:
        example = _example(record)
        result = build_one(builder, example)
        calling = [t for t in example.turns if t.tool_calls]
        if name == R1 and any(t.content.strip() for t in calling[1:]):  # R1 writes only the first calling message's text
            assert isinstance(result, Rejected) and result.reason == "template_dropped_text", result
            return
        assert isinstance(result, Row), result
        runs = [tokenizer.decode(run, skip_special_tokens=False, clean_up_tokenization_spaces=False) for run in supervised_runs(result.input_ids, result.labels)]
        # Adjacent pieces (R1's parallel calls, a block each) decode as one run: the text is compared whole.
        assert "".join(runs) == normalized(tokenizer, "".join(_generated(name, example.turns)))
        roles = [TURN_ROLES[r] for r in result.turn_roles]
        assert roles == [TOOL_CALL if t.tool_calls else t.role for t in example.turns]
        assert result.turn_calls == [len(t.tool_calls) for t in example.turns]
        assert all(s == 0 for role, s in zip(roles, result.turn_supervised) if role in ("system", "user", "tool"))
        assert all(eot == 2 for role, eot in zip(roles, result.turn_eot) if role in ("assistant", TOOL_CALL))  # every end of sentence trained

    check()


def _generated(name: str, turns) -> list[str]:
    """What each assistant turn generates, written from the published formats (module docstring):
    an answer is its text and the end of sentence; a calling message is `calls(text, ...)`, its
    arguments as `json.dumps` writes them, except that R1 writes the text and the calls block's
    opening only for the conversation's first calling message, and "\\n" before every later call
    (a later calling message with text is refused, so only empty ones get here)."""
    generated, first = [], True
    for turn in turns:
        if turn.role != "assistant":
            continue
        if not turn.tool_calls:
            generated.append(turn.content + EOS)
            continue
        written = [call(c["function"]["name"], json.dumps(c["function"]["arguments"], ensure_ascii=False)) for c in turn.tool_calls]
        if name == R1 and not first:
            generated.append("".join("\n" + w for w in written) + "<｜tool▁calls▁end｜>" + EOS)
        else:
            generated.append(calls(turn.content, *written))
        first = False
    return generated


# ---------------------------------------------------------------------------------------------
# 3. Start-up check, 4. --template auto.


def test_check_template_passes_with_the_family_tokenizer(tokenizers):
    check_template_passes(tokenizers, R1_0528)


def test_auto_picks_r1_0528_from_its_template_without_marks(tokenizers):
    auto_picks_the_family(tokenizers, R1_0528)


def test_auto_picks_deepseek_v3_for_r1_in_either_revision(tokenizers):
    """R1's template as trl ships it (2025-02-09), and its first revision, which differs only in the
    generation prompt ("<｜Assistant｜>"): the results of parallel calls, run together, tell it from
    R1-0528 (whose prompt it shares)."""
    tokenizer = tokenizers[R1]
    current = (ORIGINALS / "deepseekv3.jinja").read_text(encoding="utf-8")
    first = current.replace("{{'<｜Assistant｜><think>\\n'}}", "{{'<｜Assistant｜>'}}")
    assert first != current
    for original in (current, first):
        assert resolve_template("auto", original, tokenizer.bos_token, tokenizer.eos_token).name == R1


def test_auto_tells_a_template_that_joins_system_messages_from_the_distills(tokenizers):
    """The distills' template keeps the last system message; one that joins them all (as
    DeepSeek-V3's own of December 2024 does, no installed copy) renders every other probe alike,
    so only the `two_systems` probe keeps `auto` from training it as `deepseek-r1-distill`."""
    tokenizer = tokenizers[R1]
    distill = (ORIGINALS / "deepseek_r1_distill.jinja").read_text(encoding="utf-8")
    joined = distill.replace("{% set ns.system_prompt = message['content'] %}", "{% set ns.system_prompt = ns.system_prompt + message['content'] %}")
    assert joined != distill
    assert resolve_template("auto", distill, tokenizer.bos_token, tokenizer.eos_token).name == "deepseek-r1-distill"
    assert resolve_template("auto", joined, tokenizer.bos_token, tokenizer.eos_token).name == "tokenizer"


def test_auto_does_not_cut_inline_reasoning_for_a_template_that_keeps_it(tokenizers):
    """DeepSeek-V3-0324's template is R1-0528's without the cut at </think> (no installed copy):
    built here from ours, marks stripped, it renders every probe but `inline_reasoning` alike, and
    gets its own template, which keeps "<think>...</think>" in an answer as written."""
    tokenizer = tokenizers[R1_0528]
    own = re.sub(r"\{%-?\s*(end)?generation\s*-?%\}", "", resolve_template(R1_0528, None).source)
    cut = "{%- if '</think>' in text -%}{%- set text = text.split('</think>')[-1] -%}{%- endif -%}"
    assert cut in own
    assert resolve_template("auto", own, tokenizer.bos_token, tokenizer.eos_token).name == R1_0528
    assert resolve_template("auto", own.replace(cut, ""), tokenizer.bos_token, tokenizer.eos_token).name == "tokenizer"


@pytest.mark.parametrize("name", NAMES)
def test_listed_as_writing_tools_and_no_reasoning(name):
    """`masked-shards templates` says these write tool calls, though only with arguments as a JSON string."""
    variables = {"bos_token": BOS, "eos_token": EOS}
    assert renders_tools_and_reasoning(resolve_template(name, None).source, variables) == (True, False)

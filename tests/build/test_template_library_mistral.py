"""Template library: the Mistral families, against Mistral's own reference encoder.

Mistral publishes its chat format as code: `mistral-common` encodes a `ChatCompletionRequest` to
token ids, per tokenizer version, from the tokenizer files it ships. Each bundled Mistral template
is checked against it:

1. for plain, system, multi-turn, tool and parallel-call conversations (template_conversations.py,
   with call ids made 9 letters or digits, as Mistral's format requires), our rendering is the
   text of the reference's tokens, and on Tekken, tokenized by a Hugging Face tokenizer of the
   same vocabulary, its token ids too. What the reference refuses, ours refuses;
2. a property over generated tool conversations: the row's input_ids are the reference's ids,
   and each run of supervised tokens is exactly the reference's encoding of one assistant message
   (its text or calls and `</s>`), the tokens the model generates. On SentencePiece the texts of
   those tokens are compared: transformers' conversion splits some runs of spaces its own way
   ("▁" + "▁C" where sentencepiece writes "▁▁" + "C"), a tokenizer difference, not the template's;
3. roles and ids the format cannot express are refused, and the pipeline rejects the record (the
   reference itself is more lenient on a few: test_where_the_reference_is_more_lenient);
4. `--template auto` picks each template from the chat template mistral-common generates for that
   tokenizer version (the one transformers attaches when it converts a tekken.json).

Reference tokenizers: mistral-common's `mistral_instruct_tokenizer_240323.model.v3` (v3 on
SentencePiece: Mistral-7B-Instruct-v0.3), `tekken_240718.json` (v3 on Tekken: Mistral-Nemo), and
that Tekken vocabulary read as version v7 (what Mistral-Small-2501's tekken.json declares), and
read as version v11 (Mistral-Small-3.2-2506's) with the two control tokens v11 adds, [ARGS] and
[CALL_ID], listed after the 20 the older file implies (a v11 file must list its special tokens).
Messages go to mistral-common through its own OpenAI-shape reader (`from_openai`).
"""

from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path

import mistral_common
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mistral_common.integrations.chat_templates.chat_templates import convert_tokenizer_to_chat_template
from mistral_common.protocol.instruct.messages import AssistantMessage
from mistral_common.protocol.instruct.request import ChatCompletionRequest
from mistral_common.protocol.instruct.validator import ValidationMode
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer
from mistral_common.tokens.tokenizers.tekken import Tekkenizer
from transformers import AutoTokenizer
from transformers.integrations.mistral.tokenizer import convert_tekken_tokenizer

from conftest import Row, build_one
from expected import supervised_runs
from template_conversations import CLASSES
from masked_shards.config import PipelineConfig
from masked_shards.records import Example, Rejected
from masked_shards.read.formats import to_example
from masked_shards.read.sources import RawRecord
from masked_shards.build.rows import RowBuilder, check_template
from masked_shards.build.templates import renders_tools_and_reasoning, resolve_template
from masked_shards.bundled_templates import bundled, family_tokens, template_path

DATA = Path(mistral_common.__file__).parent / "data"
NAMES = ("mistral-v3", "mistral-nemo", "mistral-v7-tekken", "mistral-v11")
# The Tekken formats that write text beside calls.
TEXT_BESIDE_CALLS = {"mistral-v7-tekken", "mistral-v11"}
SENTENCEPIECE = {"mistral-v3"}


# ---------------------------------------------------------------------------------------------
# Reference encoders and Hugging Face tokenizers of the same vocabularies.


@pytest.fixture(scope="module")
def tokenizer_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("mistral")
    tekken = json.loads((DATA / "tekken_240718.json").read_text(encoding="utf-8"))
    tekken["config"]["version"] = "v7"
    (folder / "tekken_v7.json").write_text(json.dumps(tekken), encoding="utf-8")
    tekken["config"]["version"] = "v11"
    implied = [{"rank": token["rank"], "token_str": str(token["token_str"]), "is_control": True} for token in Tekkenizer.DEPRECATED_SPECIAL_TOKENS]
    tekken["special_tokens"] = [*implied, {"rank": len(implied), "token_str": "[ARGS]", "is_control": True}, {"rank": len(implied) + 1, "token_str": "[CALL_ID]", "is_control": True}]
    (folder / "tekken_v11.json").write_text(json.dumps(tekken), encoding="utf-8")
    return {
        "mistral-v3": DATA / "mistral_instruct_tokenizer_240323.model.v3",
        "mistral-nemo": DATA / "tekken_240718.json",
        "mistral-v7-tekken": folder / "tekken_v7.json",
        "mistral-v11": folder / "tekken_v11.json",
    }


@pytest.fixture(scope="module")
def references(tokenizer_files) -> dict[str, MistralTokenizer]:
    """Finetuning mode: a conversation ends with the assistant's answer."""
    return {name: MistralTokenizer.from_file(path, mode=ValidationMode.finetuning) for name, path in tokenizer_files.items()}


@pytest.fixture(scope="module")
def generated_templates(tokenizer_files) -> dict[str, str]:
    """The chat template mistral-common generates for each tokenizer file; for v11 the one for a model
    that does not reason (Mistral-Small-3.2), see test_auto_keeps_the_v11_template_that_guesses_reasoning."""
    return {name: convert_tokenizer_to_chat_template(path, **({"plain_thinking_support": False} if name == "mistral-v11" else {})) for name, path in tokenizer_files.items()}


@pytest.fixture(scope="module")
def hf_tokenizers(tokenizer_files, generated_templates, tmp_path_factory):
    """SentencePiece: transformers' Llama conversion of the .model file (as Mistral-7B-Instruct-v0.3
    ships it). Tekken: transformers' Mistral conversion of the tekken.json (about 15 s each; the
    v7 tokenizer shares Nemo's, the v11 file adds two special tokens). Each carries mistral-common's
    generated chat template."""
    folder = tmp_path_factory.mktemp("spm")
    shutil.copy(tokenizer_files["mistral-v3"], folder / "tokenizer.model")
    config = {"tokenizer_class": "LlamaTokenizer", "legacy": False, "add_bos_token": False, "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    sentencepiece = AutoTokenizer.from_pretrained(folder)
    sentencepiece.chat_template = generated_templates["mistral-v3"]
    tekken = convert_tekken_tokenizer(str(tokenizer_files["mistral-nemo"]), chat_template=generated_templates["mistral-nemo"])
    tekken_v7 = copy.deepcopy(tekken)
    tekken_v7.chat_template = generated_templates["mistral-v7-tekken"]
    tekken_v11 = convert_tekken_tokenizer(str(tokenizer_files["mistral-v11"]), chat_template=generated_templates["mistral-v11"])
    return {"mistral-v3": sentencepiece, "mistral-nemo": tekken, "mistral-v7-tekken": tekken_v7, "mistral-v11": tekken_v11}


def _text(tokenizer, name: str, ids: list[int]) -> str:
    """The exact text of token ids. SentencePiece pieces are joined with "▁" read as a space and
    byte pieces as their bytes (decode() would drop the word-start space after each control
    token); Tekken is byte-level, and decode keeps every byte."""
    if name not in SENTENCEPIECE:
        return tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    pieces = tokenizer.convert_ids_to_tokens(ids)
    raw = b"".join(bytes([int(byte.group(1), 16)]) if (byte := re.fullmatch(r"<0x([0-9A-F]{2})>", piece)) else piece.replace("▁", " ").encode("utf-8") for piece in pieces)
    return raw.decode("utf-8")


def _reference(reference: MistralTokenizer, messages: list[dict], tools: list[dict] | None):
    return reference.encode_chat_completion(ChatCompletionRequest.from_openai(copy.deepcopy(messages), copy.deepcopy(tools)))


def _render(tokenizer, name: str, messages: list[dict], tools: list[dict] | None) -> str:
    return tokenizer.apply_chat_template(copy.deepcopy(messages), tools=tools, chat_template=resolve_template(name, None).source, tokenize=False)


def test_each_template_is_bundled_with_its_header():
    library = bundled()
    for name in NAMES:
        first = template_path(name).read_text(encoding="utf-8").splitlines()[0]
        assert re.fullmatch(r"\{#- " + re.escape(name) + r": .+ -#\}", first), first
        assert library[name] and not library[name].startswith(name)
        assert family_tokens(first) == ("<s>", "</s>")


def test_hugging_face_tokenizers_share_the_reference_vocabularies(references, hf_tokenizers):
    for name in NAMES:
        reference, tokenizer = references[name].instruct_tokenizer.tokenizer, hf_tokenizers[name]
        for control in ("<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]", "[TOOL_CALLS]", "[TOOL_RESULTS]", "[/TOOL_RESULTS]"):
            assert tokenizer.convert_tokens_to_ids(control) == reference.get_special_token(control)
    for name in TEXT_BESIDE_CALLS:
        assert hf_tokenizers[name].convert_tokens_to_ids("[SYSTEM_PROMPT]") == references[name].instruct_tokenizer.tokenizer.get_special_token("[SYSTEM_PROMPT]")
    for control in ("[CALL_ID]", "[ARGS]", "[TOOL_CONTENT]"):
        assert hf_tokenizers["mistral-v11"].convert_tokens_to_ids(control) == references["mistral-v11"].instruct_tokenizer.tokenizer.get_special_token(control)


# ---------------------------------------------------------------------------------------------
# 1. The conversations, by class, against the reference.


def _nine(call_id: str) -> str:
    """Mistral's call ids are 9 letters or digits."""
    return "".join(c for c in call_id if c.isalnum()).rjust(9, "0")[-9:]


def _with_mistral_ids(conversation: tuple[list[dict], list[dict] | None]) -> tuple[list[dict], list[dict] | None]:
    messages, tools = copy.deepcopy(conversation)
    for message in messages:
        for call in message.get("tool_calls") or []:
            call["id"] = _nine(call["id"])
        if "tool_call_id" in message:
            message["tool_call_id"] = _nine(message["tool_call_id"])
    return messages, tools


WEATHER = CLASSES["tools"]["single"][1]
ROME = {"id": "rome00001", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Rome"}}}
ASK_ROME = {"role": "user", "content": "Weather in Rome?"}


def _result(content: str) -> dict:
    return {"role": "tool", "content": content, "tool_call_id": "rome00001", "name": "get_weather"}


MULTI_TURN = [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "  two spaces, a tab\tand\nlines\n"},
    {"role": "assistant", "content": "\nAnswer with a trailing space and newline \n"},
    {"role": "user", "content": "Ünïcödé 你好 🙂"},
    {"role": "assistant", "content": "Ça va ✓   "},
]
CONVERSATIONS: dict[str, dict[str, tuple[list[dict], list[dict] | None]]] = {
    "plain": {**CLASSES["plain"], "spaces": ([{"role": "user", "content": " What?  "}, {"role": "assistant", "content": "  Yes.  "}], None)},
    "system": {
        **CLASSES["system"],
        "long": ([{"role": "system", "content": "Line one.\n\nLine two."}, *MULTI_TURN], None),
        # Several system messages before an answer: joined into the last user turn (v3), a block each where it stands (v7, v11).
        "two": ([{"role": "system", "content": "Be terse."}, {"role": "system", "content": "Answer in French."}, *MULTI_TURN[:2]], None),
        "after_user": ([{"role": "system", "content": "Be terse."}, MULTI_TURN[0], {"role": "system", "content": "Answer in French."}, MULTI_TURN[1]], None),
        "empty_then_one": ([{"role": "system", "content": ""}, {"role": "system", "content": "Answer in French."}, *MULTI_TURN], None),
        "before_a_later_answer": ([*MULTI_TURN[:3], {"role": "system", "content": "Answer in French."}, MULTI_TURN[3]], None),
    },
    "multi-turn": {
        "three_rounds": (MULTI_TURN, None),
        "tools_then_chat": ([{"role": "system", "content": "Be brief."}, ASK_ROME, {"role": "assistant", "content": "", "tool_calls": [ROME]}, _result("sunny"), {"role": "assistant", "content": "Sunny."}, *MULTI_TURN], [WEATHER[0]]),
    },
    "tools": {
        **{case: _with_mistral_ids(conversation) for case, conversation in CLASSES["tools"].items()},
        # How a result is written: JSON as JSON, anything else as a JSON string.
        **{
            f"result_{kind}": ([ASK_ROME, {"role": "assistant", "content": None, "tool_calls": [ROME]}, _result(content), {"role": "assistant", "content": "Noted."}], WEATHER)
            for kind, content in {"text": "sunny, 21 °C", "integer": "21", "float": "21.5", "spaced": " 21\n", "list": '["a", 1]', "true": "true", "quoted": '"clear"', "empty": ""}.items()
        },
    },
    "parallel": {case: _with_mistral_ids(conversation) for case, conversation in CLASSES["parallel"].items()},
}
CASES = [(cls, case) for cls, cases in CONVERSATIONS.items() for case in cases]

@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("cls,case", CASES)
def test_renders_what_mistral_common_encodes(references, hf_tokenizers, name, cls, case):
    messages, tools = CONVERSATIONS[cls][case]
    tokenizer = hf_tokenizers[name]
    try:
        expected = _reference(references[name], messages, tools)
    except Exception:  # the reference refuses this conversation: so must ours
        with pytest.raises(Exception):
            _render(tokenizer, name, messages, tools)
        return
    rendered = _render(tokenizer, name, messages, tools)
    assert rendered == _text(tokenizer, name, expected.tokens)
    if name not in SENTENCEPIECE:
        assert tokenizer(rendered, add_special_tokens=False)["input_ids"] == expected.tokens


def test_every_class_is_compared_not_only_refused(references):
    """The calls' 9-character ids make the tool classes renderable: each template renders most
    conversations of each class (the v3 formats refuse text beside a call)."""
    for name in NAMES:
        for cls, cases in CONVERSATIONS.items():
            rendered = 0
            for messages, tools in cases.values():
                try:
                    _reference(references[name], messages, tools)
                    rendered += 1
                except Exception:
                    pass
            assert rendered >= len(cases) - 2, (name, cls, rendered)


# ---------------------------------------------------------------------------------------------
# 2. Property: rows are the reference's ids, and what is supervised is what the model generates.

_words = st.sampled_from(["Hello", " world", "é", "你好", "🙂", "0", "'s", " ", "  ", "\n", "\t", "{", "}", ":", '"', ",", "x"])
text = st.lists(_words, max_size=12).map("".join)
answer = text.filter(lambda s: s.strip() != "")
names = st.from_regex(r"[a-z][a-z_]{0,10}", fullmatch=True)
# No null values: the reader reads a null in an object as an absent key (the Parquet convention).
values = st.booleans() | st.integers(-1000, 1000) | text
# Results: JSON in the layout the reference writes (json.dumps, ensure_ascii=False), numbers, or
# text that does not start like JSON (a template cannot tell "{not json" from JSON, and cannot
# re-serialise JSON as the reference does: see the templates' notes).
results = st.dictionaries(names, values, max_size=3).map(lambda d: json.dumps(d, ensure_ascii=False)) | st.integers(-99, 99).map(str) | text.filter(lambda s: s.strip(" \t\n\r")[:1] not in ("{", "[", '"'))
ids = st.from_regex(r"[A-Za-z0-9]{9}", fullmatch=True)


@st.composite
def tool_conversations(draw, text_beside_calls: bool) -> dict:
    """A record in the OpenAI / Hugging Face shape: an optional system message, rounds of a user
    turn, (parallel) calls with their results and an answer; the last round may end on a call."""
    tools = [{"type": "function", "function": {"name": n, "description": draw(text), "parameters": {"type": "object"}}} for n in draw(st.lists(names, min_size=1, max_size=3, unique=True))]
    messages = [{"role": "system", "content": draw(text)}] if draw(st.booleans()) else []
    rounds = draw(st.integers(1, 3))
    for round_ in range(rounds):
        messages.append({"role": "user", "content": draw(text)})
        if draw(st.booleans()):
            # Ids unique within a turn: the reference refuses a repeated one.
            calls = [
                {"id": call_id, "type": "function", "function": {"name": draw(st.sampled_from(tools))["function"]["name"], "arguments": draw(st.dictionaries(names, values, max_size=3))}}
                for call_id in draw(st.lists(ids, min_size=1, max_size=3, unique=True))
            ]
            messages.append({"role": "assistant", "content": draw(answer) if text_beside_calls and draw(st.booleans()) else None, "tool_calls": calls})
            if round_ == rounds - 1 and draw(st.booleans()):
                break  # ends on the call
            messages += [{"role": "tool", "content": draw(results), "tool_call_id": call["id"]} for call in calls]
        messages.append({"role": "assistant", "content": draw(answer)})
    return {"tools": tools, "messages": messages}


@pytest.fixture(scope="module")
def builders(hf_tokenizers):
    return {name: RowBuilder(PipelineConfig(template=name, max_length=100_000), hf_tokenizers[name], resolve_template(name, None)) for name in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_rows_are_the_reference_ids_and_supervise_what_the_model_generates(references, hf_tokenizers, builders, name):
    reference, tokenizer = references[name], hf_tokenizers[name]
    assistant_encoding = reference.instruct_tokenizer.encode_assistant_message

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(tool_conversations(text_beside_calls=name in TEXT_BESIDE_CALLS))
    def check(record: dict) -> None:
        expected = _reference(reference, record["messages"], record["tools"])
        example = to_example(RawRecord("generated", 0, record, "generated"))
        assert isinstance(example, Example), example
        row = build_one(builders[name], example)
        assert isinstance(row, Row), row
        request = ChatCompletionRequest.from_openai(copy.deepcopy(record["messages"]), copy.deepcopy(record["tools"]))
        generated = [assistant_encoding(message, is_before_last_user_message=False) for message in request.messages if isinstance(message, AssistantMessage)]
        runs = supervised_runs(row.input_ids, row.labels)
        if name in SENTENCEPIECE:  # the same text (see _text; the conversion splits some space runs its own way)
            assert _text(tokenizer, name, row.input_ids) == _text(tokenizer, name, expected.tokens)
            assert [_text(tokenizer, name, run) for run in runs] == [_text(tokenizer, name, run) for run in generated]
        else:
            assert row.input_ids == expected.tokens
            assert runs == generated

    check()


# ---------------------------------------------------------------------------------------------
# 3. What the format cannot express: raise_exception, then a rejected record.

SYSTEM_USER = [{"role": "system", "content": "S"}, {"role": "user", "content": "A"}]
UNSUPPORTED = {
    "assistant first": ([{"role": "assistant", "content": "1"}, {"role": "user", "content": "A"}, {"role": "assistant", "content": "2"}], "must start with a user message"),
    "two users": ([{"role": "user", "content": "A"}, {"role": "user", "content": "B"}, {"role": "assistant", "content": "1"}], "roles must alternate"),
    "two assistants": ([{"role": "user", "content": "A"}, {"role": "assistant", "content": "1"}, {"role": "assistant", "content": "2"}], "roles must alternate"),
    "late system": ([*SYSTEM_USER, {"role": "assistant", "content": "1"}, {"role": "system", "content": "T"}, {"role": "user", "content": "B"}, {"role": "assistant", "content": "2"}], "cannot follow an assistant or tool message"),
    "short call id": ([ASK_ROME, {"role": "assistant", "content": "", "tool_calls": [{**ROME, "id": "call_1"}]}], "9 letters or digits"),
    "result without id": ([ASK_ROME, {"role": "assistant", "content": "", "tool_calls": [ROME]}, {"role": "tool", "content": "x"}, {"role": "assistant", "content": "ok"}], "tool_call_id"),
    "result without call": ([ASK_ROME, {"role": "assistant", "content": "Hm."}, _result("x"), {"role": "assistant", "content": "ok"}], "roles must alternate"),
}
# v3 (SentencePiece and Tekken) cannot write text beside calls; v7 and v11 can.
V3_ONLY = {"text beside calls": ([ASK_ROME, {"role": "assistant", "content": "Let me check.", "tool_calls": [ROME]}, _result("x"), {"role": "assistant", "content": "ok"}], "both content and tool calls")}
# The reference refuses a repeated id among one turn's calls; of ours, v11 does too.
V11_ONLY = {"repeated call id": ([ASK_ROME, {"role": "assistant", "content": "", "tool_calls": [ROME, ROME]}, _result("x"), _result("y"), {"role": "assistant", "content": "ok"}], "must not repeat")}
REFUSALS = [(name, case) for name in NAMES for case in UNSUPPORTED] + [(name, case) for name in ("mistral-v3", "mistral-nemo") for case in V3_ONLY] + [("mistral-v11", case) for case in V11_ONLY]


@pytest.mark.parametrize("name,case", REFUSALS)
def test_what_the_format_cannot_express_is_rejected(hf_tokenizers, builders, name, case):
    messages, message = {**UNSUPPORTED, **V3_ONLY, **V11_ONLY}[case]
    with pytest.raises(Exception, match=re.escape(message)):
        _render(hf_tokenizers[name], name, messages, WEATHER)
    example = to_example(RawRecord("bad.jsonl", 7, {"messages": messages, "tools": WEATHER}, "bad.jsonl"))
    assert isinstance(example, Example), example
    result = build_one(builders[name], example)
    assert isinstance(result, Rejected)
    assert (result.source, result.index, result.reason) == ("bad.jsonl", 7, "template_error")
    assert message in result.detail


def test_the_reference_refuses_a_repeated_call_id(references):
    with pytest.raises(Exception, match="Duplicate tool call id"):
        _reference(references["mistral-v11"], V11_ONLY["repeated call id"][0], WEATHER)


def test_where_the_reference_is_more_lenient(references):
    """The reference encodes these; ours refuse them, as Mistral's published chat templates do: it
    joins two user or two assistant turns with "\n\n", and writes a first assistant turn after an
    empty "[INST][/INST]" (v3) or with no user turn at all (v7)."""
    for name in NAMES:
        for case in ("assistant first", "two users", "two assistants"):
            _reference(references[name], *UNSUPPORTED[case][:1], None)


def test_v7_writes_text_before_its_calls(hf_tokenizers, references):
    messages, _ = V3_ONLY["text beside calls"]
    rendered = _render(hf_tokenizers["mistral-v7-tekken"], "mistral-v7-tekken", messages, WEATHER)
    assert 'Let me check.[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Rome"}, "id": "rome00001"}]</s>' in rendered
    assert rendered == _text(hf_tokenizers["mistral-v7-tekken"], "mistral-v7-tekken", _reference(references["mistral-v7-tekken"], messages, WEATHER).tokens)


def test_v11_writes_each_call_as_name_id_and_arguments(hf_tokenizers, references):
    """No JSON list: each call is its own [TOOL_CALLS] block, name then [CALL_ID] then [ARGS]."""
    messages, _ = V3_ONLY["text beside calls"]
    messages = copy.deepcopy(messages)
    messages[1]["tool_calls"].append({**ROME, "id": "paris0002", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}})
    messages[2:3] = [_result("x"), {**_result("y"), "tool_call_id": "paris0002"}]
    rendered = _render(hf_tokenizers["mistral-v11"], "mistral-v11", messages, WEATHER)
    calls = 'Let me check.[TOOL_CALLS]get_weather[CALL_ID]rome00001[ARGS]{"city": "Rome"}[TOOL_CALLS]get_weather[CALL_ID]paris0002[ARGS]{"city": "Paris"}</s>'
    assert calls + "[TOOL_RESULTS]rome00001[TOOL_CONTENT]x[/TOOL_RESULTS][TOOL_RESULTS]paris0002[TOOL_CONTENT]y[/TOOL_RESULTS]ok</s>" in rendered
    assert rendered == _text(hf_tokenizers["mistral-v11"], "mistral-v11", _reference(references["mistral-v11"], messages, WEATHER).tokens)


# ---------------------------------------------------------------------------------------------
# 4. --template auto, and the start-up check.


@pytest.mark.parametrize("name", NAMES)
def test_auto_picks_each_template_from_mistral_commons_generated_one(hf_tokenizers, name):
    tokenizer = hf_tokenizers[name]
    chosen = resolve_template("auto", tokenizer.chat_template, tokenizer.bos_token, tokenizer.eos_token)
    assert chosen.name == name
    assert chosen.source == resolve_template(name, None).source


def test_auto_keeps_the_v11_template_that_guesses_reasoning(tokenizer_files, hf_tokenizers):
    """By default mistral-common guesses that a v11 model reasons in plain <think> tags (Magistral
    does, Mistral-Small-3.2 does not: the tekken.json cannot tell) and writes `reasoning_content`;
    mistral-v11 does not (the v11 reference encoder refuses reasoning), so auto keeps that template."""
    guessed = convert_tokenizer_to_chat_template(tokenizer_files["mistral-v11"])
    tokenizer = hf_tokenizers["mistral-v11"]
    assert "<think>" in guessed
    chosen = resolve_template("auto", guessed, tokenizer.bos_token, tokenizer.eos_token)
    assert (chosen.name, chosen.source) == ("tokenizer", guessed)


def test_listed_as_writing_tools_and_no_reasoning():
    """`masked-shards templates` reads this from the call_only probe, whose id is a Mistral one."""
    for name in NAMES:
        assert renders_tools_and_reasoning(resolve_template(name, None).source, {"bos_token": "<s>", "eos_token": "</s>"}) == (True, False)


@pytest.mark.parametrize("name", NAMES)
def test_check_template_passes_with_the_family_tokenizer(hf_tokenizers, name):
    assert check_template(resolve_template(name, None), hf_tokenizers[name], name) is None


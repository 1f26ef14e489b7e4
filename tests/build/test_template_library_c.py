"""Template library C: the tool-calling and reasoning families, against the originals.

Each bundled template here must render, byte for byte, what its family's original chat template
renders under `apply_chat_template(messages, tools=...)`, for plain, system, reasoning, tool and
parallel-call conversations (template_conversations.py), and must refuse what the original
refuses. The originals are the ones the `trl` wheel ships (`trl/chat_templates/*.jinja`), read
from the installed package, never copied here. Checked as well:

1. the supervised tokens (transformers' own `return_assistant_tokens_mask` over our generation
   marks) are exactly what the model generates: for each assistant turn one run, written out here
   by hand from the published formats for the tool and reasoning cases;
2. `--template auto` picks each family from its original, carried as a family tokenizer's chat
   template, and falls back to the tokenizer's own template for one it does not know.

Family tokenizers are Qwen2's 151k vocabulary with the family's special tokens and BOS/EOS.
"""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import pytest
import trl

from expected import supervised_runs
from template_conversations import CLASSES
from test_template_library_a import _family
from masked_shards.build.rows import check_template
from masked_shards.build.templates import TOKENIZER_TEMPLATE, ChatTemplate, Renderer, TemplateError, resolve_template
from masked_shards.build.tokenization import special_tokens
from masked_shards.bundled_templates import bundled

ORIGINALS = Path(trl.__file__).parent / "chat_templates"
QWEN_PLAIN = ("<think>", "</think>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>")

DEEPSEEK = ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>", "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>", "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>", "<｜tool▁sep｜>", "<｜tool▁outputs▁begin｜>", "<｜tool▁outputs▁end｜>", "<｜tool▁output▁begin｜>", "<｜tool▁output▁end｜>"]
COHERE = ["<BOS_TOKEN>", "<|START_OF_TURN_TOKEN|>", "<|END_OF_TURN_TOKEN|>", "<|SYSTEM_TOKEN|>", "<|USER_TOKEN|>", "<|CHATBOT_TOKEN|>", "<|START_RESPONSE|>", "<|END_RESPONSE|>"]
GLM = ["[gMASK]", "<sop>", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>", "<|endoftext|>"]
GLM_PLAIN = ("<think>", "</think>", "<tool_call>", "</tool_call>", "<arg_key>", "</arg_key>", "<arg_value>", "</arg_value>", "<tool_response>", "</tool_response>")
GEMMA4 = ["<bos>", "<eos>", "<|turn>", "<turn|>", "<|channel>", "<channel|>", "<|tool_call>", "<tool_call|>", "<|tool_response>", "<tool_response|>", "<|tool>", "<tool|>", '<|"|>', "<|think|>", "<|image|>", "<|audio|>", "<|video|>"]
HARMONY = ["<|start|>", "<|message|>", "<|channel|>", "<|end|>", "<|return|>", "<|call|>", "<|constrain|>"]

# bundled name -> (the originals it reproduces, tokenizer family, the tokens an assistant turn may end with)
FAMILIES = {
    "qwen2.5": (("qwen2_5.jinja",), "qwen", ("<|im_end|>",)),
    "qwen3": (("qwen3.jinja",), "qwen", ("<|im_end|>",)),
    "qwen3-2507": (("qwen3_instruct_2507.jinja",), "qwen", ("<|im_end|>",)),
    "qwen3.5": (("qwen3_5_think.jinja", "qwen3_5_nothink.jinja"), "qwen", ("<|im_end|>",)),
    "qwen3.6": (("qwen3_6.jinja",), "qwen", ("<|im_end|>",)),
    "llama3.1": (("llama3_1.jinja",), "llama", ("<|eot_id|>",)),
    "llama3.2": (("llama3_2.jinja",), "llama", ("<|eot_id|>",)),
    # harmony: <|return|> ends the last answer, <|end|> earlier ones, <|call|> a tool call
    "gpt-oss": (("gptoss.jinja",), "harmony", ("<|return|>", "<|end|>", "<|call|>")),
    "deepseek-v3": (("deepseekv3.jinja",), "deepseek", ("<｜end▁of▁sentence｜>",)),
    "deepseek-r1-distill": (("deepseek_r1_distill.jinja",), "deepseek", ("<｜end▁of▁sentence｜>",)),
    # GLM-4.5 turns end with the next turn's marker, which the model writes
    "glm4.5": (("glm4moe.jinja",), "glm", ("<|user|>", "<|observation|>")),
    "cohere2": (("cohere2.jinja",), "cohere", ("<|END_RESPONSE|><|END_OF_TURN_TOKEN|>",)),
    # Gemma 4 (the July 2026 canonical template; gemma4 .. gemma4_v4 differ from it in reasoning and
    # tool layout and are not reproduced): <|tool_response> hands a call over to the tool, <turn|> ends the turn
    "gemma4": (("gemma4_v5.jinja",), "gemma4", ("<turn|>", "<|tool_response>")),
    # families without tool branches, checked again on these conversations
    "phi3.5": (("phi3_5.jinja",), "phi", ("<|end|>",)),
    "phi3": (("phi3.jinja",), "phi", ("<|end|>",)),
    "gemma3": (("gemma3.jinja",), "gemma", ("<end_of_turn>",)),
    "gemma": (("gemma.jinja",), "gemma", ("<end_of_turn>",)),
    "llama3": (("llama3.jinja",), "llama", ("<|eot_id|>",)),
}
# Templates with a documented training fix: with as_published=true they render exactly as the original.
TRAINING_FIX = {"glm4.5"}
PAIRS = [(name, original) for name, (originals, _, _) in FAMILIES.items() for original in originals]
CASES = [(cls, case) for cls, cases in CLASSES.items() for case in cases]


@pytest.fixture(scope="module")
def tokenizers(qwen2_tokenizer):
    return {
        "qwen": _family(qwen2_tokenizer, [], bos=None, eos="<|im_end|>", plain=QWEN_PLAIN),
        "llama": _family(qwen2_tokenizer, ["<|eom_id|>", "<|python_tag|>"], bos="<|begin_of_text|>", eos="<|eot_id|>"),
        "harmony": _family(qwen2_tokenizer, HARMONY, bos=None, eos="<|return|>"),
        "deepseek": _family(qwen2_tokenizer, DEEPSEEK, bos="<｜begin▁of▁sentence｜>", eos="<｜end▁of▁sentence｜>"),
        "phi": _family(qwen2_tokenizer, ["<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"], bos="<s>", eos="<|endoftext|>"),
        "gemma": _family(qwen2_tokenizer, ["<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"], bos="<bos>", eos="<eos>"),
        "cohere": _family(qwen2_tokenizer, COHERE, bos="<BOS_TOKEN>", eos="<|END_OF_TURN_TOKEN|>"),
        "glm": _family(qwen2_tokenizer, GLM, bos=None, eos="<|endoftext|>", plain=GLM_PLAIN),
        "gemma4": _family(qwen2_tokenizer, GEMMA4, bos="<bos>", eos="<eos>"),
    }


def _original(filename: str) -> str:
    return (ORIGINALS / filename).read_text(encoding="utf-8")


def _render(tokenizer, source: str, cls: str, case: str, **extra):
    messages, tools = CLASSES[cls][case]
    return tokenizer.apply_chat_template(copy.deepcopy(messages), tools=tools, chat_template=source, tokenize=False, **extra)


def test_every_family_is_bundled_with_a_description():
    library = bundled()
    for name in FAMILIES:
        assert library[name] and not library[name].startswith(name)


@pytest.mark.parametrize("name,original", PAIRS)
@pytest.mark.parametrize("cls,case", CASES)
def test_renders_byte_identical_to_the_original(tokenizers, name, original, cls, case):
    tokenizer = tokenizers[FAMILIES[name][1]]
    ours = resolve_template(name, None).source
    try:
        expected = _render(tokenizer, _original(original), cls, case)
    except Exception:  # the original refuses this conversation (or fails on it): so must ours
        with pytest.raises(Exception):
            _render(tokenizer, ours, cls, case)
        return
    assert _render(tokenizer, ours, cls, case, **({"as_published": True} if name in TRAINING_FIX else {})) == expected


@pytest.mark.parametrize("cls,case", CASES)
def test_glm_training_fix_adds_only_the_last_turns_stop_token(tokenizers, cls, case):
    """GLM-4.5's original ends the last answer with nothing; ours writes the token that stops it."""
    messages, _ = CLASSES[cls][case]
    try:
        original = _render(tokenizers["glm"], _original("glm4moe.jinja"), cls, case)
    except Exception:
        return
    stop = "<|observation|>" if messages[-1].get("tool_calls") else "<|user|>"
    assert _render(tokenizers["glm"], resolve_template("glm4.5", None).source, cls, case) == original + stop


@pytest.mark.parametrize("name", ["qwen3", "qwen3.5", "qwen3.6"])
@pytest.mark.parametrize("thinking", [True, False])
def test_generation_prompt_is_the_originals(tokenizers, name, thinking):
    (original, *_), family, _ = FAMILIES[name]
    tokenizer = tokenizers[family]
    for source in (original,):
        expected = _render(tokenizer, _original(source), "plain", "single", add_generation_prompt=True, enable_thinking=thinking)
        assert _render(tokenizer, resolve_template(name, None).source, "plain", "single", add_generation_prompt=True, enable_thinking=thinking) == expected


def test_llama_dates_follow_the_originals(tokenizers):
    for name in ("llama3.1", "llama3.2"):
        source = resolve_template(name, None).source
        (original,), _, _ = FAMILIES[name]
        for extra in ({}, {"date_string": "01 Jan 2025"}):
            assert _render(tokenizers["llama"], source, "tools", "single", **extra) == _render(tokenizers["llama"], _original(original), "tools", "single", **extra)


# ---------------------------------------------------------------------------------------------
# 1. What is trained: each assistant turn's run of supervised tokens, written from the formats.

QWEN_CALL = '<tool_call>\n{{"name": "{}", "arguments": {}}}\n</tool_call>'
OSLO = QWEN_CALL.format("get_weather", '{"city": "Oslo"}')
TOKYO = QWEN_CALL.format("get_time", '{"zone": "Asia/Tokyo", "hour24": true}')
ROME = QWEN_CALL.format("get_weather", '{"city": "Rome"}')
ANSWER = "Oslo is at 3 °C; it is 09:30 in Tokyo.<|im_end|>"


def _xml_call(name: str, **arguments: str) -> str:
    parameters = "".join(f"<parameter={key}>\n{value}\n</parameter>\n" for key, value in arguments.items())
    return f"<tool_call>\n<function={name}>\n{parameters}</function>\n</tool_call>"


SUPERVISED = {
    # Qwen2.5: the text, "\n" and each call on its own lines, <|im_end|>; the "\n" after the header is the prompt's.
    ("qwen2.5", "parallel", "with_text"): [f"Checking both.\n{OSLO}\n{TOKYO}<|im_end|>", ANSWER],
    ("qwen2.5", "tools", "call_only"): [QWEN_CALL.format("get_time", '{"zone": "America/Lima"}') + "<|im_end|>"],
    # Qwen2.5 passes a string through tojson: the arguments are a JSON string.
    ("qwen2.5", "tools", "string_arguments"): [QWEN_CALL.format("get_weather", '"{\\"city\\": \\"Rome\\"}"') + "<|im_end|>", "Clear.<|im_end|>"],
    ("qwen3-2507", "parallel", "with_text"): [f"Checking both.\n{OSLO}\n{TOKYO}<|im_end|>", ANSWER],
    ("qwen3-2507", "tools", "string_arguments"): [ROME + "<|im_end|>", "Clear.<|im_end|>"],
    # Qwen3: the reasoning of both turns after the query is shown and trained; the call follows "</think>\n\n".
    ("qwen3", "reasoning", "with_call"): [
        f"<think>\nI should look it up.\n</think>\n\n{ROME}<|im_end|>",
        "<think>\nThe tool says clear.\n</think>\n\nClear, 21 °C.<|im_end|>",
    ],
    # Before the last query reasoning is dropped; the final turn without reasoning keeps its empty
    # think block untrained (the non-thinking prompt).
    ("qwen3", "reasoning", "history"): ["4<|im_end|>", "<think>\n3 plus 3 makes 6.\n</think>\n\n6<|im_end|>"],
    ("qwen3", "parallel", "with_text"): [f"Checking both.\n{OSLO}\n{TOKYO}<|im_end|>", ANSWER],
    # Qwen3.5: "<think>\n" is the generation prompt; the model writes the rest; text and call apart by "\n\n".
    ("qwen3.5", "reasoning", "with_call"): [
        "I should look it up.\n</think>\n\n" + _xml_call("get_weather", city="Rome") + "<|im_end|>",
        "The tool says clear.\n</think>\n\nClear, 21 °C.<|im_end|>",
    ],
    ("qwen3.5", "parallel", "with_text"): ["Checking both.\n\n" + _xml_call("get_weather", city="Oslo") + "\n" + _xml_call("get_time", zone="Asia/Tokyo", hour24="True") + "<|im_end|>", ANSWER],
    ("qwen3.6", "parallel", "with_text"): ["Checking both.\n\n" + _xml_call("get_weather", city="Oslo") + "\n" + _xml_call("get_time", zone="Asia/Tokyo", hour24="true") + "<|im_end|>", ANSWER],
    # gpt-oss: everything after the prompt "<|start|>assistant": a call's thinking shows only when no
    # answer follows it; the last answer's analysis and final channels, ended by <|return|>.
    ("gpt-oss", "reasoning", "with_call"): [
        ' to=functions.get_weather<|channel|>commentary json<|message|>{"city": "Rome"}<|call|>',
        "<|channel|>analysis<|message|>The tool says clear.<|end|><|start|>assistant<|channel|>final<|message|>Clear, 21 °C.<|return|>",
    ],
    ("gpt-oss", "tools", "call_only"): [' to=functions.get_time<|channel|>commentary json<|message|>{"zone": "America/Lima"}<|call|>'],
    ("gpt-oss", "system", "multi"): ["<|channel|>final<|message|>Hello.<|end|>", "<|channel|>final<|message|>Blue.<|return|>"],
    # DeepSeek-V3: the first call message's text, calls and end of sentence after "<｜Assistant｜>";
    # the answer after results follows "<｜tool▁outputs▁end｜>" (the prompt's).
    ("deepseek-v3", "tools", "string_arguments"): [
        '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{"city": "Rome"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜><｜end▁of▁sentence｜>',
        "Clear.<｜end▁of▁sentence｜>",
    ],
    # GLM-4.5: after the prompt "<|assistant|>": the think block when there is reasoning, "\n" + text,
    # the calls, and the next turn's marker; the last turn's <|user|> is the training fix.
    ("glm4.5", "tools", "single"): ["\n<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n</tool_call><|observation|>", "\nIt is 18 °C in Paris.<|user|>"],
    ("glm4.5", "reasoning", "with_call"): [
        "\n<think>I should look it up.</think>\n<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Rome</arg_value>\n</tool_call><|observation|>",
        "\n<think>The tool says clear.</think>\nClear, 21 °C.<|user|>",
    ],
    ("glm4.5", "system", "multi"): ["\nHello.<|user|>", "\nBlue.<|user|>"],
    ("glm4.5", "parallel", "call_only"): [
        "\n<tool_call>get_time\n<arg_key>zone</arg_key>\n<arg_value>Europe/Oslo</arg_value>\n</tool_call>"
        "\n<tool_call>get_time\n<arg_key>zone</arg_key>\n<arg_value>America/Lima</arg_value>\n</tool_call><|observation|>"
    ],
    ("deepseek-r1-distill", "reasoning", "history"): ["4<｜end▁of▁sentence｜>", "6<｜end▁of▁sentence｜>"],
    # Llama 3.1: one JSON call with "parameters", ended by <|eot_id|>; the text beside it is not rendered.
    ("llama3.1", "tools", "text_and_call"): ['{"name": "get_weather", "parameters": {"city": "Rome"}}<|eot_id|>', "Clear.<|eot_id|>"],
    ("llama3.2", "tools", "call_only"): ['{"name": "get_time", "parameters": {"zone": "America/Lima"}}<|eot_id|>'],
    # Gemma 4: the thought channel and calls up to <|tool_response>, which hands over to the tool;
    # after the masked results the call message's text, going on into the answer in the same turn.
    ("gemma4", "parallel", "with_text"): [
        '<|tool_call>call:get_weather{city:<|"|>Oslo<|"|>}<tool_call|><|tool_call>call:get_time{hour24:true,zone:<|"|>Asia/Tokyo<|"|>}<tool_call|><|tool_response>',
        "Checking both.Oslo is at 3 °C; it is 09:30 in Tokyo.<turn|>",
    ],
    ("gemma4", "reasoning", "with_call"): [
        '<|channel>thought\nI should look it up.\n<channel|><|tool_call>call:get_weather{city:<|"|>Rome<|"|>}<tool_call|><|tool_response>',
        "<|channel>thought\nThe tool says clear.\n<channel|>Clear, 21 °C.<turn|>",
    ],
    ("gemma4", "tools", "call_only"): ['<|tool_call>call:get_time{zone:<|"|>America/Lima<|"|>}<tool_call|><|tool_response>'],
    ("gemma4", "reasoning", "history"): ["4<turn|>", "<|channel>thought\n3 plus 3 makes 6.\n<channel|>6<turn|>"],
}


@pytest.mark.parametrize("name,cls,case", sorted(SUPERVISED))
def test_supervised_tokens_are_what_the_model_generates(tokenizers, name, cls, case):
    tokenizer = tokenizers[FAMILIES[name][1]]
    messages, tools = CLASSES[cls][case]
    encoded = tokenizer.apply_chat_template(copy.deepcopy(messages), tools=tools, chat_template=resolve_template(name, None).source, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = list(encoded["input_ids"]), list(encoded["assistant_masks"])
    runs = supervised_runs(ids, [token if on else -100 for token, on in zip(ids, mask)])
    assert [tokenizer.decode(run, skip_special_tokens=False) for run in runs] == SUPERVISED[(name, cls, case)]


def _writes_call(tokenizer, source: str, messages: list[dict], tools, turn: int, call: int) -> bool:
    """Whether the template writes that call: the rendering changes when it is left out."""
    without = copy.deepcopy(messages)
    del without[turn]["tool_calls"][call]
    render = lambda conversation: tokenizer.apply_chat_template(copy.deepcopy(conversation), tools=tools, chat_template=source, tokenize=False)
    try:
        return render(without) != render(messages)
    except Exception:  # leaving it out is refused: the template reads it
        return True


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("cls,case", CASES)
def test_every_assistant_turn_is_one_run_ending_in_the_stop_token(tokenizers, name, cls, case):
    """Over every conversation: one supervised run per assistant turn, ending in one of the
    family's end-of-turn tokens, holding every call the template writes (by name), and nothing of
    the user's, the system's or a tool's text."""
    tokenizer, source = tokenizers[FAMILIES[name][1]], resolve_template(name, None).source
    messages, tools = CLASSES[cls][case]
    try:
        encoded = tokenizer.apply_chat_template(copy.deepcopy(messages), tools=tools, chat_template=source, return_dict=True, return_assistant_tokens_mask=True)
    except Exception:  # refused as the original refuses (test_renders_byte_identical_to_the_original)
        return
    ids, mask = list(encoded["input_ids"]), list(encoded["assistant_masks"])
    runs = [tokenizer.decode(run, skip_special_tokens=False) for run in supervised_runs(ids, [t if on else -100 for t, on in zip(ids, mask)])]
    turns = [n for n, m in enumerate(messages) if m["role"] == "assistant"]
    if name == "gemma4":  # a call answered by results is one run up to <|tool_response>, its text after them another
        assert all(run.endswith(FAMILIES[name][2]) for run in runs)
        runs = ["".join(runs)] * len(turns)  # each turn's calls in the runs, no other message's text
    assert len(runs) == len(turns)
    for run, turn in zip(runs, turns):
        assert run.endswith(FAMILIES[name][2])
        for n, call in enumerate(messages[turn].get("tool_calls") or []):
            if _writes_call(tokenizer, source, messages, tools, turn, n):
                assert call["function"]["name"] in run
        for other in messages:
            if other["role"] != "assistant" and len(other["content"]) > 3:
                assert other["content"] not in run


@pytest.mark.parametrize("cls,case", CASES)
def test_gemma4_pieces_are_the_ones_found_in_the_original(tokenizers, cls, case):
    """Two independent ways to the same labels: the bundled template's generation blocks (told to
    their messages by sentinels where a message has two) and the spans `--template tokenizer`
    finds in the original gemma4_v5 by rendering it alone."""
    tokenizer = tokenizers["gemma4"]
    messages, tools = CLASSES[cls][case]

    def pieces(source: str) -> list[tuple[int, str, bool]] | None:
        renderer = Renderer(ChatTemplate("t", source), bos_token="<bos>", eos_token="<eos>", special_tokens=special_tokens(tokenizer))
        try:
            rendered = renderer.render_messages(copy.deepcopy(messages), [m["role"] == "assistant" for m in messages], tools=tools)
        except TemplateError as err:
            return err.reason
        return [(s.turn, s.text, s.trainable) for s in rendered.segments]

    assert pieces(resolve_template("gemma4", None).source) == pieces(_original("gemma4_v5.jinja"))


# ---------------------------------------------------------------------------------------------
# 2. --template auto


@pytest.mark.parametrize("name,original", PAIRS)
def test_auto_picks_each_family_from_its_original(tokenizers, name, original):
    tokenizer = copy.copy(tokenizers[FAMILIES[name][1]])
    tokenizer.chat_template = _original(original)
    chosen = resolve_template("auto", tokenizer.chat_template, tokenizer.bos_token, tokenizer.eos_token)
    assert chosen.name == name
    assert chosen.source == resolve_template(name, None).source
    assert chosen.matched_sha256 == hashlib.sha256(tokenizer.chat_template.encode("utf-8")).hexdigest()


def test_auto_picks_the_bundled_templates_of_older_families_too(tokenizers):
    for name, original in (("llama3", "llama3.jinja"), ("gemma", "gemma.jinja"), ("gemma3", "gemma3.jinja"), ("phi3", "phi3.jinja")):
        assert resolve_template("auto", _original(original), "<bos>", "<eos>").name == name


def test_auto_falls_back_to_the_tokenizers_own_template_when_none_matches():
    # A ChatML variant that writes tool calls its own way: no bundled template renders it.
    own = (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}"
        "{% for c in m.tool_calls or [] %}[CALL {{ c.function.name }}]{% endfor %}<|im_end|>\n{% endfor %}"
    )
    chosen = resolve_template("auto", own, None, "<|im_end|>")
    assert (chosen.name, chosen.source) == (TOKENIZER_TEMPLATE, own)
    assert chosen.matched_sha256 == hashlib.sha256(own.encode("utf-8")).hexdigest()


def test_auto_on_a_template_that_renders_no_probe_falls_back():
    own = "{{ raise_exception('custom only') }}"
    assert resolve_template("auto", own, None, "</s>").name == TOKENIZER_TEMPLATE


def test_auto_without_a_tokenizer_template_is_chatml():
    """A translation or base tokenizer has no chat template: nothing to match, generic ChatML."""
    chosen = resolve_template("auto", None)
    assert (chosen.name, chosen.matched_sha256) == ("chatml", None)


def test_auto_is_the_default_with_a_tokenizer_and_the_demo_keeps_chatml():
    from masked_shards.cli import build_parser, config_from_args

    parser = build_parser()
    assert config_from_args(parser.parse_args(["run", "--tokenizer", "Qwen/Qwen3-8B"])).template == "auto"
    assert config_from_args(parser.parse_args(["run"])).template == "chatml"
    assert config_from_args(parser.parse_args(["run", "--tokenizer", "Qwen/Qwen3-8B", "--template", "qwen3"])).template == "qwen3"


def test_templates_command_lists_tools_and_reasoning(capsys):
    from masked_shards.cli import main

    assert main(["templates"]) == 0
    rows = {line.split()[0]: line.split()[1:3] for line in capsys.readouterr().out.splitlines()[1:] if line and not line.startswith("masked-shards")}
    assert set(rows) == set(bundled())
    assert rows["qwen3"] == ["yes", "yes"] and rows["qwen3.5"] == ["yes", "yes"]
    assert rows["qwen2.5"] == ["yes", "no"] and rows["llama3.1"] == ["yes", "no"]
    assert rows["chatml"] == ["yes", "yes"] and rows["gemma3"] == ["no", "no"]


@pytest.mark.parametrize("name", FAMILIES)
def test_check_template_passes_with_the_family_tokenizer(tokenizers, name):
    """At start: one span per answer, ended by special tokens (gpt-oss's span opens with the channel
    header the model writes; Cohere's ends with two tokens)."""
    check_template(resolve_template(name, None), tokenizers[FAMILIES[name][1]], name)

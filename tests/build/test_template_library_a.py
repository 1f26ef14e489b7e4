"""Template library A: qwen2.5, qwen3, llama3.1, llama2, mistral and phi3.

Each template must reproduce, byte for byte, the chat template shipped with that family's
instruct checkpoints on the Hugging Face hub, and mark with `{% generation %}` exactly what the
model is trained on. Checked here:

1. renderings of a few conversations equal strings written out by hand from the published formats;
2. our rendering equals `tokenizer.apply_chat_template(...)`, and transformers' own
   `return_assistant_tokens_mask` marks the tokens our rows label;
3. roles a family cannot express raise as the official template does, and the record is rejected;
4. a property over generated conversations: each run of supervised tokens decodes to one assistant
   turn as the family's format renders it, followed by its end-of-turn token (the expectations
   below are written from the formats, not taken from our templates);
5. `check_template` accepts each template with its family's tokenizer.

Each family's tokenizer is Qwen2's 151k byte-level BPE vocabulary (the `qwen2_tokenizer` session
fixture) with that family's special tokens added and its BOS/EOS set.
"""

from __future__ import annotations

import copy
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import AddedToken

from conftest import Row, build_one
from expected import normalized, supervised_runs
from masked_shards.config import PipelineConfig
from masked_shards.records import RESERVED_CHARS, Example, Rejected, Turn
from masked_shards.build.rows import RowBuilder, check_template
from masked_shards.build.templates import Renderer, TemplateError, resolve_template
from masked_shards.build.tokenization import TokenizerError, special_tokens
from masked_shards.bundled_templates import bundled, template_path

NAMES = ("qwen2.5", "qwen3", "llama3.1", "llama2", "mistral", "phi3")
QWEN_SYSTEM = "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
LLAMA31_HEAD = "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"


# ---------------------------------------------------------------------------------------------
# Family tokenizers: Qwen2's vocabulary plus each family's special tokens and BOS/EOS.


def _family(base, specials: list[str], *, bos: str | None, eos: str, plain: tuple[str, ...] = ()):
    tokenizer = copy.deepcopy(base)
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in specials], special_tokens=True)
    if plain:  # added but not special, as Qwen3 has <think> and </think>
        tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in plain])
    tokenizer.bos_token = bos
    tokenizer.eos_token = eos
    return tokenizer


@pytest.fixture(scope="module")
def family_tokenizers(qwen2_tokenizer):
    sentencepiece_style = _family(qwen2_tokenizer, ["<s>", "</s>", "<unk>"], bos="<s>", eos="</s>")
    return {
        # Qwen2.5 shares Qwen2's vocabulary and ChatML tokens (eos <|im_end|>, pad <|endoftext|>).
        "qwen2.5": qwen2_tokenizer,
        "qwen3": _family(qwen2_tokenizer, [], bos=None, eos="<|im_end|>", plain=("<think>", "</think>")),
        "llama3.1": _family(qwen2_tokenizer, ["<|eom_id|>", "<|python_tag|>", "<|finetune_right_pad_id|>"], bos="<|begin_of_text|>", eos="<|eot_id|>"),
        "llama2": sentencepiece_style,
        "mistral": sentencepiece_style,
        "phi3": _family(qwen2_tokenizer, ["<s>", "</s>", "<unk>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"], bos="<s>", eos="<|endoftext|>"),
    }


@pytest.fixture(scope="module")
def builders(family_tokenizers):
    """One RowBuilder per template, shared by the tests below (building one re-loads the 151k
    tokenizer twice, a few seconds). Plain special text, so generated text may spell any token."""
    config = {"max_length": 100_000, "special_text": "plain"}
    return {name: RowBuilder(PipelineConfig(template=name, **config), family_tokenizers[name], resolve_template(name, None)) for name in NAMES}


def _renderer(name: str, tokenizer) -> Renderer:
    template = resolve_template(name, None)
    return Renderer(template, bos_token=tokenizer.bos_token, eos_token=tokenizer.eos_token, special_tokens=special_tokens(tokenizer))


def _messages(turns: tuple[Turn, ...]) -> list[dict[str, str]]:
    return [t.message() for t in turns]


def test_family_tokenizers_have_the_published_bos_and_eos(family_tokenizers):
    assert {n: (t.bos_token, t.eos_token) for n, t in family_tokenizers.items()} == {
        "qwen2.5": ("<|begin_of_text|>", "<|im_end|>"),  # no BOS in Qwen; the template never writes one
        "qwen3": (None, "<|im_end|>"),
        "llama3.1": ("<|begin_of_text|>", "<|eot_id|>"),
        "llama2": ("<s>", "</s>"),
        "mistral": ("<s>", "</s>"),
        "phi3": ("<s>", "<|endoftext|>"),
    }
    assert "<think>" not in special_tokens(family_tokenizers["qwen3"])  # added, not special, as in Qwen3


def test_each_template_is_bundled_with_a_one_line_description():
    library = bundled()
    for name in NAMES:
        first = template_path(name).read_text(encoding="utf-8").splitlines()[0]
        assert re.fullmatch(r"\{#- " + re.escape(name) + r": .+ -#\}", first), first
        assert library[name] and not library[name].startswith(name)


# ---------------------------------------------------------------------------------------------
# 1. The published formats, written out by hand.

CONVERSATIONS = {
    "single": (Turn("user", "What is 2+2?"), Turn("assistant", "4", True)),
    "system": (Turn("system", "Be brief."), Turn("user", " Hi "), Turn("assistant", " 2 ways. ", True)),
    "multi": (Turn("user", "A"), Turn("assistant", "1", True), Turn("user", "C\n"), Turn("assistant", "2\n", True)),
    # Qwen3 reasoning: kept after the last user query, dropped in earlier history.
    "reasoning_final": (Turn("user", "What is 2+2?"), Turn("assistant", "4", True, "2+2 is 4.")),
    "reasoning_history": (
        Turn("user", "A"),
        Turn("assistant", "1", True, "first"),
        Turn("user", "C"),
        Turn("assistant", "2", True, "\nsecond\n"),
    ),
    "think_in_content": (
        Turn("user", "A"),
        Turn("assistant", "<think>\nold\n</think>\n\n1", True),
        Turn("user", "C"),
        Turn("assistant", "<think>\nnew\n</think>\n\n2", True),
    ),
    "after_query": (Turn("user", "A"), Turn("assistant", "1", True, "r1"), Turn("assistant", "2", True)),
    "tool_response": (
        Turn("user", "Q"),
        Turn("assistant", "1", True, "r"),
        Turn("user", "<tool_response>\nx\n</tool_response>"),
        Turn("assistant", "2", True, "s"),
    ),
    # Llama 2 quirk of the official template: a system message where an assistant turn is due
    # passes the alternation check and renders as nothing.
    "late_system": (Turn("user", "A"), Turn("system", "ignored"), Turn("user", "C"), Turn("assistant", "1", True)),
    # Families without an alternation rule render any order, a later system message included.
    "free_order": (
        Turn("system", "S"),
        Turn("user", "u1"),
        Turn("user", "u2"),
        Turn("assistant", "1", True),
        Turn("assistant", "2", True),
        Turn("system", "late"),
        Turn("user", "u3"),
    ),
}
FREE_ORDER_CHATML = (
    "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nu1<|im_end|>\n<|im_start|>user\nu2<|im_end|>\n<|im_start|>assistant\n1<|im_end|>\n"
    "<|im_start|>assistant\n2<|im_end|>\n<|im_start|>system\nlate<|im_end|>\n<|im_start|>user\nu3<|im_end|>\n"
)

EXPECTED = {
    ("qwen2.5", "single"): (
        QWEN_SYSTEM + "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n",
        ["4<|im_end|>"],
    ),
    ("qwen2.5", "system"): (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n Hi <|im_end|>\n<|im_start|>assistant\n 2 ways. <|im_end|>\n",
        [" 2 ways. <|im_end|>"],
    ),
    ("qwen2.5", "multi"): (
        QWEN_SYSTEM + "<|im_start|>user\nA<|im_end|>\n<|im_start|>assistant\n1<|im_end|>\n<|im_start|>user\nC\n<|im_end|>\n<|im_start|>assistant\n2\n<|im_end|>\n",
        ["1<|im_end|>", "2\n<|im_end|>"],
    ),
    ("qwen2.5", "free_order"): (FREE_ORDER_CHATML, ["1<|im_end|>", "2<|im_end|>"]),
    # After the last user query there is no assistant turn, so no think block at all.
    ("qwen3", "free_order"): (FREE_ORDER_CHATML, ["1<|im_end|>", "2<|im_end|>"]),
    ("qwen3", "single"): (
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n4<|im_end|>\n",
        ["4<|im_end|>"],
    ),
    ("qwen3", "system"): (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n Hi <|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n 2 ways. <|im_end|>\n",
        [" 2 ways. <|im_end|>"],
    ),
    ("qwen3", "multi"): (
        "<|im_start|>user\nA<|im_end|>\n<|im_start|>assistant\n1<|im_end|>\n<|im_start|>user\nC\n<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n2\n<|im_end|>\n",
        ["1<|im_end|>", "2\n<|im_end|>"],
    ),
    ("qwen3", "reasoning_final"): (
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n<think>\n2+2 is 4.\n</think>\n\n4<|im_end|>\n",
        ["<think>\n2+2 is 4.\n</think>\n\n4<|im_end|>"],
    ),
    ("qwen3", "reasoning_history"): (
        "<|im_start|>user\nA<|im_end|>\n<|im_start|>assistant\n1<|im_end|>\n<|im_start|>user\nC<|im_end|>\n<|im_start|>assistant\n<think>\nsecond\n</think>\n\n2<|im_end|>\n",
        ["1<|im_end|>", "<think>\nsecond\n</think>\n\n2<|im_end|>"],
    ),
    ("qwen3", "think_in_content"): (
        "<|im_start|>user\nA<|im_end|>\n<|im_start|>assistant\n1<|im_end|>\n<|im_start|>user\nC<|im_end|>\n<|im_start|>assistant\n<think>\nnew\n</think>\n\n2<|im_end|>\n",
        ["1<|im_end|>", "<think>\nnew\n</think>\n\n2<|im_end|>"],
    ),
    ("qwen3", "after_query"): (
        "<|im_start|>user\nA<|im_end|>\n<|im_start|>assistant\n<think>\nr1\n</think>\n\n1<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n2<|im_end|>\n",
        ["<think>\nr1\n</think>\n\n1<|im_end|>", "2<|im_end|>"],
    ),
    ("qwen3", "tool_response"): (
        "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n<think>\nr\n</think>\n\n1<|im_end|>\n"
        "<|im_start|>user\n<tool_response>\nx\n</tool_response><|im_end|>\n<|im_start|>assistant\n<think>\ns\n</think>\n\n2<|im_end|>\n",
        ["<think>\nr\n</think>\n\n1<|im_end|>", "<think>\ns\n</think>\n\n2<|im_end|>"],
    ),
    ("llama3.1", "single"): (
        LLAMA31_HEAD + "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n4<|eot_id|>",
        ["4<|eot_id|>"],
    ),
    ("llama3.1", "system"): (
        LLAMA31_HEAD + "Be brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n2 ways.<|eot_id|>",
        ["2 ways.<|eot_id|>"],
    ),
    ("llama3.1", "multi"): (
        LLAMA31_HEAD + "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nA<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n1<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nC<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n2<|eot_id|>",
        ["1<|eot_id|>", "2<|eot_id|>"],
    ),
    ("llama3.1", "free_order"): (
        LLAMA31_HEAD + "S<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nu1<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nu2<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n1<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n2<|eot_id|>"
        "<|start_header_id|>system<|end_header_id|>\n\nlate<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nu3<|eot_id|>",
        ["1<|eot_id|>", "2<|eot_id|>"],
    ),
    ("llama2", "single"): ("<s>[INST] What is 2+2? [/INST] 4 </s>", [" 4 </s>"]),
    # The system block and the first user message are stripped as one string: " Hi" keeps its space.
    ("llama2", "system"): ("<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\n Hi [/INST] 2 ways. </s>", [" 2 ways. </s>"]),
    ("llama2", "multi"): ("<s>[INST] A [/INST] 1 </s><s>[INST] C [/INST] 2 </s>", [" 1 </s>", " 2 </s>"]),
    ("llama2", "late_system"): ("<s>[INST] A [/INST]<s>[INST] C [/INST] 1 </s>", [" 1 </s>"]),
    ("mistral", "single"): ("<s>[INST] What is 2+2? [/INST]4</s>", ["4</s>"]),
    ("mistral", "multi"): ("<s>[INST] A [/INST]1</s>[INST] C\n [/INST]2\n</s>", ["1</s>", "2\n</s>"]),
    ("phi3", "single"): ("<|user|>\nWhat is 2+2?<|end|>\n<|assistant|>\n4<|end|>\n<|endoftext|>", ["4<|end|>"]),
    ("phi3", "system"): (
        "<|system|>\nBe brief.<|end|>\n<|user|>\n Hi <|end|>\n<|assistant|>\n 2 ways. <|end|>\n<|endoftext|>",
        [" 2 ways. <|end|>"],
    ),
    ("phi3", "multi"): (
        "<|user|>\nA<|end|>\n<|assistant|>\n1<|end|>\n<|user|>\nC\n<|end|>\n<|assistant|>\n2\n<|end|>\n<|endoftext|>",
        ["1<|end|>", "2\n<|end|>"],
    ),
    ("phi3", "free_order"): (
        "<|system|>\nS<|end|>\n<|user|>\nu1<|end|>\n<|user|>\nu2<|end|>\n<|assistant|>\n1<|end|>\n<|assistant|>\n2<|end|>\n"
        "<|system|>\nlate<|end|>\n<|user|>\nu3<|end|>\n<|endoftext|>",
        ["1<|end|>", "2<|end|>"],
    ),
}


@pytest.mark.parametrize("name,conversation", sorted(EXPECTED))
def test_renders_the_published_format(family_tokenizers, name, conversation):
    rendered = _renderer(name, family_tokenizers[name]).render(Example("t:0", "t", CONVERSATIONS[conversation]))
    text, spans = EXPECTED[(name, conversation)]
    assert rendered.text == text
    assert [s.text for s in rendered.segments if s.trainable] == spans


# Generation prompts (the text a model continues at inference), written out by hand.
PROMPTS = {
    ("qwen2.5", None): QWEN_SYSTEM + "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    ("qwen3", None): "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    ("qwen3", False): "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
    ("llama3.1", None): LLAMA31_HEAD + "<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
    ("llama2", None): "<s>[INST] Hi [/INST]",  # the official template has no generation prompt
    ("mistral", None): "<s>[INST] Hi [/INST]",
    ("phi3", None): "<|user|>\nHi<|end|>\n<|assistant|>\n",  # and no eos_token
}


@pytest.mark.parametrize("name,thinking", sorted(PROMPTS, key=str))
def test_generation_prompt_matches_the_published_format(family_tokenizers, name, thinking):
    extra = {} if thinking is None else {"enable_thinking": thinking}
    source = resolve_template(name, None).source
    text = family_tokenizers[name].apply_chat_template([{"role": "user", "content": "Hi"}], chat_template=source, tokenize=False, add_generation_prompt=True, **extra)
    assert text == PROMPTS[(name, thinking)]


def test_llama31_takes_a_date_string_like_the_official_template(family_tokenizers):
    source = resolve_template("llama3.1", None).source
    text = family_tokenizers["llama3.1"].apply_chat_template(_messages(CONVERSATIONS["single"]), chat_template=source, tokenize=False, date_string="01 Jan 2025")
    assert text.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 01 Jan 2025\n\n<|eot_id|>")


# ---------------------------------------------------------------------------------------------
# 2. Agreement with transformers' apply_chat_template and its assistant-token mask.

# Conversations whose span edges fall on token boundaries in this vocabulary, so the row is the
# single whole-string encoding and must equal transformers' token for token.
AGREEMENT = [
    pytest.param(name, conversation, id=f"{name}-{conversation}")
    for name, conversations in {
        "qwen2.5": ("single", "system", "multi", "free_order"),
        "qwen3": ("single", "system", "multi", "free_order", "reasoning_final", "reasoning_history", "think_in_content", "after_query", "tool_response"),
        "llama3.1": ("single", "system", "multi", "free_order"),
        "llama2": ("single", "system", "multi", "late_system"),
        "mistral": ("single", "multi"),
        "phi3": ("single", "system", "multi", "free_order"),
    }.items()
    for conversation in conversations
]


@pytest.mark.parametrize("name,conversation", AGREEMENT)
def test_agrees_with_hugging_face_apply_chat_template(family_tokenizers, builders, name, conversation):
    tokenizer, turns = family_tokenizers[name], CONVERSATIONS[conversation]
    source = resolve_template(name, None).source
    hf_text = tokenizer.apply_chat_template(_messages(turns), chat_template=source, tokenize=False)
    assert _renderer(name, tokenizer).render(Example("t:0", "t", turns)).text == hf_text
    hf = tokenizer.apply_chat_template(_messages(turns), chat_template=source, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    row = build_one(builders[name], Example("t:0", "t", turns))
    assert isinstance(row, Row) and not row.split_at_boundaries
    assert row.input_ids == list(hf["input_ids"])
    assert [int(label != -100) for label in row.labels] == list(hf["assistant_masks"])


def test_llama2_space_after_inst_is_generated_with_the_answer(family_tokenizers, builders):
    """A prompt ends at "[/INST]"; the model generates " Hello" as one token, so the space is in
    the span and the row is the single encoding, no split at the edge."""
    tokenizer = family_tokenizers["llama2"]
    turns = (Turn("user", "Hi"), Turn("assistant", "Hello!", True))
    row = build_one(builders["llama2"], Example("t:0", "t", turns))
    assert not row.split_at_boundaries
    (run,) = supervised_runs(row.input_ids, row.labels)
    assert tokenizer.decode(run, skip_special_tokens=False) == " Hello! </s>"
    assert tokenizer.decode(row.input_ids, skip_special_tokens=False) == "<s>[INST] Hi [/INST] Hello! </s>"


# ---------------------------------------------------------------------------------------------
# 3. Roles a family cannot express: raise_exception, as in the official template -> rejected.

UNSUPPORTED = {
    ("llama2", "assistant first"): ((Turn("assistant", "1", True), Turn("user", "A")), "Conversation roles must alternate user/assistant/user/assistant/..."),
    ("llama2", "two users"): ((Turn("user", "A"), Turn("user", "B"), Turn("assistant", "1", True)), "Conversation roles must alternate"),
    ("llama2", "late system"): ((Turn("user", "A"), Turn("assistant", "1", True), Turn("system", "S"), Turn("assistant", "2", True)), "Conversation roles must alternate"),
    ("mistral", "system"): ((Turn("system", "Be brief."), Turn("user", "A"), Turn("assistant", "1", True)), "Conversation roles must alternate user/assistant/user/assistant/..."),
    ("mistral", "system in an assistant's place"): ((Turn("user", "A"), Turn("system", "S"), Turn("user", "B"), Turn("assistant", "1", True)), "Only user and assistant roles are supported!"),
    ("mistral", "two assistants"): ((Turn("user", "A"), Turn("assistant", "1", True), Turn("assistant", "2", True)), "Conversation roles must alternate"),
}


@pytest.mark.parametrize("name,case", sorted(UNSUPPORTED))
def test_roles_the_family_cannot_express_are_rejected(family_tokenizers, builders, name, case):
    turns, message = UNSUPPORTED[(name, case)]
    tokenizer = family_tokenizers[name]
    with pytest.raises(TemplateError, match=re.escape(message)):
        _renderer(name, tokenizer).render(Example("t:0", "t", turns))
    # transformers raises the same, from the same template...
    with pytest.raises(Exception, match=re.escape(message)):
        tokenizer.apply_chat_template(_messages(turns), chat_template=resolve_template(name, None).source, tokenize=False)
    # ...and the pipeline turns it into a rejected record.
    result = build_one(builders[name], Example("bad.jsonl:7", "bad.jsonl", turns))
    assert isinstance(result, Rejected)
    assert (result.source, result.index, result.reason) == ("bad.jsonl", 7, "template_error")
    assert message in result.detail


# ---------------------------------------------------------------------------------------------
# 4. Property: supervised tokens decode to the assistant turns as each format renders them.


def _qwen3_supervised(turns: tuple[Turn, ...]) -> list[str]:
    """Qwen3's format: reasoning (`reasoning_content`, or else the text before `</think>` in the
    content) is shown as "<think>\\n{reasoning stripped of newlines}\\n</think>\\n\\n" only for
    assistant turns after the last user query (a user message that is not a wrapped
    <tool_response>), and there only for the final message or a turn with reasoning; a turn that
    is shown a think block has its answer's leading newlines removed. Trained: the think block when
    its reasoning is non-empty, the answer, <|im_end|>."""
    queries = [n for n, t in enumerate(turns) if t.role == "user" and not (t.content.startswith("<tool_response>") and t.content.endswith("</tool_response>"))]
    last_query = queries[-1] if queries else len(turns) - 1
    supervised = []
    for n, turn in enumerate(turns):
        if turn.role != "assistant":
            continue
        answer, reasoning = turn.content, turn.reasoning
        if reasoning is None:
            reasoning = ""
            if "</think>" in answer:
                head, tail = answer.split("</think>")[0], answer.split("</think>")[-1]
                reasoning = head.rstrip("\n").split("<think>")[-1].lstrip("\n")
                answer = tail.lstrip("\n")
        if n > last_query and (n == len(turns) - 1 or reasoning):
            thought = reasoning.strip("\n")
            supervised.append((f"<think>\n{thought}\n</think>\n\n" if thought else "") + answer.lstrip("\n") + "<|im_end|>")
        else:
            supervised.append(answer + "<|im_end|>")
    return supervised


def _each_answer(render):
    return lambda turns: [render(t.content) for t in turns if t.role == "assistant"]


SUPERVISED = {
    "qwen2.5": _each_answer(lambda content: content + "<|im_end|>"),
    "qwen3": _qwen3_supervised,
    "llama3.1": _each_answer(lambda content: content.strip() + "<|eot_id|>"),
    "llama2": _each_answer(lambda content: " " + content.strip() + " </s>"),
    "mistral": _each_answer(lambda content: content + "</s>"),
    "phi3": _each_answer(lambda content: content + "<|end|>"),
}


def _control_tokens(name: str, turns: tuple[Turn, ...]) -> int:
    """Special tokens each format writes: role markers, end-of-turn tokens, BOS/EOS."""
    count = {role: sum(t.role == role for t in turns) for role in ("system", "user", "assistant")}
    leading_system = turns[0].role == "system"
    return {
        "qwen2.5": 2 * (len(turns) + (not leading_system)),  # + the default system prompt
        "qwen3": 2 * len(turns),
        "llama3.1": 1 + 3 + 3 * (len(turns) - leading_system),  # BOS, the system block, each turn
        "llama2": count["user"] + count["assistant"],  # BOS per [INST], EOS per answer
        "mistral": 1 + count["assistant"],
        "phi3": 2 * len(turns) + 1,  # role token and <|end|> per message, final eos_token
    }[name]


_pieces = st.one_of(
    st.sampled_from(
        [" ", "  ", "\n", "\n\n", "\t", "\r\n", "é", "e\u0301", "你好", "🙂", "👩‍💻", "ß", "'s", "<", "|", ">", "0", "Hello", " world", "[INST]", "<<SYS>>", "<think>", "</think>"]
    ),
    st.characters(exclude_categories=("Cs",), exclude_characters=RESERVED_CHARS),
)
text = st.lists(_pieces, max_size=25).map("".join) | st.lists(_pieces, min_size=100, max_size=250).map("".join)
answer = text.filter(lambda s: s.strip() != "")
tool_response = text.map(lambda s: "<tool_response>" + s + "</tool_response>")


@st.composite
def alternating(draw, system: bool) -> tuple[Turn, ...]:
    """Optional system message, then user/assistant pairs (the order every family accepts)."""
    turns = [Turn("system", draw(st.just("") | text))] if system and draw(st.booleans()) else []
    for _ in range(draw(st.integers(1, 4))):
        turns += [Turn("user", draw(text)), Turn("assistant", draw(answer), True)]
    return tuple(turns)


@st.composite
def qwen3_conversations(draw) -> tuple[Turn, ...]:
    """Reasoning in history and in final turns, answers spelling <think>/</think>, several
    assistant turns after a query, tool-response user messages, and a trailing user message."""
    turns = [Turn("system", draw(st.just("") | text))] if draw(st.booleans()) else []
    for _ in range(draw(st.integers(1, 3))):
        turns.append(Turn("user", draw(text | tool_response)))
        for _ in range(draw(st.integers(1, 2))):
            turns.append(Turn("assistant", draw(answer), True, draw(st.none() | st.just("") | text)))
    if draw(st.integers(0, 4)) == 0:
        turns.append(Turn("user", draw(text)))
    return tuple(turns)


STRATEGIES = {
    "qwen2.5": alternating(system=True),
    "qwen3": qwen3_conversations(),
    "llama3.1": alternating(system=True),
    "llama2": alternating(system=True),
    "mistral": alternating(system=False),
    "phi3": alternating(system=True),
}


def _reasoning_never_shown(name: str, turns: tuple[Turn, ...]) -> bool:
    """A Qwen3 conversation whose final assistant turn (no user message after it) has reasoning
    but no real user query before it (only <tool_response> messages): the template renders that
    reasoning nowhere, so the record is rejected rather than trained without it."""
    last = max(n for n, t in enumerate(turns) if t.role == "assistant")
    final = all(t.role != "user" for t in turns[last:])
    queries = [t for t in turns[:last] if t.role == "user" and not (t.content.startswith("<tool_response>") and t.content.endswith("</tool_response>"))]
    return name == "qwen3" and final and bool((turns[last].reasoning or "").strip()) and not queries


@pytest.mark.parametrize("name", NAMES)
def test_supervised_tokens_decode_to_the_formatted_assistant_turns(family_tokenizers, builders, name):
    tokenizer, builder = family_tokenizers[name], builders[name]
    template = resolve_template(name, None)
    renderer = _renderer(name, tokenizer)
    specials = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    special_strings = special_tokens(tokenizer)

    @settings(max_examples=60 if name == "qwen3" else 40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(STRATEGIES[name])
    def check(turns: tuple[Turn, ...]) -> None:
        example = Example("generated:0", "generated", turns)
        row = build_one(builder, example)
        if _reasoning_never_shown(name, turns):  # Qwen3 shows reasoning only after a real query
            assert isinstance(row, Rejected) and row.reason == "template_dropped_reasoning", row
            return
        assert isinstance(row, Row), row
        expected = [normalized(tokenizer, s) for s in SUPERVISED[name](turns)]
        runs = supervised_runs(row.input_ids, row.labels)
        decoded = [tokenizer.decode(run, skip_special_tokens=False, clean_up_tokenization_spaces=False) for run in runs]
        assert decoded == expected
        assert sum(1 for i in row.input_ids if i in specials) == _control_tokens(name, turns)
        if not any(token in t.content for t in turns for token in special_strings):
            hf_text = tokenizer.apply_chat_template(_messages(turns), chat_template=template.source, tokenize=False)
            assert renderer.render(example).text == hf_text

    check()


# ---------------------------------------------------------------------------------------------
# 5. Start-up check with each family's tokenizer.


@pytest.mark.parametrize("name", NAMES)
def test_check_template_accepts_the_family_tokenizer(family_tokenizers, name):
    check_template(resolve_template(name, None), family_tokenizers[name], name)


def test_check_template_refuses_a_tokenizer_without_the_family_end_token(qwen2_tokenizer):
    with pytest.raises(TokenizerError, match="'<\\|end\\|>'.*one special token"):
        check_template(resolve_template("phi3", None), qwen2_tokenizer, "qwen2")

"""Template library B: gemma, gemma3, zephyr, vicuna, alpaca.

Each template must render its family's published format byte for byte, agree with Hugging Face's
`apply_chat_template` (text, input ids and `return_assistant_tokens_mask`), refuse what the family
cannot express the way the official template does, pass `check_template` with the family's
tokenizer, and supervise exactly each assistant turn's text (as the format renders it) plus its
end-of-turn token.

The expected strings and the expected supervised text below are written by hand from the
published formats, never produced by running our templates:

* gemma (google/gemma-2b-it, gemma-7b-it, gemma-2-2b-it, gemma-2-9b-it, gemma-2-27b-it; chat template
  in their tokenizer_config.json): "<bos>" once; "<start_of_turn>user\\n" / "<start_of_turn>model\\n";
  content passed through Jinja's `trim` (Python's str.strip); every turn closed by
  "<end_of_turn>\\n"; roles strictly alternate from a user turn; a leading system message raises
  "System role not supported".
* gemma3 (google/gemma-3-1b-it, -4b-it, -12b-it, -27b-it): as gemma, but a leading system message is
  folded into the first turn: system text (untrimmed) + "\\n\\n" + the first user text (trimmed).
* zephyr (HuggingFaceH4/zephyr-7b-beta): "<|role|>\\n" + content + "</s>" + "\\n" for every message,
  content verbatim, no BOS in the text; generation prompt "<|assistant|>\\n".
* vicuna (lmsys/vicuna-7b-v1.5, -13b-v1.5, -7b-v1.3, -13b-v1.3; FastChat "vicuna_v1.1"): system +
  " " then "USER: text " / "ASSISTANT: text</s>"; an empty message renders as "ROLE:" alone; default
  system "A chat between a curious user and an artificial intelligence assistant. The assistant
  gives helpful, detailed, and polite answers to the user's questions."; generation prompt
  "ASSISTANT:". Our decision: "<s>" (the BOS the Llama tokenizer prepended in FastChat) is written.
* alpaca (Stanford Alpaca README prompt, no-input variant): preamble "\\n\\n### Instruction:\\n"
  instruction "\\n\\n### Response:\\n" output "</s>". Our decisions: "<s>" first; repeated blocks for
  multi-turn, separated by a blank line after "</s>"; a system message replaces the preamble
  (an empty one removes it).
"""

from __future__ import annotations

import copy

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import Row, build_one
from expected import normalized, supervised_runs
import masked_shards.build.rows as rows_module
from masked_shards.config import PipelineConfig
from masked_shards.records import RESERVED_CHARS, Example, Rejected, Turn
from masked_shards.build.rows import RowBuilder, check_template
from masked_shards.build.templates import ChatTemplate, Renderer, TemplateError, resolve_template
from masked_shards.build.tokenization import Encoder, special_tokens

NAMES = ["gemma", "gemma3", "zephyr", "vicuna", "alpaca"]
FAMILY = {"gemma": "gemma", "gemma3": "gemma", "zephyr": "llama", "vicuna": "llama", "alpaca": "llama"}

VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
ALPACA_PREAMBLE = "Below is an instruction that describes a task. Write a response that appropriately completes the request."


# --- family tokenizers: Qwen2's 151k byte-level BPE plus each family's special tokens ----------


@pytest.fixture(scope="module")
def gemma_tokenizer(qwen2_tokenizer):
    tokenizer = copy.deepcopy(qwen2_tokenizer)
    tokenizer.add_special_tokens(
        {"bos_token": "<bos>", "eos_token": "<eos>", "extra_special_tokens": ["<start_of_turn>", "<end_of_turn>"]},
        replace_extra_special_tokens=False,
    )
    return tokenizer


@pytest.fixture(scope="module")
def llama_tokenizer(qwen2_tokenizer):
    """bos <s>, eos </s>: the Llama/Mistral special tokens of Zephyr, Vicuna and Alpaca."""
    tokenizer = copy.deepcopy(qwen2_tokenizer)
    tokenizer.add_special_tokens({"bos_token": "<s>", "eos_token": "</s>"})
    return tokenizer


@pytest.fixture
def family(gemma_tokenizer, llama_tokenizer):
    """Returns the family tokenizer of a template name."""
    tokenizers = {"gemma": gemma_tokenizer, "llama": llama_tokenizer}
    return lambda name: tokenizers[FAMILY[name]]


@pytest.fixture(scope="module")
def builder(gemma_tokenizer, llama_tokenizer):
    """Returns the RowBuilder of a template name with its family tokenizer (no length limit,
    special-token text kept as plain text, so generated text never gets a row rejected).

    A RowBuilder's Encoder copies the 151k-token tokenizer twice (about 2-4 s), so the builders of
    one family share one Encoder: it holds nothing but the tokenizer."""
    tokenizers = {"gemma": gemma_tokenizer, "llama": llama_tokenizer}
    encoders: dict[int, Encoder] = {}

    def shared_encoder(tokenizer) -> Encoder:
        if id(tokenizer) not in encoders:
            encoders[id(tokenizer)] = Encoder(tokenizer)
        return encoders[id(tokenizer)]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rows_module, "Encoder", shared_encoder)
        builders = {
            name: RowBuilder(PipelineConfig(template=name, max_length=100_000, special_text="plain"), tokenizers[FAMILY[name]], resolve_template(name, None))
            for name in NAMES
        }
    return builders.__getitem__


def test_family_tokenizers_have_the_special_tokens(gemma_tokenizer, llama_tokenizer):
    assert (gemma_tokenizer.bos_token, gemma_tokenizer.eos_token) == ("<bos>", "<eos>")
    assert {"<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"} <= set(special_tokens(gemma_tokenizer))
    assert (llama_tokenizer.bos_token, llama_tokenizer.eos_token) == ("<s>", "</s>")
    assert {"<s>", "</s>"} <= set(special_tokens(llama_tokenizer))
    ids = gemma_tokenizer("<start_of_turn>model\nx<end_of_turn>", add_special_tokens=False)["input_ids"]
    assert ids[0] == gemma_tokenizer.convert_tokens_to_ids("<start_of_turn>")
    assert ids[-1] == gemma_tokenizer.convert_tokens_to_ids("<end_of_turn>")


# --- conversations and their hand-written renderings -------------------------------------------

CONVERSATIONS = {
    "single": (Turn("user", "What is 2+2?"), Turn("assistant", "4", True)),
    "system": (Turn("system", "Be brief."), Turn("user", "Hi"), Turn("assistant", " Hello! ", True)),
    "multi": (Turn("user", "A"), Turn("assistant", "B", True), Turn("user", "C\n"), Turn("assistant", "D", True)),
    "system_multi": (
        Turn("system", "Use short words. "),
        Turn("user", "Q1"),
        Turn("assistant", "1. Yes", True),
        Turn("user", "Q2"),
        Turn("assistant", "2. No", True),
    ),
    "padded": (Turn("user", "  Hi there \n"), Turn("assistant", "\n Sure. \n", True)),
    "empty_user": (Turn("user", ""), Turn("assistant", "42", True)),
    "empty_system": (Turn("system", ""), Turn("user", "Hi"), Turn("assistant", "42", True)),
}

# Gemma 1/2 has no system role: these conversations are refused (see the rejection tests).
GEMMA_REFUSES = {"system", "system_multi", "empty_system"}

D = VICUNA_SYSTEM
P = ALPACA_PREAMBLE
EXPECTED = {
    # gemma: <bos>, model role, trimmed content, <end_of_turn>\n after every turn.
    ("gemma", "single"): "<bos><start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n4<end_of_turn>\n",
    ("gemma", "multi"): "<bos><start_of_turn>user\nA<end_of_turn>\n<start_of_turn>model\nB<end_of_turn>\n<start_of_turn>user\nC<end_of_turn>\n<start_of_turn>model\nD<end_of_turn>\n",
    ("gemma", "padded"): "<bos><start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\nSure.<end_of_turn>\n",
    ("gemma", "empty_user"): "<bos><start_of_turn>user\n<end_of_turn>\n<start_of_turn>model\n42<end_of_turn>\n",
    # gemma3: as gemma; system text + "\n\n" opens the first user turn (system not trimmed).
    ("gemma3", "single"): "<bos><start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n4<end_of_turn>\n",
    ("gemma3", "system"): "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n",
    ("gemma3", "multi"): "<bos><start_of_turn>user\nA<end_of_turn>\n<start_of_turn>model\nB<end_of_turn>\n<start_of_turn>user\nC<end_of_turn>\n<start_of_turn>model\nD<end_of_turn>\n",
    ("gemma3", "system_multi"): "<bos><start_of_turn>user\nUse short words. \n\nQ1<end_of_turn>\n<start_of_turn>model\n1. Yes<end_of_turn>\n<start_of_turn>user\nQ2<end_of_turn>\n<start_of_turn>model\n2. No<end_of_turn>\n",
    ("gemma3", "padded"): "<bos><start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\nSure.<end_of_turn>\n",
    ("gemma3", "empty_user"): "<bos><start_of_turn>user\n<end_of_turn>\n<start_of_turn>model\n42<end_of_turn>\n",
    ("gemma3", "empty_system"): "<bos><start_of_turn>user\n\n\nHi<end_of_turn>\n<start_of_turn>model\n42<end_of_turn>\n",
    # zephyr: <|role|>\n content </s>\n, verbatim, no BOS.
    ("zephyr", "single"): "<|user|>\nWhat is 2+2?</s>\n<|assistant|>\n4</s>\n",
    ("zephyr", "system"): "<|system|>\nBe brief.</s>\n<|user|>\nHi</s>\n<|assistant|>\n Hello! </s>\n",
    ("zephyr", "multi"): "<|user|>\nA</s>\n<|assistant|>\nB</s>\n<|user|>\nC\n</s>\n<|assistant|>\nD</s>\n",
    ("zephyr", "system_multi"): "<|system|>\nUse short words. </s>\n<|user|>\nQ1</s>\n<|assistant|>\n1. Yes</s>\n<|user|>\nQ2</s>\n<|assistant|>\n2. No</s>\n",
    ("zephyr", "padded"): "<|user|>\n  Hi there \n</s>\n<|assistant|>\n\n Sure. \n</s>\n",
    ("zephyr", "empty_user"): "<|user|>\n</s>\n<|assistant|>\n42</s>\n",
    ("zephyr", "empty_system"): "<|system|>\n</s>\n<|user|>\nHi</s>\n<|assistant|>\n42</s>\n",
    # vicuna: <s> + system + " " + "USER: x " + "ASSISTANT: y</s>"; empty text -> "ROLE:" alone.
    ("vicuna", "single"): "<s>" + D + " USER: What is 2+2? ASSISTANT: 4</s>",
    ("vicuna", "system"): "<s>Be brief. USER: Hi ASSISTANT:  Hello! </s>",
    ("vicuna", "multi"): "<s>" + D + " USER: A ASSISTANT: B</s>USER: C\n ASSISTANT: D</s>",
    ("vicuna", "system_multi"): "<s>Use short words.  USER: Q1 ASSISTANT: 1. Yes</s>USER: Q2 ASSISTANT: 2. No</s>",
    ("vicuna", "padded"): "<s>" + D + " USER:   Hi there \n ASSISTANT: \n Sure. \n</s>",
    ("vicuna", "empty_user"): "<s>" + D + " USER:ASSISTANT: 42</s>",
    ("vicuna", "empty_system"): "<s> USER: Hi ASSISTANT: 42</s>",
    # alpaca: <s> + preamble \n\n ### Instruction:\n ... \n\n ### Response:\n ... </s> [\n\n next block].
    ("alpaca", "single"): "<s>" + P + "\n\n### Instruction:\nWhat is 2+2?\n\n### Response:\n4</s>",
    ("alpaca", "system"): "<s>Be brief.\n\n### Instruction:\nHi\n\n### Response:\n Hello! </s>",
    ("alpaca", "multi"): "<s>" + P + "\n\n### Instruction:\nA\n\n### Response:\nB</s>\n\n### Instruction:\nC\n\n\n### Response:\nD</s>",
    ("alpaca", "system_multi"): "<s>Use short words. \n\n### Instruction:\nQ1\n\n### Response:\n1. Yes</s>\n\n### Instruction:\nQ2\n\n### Response:\n2. No</s>",
    ("alpaca", "padded"): "<s>" + P + "\n\n### Instruction:\n  Hi there \n\n\n### Response:\n\n Sure. \n</s>",
    ("alpaca", "empty_user"): "<s>" + P + "\n\n### Instruction:\n\n\n### Response:\n42</s>",
    ("alpaca", "empty_system"): "<s>### Instruction:\nHi\n\n### Response:\n42</s>",
}
EXPECTED_SPANS = {
    ("gemma", "single"): ["4<end_of_turn>"],
    ("gemma", "multi"): ["B<end_of_turn>", "D<end_of_turn>"],
    ("gemma", "padded"): ["Sure.<end_of_turn>"],
    ("gemma", "empty_user"): ["42<end_of_turn>"],
    ("gemma3", "single"): ["4<end_of_turn>"],
    ("gemma3", "system"): ["Hello!<end_of_turn>"],
    ("gemma3", "multi"): ["B<end_of_turn>", "D<end_of_turn>"],
    ("gemma3", "system_multi"): ["1. Yes<end_of_turn>", "2. No<end_of_turn>"],
    ("gemma3", "padded"): ["Sure.<end_of_turn>"],
    ("gemma3", "empty_user"): ["42<end_of_turn>"],
    ("gemma3", "empty_system"): ["42<end_of_turn>"],
    **{
        (name, conversation): spans
        for name in ("zephyr", "alpaca")
        for conversation, spans in {
            "single": ["4</s>"],
            "system": [" Hello! </s>"],
            "multi": ["B</s>", "D</s>"],
            "system_multi": ["1. Yes</s>", "2. No</s>"],
            "padded": ["\n Sure. \n</s>"],
            "empty_user": ["42</s>"],
            "empty_system": ["42</s>"],
        }.items()
    },
}

# Vicuna's generation prompt ends at "ASSISTANT:", so the model generates the space before the answer.
EXPECTED_SPANS |= {
    ("vicuna", conversation): [" " + span for span in EXPECTED_SPANS[("zephyr", conversation)]] for conversation in ("single", "system", "multi", "system_multi", "padded", "empty_user", "empty_system")
}

# Prompts for inference: the conversation so far + add_generation_prompt=True.
EXPECTED_GENERATION_PROMPT = {
    "gemma": "<bos><start_of_turn>user\nA<end_of_turn>\n<start_of_turn>model\nB<end_of_turn>\n<start_of_turn>user\nC<end_of_turn>\n<start_of_turn>model\n",
    "gemma3": "<bos><start_of_turn>user\nA<end_of_turn>\n<start_of_turn>model\nB<end_of_turn>\n<start_of_turn>user\nC<end_of_turn>\n<start_of_turn>model\n",
    "zephyr": "<|user|>\nA</s>\n<|assistant|>\nB</s>\n<|user|>\nC\n</s>\n<|assistant|>\n",
    "vicuna": "<s>" + D + " USER: A ASSISTANT: B</s>USER: C\n ASSISTANT:",
    "alpaca": "<s>" + P + "\n\n### Instruction:\nA\n\n### Response:\nB</s>\n\n### Instruction:\nC\n\n\n### Response:\n",
}

# Rows where Qwen2's BPE would merge header and answer characters into one token (a header's
# space or newline with the answer's first characters), so the pipeline re-encodes with a token
# boundary at the span edge and its ids differ from Hugging Face's single encoding.
STRADDLES = {("zephyr", "padded"), ("alpaca", "padded")}


def _renderer(template: ChatTemplate, tokenizer) -> Renderer:
    return Renderer(template, bos_token=tokenizer.bos_token, eos_token=tokenizer.eos_token, special_tokens=special_tokens(tokenizer))


def _messages(turns: tuple[Turn, ...]) -> list[dict[str, str]]:
    return [t.message() for t in turns]


def test_every_template_is_bundled_with_a_description():
    from masked_shards.bundled_templates import bundled

    available = bundled()
    for name in NAMES:
        assert available[name], name
        assert resolve_template(name, None).has_generation_marks


def test_expected_table_is_complete():
    for name in NAMES:
        for conversation in CONVERSATIONS:
            refused = name == "gemma" and conversation in GEMMA_REFUSES
            assert ((name, conversation) in EXPECTED) != refused, (name, conversation)
            assert ((name, conversation) in EXPECTED_SPANS) != refused, (name, conversation)


# --- 1. the published format, by hand ----------------------------------------------------------


@pytest.mark.parametrize("name,conversation", sorted(EXPECTED))
def test_renders_the_published_format(family, name, conversation):
    rendered = _renderer(resolve_template(name, None), family(name)).render(Example("t:0", "t", CONVERSATIONS[conversation]))
    assert rendered.text == EXPECTED[(name, conversation)]
    assert [s.text for s in rendered.segments if s.trainable] == EXPECTED_SPANS[(name, conversation)]


@pytest.mark.parametrize("name", NAMES)
def test_generation_prompt_is_the_published_one(family, name):
    messages = _messages(CONVERSATIONS["multi"][:3])
    source = resolve_template(name, None).source
    text = family(name).apply_chat_template(messages, chat_template=source, tokenize=False, add_generation_prompt=True)
    assert text == EXPECTED_GENERATION_PROMPT[name]
    # The prompt a model is given is exactly what precedes the next answer in the training string.
    assert EXPECTED[(name, "multi")].startswith(text)


# --- 2. agreement with Hugging Face -------------------------------------------------------------


@pytest.mark.parametrize("name,conversation", sorted(EXPECTED))
def test_agrees_with_hugging_face_apply_chat_template(family, builder, name, conversation):
    tokenizer = family(name)
    source = resolve_template(name, None).source
    turns = CONVERSATIONS[conversation]
    hf_text = tokenizer.apply_chat_template(_messages(turns), chat_template=source, tokenize=False)
    ours = _renderer(ChatTemplate(name, source), tokenizer).render(Example("t:0", "t", turns))
    assert ours.text == hf_text
    hf = tokenizer.apply_chat_template(_messages(turns), chat_template=source, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    row = build_one(builder(name), Example("t:0", "t", turns))
    assert isinstance(row, Row), row
    assert row.split_at_boundaries == ((name, conversation) in STRADDLES)
    if row.split_at_boundaries:
        # Same text, but a token of Hugging Face's single encoding spans header and answer; we
        # force a token boundary there instead (see pipeline/build/masking.py), so the ids differ.
        assert row.input_ids != list(hf["input_ids"])
        assert tokenizer.decode(row.input_ids, clean_up_tokenization_spaces=False) == tokenizer.decode(hf["input_ids"], clean_up_tokenization_spaces=False)
        return
    assert row.input_ids == list(hf["input_ids"])
    assert [int(label != -100) for label in row.labels] == list(hf["assistant_masks"])


def test_gemma3_content_parts_render_as_the_official_template(gemma_tokenizer):
    """Not used by the pipeline (content is always a string), but the file also serves as a
    tokenizer chat template: text parts are trimmed, image parts become <start_of_image>."""
    messages = [
        {"role": "system", "content": [{"type": "text", "text": "Sys"}]},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": " What is this? "}]},
        {"role": "assistant", "content": [{"type": "text", "text": " A cat. "}]},
    ]
    text = gemma_tokenizer.apply_chat_template(messages, chat_template=resolve_template("gemma3", None).source, tokenize=False)
    assert text == "<bos><start_of_turn>user\nSys\n\n<start_of_image>What is this?<end_of_turn>\n<start_of_turn>model\nA cat.<end_of_turn>\n"


# --- 3. what a family cannot express -------------------------------------------------------------

REFUSED = [
    ("gemma", "system", "System role not supported"),
    ("gemma", "system_multi", "System role not supported"),
    ("gemma", "empty_system", "System role not supported"),
    ("gemma", "two_users", "must alternate"),
    ("gemma", "assistant_first", "must alternate"),
    ("gemma3", "two_users", "must alternate"),
    ("gemma3", "assistant_first", "must alternate"),
    ("vicuna", "two_users", "must alternate"),
    ("vicuna", "assistant_first", "must alternate"),
    ("vicuna", "second_system", "must alternate"),
    ("alpaca", "two_users", "must alternate"),
    ("alpaca", "assistant_first", "must alternate"),
    ("alpaca", "second_system", "must alternate"),
]
ODD_CONVERSATIONS = {
    "two_users": (Turn("user", "a"), Turn("user", "b"), Turn("assistant", "c", True)),
    "assistant_first": (Turn("assistant", "a", True), Turn("user", "b"), Turn("assistant", "c", True)),
    "second_system": (Turn("system", "s"), Turn("user", "a"), Turn("system", "t"), Turn("user", "b"), Turn("assistant", "c", True)),
}


@pytest.mark.parametrize("name,conversation,message", REFUSED)
def test_refused_conversations_are_rejected_records(family, builder, name, conversation, message):
    tokenizer = family(name)
    turns = {**CONVERSATIONS, **ODD_CONVERSATIONS}[conversation]
    template = resolve_template(name, None)
    with pytest.raises(TemplateError, match=message):
        _renderer(template, tokenizer).render(Example("t:0", "t", turns))
    # Hugging Face refuses it too, with the same message.
    with pytest.raises(Exception, match=message):
        tokenizer.apply_chat_template(_messages(turns), chat_template=template.source, tokenize=False)
    result = build_one(builder(name), Example("data.jsonl:7", "data.jsonl", turns))
    assert isinstance(result, Rejected)
    assert (result.source, result.index, result.reason) == ("data.jsonl", 7, "template_error")
    assert message in result.detail


GEMMA_LATER_SYSTEM = {
    # The official Gemma templates test only `(role == 'user') != (index is even)`, so a system
    # message in an odd (model) position passes and renders as a "system" turn; reproduced as is.
    ("gemma", (Turn("user", "a"), Turn("system", "t"), Turn("user", "b"), Turn("assistant", "c", True))): (
        "<bos><start_of_turn>user\na<end_of_turn>\n<start_of_turn>system\nt<end_of_turn>\n<start_of_turn>user\nb<end_of_turn>\n<start_of_turn>model\nc<end_of_turn>\n"
    ),
    ("gemma3", ODD_CONVERSATIONS["second_system"]): (
        "<bos><start_of_turn>user\ns\n\na<end_of_turn>\n<start_of_turn>system\nt<end_of_turn>\n<start_of_turn>user\nb<end_of_turn>\n<start_of_turn>model\nc<end_of_turn>\n"
    ),
}


@pytest.mark.parametrize("name,turns", sorted(GEMMA_LATER_SYSTEM, key=lambda key: key[0]))
def test_gemma_system_message_in_a_model_position_renders_as_officially(family, name, turns):
    tokenizer = family(name)
    template = resolve_template(name, None)
    rendered = _renderer(template, tokenizer).render(Example("t:0", "t", turns))
    assert rendered.text == GEMMA_LATER_SYSTEM[(name, turns)]
    assert rendered.text == tokenizer.apply_chat_template(_messages(turns), chat_template=template.source, tokenize=False)
    assert [s.text for s in rendered.segments if s.trainable] == ["c<end_of_turn>"]


def test_zephyr_renders_any_order_of_roles(llama_tokenizer):
    """The official Zephyr template has no role checks: every message is its own <|role|> block."""
    turns = ODD_CONVERSATIONS["second_system"]
    rendered = _renderer(resolve_template("zephyr", None), llama_tokenizer).render(Example("t:0", "t", turns))
    assert rendered.text == "<|system|>\ns</s>\n<|user|>\na</s>\n<|system|>\nt</s>\n<|user|>\nb</s>\n<|assistant|>\nc</s>\n"
    assert [s.text for s in rendered.segments if s.trainable] == ["c</s>"]


# --- 4. the invariant, as a property -------------------------------------------------------------

# Written from the formats: what each family's rendering of an assistant turn trains on.
SUPERVISED_B = {
    "gemma": lambda content: content.strip() + "<end_of_turn>",  # Jinja trim == str.strip
    "gemma3": lambda content: content.strip() + "<end_of_turn>",
    "zephyr": lambda content: content + "</s>",
    "vicuna": lambda content: " " + content + "</s>",  # the space after "ASSISTANT:", then FastChat sep2
    "alpaca": lambda content: content + "</s>",
}


def _control_tokens(name: str, turns: tuple[Turn, ...]) -> int:
    """Special tokens each format writes: BOS and turn markers, never any from the text."""
    n_assistant = sum(t.role == "assistant" for t in turns)
    if name == "gemma":
        return 1 + 2 * len(turns)
    if name == "gemma3":
        return 1 + 2 * sum(t.role != "system" for t in turns)
    if name == "zephyr":
        return len(turns)
    return 1 + n_assistant  # vicuna, alpaca: <s> + one </s> per answer


_pieces = st.one_of(
    st.sampled_from([" ", "  ", "\n", "\n\n", "\t", "\r\n", "é", "e\u0301", "你好", "🙂", "ß", "'s", "<", "|", ">", "</s>", "<s>", "<end_of_turn>", "0", "Hello", " world", ":", "###"]),
    st.characters(exclude_categories=("Cs",), exclude_characters=RESERVED_CHARS),
)
text = st.lists(_pieces, max_size=25).map("".join) | st.lists(_pieces, min_size=100, max_size=250).map("".join)
answer = text.filter(lambda s: s.strip() != "")


@st.composite
def conversations(draw, system: bool) -> Example:
    turns = []
    if system and draw(st.booleans()):
        turns.append(Turn("system", draw(st.just("") | text)))
    for _ in range(draw(st.integers(1, 3))):
        turns.append(Turn("user", draw(text)))
        turns.append(Turn("assistant", draw(answer), True))
    return Example("generated:0", "generated", tuple(turns))


@pytest.mark.parametrize("name", NAMES)
def test_supervised_tokens_decode_to_assistant_turns(family, builder, name):
    tokenizer = family(name)
    rows = builder(name)
    specials = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(conversations(system=name != "gemma"))
    def check(example: Example) -> None:
        row = build_one(rows, example)
        assert isinstance(row, Row), row
        expected = [normalized(tokenizer, SUPERVISED_B[name](t.content)) for t in example.turns if t.role == "assistant"]
        runs = supervised_runs(row.input_ids, row.labels)
        decoded = [tokenizer.decode(run, skip_special_tokens=False, clean_up_tokenization_spaces=False) for run in runs]
        assert decoded == expected
        assert sum(1 for i in row.input_ids if i in specials) == _control_tokens(name, example.turns)

    check()


# --- 5. start-up check with the family tokenizer -------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_check_template_passes_with_the_family_tokenizer(family, name):
    check_template(resolve_template(name, None), family(name), f"{FAMILY[name]}-family")


@pytest.mark.parametrize("name", ["gemma", "gemma3", "vicuna"])
def test_check_template_refuses_a_tokenizer_without_the_end_of_turn_token(qwen2_tokenizer, name):
    """Qwen2 as it is has neither <end_of_turn> nor </s> as a special token."""
    with pytest.raises(Exception, match="one special token"):
        check_template(resolve_template(name, None), qwen2_tokenizer, "qwen2")

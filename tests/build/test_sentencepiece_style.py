"""The masking invariant on SentencePiece-style vocabularies (Llama 2, Mistral, Gemma families).

These mark a word start with "▁" and put one at the very start of an input. When a token
crosses a span edge the string is re-encoded in pieces, and a piece that is not the start of the
string must not get that marker, or the row would hold a space the text does not have. Both ways
tokenizers express it are covered: Metaspace's prepend_scheme, and the Prepend("▁") normalizer of
older Llama conversions. The vocabulary is trained here on text where "[/INST]" runs straight into
words, so with Metaspace its merges cross the mistral template's span edge (the legacy style,
which has no word split, merges differently and is covered by the property alone).
"""

from __future__ import annotations

import random
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from conftest import Row, build_one
from expected import supervised_runs
from masked_shards.config import PipelineConfig
from masked_shards.records import Example, Turn
from masked_shards.build.rows import RowBuilder
from masked_shards.build.templates import resolve_template

SPECIALS = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
WORDS = ["Hello", "world", "The", "answer", "is", "Yes", "No", "Sure", "Thanks", "because", "water", "Paris", "seven"]
# Written from each format, as the model generates it after its prompt.
SUPERVISED = {
    "mistral": lambda content: content + "</s>",
    "llama2": lambda content: " " + content.strip() + " </s>",
    "chatml": lambda content: content + "<|im_end|>",
}


def _corpus() -> list[str]:
    rng = random.Random(0)
    lines = []
    for _ in range(3000):
        question, answer = " ".join(rng.choices(WORDS, k=3)), " ".join(rng.choices(WORDS, k=4))
        lines.append(f"[INST] {question} [/INST]{answer}</s>")
        lines.append(f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n{answer}<|im_end|>\n")
        lines.append("".join(rng.choices(string.printable, k=30)))
    return lines


def _tokenizer(style: str) -> PreTrainedTokenizerFast:
    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    if style == "metaspace":  # current Llama/Mistral conversions
        backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
        backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    else:  # legacy Llama conversion: the marker comes from the normalizer
        backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
        backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    backend.train_from_iterator(_corpus(), trainers.BpeTrainer(vocab_size=3000, special_tokens=SPECIALS))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    return tokenizer


@pytest.fixture(scope="module", params=["metaspace", "prepend_normalizer"])
def sp_tokenizer(request) -> PreTrainedTokenizerFast:
    return _tokenizer(request.param)


def _pieces_text(tokenizer, ids: list[int]) -> str:
    """The exact text of a token run: pieces joined, "▁" read as a space (decode() would strip
    the first space of a run, as SentencePiece decoding does at the start of an output)."""
    return "".join(tokenizer.convert_ids_to_tokens(ids)).replace("▁", " ")


text = st.lists(st.sampled_from(WORDS) | st.sampled_from(list(" \n\t.,!?-")) | st.sampled_from(list(string.ascii_letters)), max_size=12).map("".join)
answer = text.filter(lambda s: s.strip() != "")


@st.composite
def conversations(draw) -> Example:
    turns = []
    for _ in range(draw(st.integers(1, 3))):
        turns.append(Turn("user", draw(text.filter(lambda s: s.strip() != ""))))
        turns.append(Turn("assistant", draw(answer), True))
    return Example("generated:0", "generated", tuple(turns))


@pytest.mark.parametrize("template", ["mistral", "llama2", "chatml"])
def test_supervised_pieces_spell_the_assistant_turns(sp_tokenizer, template):
    builder = RowBuilder(PipelineConfig(template=template, max_length=10_000), sp_tokenizer, resolve_template(template, None))
    split_rows = []

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(conversations())
    def check(example: Example) -> None:
        row = build_one(builder, example)
        assert isinstance(row, Row), row
        expected = [SUPERVISED[template](t.content) for t in example.turns if t.role == "assistant"]
        assert [_pieces_text(sp_tokenizer, run) for run in supervised_runs(row.input_ids, row.labels)] == expected
        split_rows.append(row.split_at_boundaries)

    check()
    if template == "mistral" and sp_tokenizer.backend_tokenizer.pre_tokenizer is not None:
        assert any(split_rows)  # Metaspace merges cross "[/INST]" into the answer: the split path ran


def test_a_split_piece_gets_no_word_start_marker():
    tokenizer = _tokenizer("metaspace")
    assert tokenizer.convert_ids_to_tokens(tokenizer("[/INST]Hello", add_special_tokens=False)["input_ids"]) == ["▁[/INST]Hello"]
    builder = RowBuilder(PipelineConfig(template="mistral"), tokenizer, resolve_template("mistral", None))
    row = build_one(builder, Example("t:0", "t", (Turn("user", "Hi"), Turn("assistant", "Hello world", True))))
    assert row.split_at_boundaries
    (run,) = supervised_runs(row.input_ids, row.labels)
    assert tokenizer.convert_ids_to_tokens(run) == ["Hello", "▁world", "</s>"]

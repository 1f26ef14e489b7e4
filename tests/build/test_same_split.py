"""Past ASCII, tiktoken takes only strings both regex engines split alike (build/same_split.py):
the ids and offsets are the tokenizer's own on any text, the characters the argument cannot cover
are kept out, and a pattern it cannot read keeps every character past ASCII out."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from masked_shards.build import kept, same_split
from masked_shards.build.same_bpe import GPT2_PATTERN, SEPARATOR, same_bpe
from masked_shards.build.tokenization import Encoder
from qwen2_tokenizer import QWEN2_PATTERN

LLAMA3_PATTERN = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
CLASSES = frozenset({r"\p{L}", r"\p{N}", r"\s"})


@pytest.mark.parametrize("pattern, folding", [(GPT2_PATTERN, False), (QWEN2_PATTERN, True), (LLAMA3_PATTERN, True)])
def test_the_published_patterns_are_read_as_three_classes(pattern, folding):
    assert same_split._classes(pattern) == (CLASSES, folding)


def test_other_escapes_classes_and_flags_are_read_or_refused():
    assert same_split._classes(r"[^\r\n\d]+|\w+|\S|\.|\[x\]") == (frozenset({r"\d", r"\w", r"\s"}), False)
    assert same_split._classes(r"\pL+|\P{Lu}") == (frozenset({r"\pL", r"\p{Lu}"}), False)
    for refused in (r"\b\w+", r"a.b", r"(?<=a)b", r"^a", r"a$", r"[[:alpha:]]", r"\x41", "é+", r"(?x)a", r"(?s:a)", r"[\w&&\d]", r"\u00e9"):
        assert same_split._classes(refused) is None, refused
        assert (same_split.unsure_characters(refused, SEPARATOR)[0x80:]).all()


def test_the_characters_kept_out_under_qwen2s_pattern():
    unsure = same_split.unsure_characters(QWEN2_PATTERN, SEPARATOR)
    assert not unsure[:0x80].any()
    for fine in "éüßÆяΩ中日本語한١٢😀\u00a0\u2028\u3000\u0301":
        assert not unsure[ord(fine)] or fine == "ß", fine  # ß folds to "ss": kept out below
    for out in ["\u017f", "\u212a", "ß", "\ufb01", "\u0130", SEPARATOR, "\ud800", "\udfff", "\u0378", "\U000f0000", "\U0010fffd"]:
        assert unsure[ord(out)], hex(ord(out))
    gpt2 = same_split.unsure_characters(GPT2_PATTERN, SEPARATOR)
    assert not gpt2[0x17F] and not gpt2[ord("ß")]  # no case folding in GPT-2's pattern
    assert gpt2[ord(SEPARATOR)]


def test_taken_reads_every_string_at_once():
    unsure = same_split.unsure_characters(QWEN2_PATTERN, SEPARATOR)
    texts = ["plain", "", "café", "long s \u017f", "日本語 and more", "x\ud800y", "😀", "a" * 50 + "\u212a", "ok"]
    assert same_split.taken(texts, unsure) == [0, 1, 2, 4, 6, 8]
    assert same_split.taken(texts, same_split.past_ascii()) == [0, 1, 8]


def test_the_table_is_kept_and_what_was_kept_is_what_the_next_run_goes_by(tmp_path, monkeypatch):
    monkeypatch.setenv("MASKED_SHARDS_CACHE", str(tmp_path))
    first = same_split.unsure_characters(GPT2_PATTERN, SEPARATOR)
    (entry,) = (tmp_path / same_split.KIND).iterdir()
    changed = first.copy()
    changed[ord("é")] = True
    entry.write_bytes(np.packbits(changed).tobytes())
    assert same_split.unsure_characters(GPT2_PATTERN, SEPARATOR)[ord("é")]
    entry.write_bytes(b"short")  # unreadable: measured again
    assert (same_split.unsure_characters(GPT2_PATTERN, SEPARATOR) == first).all()
    assert kept.read(same_split.KIND, entry.name) == np.packbits(first).tobytes()


def test_the_sample_check_finds_a_tokenizer_that_splits_otherwise(qwen2_tokenizer):
    """Qwen2's own backend composes accents (NFC) before it splits; tiktoken does not. The check
    in context sees it, and `same_bpe` of a tokenizer with a normalizer takes only ASCII."""
    encoder = Encoder(qwen2_tokenizer)
    same = encoder._same
    assert same_split.agrees(encoder._unnormalized, same.encode, same.unsure)
    assert not same_split.agrees(qwen2_tokenizer.backend_tokenizer, same.encode, same.unsure)
    assert same_bpe(qwen2_tokenizer.backend_tokenizer).taken(["café", "ok"]) == [1]


_scripts = st.sampled_from(["é", "ü", "ß", "ſ", "\u212a", "ﬁ", "я", "Ω", "中", "日本", "한국어", "١٢٣", "٣", "😀", "👩‍💻", "\u00a0", "\u2028", "\u3000", "e\u0301", "\u0301", "\ue000", "ǅ", "Ⅻ", "²", "\u200b", "\ufeff", "\U0001d400"])
_pieces = st.one_of(_scripts, st.sampled_from([" ", "\n", "'s", "'S", "1", "a", "!", "<|im_start|>", "<|im_end|>"]), st.text(max_size=6))
unicode_text = st.lists(_pieces, max_size=24).map("".join)


@pytest.fixture(scope="module")
def qwen2_encoder(qwen2_tokenizer):
    return Encoder(qwen2_tokenizer)


@settings(max_examples=300, deadline=None)
@given(texts=st.lists(unicode_text, min_size=1, max_size=6))
def test_any_text_gets_the_tokenizers_own_ids_and_offsets(qwen2_encoder, texts):
    encoder = qwen2_encoder
    fast = encoder.encode_batch(texts)
    slow = encoder._encode_with_offsets(texts)  # tokenizers alone, normalizer and all, with its own offsets
    assert fast.bounds.tolist() == slow.bounds.tolist()
    assert fast.ids.tolist() == slow.ids.tolist()
    assert fast.offsets.tolist() == slow.offsets.tolist()


def test_text_past_ascii_does_reach_tiktoken(qwen2_encoder):
    """Not vacuous: the strings of the property above that hold only characters classed alike go to tiktoken."""
    same = qwen2_encoder._same
    texts = ["日本語のテキスト", "Привет, мир! 123", "naïve café 😀", "\u017f", "x" + SEPARATOR]
    assert same.taken(texts) == [0, 1, 2]

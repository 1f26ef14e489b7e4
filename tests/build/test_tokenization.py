"""Tokenization: added tokens that strip whitespace keep the tokenizer's own encoding and labels;
loading a tokenizer that is not there fails in one sentence that says what is missing."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import AddedToken, Tokenizer, normalizers, pre_tokenizers

from conftest import Row, build_one
from expected import supervised_runs
from masked_shards.config import DEMO_TOKENIZER, PipelineConfig
from masked_shards.read.hub import looks_like_path
from masked_shards.records import RESERVED_CHARS, Example, Turn
from masked_shards.build.rows import RowBuilder
from masked_shards.build.templates import resolve_template
from masked_shards.build.tokenization import Encoder, FolderTokenizer, TokenizerError, full_tokenizer, load_tokenizer, special_tokens

# Unicode White_Space: what the `\s` of the tokenizers library's strip regex matches (Python's
# str.strip also strips U+001C..U+001F, which tokenizers keeps).
WHITE_SPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"


@pytest.fixture(scope="module")
def phi3_tokenizer(demo_tokenizer):
    """The demo vocabulary with Phi-3's chat tokens flagged as in Phi-3-mini's tokenizer: each
    strips the whitespace after it (rstrip), so `<|end|>` swallows the "\\n" the template puts
    after it, and `<|assistant|>\\n` swallows an answer's leading whitespace."""
    tokenizer = copy.deepcopy(demo_tokenizer)
    chat_tokens = ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False, rstrip=True) for t in chat_tokens], special_tokens=True)
    tokenizer.bos_token, tokenizer.eos_token = "<s>", "<|endoftext|>"
    return tokenizer


@pytest.fixture(scope="module")
def phi3_builder(phi3_tokenizer):
    return RowBuilder(PipelineConfig(template="phi3", max_length=100_000, special_text="plain"), phi3_tokenizer, resolve_template("phi3", None))


def _hf_ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _decoded_runs(tokenizer, row: Row) -> list[str]:
    return [tokenizer.decode(run, skip_special_tokens=False, clean_up_tokenization_spaces=False) for run in supervised_runs(row.input_ids, row.labels)]


def test_end_token_that_swallows_the_newline_keeps_hugging_face_ids(phi3_tokenizer, phi3_builder):
    example = Example("t:0", "t", (Turn("user", "What is 2+2?"), Turn("assistant", "4", True)))
    row = build_one(phi3_builder, example)
    text = phi3_builder.encoding._renderer.render(example).text
    assert text == "<|user|>\nWhat is 2+2?<|end|>\n<|assistant|>\n4<|end|>\n<|endoftext|>"
    assert row.input_ids == _hf_ids(phi3_tokenizer, text) and not row.split_at_boundaries
    assert _decoded_runs(phi3_tokenizer, row) == ["4<|end|>"]


@pytest.mark.parametrize("train_on_eot", [True, False])
def test_end_token_that_strips_both_sides_keeps_hugging_face_ids(demo_tokenizer, train_on_eot):
    """`lstrip` too: `<|end|>` swallows the answer's trailing spaces and the "\\n" after it; with
    or without the end-of-turn token trained, the answer's own tokens are the supervised ones."""
    tokenizer = copy.deepcopy(demo_tokenizer)
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False, lstrip=True, rstrip=True) for t in ("<|user|>", "<|assistant|>", "<|end|>")], special_tokens=True)
    builder = RowBuilder(PipelineConfig(template="phi3", train_on_eot=train_on_eot), tokenizer, resolve_template("phi3", None))
    example = Example("t:0", "t", (Turn("user", "Hi"), Turn("assistant", "Hello there  ", True)))
    row = build_one(builder, example)
    assert row.input_ids == _hf_ids(tokenizer, builder.encoding._renderer.render(example).text)
    assert _decoded_runs(tokenizer, row) == ["Hello there<|end|>" if train_on_eot else "Hello there"]


_pieces = st.one_of(
    st.sampled_from([" ", "\n", "\n\n", "\t", "\r\n", "\u3000", "\x1c", "é", "你好", "🙂", "Hello", " world", "<|end|>", "<|user|>"]),
    st.characters(exclude_categories=("Cs",), exclude_characters=RESERVED_CHARS),
)
_text = st.lists(_pieces, max_size=20).map("".join)


@st.composite
def _conversations(draw) -> Example:
    turns = [Turn("system", draw(_text))] if draw(st.booleans()) else []
    for _ in range(draw(st.integers(1, 3))):
        turns += [Turn("user", draw(_text)), Turn("assistant", draw(_text.filter(lambda s: s.strip(WHITE_SPACE))), True)]
    return Example("generated:0", "generated", tuple(turns))


def test_stripping_tokens_keep_hugging_face_ids_and_the_masking_invariant(phi3_tokenizer, phi3_builder):
    """Over generated conversations: the row is exactly `tokenizer(text)` (unless a message spells
    a special token, which `--special-text plain` keeps as text, unlike the tokenizer), and each
    run of supervised tokens decodes to one answer plus `<|end|>`; the answer's leading
    whitespace is swallowed by `<|assistant|>` in Hugging Face's own encoding, so no token has it."""

    @settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(_conversations())
    def check(example: Example) -> None:
        row = build_one(phi3_builder, example)
        assert isinstance(row, Row), row
        if not any(token in turn.content for turn in example.turns for token in special_tokens(phi3_tokenizer)):
            assert row.input_ids == _hf_ids(phi3_tokenizer, phi3_builder.encoding._renderer.render(example).text) and not row.split_at_boundaries
        assert _decoded_runs(phi3_tokenizer, row) == [t.content.lstrip(WHITE_SPACE) + "<|end|>" for t in example.turns if t.role == "assistant"]

    check()


@pytest.mark.parametrize("name", ["./missing-folder", "/no/such/tokenizer", "models/a/b", "~/tokenizers/mine"])
def test_a_missing_tokenizer_folder_is_named_as_such(name):
    with pytest.raises(TokenizerError) as raised:
        load_tokenizer(name)
    assert str(raised.value) == f"tokenizer folder {name} does not exist"


@pytest.mark.parametrize(("name", "path"), [("./tok", True), ("/abs", True), ("a/b/c", True), ("C:\\tok", True), ("gpt2", False), ("Qwen/Qwen2-0.5B", False), ("org/model.v1_x", False)])
def test_paths_are_told_from_hub_ids(name, path):
    assert looks_like_path(name) is path


@pytest.mark.parametrize("loader", [load_tokenizer, full_tokenizer])
def test_a_seq2seq_builder_on_the_shared_tokenizer_leaves_decoder_special_tokens_whole(loader):
    """load_tokenizer (and full_tokenizer, which seq2seq rows use) hand every caller in a process
    the same tokenizer, and transformers leaves `encode_special_tokens` on after a seq2seq
    builder's `split_special_tokens=True` call; a decoder builder made afterwards must still
    encode the template's own special tokens as single ids."""
    from masked_shards.config import DEMO_TOKENIZER
    from masked_shards.read.translation import TranslationPair

    tokenizer = loader(DEMO_TOKENIZER)
    seq2seq = RowBuilder(PipelineConfig(model_type="seq2seq"), tokenizer, None)
    seq2seq.build([TranslationPair("pairs:0", "pairs", "Hello there.", "Hallo.")])
    assert loader(DEMO_TOKENIZER) is tokenizer  # shared: the case this test is about
    decoder = RowBuilder(PipelineConfig(), tokenizer, resolve_template("chatml", None))
    row = build_one(decoder, Example("chat:0", "chat", (Turn("user", "Hi", False), Turn("assistant", "Yo", True))))
    start = tokenizer.backend_tokenizer.token_to_id("<|im_start|>")
    assert isinstance(row, Row) and row.input_ids.count(start) == 2


SAMPLE = "<|im_start|>user\nHello  wörld, ß 😀\t\tx<|im_end|>\n<|im_start|>assistant\n  Fine.\n\n<|im_end|><|endoftext|>"


def test_a_plain_folder_loads_without_transformers_and_agrees_with_it(tokenizer, tmp_path):
    """The job reads a plain tokenizer folder with `tokenizers` alone (importing transformers takes
    seconds); everything the job reads of it equals what transformers loads from the same folder."""
    folder = str(tmp_path / "saved")
    tokenizer.save_pretrained(folder)
    light, full = load_tokenizer(folder), full_tokenizer(folder)
    assert isinstance(light, FolderTokenizer) and not isinstance(full, FolderTokenizer)
    for name in ("bos_token", "eos_token", "pad_token", "bos_token_id", "eos_token_id", "pad_token_id", "model_max_length", "chat_template"):
        assert getattr(light, name) == getattr(full, name), name
    assert len(light) == len(full) and special_tokens(light) == special_tokens(full)
    assert set(light.all_special_ids) == set(full.all_special_ids)
    assert {n: (t.content, t.special, t.lstrip, t.rstrip) for n, t in light.added_tokens_decoder.items()} == {n: (t.content, t.special, t.lstrip, t.rstrip) for n, t in full.added_tokens_decoder.items()}
    ours, theirs = (t.backend_tokenizer.encode(SAMPLE, add_special_tokens=False) for t in (light, full))
    assert ours.ids == theirs.ids == full(SAMPLE, add_special_tokens=False)["input_ids"] and ours.offsets == theirs.offsets
    assert light.decode(ours.ids) == full.decode(ours.ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


@pytest.mark.parametrize(
    "change",
    [
        {"add_bos_token": True},  # transformers' post-processor would change
        {"tokenizer_class": "LlamaTokenizerFast"},  # a class with a conversion of its own
        {"eos_token": "<|not_in_vocabulary|>"},  # transformers would add it
        {"clean_up_tokenization_spaces": True},  # decoding differs
    ],
)
def test_a_folder_that_needs_transformers_is_loaded_by_it(demo_tokenizer, tmp_path, change):
    import json
    import shutil

    from masked_shards.config import DEMO_TOKENIZER

    folder = tmp_path / "tok"
    shutil.copytree(DEMO_TOKENIZER, folder)
    settings = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    (folder / "tokenizer_config.json").write_text(json.dumps({**settings, **change}), encoding="utf-8")
    assert not isinstance(load_tokenizer(str(folder)), FolderTokenizer)


# Offsets derived from byte lengths (Encoder.encode_batch): the same ids and offsets as the Rust
# tokenizer's own, on ASCII strings, strings with other characters, and strings where an added
# token swallows whitespace (those are encoded again with offsets).
_ascii_pieces = st.one_of(
    st.sampled_from([" ", "  ", "\n", "\n\n", "\t", "\r\n", "Hello", " world", "'s", "123", "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|im_start|>assistant\n", "<|end|>", "<|user|>"]),
    st.characters(max_codepoint=127),
)
_mixed_pieces = st.one_of(_ascii_pieces, st.sampled_from(["é", "你好", "🙂", "\u3000", "\xa0", "e\u0301", "\u212b", "\ufb01"]), st.characters(exclude_categories=("Cs",)))
_batches = st.lists(st.one_of(st.lists(_ascii_pieces, max_size=30).map("".join), st.lists(_mixed_pieces, max_size=12).map("".join)), min_size=1, max_size=8)


def _untrimmed(tokenizer) -> Tokenizer:
    backend = copy.deepcopy(tokenizer.backend_tokenizer)
    backend.post_processor = None  # no trimming of offsets: the Encoder untrims them too
    return backend


def _rust_encoding(backend: Tokenizer, texts: list[str]) -> tuple[list[list[int]], list[list[tuple[int, int]]]]:
    encodings = backend.encode_batch(texts, add_special_tokens=False)
    return [e.ids for e in encodings], [e.offsets for e in encodings]


def _encoded(encoder: Encoder, texts: list[str]) -> tuple[list[list[int]], list[list[tuple[int, int]]]]:
    batch = encoder.encode_batch(texts)
    rows = [batch[k] for k in range(len(texts))]
    return [r.ids.tolist() for r in rows], [[tuple(o) for o in r.offsets.tolist()] for r in rows]


def test_byte_level_vocabularies_take_offsets_from_byte_lengths(tokenizer):
    """Both test vocabularies are byte-level BPE, so they take the derived path; over generated
    batches (ASCII, characters of two to four bytes, strings NFC would change) its ids and offsets
    are the Rust tokenizer's own."""
    encoder, reference = Encoder(tokenizer), _untrimmed(tokenizer)
    assert encoder._spelling is not None

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(_batches)
    def check(texts: list[str]) -> None:
        assert _encoded(encoder, texts) == _rust_encoding(reference, texts)

    check()


def test_strings_where_a_token_swallows_whitespace_are_encoded_again(phi3_tokenizer):
    """`<|end|>` swallows the whitespace after it, so its string's lengths fall short and it is
    encoded with offsets (narrowed to the token's own text); the other strings keep their place."""
    encoder = Encoder(phi3_tokenizer)
    texts = ["a<|end|>\n<|user|>b", "plain text", "x<|end|>y", "é<|end|>\n"]
    ids, offsets = _encoded(encoder, texts)
    rust_ids, rust_offsets = _rust_encoding(_untrimmed(phi3_tokenizer), texts)
    assert ids == rust_ids
    assert offsets[1:3] == rust_offsets[1:3]  # nothing swallowed
    assert offsets[0] == [(0, 1), (1, 8), (9, 17), (17, 18)] and rust_offsets[0][1] == (1, 9)
    assert offsets[3][-1] == (1, 8) and rust_offsets[3][-1] == (1, 9)


def test_characters_split_between_tokens_and_strings_the_normalizer_changes(qwen2_tokenizer):
    """Qwen2 normalizes to NFC: a string already in NFC takes the derived path, with a character's
    bytes shared by two tokens giving both that character; one NFC would change ("e" + combining
    acute becomes "é") is encoded with the tokenizer's own offsets, which point into the text as
    given, not into its normal form."""
    encoder = Encoder(qwen2_tokenizer)
    assert encoder._spelling.forms == ("NFC",)
    assert encoder._unnormalized.normalizer is None  # the derived path skips NFC (and the property above covers it)
    assert encoder._spelling.unchanged("café 你好") and not encoder._spelling.unchanged("cafe\u0301")
    texts = ["café 你好 🙂🙂 \U0001f9ec", "cafe\u0301 au lait", "plain"]
    ids, offsets = _encoded(encoder, texts)
    assert (ids, offsets) == _rust_encoding(_untrimmed(qwen2_tokenizer), texts)
    shared = [o for o, after in zip(offsets[0], offsets[0][1:]) if o[1] > after[0]]
    assert shared, "no character split between tokens: the case this test is for is not exercised"


def _normalizing_folder(folder: Path, added: dict) -> FolderTokenizer:
    """The demo tokenizer with an NFC normalizer and one more added token, as a folder."""
    shutil.copytree(DEMO_TOKENIZER, folder)
    state = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    state["normalizer"] = {"type": "NFC"}
    state["added_tokens"].append({"single_word": False, "lstrip": False, "rstrip": False, **added})
    (folder / "tokenizer.json").write_text(json.dumps(state), encoding="utf-8")
    return FolderTokenizer(str(folder), json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8")))


@pytest.mark.parametrize(
    ("added", "copied"),
    [
        ({"id": 4096, "content": "<|next|>", "normalized": False, "special": True}, True),
        ({"id": 4096, "content": "e\u0301!", "normalized": True, "special": False}, False),  # the backend matches its NFC form "é!"
    ],
    ids=["plain-token", "token-nfc-changes"],
)
def test_the_encoder_drops_the_normalizer_only_where_its_added_tokens_come_back_the_same(tmp_path, added, copied):
    """Strings the normalizer leaves as they are skip it on a copy of the tokenizer that shares its
    model, with its added tokens added again; where one would no longer match the text the backend
    matches it in, the backend itself is used. Either way the ids and offsets are the tokenizer's own."""
    tokenizer = _normalizing_folder(tmp_path / "tok", added)
    encoder = Encoder(tokenizer)
    assert (encoder._unnormalized is not encoder._backend) == copied
    assert (encoder._unnormalized.normalizer is None) == copied
    texts = [f"x{added['content']}y", "café!", "<|im_start|>user\nHi<|im_end|>", "cafe\u0301!"]
    assert _encoded(encoder, texts) == _rust_encoding(_untrimmed(tokenizer), texts)


@pytest.mark.parametrize(
    "change",
    [
        lambda b: setattr(b, "pre_tokenizer", pre_tokenizers.ByteLevel(add_prefix_space=True)),
        lambda b: setattr(b, "pre_tokenizer", pre_tokenizers.Sequence([pre_tokenizers.Metaspace(), pre_tokenizers.ByteLevel(add_prefix_space=False)])),
        lambda b: setattr(b, "normalizer", normalizers.Lowercase()),
        lambda b: setattr(b, "normalizer", normalizers.Sequence([normalizers.NFC(), normalizers.Prepend("_")])),
    ],
    ids=["prefix-space", "metaspace", "lowercase", "prepend"],
)
def test_a_tokenizer_that_may_write_characters_keeps_the_tokenizers_offsets(demo_tokenizer, change):
    tokenizer = copy.deepcopy(demo_tokenizer)
    change(tokenizer.backend_tokenizer)
    encoder = Encoder(tokenizer)
    assert encoder._spelling is None
    texts = ["Hello world", "<|im_start|>user\nHi<|im_end|>"]
    assert _encoded(encoder, texts) == _rust_encoding(_untrimmed(tokenizer), texts)

"""tiktoken standing in for a byte-level BPE tokenizer (build/same_bpe.py): the ids are the
tokenizer's own wherever it is used, and each condition that keeps it out does keep it out."""

from __future__ import annotations

import itertools
import marshal

import pytest
import tiktoken
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import AddedToken, Regex, Tokenizer, pre_tokenizers
from tokenizers.models import BPE
from tokenizers.pre_tokenizers import ByteLevel

from masked_shards.build.same_bpe import same_bpe, why_not
from masked_shards.build.tokenization import Encoder, FolderTokenizer, load_tokenizer
from qwen2_tokenizer import QWEN2_PATTERN

ASCII = "".join(map(chr, range(128)))
_ascii_pieces = st.one_of(
    st.sampled_from([" ", "  ", "\n", "\n\n", "\t", "\r\n", "\r", "'s", "'S", "'ll", "'", "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|im_", "0", "123", "Hello", " world", "don't", "\x0b", "\x1c", "\x00"]),
    st.text(alphabet=ASCII, max_size=12),
)
ascii_text = st.lists(_ascii_pieces, max_size=40).map("".join)


@pytest.fixture(scope="module")
def qwen2(qwen2_tokenizer):
    backend = qwen2_tokenizer.backend_tokenizer
    backend.encode_special_tokens = False  # as the encoder sets it: a template's special tokens are themselves
    return backend, same_bpe(backend)


def test_qwen2s_vocabulary_meets_every_condition(qwen2):
    backend, same = qwen2
    assert why_not(backend) is None
    assert same is not None


@settings(max_examples=300, deadline=None)
@given(texts=st.lists(ascii_text, min_size=1, max_size=6))
def test_ascii_strings_get_the_tokenizers_own_ids_one_by_one_and_together(qwen2, texts):
    backend, same = qwen2
    expected = [backend.encode(t, add_special_tokens=False).ids for t in texts]
    ids, counts = same.encode(texts)
    assert counts.tolist() == [len(e) for e in expected]
    assert ids.tolist() == [i for e in expected for i in e]
    for t, e in zip(texts, expected):
        assert same.encode([t])[0].tolist() == e


def test_every_string_of_three_awkward_characters_and_parts_side_by_side(qwen2):
    backend, same = qwen2
    texts = ["".join(c) for n in (1, 2, 3) for c in itertools.product(" \n\r\t'sa1.\x0b\x1c<", repeat=n)]
    expected = backend.encode_batch_fast(texts, add_special_tokens=False)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(3) as pool:
        ids, counts = same.encode(texts, pool, ways=4)  # four calls, one per part of the strings
    assert counts.tolist() == [len(e.ids) for e in expected]
    assert ids.tolist() == [i for e in expected for i in e.ids]


def test_the_encoder_gives_the_same_ids_and_offsets_through_either_path(qwen2_tokenizer):
    encoder = Encoder(qwen2_tokenizer)
    assert encoder.uses_same_bpe()
    texts = ["<|im_start|>user\nHi there<|im_end|>\n", "caf\u00e9 na\u00efve", "e\u0301", "", "tabs\tand 'quotes' 123", "\U0001f642 ok", "x" * 3000]
    fast = encoder.encode_batch(texts)
    slow = encoder._encode_with_offsets(texts)  # tokenizers alone, with its own offsets
    assert fast.bounds.tolist() == slow.bounds.tolist()
    assert fast.ids.tolist() == slow.ids.tolist()
    assert fast.offsets.tolist() == slow.offsets.tolist()


def test_the_demo_vocabulary_is_kept_out_for_a_token_its_merges_do_not_make(demo_tokenizer):
    """The demo tokenizer was trained by `tokenizers`: some tokens are not what the merges make
    of their bytes, and tiktoken would take such a piece whole."""
    assert "(B)" in why_not(demo_tokenizer.backend_tokenizer)
    assert not Encoder(demo_tokenizer).uses_same_bpe()


# Toy vocabularies: the 256 byte characters, then a few merged tokens.
BYTES = sorted(ByteLevel.alphabet())


def toy(extra: list[str], merges: list[tuple[str, str]], pre_tokenizer=None, added: list[AddedToken] = (), ignore_merges: bool = False) -> Tokenizer:
    vocab = {c: n for n, c in enumerate(BYTES)} | {t: len(BYTES) + n for n, t in enumerate(extra)}
    tokenizer = Tokenizer(BPE(vocab=vocab, merges=merges, ignore_merges=ignore_merges))
    tokenizer.pre_tokenizer = pre_tokenizer or pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated"), ByteLevel(add_prefix_space=False, use_regex=False)])
    tokenizer.add_tokens(list(added))
    return tokenizer


def every_string(alphabet: str, longest: int) -> list[str]:
    return ["".join(c) for n in range(1, longest + 1) for c in itertools.product(alphabet, repeat=n)]


@pytest.mark.parametrize(
    "merges",
    [
        [("a", "b"), ("b", "c"), ("ab", "c"), ("a", "bc")],  # every split of every token
        [("a", "b"), ("b", "c"), ("ab", "c")],  # one merge per token: enough
    ],
)
def test_ordered_merges_that_make_every_token_give_the_same_ids_on_every_string(merges):
    tokenizer = toy(["ab", "bc", "abc"], merges)
    assert why_not(tokenizer) is None
    texts = every_string("abc ", 6)
    ids, counts = same_bpe(tokenizer).encode(texts)
    expected = tokenizer.encode_batch_fast(texts, add_special_tokens=False)
    assert counts.tolist() == [len(e.ids) for e in expected]
    assert ids.tolist() == [i for e in expected for i in e.ids]


def test_merges_out_of_the_order_of_what_they_make_are_kept_out():
    assert "(M)" in why_not(toy(["ab", "bc", "abc"], [("a", "b"), ("ab", "c"), ("b", "c")]))


def test_a_token_the_merges_do_not_make_is_kept_out_and_tiktoken_would_differ_on_it():
    """"abcd" is listed as ab + cd, but the merges make a, bc, d of its bytes (bc comes first and
    nothing joins it), while tiktoken takes a piece that is a token whole."""
    extra = ["bc", "ab", "cd", "abcd"]
    tokenizer = toy(extra, [("b", "c"), ("a", "b"), ("c", "d"), ("ab", "cd")])
    assert "(B)" in why_not(tokenizer)
    vocab = tokenizer.get_vocab()
    ranks = {t.encode("ascii"): vocab[t] for t in ["a", "b", "c", "d", *extra]}
    bare = tiktoken.Encoding("toy", pat_str=QWEN2_PATTERN, mergeable_ranks=ranks, special_tokens={})
    assert bare.encode("abcd") == [vocab["abcd"]]
    assert tokenizer.encode("abcd").ids == [vocab["a"], vocab["bc"], vocab["d"]]


@pytest.mark.parametrize(
    "kind, change",
    [
        ("pre-tokenizer", dict(pre_tokenizer=pre_tokenizers.Whitespace())),
        ("pre-tokenizer", dict(pre_tokenizer=ByteLevel(add_prefix_space=True, use_regex=True))),
        ("ignore_merges", dict(ignore_merges=True)),
        ("strips", dict(added=[AddedToken("<end>", rstrip=True)])),
        ("start of another", dict(added=[AddedToken("<e>"), AddedToken("<e>x")])),
        ("two passes", dict(added=[AddedToken("XA", normalized=True), AddedToken("AB", normalized=False)])),
    ],
)
def test_what_tiktoken_does_otherwise_keeps_it_out(kind, change):
    assert kind in why_not(toy(["ab"], [("a", "b")], **change))


def test_a_tokenizer_that_truncates_is_kept_out():
    tokenizer = toy(["ab"], [("a", "b")])
    assert why_not(tokenizer) is None
    tokenizer.enable_truncation(8)
    assert "truncates" in why_not(tokenizer)


def test_gpt2s_own_regex_in_bytelevel_is_taken_and_gives_the_same_ids():
    tokenizer = toy(["ab", "Ġa"], [("a", "b"), ("Ġ", "a")], pre_tokenizer=ByteLevel(add_prefix_space=False, use_regex=True))
    assert why_not(tokenizer) is None
    texts = every_string("ab '\n1", 4)
    ids, counts = same_bpe(tokenizer).encode(texts)
    expected = tokenizer.encode_batch_fast(texts, add_special_tokens=False)
    assert ids.tolist() == [i for e in expected for i in e.ids]


def test_a_verdict_is_kept_between_runs_and_read_back(tmp_path, monkeypatch):
    monkeypatch.setenv("MASKED_SHARDS_CACHE", str(tmp_path))
    tokenizer = toy(["ab", "bc", "abc"], [("a", "b"), ("b", "c"), ("ab", "c")])
    assert why_not(tokenizer) is None
    (kept,) = (tmp_path / "same-bpe").iterdir()
    assert kept.read_text() == "same"
    kept.write_text("kept: no")  # what an earlier run found is what this one goes by
    assert why_not(tokenizer) == "kept: no"
    monkeypatch.setenv("MASKED_SHARDS_CACHE", str(kept))  # a file, not a folder: nothing can be kept
    assert why_not(tokenizer) is None


def test_a_folder_tokenizers_verdict_is_named_by_its_file_and_a_changed_file_is_checked_again(tmp_path, monkeypatch):
    """A tokenizer read by `tokenizers` from a folder names its verdict by its tokenizer.json:
    the kept verdict is what the next load of the same file goes by, and a file whose merges
    changed is not taken for the one checked before."""
    monkeypatch.setenv("MASKED_SHARDS_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "tok"
    folder.mkdir()
    (folder / "tokenizer_config.json").write_text('{"tokenizer_class": "PreTrainedTokenizerFast"}')
    toy(["ab", "bc", "abc"], [("a", "b"), ("b", "c"), ("ab", "c")]).save(str(folder / "tokenizer.json"))
    assert Encoder(load_tokenizer(str(folder))).uses_same_bpe()
    (kept,) = (tmp_path / "cache" / "same-bpe").iterdir()
    kept.write_text("kept: no")
    assert not Encoder(FolderTokenizer(str(folder), {})).uses_same_bpe()  # a new load of the same file
    toy(["ab", "bc", "abc"], [("a", "b"), ("ab", "c"), ("b", "c")]).save(str(folder / "tokenizer.json"))  # (M) fails now
    assert not Encoder(load_tokenizer(str(folder))).uses_same_bpe()
    verdicts = sorted(p.read_text() for p in (tmp_path / "cache" / "same-bpe").iterdir())
    assert verdicts[0] == "kept: no" and verdicts[1].startswith("the merges are not listed") and len(verdicts) == 2


def test_a_folder_tokenizers_vocabulary_and_ranks_are_kept_and_read_back(tmp_path, monkeypatch):
    """A folder tokenizer's vocabulary and tiktoken ranks are kept (build/kept.py) once its checks
    passed: the next load of the same file goes by what was kept, and an entry that cannot be read
    back is made again, with the same ids."""
    monkeypatch.setenv("MASKED_SHARDS_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "tok"
    folder.mkdir()
    (folder / "tokenizer_config.json").write_text('{"tokenizer_class": "PreTrainedTokenizerFast"}')
    tokenizer = toy(["ab", "bc", "abc"], [("a", "b"), ("b", "c"), ("ab", "c")])
    tokenizer.save(str(folder / "tokenizer.json"))
    texts = every_string("abc ", 3)
    expected = [e.ids for e in tokenizer.encode_batch_fast(texts, add_special_tokens=False)]

    def ids(encoder: Encoder) -> list[list[int]]:
        batch = encoder.encode_batch(texts)
        return [batch.ids[a:b].tolist() for a, b in zip(batch.bounds[:-1], batch.bounds[1:])]

    first = Encoder(load_tokenizer(str(folder)))
    assert first.uses_same_bpe() and ids(first) == expected
    (vocabulary,) = (tmp_path / "cache" / "vocabulary").iterdir()
    (ranks,) = (tmp_path / "cache" / "tiktoken").iterdir()
    kept_ranks = marshal.loads(ranks.read_bytes())
    assert kept_ranks[b"abc"] == tokenizer.token_to_id("abc") and marshal.loads(vocabulary.read_bytes()) == tokenizer.get_vocab(with_added_tokens=False)

    vocabulary.write_bytes(b"not a table")
    ranks.write_bytes(b"\x00")
    again = Encoder(FolderTokenizer(str(folder), {}))
    assert again.uses_same_bpe() and ids(again) == expected
    assert marshal.loads(ranks.read_bytes()) == kept_ranks  # made again and kept again

    swapped = {**kept_ranks, b"ab": kept_ranks[b"bc"], b"bc": kept_ranks[b"ab"]}  # two tokens of one length
    ranks.write_bytes(marshal.dumps(swapped))  # what was kept is what the next load goes by
    assert ids(Encoder(FolderTokenizer(str(folder), {})))[texts.index("ab")] == [tokenizer.token_to_id("bc")]
    vocabulary.write_bytes(marshal.dumps({**tokenizer.get_vocab(with_added_tokens=False), "中": 999}))  # not byte-level: no tiktoken
    assert not Encoder(FolderTokenizer(str(folder), {})).uses_same_bpe()

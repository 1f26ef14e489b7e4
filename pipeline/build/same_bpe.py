"""tiktoken, for the strings where it gives a byte-level BPE tokenizer's own ids, at a third of the CPU.

Why: `tokenizers` spends most of an encode around the BPE, not in it (a profile of 55k Qwen2 chats:
a third of the samples in malloc and free, then the regex, offsets and alignments kept for every
character). tiktoken does the same splitting and merging with none of that: the same ids for the
55k chats in 1.44 CPU-s against 5.25 (our `Encoder`'s, benchmarks/README.md).

Where they agree. Both cut the text at added tokens, split each stretch into pieces with the same
regex, and merge each piece's bytes greedily: the open pair of lowest priority first, the
leftmost on a tie. They differ in three ways. Hugging Face ranks a pair (x, y) by its place in
the merges list and merges only listed pairs; tiktoken ranks a pair by the id of the token x+y and
merges any pair that makes a token; and tiktoken takes a piece that is a token whole. Two
conditions on the vocabulary make the three differences vanish, on every piece:

  (M) the merges are listed in the order of the ids of the tokens they make;
  (B) every token is what Hugging Face's BPE makes of its own bytes.

The argument. In any state of tiktoken's merging, a part was merged only from bytes inside it, in
the order the same bytes alone would be merged (a merge of lower priority anywhere would have
come first, and no merge crossed the part's edges). So an open pair (x, y) making token t is the
last merge tiktoken makes of t's bytes alone: a single split per token is ever open. By induction
on t's length, (B) says that split is listed (Hugging Face reaches t from t's bytes through the
same states, so it merged that last pair too). Then in every state both see the same open
pairs; (M) orders them alike, and one split per token leaves no tie to break differently. A whole
piece that is a token is taken whole by tiktoken and, by (B), merged back into itself by Hugging
Face. Listing every split of a token as a merge is not needed: a tokenizer that lists one merge
per token (as Qwen2's published file does) passes or fails on (M) and (B) alone, as one that lists
every split (the tests' rebuild from Qwen's ranks, tests/qwen2_tokenizer.py) does.

The rest must match too, and only then is tiktoken used: the pre-tokenizer is a regex Split
(Isolated) then ByteLevel without a prefix space or a regex of its own, or ByteLevel alone
splitting with GPT-2's regex; the BPE model has no
dropout, word prefix or suffix and no byte fallback; every added token matches as plain text (no
stripping, no single_word, all matched in one pass: `tokenizers` matches those it normalizes
after the others) and none is a prefix of another (so leftmost-first and leftmost-longest
matching find the same); and the string holds only characters that both regex engines class
alike. Oniguruma (in `tokenizers`) and fancy-regex (in tiktoken) are different engines: both
match leftmost-first with backtracking, but their Unicode tables may differ in version. On ASCII
their classes (letters, digits, white space) are beyond doubt, and `same_bpe` checks every ASCII
character and pair of characters through both before trusting it. Past ASCII, same_split.py
measures which characters the pattern's classes hold in each engine, and keeps out those they
class differently; a sample of the rest is encoded through both, in context, before trusting it.
Strings holding a character kept out stay with `tokenizers`.

Checking (M) and (B) costs about a second of CPU on a 151k vocabulary (reading the merges back
from the model, and encoding every token), so the verdict is kept between runs (`SAME` below).
"""

from __future__ import annotations

import itertools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np
import orjson
import tiktoken
import tokenizers
from tokenizers import Tokenizer
from tokenizers.models import BPE
from tokenizers.pre_tokenizers import ByteLevel

from masked_shards.build import kept, same_split

# What `_vocabulary_verdict` says when (M) and (B) hold. A verdict is kept between runs (kept.py,
# in same-bpe/), named by a hash of the model's state (or of the tokenizer.json it was read from)
# and of the versions below: it costs about a second on a 151k vocabulary and depends on nothing
# else. A tokenizer.json's ranks are kept too (in tiktoken/), once they passed every check.
SAME = "same"
CHECK_VERSION = 2  # 2: ranks are kept once the check past ASCII (same_split.agrees) passed too
VERDICTS, RANKS = "same-bpe", "tiktoken"

# The split of `tokenizers`' ByteLevel pre-tokenizer with use_regex (GPT-2's published pattern).
GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"

# Between two strings encoded in one call: a special token that no string tiktoken takes holds
# (same_split keeps it out), so each string is encoded alone, as tiktoken encodes each stretch
# between special tokens.
SEPARATOR = "\ue000"


@dataclass(frozen=True, eq=False)
class SameBPE:
    """A tiktoken encoding with the tokenizer's ids, and its added tokens as special tokens;
    `unsure` marks, over every code point, the characters that keep a string from it (same_split.py)."""

    encoding: tiktoken.Encoding
    separator_id: int
    specials: frozenset[str]
    unsure: np.ndarray = field(default_factory=same_split.past_ascii)

    def taken(self, texts: list[str]) -> list[int]:
        """The indices of the `texts` on which tiktoken gives the tokenizer's ids: ASCII, or past
        it only characters both engines class alike (same_split.py)."""
        return same_split.taken(texts, self.unsure)

    def encode(self, texts: list[str], pool: ThreadPoolExecutor | None = None, ways: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(ids, counts) of `texts` (each one it has `taken`), string after string: a call per part of `ways` parts of
        about as many characters each, side by side in `pool`. tiktoken lets the interpreter go
        for a call, so one call per part, not per string: a thread that takes the lock back a
        thousand times a batch waits for it each time the Python thread holds it."""
        if not texts:
            return np.zeros(0, np.int32), np.zeros(0, np.int64)
        sizes = np.cumsum([len(t) + 1 for t in texts])
        cuts = np.unique(np.searchsorted(sizes, sizes[-1] * np.arange(1, ways) / ways, side="right"))
        parts = [texts[a:b] for a, b in zip([0, *cuts.tolist()], [*cuts.tolist(), len(texts)]) if a < b]
        if pool is None or len(parts) == 1:
            encoded = [self._encode_joined(part) for part in parts]
        else:
            later = [pool.submit(self._encode_joined, part) for part in parts[1:]]
            encoded = [self._encode_joined(parts[0]), *(f.result() for f in later)]
        ids = np.concatenate(encoded)
        ends = np.flatnonzero(ids == self.separator_id)
        counts = np.diff(ends, prepend=-1) - 1
        return ids[ids != self.separator_id].astype(np.int32), counts.astype(np.int64)

    def _encode_joined(self, texts: list[str]) -> np.ndarray:
        joined = SEPARATOR.join(texts) + SEPARATOR
        return self.encoding.encode_to_numpy(joined, allowed_special=self.specials)


def same_bpe(backend: Tokenizer, vocabulary: dict[str, int] | None = None, source: str | None = None) -> SameBPE | None:
    """The tiktoken encoding that gives `backend`'s ids on the strings it has `taken`, or None where that is
    not shown (see the module docstring; `why_not` says which condition failed). What a caller
    has at hand saves time on a 151k vocabulary: `vocabulary`, the model's own
    (`get_vocab(with_added_tokens=False)`, 0.1 s to read), and `source`, the sha256 of the
    tokenizer.json the model was read from unchanged, which then names its kept verdict in place
    of the model's serialized state (0.13 s to write out)."""
    found = _build(backend, vocabulary, source)
    return found if isinstance(found, SameBPE) else None


def why_not(backend: Tokenizer) -> str | None:
    """The condition that keeps tiktoken from standing in for `backend`, None when none does."""
    found = _build(backend)
    return None if isinstance(found, SameBPE) else found


def _build(backend: Tokenizer, vocabulary: dict[str, int] | None = None, source: str | None = None) -> SameBPE | str:
    if backend.truncation is not None or backend.padding is not None:
        return "the tokenizer truncates or pads what it encodes"
    pattern = _split_pattern(backend)
    if pattern is None:
        return "the pre-tokenizer is neither a regex Split then ByteLevel, nor ByteLevel with its own regex, without a prefix space"
    model = backend.model
    if type(model).__name__ != "BPE" or model.dropout or model.continuing_subword_prefix or model.end_of_word_suffix or model.byte_fallback:
        return "the model is not plain BPE (dropout, a word prefix or suffix, or byte fallback)"
    if model.ignore_merges:
        return "the model takes a word that is a token whole (ignore_merges), so (B) cannot be checked on it"
    added = backend.get_added_tokens_decoder()
    if any(t.lstrip or t.rstrip or t.single_word or not t.content for t in added.values()):
        return "an added token strips white space, matches whole words only, or is empty"
    if len({t.normalized for t in added.values()}) > 1:
        return "some added tokens are matched in normalized text and some not: two passes, where tiktoken makes one"
    contents = sorted(t.content for t in added.values())
    if any(later.startswith(first) for first, later in zip(contents, contents[1:])):
        return "an added token is the start of another"
    identity = b"file " + source.encode() if source is not None else b"model " + model.__getstate__()
    name = kept.key(identity, *_versions())
    verdict = _kept_verdict(name)
    if verdict is None:
        verdict = _vocabulary_verdict(model, orjson.loads(model.__getstate__()))
        kept.keep(VERDICTS, name, verdict.encode("utf-8"))
    if verdict != SAME:
        return verdict
    # A file's ranks are kept once every check below passed, so reading them back stands for those checks too.
    ranks_name = kept.key(name, kept.TABLE_FORMAT)
    ranks = kept.read_table(RANKS, ranks_name) if source is not None else None
    checked = ranks is not None
    if ranks is None:
        ranks = _ranks(backend.get_vocab(with_added_tokens=False) if vocabulary is None else vocabulary)
    specials = {t.content: token_id for token_id, t in added.items()}
    separator_id = max([*ranks.values(), *specials.values()]) + 1
    try:
        encoding = tiktoken.Encoding("masked-shards", pat_str=pattern, mergeable_ranks=ranks, special_tokens={**specials, SEPARATOR: separator_id})
    except Exception as err:  # the regex in a syntax fancy-regex does not read
        return f"tiktoken does not take the pre-tokenizer's regex ({err})"
    # Past ASCII only without a normalizer: tiktoken has none (the encoder hands it a copy of the
    # tokenizer without one, and only the strings the normalizer would leave as they are).
    unsure = same_split.unsure_characters(pattern, SEPARATOR) if backend.normalizer is None else same_split.past_ascii()
    same = SameBPE(encoding, separator_id, frozenset([*specials, SEPARATOR]), unsure)
    if not checked:
        if not _ascii_agrees(backend, same, contents):
            return "tokenizers and tiktoken split some ASCII characters differently"
        if not same_split.agrees(backend, same.encode, same.unsure):
            return replace(same, unsure=same_split.past_ascii())  # ASCII only, and checked again next run
        if source is not None:
            kept.keep_table(RANKS, ranks_name, ranks)
    return same


def _vocabulary_verdict(model: BPE, state: dict) -> str:
    """SAME when the vocabulary and merges meet (M) and (B), else the condition they fail."""
    vocab: dict[str, int] = state["vocab"]
    alphabet = ByteLevel.alphabet()
    if not set(alphabet) <= vocab.keys() or not set("".join(vocab)) <= set(alphabet):
        return "the vocabulary is not byte-level: a byte without a token, or a token outside the byte alphabet"
    merges = (m if isinstance(m, list) else m.split(" ", 1) for m in state.pop("merges"))
    made = np.fromiter((vocab.get(x + y, -1) for x, y in merges), dtype=np.int64)
    if (made < 0).any() or (np.diff(made) < 0).any():
        return "the merges are not listed in the order of the ids of the tokens they make (M)"
    if not _every_token_merged_back(model, vocab):
        return "a token is not what the BPE merges make of its own bytes (B)"
    return SAME


def _versions() -> tuple[str, ...]:
    return (str(CHECK_VERSION), tokenizers.__version__, tiktoken.__version__)


def _kept_verdict(name: str) -> str | None:
    data = kept.read(VERDICTS, name)
    try:
        return None if data is None else data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _split_pattern(backend: Tokenizer) -> str | None:
    """The regex that cuts text into pieces: a [Split(regex, Isolated), ByteLevel(no prefix space,
    no regex)] pre-tokenizer's own, or GPT-2's for a ByteLevel that splits with it (use_regex)."""
    state = orjson.loads(backend.pre_tokenizer.__getstate__()) if backend.pre_tokenizer is not None else {}
    if state.get("type") == "ByteLevel":
        return GPT2_PATTERN if state.get("use_regex") and not state.get("add_prefix_space") else None
    steps = state.get("pretokenizers") if state.get("type") == "Sequence" else None
    if not steps or len(steps) != 2:
        return None
    split, byte_level = steps
    regex = split.get("pattern", {}).get("Regex") if split.get("type") == "Split" else None
    if regex is None or split.get("behavior") != "Isolated" or split.get("invert"):
        return None
    if byte_level.get("type") != "ByteLevel" or byte_level.get("add_prefix_space") or byte_level.get("use_regex"):
        return None
    return regex


def _every_token_merged_back(model: BPE, vocab: dict[str, int], chunk: int = 8192) -> bool:
    """(B): each token, encoded as one word by the model itself (a bare tokenizer sharing it: no
    copy of the vocabulary, the model not taking whole words), gives back exactly that token.
    In chunks, so that only a few thousand encodings are held at once; the model's word cache,
    filled with the vocabulary meanwhile, is emptied after for the text's own words."""
    bare = Tokenizer(model)
    tokens, expected = list(vocab), np.fromiter(vocab.values(), dtype=np.int64, count=len(vocab))
    try:
        for start in range(0, len(tokens), chunk):
            encodings = bare.encode_batch_fast(tokens[start : start + chunk], add_special_tokens=False)
            got = np.fromiter((e.ids[0] if len(e) == 1 else -1 for e in encodings), dtype=np.int64, count=len(encodings))
            if (got != expected[start : start + chunk]).any():
                return False
        return True
    finally:
        clear = getattr(model, "_clear_cache", None)  # tokenizers' BPE, as _resize_cache in tokenization.py
        if clear is not None:
            clear()


def _ascii_agrees(backend: Tokenizer, same: SameBPE, added: list[str]) -> bool:
    """Every ASCII character and pair of characters, and each ASCII added token between
    characters, encoded to the same ids by both."""
    characters = [chr(c) for c in range(128)]
    probes = characters + [a + b for a in characters for b in characters]
    probes += [f"{before}{token}{after}" for token in added if token.isascii() for before, after in (("", ""), ("a", "b"), (" ", "\n"), ("'", "1"))]
    expected = backend.encode_batch_fast(probes, add_special_tokens=False)
    ids, counts = same.encode(probes)
    return counts.tolist() == [len(e.ids) for e in expected] and ids.tolist() == [i for e in expected for i in e.ids]


def _ranks(vocab: dict[str, int]) -> dict[bytes, int]:
    """tiktoken's ranks: each token's bytes (its ByteLevel characters read back as the bytes they
    stand for) -> its id. All tokens are turned in one array lookup, then cut apart (0.05 s on
    151k tokens, where a `str.translate` per token took 0.17 s)."""
    codes = [ord(c) for c in _byte_order()]
    byte_of = np.zeros(max(codes) + 1, dtype=np.uint8)
    byte_of[codes] = np.arange(256, dtype=np.uint8)
    raw = byte_of[np.frombuffer("".join(vocab).encode("utf-32-le"), dtype=np.uint32)].tobytes()
    ends = list(itertools.accumulate(map(len, vocab)))
    return {raw[start:end]: token_id for start, end, token_id in zip([0, *ends], ends, vocab.values())}


def _byte_order() -> list[str]:
    """ByteLevel's character for each byte 0..255: printable Latin-1 bytes are themselves, the
    others take the characters from U+0100 on, in byte order (GPT-2's byte encoder)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(shifted)) for b in range(256)]


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

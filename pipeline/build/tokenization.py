"""Load a Hugging Face fast tokenizer and encode rendered strings with character offsets.

We encode through the Rust `tokenizers.Tokenizer` behind the Hugging Face object, with
`add_special_tokens=False`: the chat template already wrote BOS where the model family wants it,
so the tokenizer must never add a second one. Encodings come back as numpy arrays: the Rust
tokenizer hands out Python lists, which are turned into arrays once, right here. Strings go
through tiktoken instead where it provably gives the same ids (same_bpe.py, same_split.py).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
import tempfile
import threading
import unicodedata
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np
import tokenizers
from tokenizers import Tokenizer
from tokenizers.pre_tokenizers import ByteLevel

from masked_shards.build import kept
from masked_shards.read.hub import hub_out_of_reach, looks_like_path, quiet
from masked_shards.build.masking import crossed_boundaries
from masked_shards.build.token_rows import ranges
from masked_shards.build.same_bpe import SameBPE, cores, same_bpe


class TokenizerError(Exception):
    """The tokenizer cannot be loaded or cannot serve the chosen template."""


@dataclass(frozen=True, eq=False)
class Encoded:
    """Token ids (int32, n) and the [start, end) character range of each in the encoded string
    (int32, n x 2).

    An added token that strips whitespace (`rstrip`/`lstrip`: Phi-3's `<|end|>` swallows the
    "\n" after it) gets the range of its own text only. Hugging Face gives it the swallowed
    whitespace too, which made it look as if it crossed the span edge right after it, and the
    string was re-encoded in pieces, so the ids differed from the tokenizer's own encoding. The
    swallowed whitespace has no token at all, so no label depends on it:

        text     "4<|end|>\n<|user|>"        span [0, 8): "4<|end|>"
        HF       <|end|> at [1, 9): crosses 8  ours: [1, 8), inside the span, supervised
    """

    ids: np.ndarray
    offsets: np.ndarray
    split_at_boundaries: bool = False


@dataclass(frozen=True, eq=False)
class EncodedBatch:
    """The encodings of several strings, one after another in flat arrays (converted from the
    tokenizer's lists in one pass, not string by string); string i has tokens
    `bounds[i]:bounds[i + 1]`, with offsets into its own text.

        texts ["ab", "c"]   ids [7, 8, 9]   offsets [[0, 1], [1, 2], [0, 1]]   bounds [0, 2, 3]
    """

    ids: np.ndarray
    offsets: np.ndarray
    bounds: np.ndarray

    def __getitem__(self, i: int) -> Encoded:
        start, end = self.bounds[i], self.bounds[i + 1]
        return Encoded(self.ids[start:end], self.offsets[start:end])


def load_tokenizer(name_or_path: str):  # -> FolderTokenizer | transformers.PreTrainedTokenizerBase
    """A folder that `tokenizers` reads exactly as transformers would (`FolderTokenizer`), else
    `AutoTokenizer.from_pretrained`, refusing slow tokenizers (no offsets); every failure is one
    sentence, quickly. A name that can only be a path must be a folder; a hub id is looked up on
    the hub when it answers, else in the local cache only (see hub.py: no retries, no log lines).

    Loaded once per process for each state of a folder (its files' sizes and times): the start-up
    checks and the in-process workers of a local run share one tokenizer, since a 151k vocabulary
    takes over a second to load. Callers do not change it, except a seq2seq row builder setting
    the language codes its own configuration names, which every such builder does first."""
    return _load(name_or_path, _folder_state(name_or_path))


def _folder_state(name_or_path: str) -> tuple[tuple[str, int, int], ...]:
    if not os.path.isdir(name_or_path):
        return ()
    return tuple(sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in os.scandir(name_or_path) if e.is_file()))


@functools.lru_cache(maxsize=8)
def _load(name_or_path: str, _state: tuple[tuple[str, int, int], ...]):
    settings = _plain_folder(name_or_path)
    if settings is not None:
        return FolderTokenizer(name_or_path, settings)
    return full_tokenizer(name_or_path)


def full_tokenizer(name_or_path: str):  # -> transformers.PreTrainedTokenizerBase
    """The tokenizer as transformers loads it: for what only transformers does (a seq2seq
    tokenizer's `__call__` with its language codes, a hub id, a slow tokenizer's conversion)."""
    return _load_with_transformers(name_or_path, _folder_state(name_or_path))


@functools.lru_cache(maxsize=8)
def _load_with_transformers(name_or_path: str, _state: tuple[tuple[str, int, int], ...]):
    from transformers import AutoTokenizer

    out_of_reach = None
    if not os.path.isdir(name_or_path):
        if looks_like_path(name_or_path):
            raise TokenizerError(f"tokenizer folder {name_or_path} does not exist")
        out_of_reach = hub_out_of_reach()
    try:
        with quiet():
            tokenizer = AutoTokenizer.from_pretrained(name_or_path, local_files_only=out_of_reach is not None)
    except Exception as err:  # transformers raises many types for a bad path or id
        if out_of_reach:
            raise TokenizerError(f"tokenizer {name_or_path!r} is not a local folder nor in the local Hugging Face cache, and the hub is out of reach ({out_of_reach})") from None
        raise TokenizerError(f"cannot load tokenizer {name_or_path!r} ({type(err).__name__}: {str(err).splitlines()[0][:200]})") from None
    if not getattr(tokenizer, "is_fast", False):
        raise TokenizerError(f"tokenizer {name_or_path!r} is not a fast tokenizer, so it cannot report character offsets")
    return tokenizer


# What a folder's tokenizer_config.json may hold for `tokenizers` alone to load the same tokenizer
# as transformers: its class is the plain fast tokenizer (no model-specific conversion), and
# these keys carry no behaviour of their own beyond the named tokens and the template (the last
# line: bookkeeping `save_pretrained` writes, and padding settings of calls the job never makes).
_PLAIN_CLASSES = frozenset({"TokenizersBackend", "PreTrainedTokenizerFast"})
_NAMED_TOKENS = ("bos_token", "eos_token", "unk_token", "pad_token")
_PLAIN_KEYS = frozenset(
    {"backend", "tokenizer_class", "model_max_length", "chat_template", "clean_up_tokenization_spaces", "extra_special_tokens", "additional_special_tokens", "added_tokens_decoder", *_NAMED_TOKENS}
    | {"is_local", "local_files_only", "name_or_path", "model_input_names", "padding_side", "truncation_side"}
)
UNSET_MAX_LENGTH = int(1e30)  # transformers' model_max_length when the config names none


def _plain_folder(name_or_path: str) -> dict | None:
    """tokenizer_config.json of a local folder that transformers would load unchanged from its
    tokenizer.json (the settings `FolderTokenizer` needs), or None: then transformers loads it.

    Unchanged means: a plain fast tokenizer class, no config key that changes encoding (add_bos_token,
    a legacy flag, ...), every token the config names already an added special token of
    tokenizer.json with the same id, no truncation or padding built in, and no cleanup of
    decoded spaces. A chat template may sit in the config or in chat_template.jinja."""
    folder = Path(name_or_path)
    if not (folder / "tokenizer.json").is_file() or not (folder / "tokenizer_config.json").is_file() or (folder / "chat_template.json").exists():
        return None
    try:
        settings = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        # The header of tokenizer.json (its added tokens, truncation and padding) without its vocabulary:
        # a cheap read of what must agree with the config.
        header = _json_header(folder / "tokenizer.json")
    except (OSError, ValueError):
        return None
    if not isinstance(settings, dict) or header is None or settings.get("tokenizer_class") not in _PLAIN_CLASSES or set(settings) - _PLAIN_KEYS:
        return None
    if settings.get("clean_up_tokenization_spaces") or header.get("truncation") or header.get("padding"):
        return None
    special = {t["content"]: t["id"] for t in header.get("added_tokens", []) if t.get("special")}
    named = [_token_text(settings.get(key)) for key in _NAMED_TOKENS]
    named += [_token_text(t) for key in ("extra_special_tokens", "additional_special_tokens") for t in (settings.get(key) or [])]
    named += [_token_text(t) for t in (settings.get("added_tokens_decoder") or {}).values()]
    if any(name is not None and name not in special for name in named):
        return None
    if any(special.get(_token_text(t)) != int(n) for n, t in (settings.get("added_tokens_decoder") or {}).items()):
        return None
    template = folder / "chat_template.jinja"
    if template.is_file():
        settings["chat_template"] = template.read_text(encoding="utf-8")
    return settings


def _json_header(path: Path) -> dict | None:
    """tokenizer.json's keys before "normalizer" (version, truncation, padding, added_tokens), as
    `save_pretrained` and `tokenizers` write them, parsed without the vocabulary after them."""
    with open(path, encoding="utf-8") as handle:
        head = handle.read(1 << 20)
    cut = head.find('"normalizer"')
    if cut < 0:
        return None
    try:
        return json.loads(head[:cut].rstrip().rstrip(",") + "}")
    except ValueError:
        return None


def _token_text(token: object) -> str | None:
    """A token as tokenizer_config.json names it: a string, or an AddedToken's dict."""
    return token.get("content") if isinstance(token, dict) else token


class FolderTokenizer:
    """A tokenizer folder loaded by `tokenizers` alone (importing transformers takes seconds),
    for the folders `_plain_folder` accepts: the same ids, offsets, special tokens and template
    as transformers' object, with the few of its attributes this package reads."""

    is_fast = True

    def __init__(self, folder: str, settings: dict) -> None:
        self.name_or_path = folder
        path = Path(folder) / "tokenizer.json"
        self.backend_tokenizer = Tokenizer.from_file(str(path))  # from the file: from its text held in Python, 50 MB more at the peak
        self.source_sha256 = hashlib.sha256(path.read_bytes()).hexdigest()  # names what same_bpe.py keeps of this vocabulary
        self.added_tokens_decoder = self.backend_tokenizer.get_added_tokens_decoder()
        self.bos_token, self.eos_token, self.unk_token, self.pad_token = (_token_text(settings.get(key)) for key in _NAMED_TOKENS)
        self.chat_template = settings.get("chat_template")
        self.model_max_length = settings.get("model_max_length") or UNSET_MAX_LENGTH
        named = [self.bos_token, self.eos_token, self.unk_token, self.pad_token]
        named += [_token_text(t) for key in ("extra_special_tokens", "additional_special_tokens") for t in (settings.get(key) or [])]
        self.all_special_ids = sorted({self.backend_tokenizer.token_to_id(t) for t in named if t is not None})

    def _id(self, token: str | None) -> int | None:
        return None if token is None else self.backend_tokenizer.token_to_id(token)

    @property
    def bos_token_id(self) -> int | None:
        return self._id(self.bos_token)

    @property
    def eos_token_id(self) -> int | None:
        return self._id(self.eos_token)

    @property
    def pad_token_id(self) -> int | None:
        return self._id(self.pad_token)

    def __len__(self) -> int:
        return self.backend_tokenizer.get_vocab_size(with_added_tokens=True)

    def decode(self, ids: list[int], skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool | None = None) -> str:
        return self.backend_tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def batch_decode(self, sequences: list[list[int]], skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool | None = None) -> list[str]:
        return self.backend_tokenizer.decode_batch([list(s) for s in sequences], skip_special_tokens=skip_special_tokens)


def special_tokens(tokenizer) -> tuple[str, ...]:
    """Every added token flagged special: the strings that must never come from user text."""
    return tuple(sorted(t.content for t in tokenizer.added_tokens_decoder.values() if t.special))


def fingerprint(tokenizer, name_or_path: str) -> dict[str, object]:
    """Identity for the manifest: name, vocabulary size and sha256 of each tokenizer file.

    For a hub id the files hashed are the ones `save_pretrained` writes, so two machines with the
    same tokenizer agree whatever their cache layout; a folder's are its own files.
    """
    if os.path.isdir(name_or_path):
        files = _hash_files(Path(name_or_path))
    elif isinstance(tokenizer, FolderTokenizer):  # a folder in an object store, read from its local copy
        files = _hash_files(Path(tokenizer.name_or_path))
    else:
        with tempfile.TemporaryDirectory() as folder:
            tokenizer.save_pretrained(folder)
            files = _hash_files(Path(folder))
    return {"name_or_path": name_or_path, "vocab_size": len(tokenizer), "files_sha256": files}


def _hash_files(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _walk(node: object, visit) -> None:
    """Call `visit` on every dict in a tokenizer's JSON state."""
    if isinstance(node, dict):
        visit(node)
        for value in node.values():
            _walk(value, visit)
    elif isinstance(node, list):
        for value in node:
            _walk(value, visit)


def _patched(backend: Tokenizer, patch) -> Tokenizer:
    """The backend itself when `patch` changes nothing in its JSON state, else a patched copy.
    Copying a 151k vocabulary costs a second, so it happens only when needed, and whether it is
    needed is judged on the parts a patch touches (a few hundred bytes), not the whole state."""
    parts = {key: _component_state(getattr(backend, key)) for key in ("normalizer", "pre_tokenizer", "post_processor")}
    if not patch(parts):
        return backend
    state = json.loads(backend.to_str())
    patch(state)
    return Tokenizer.from_str(json.dumps(state))


def _component_state(component: object) -> dict | None:
    """A normalizer's, pre-tokenizer's or post-processor's JSON state, as in tokenizer.json."""
    return None if component is None else json.loads(component.__getstate__())


def _untrim(state: dict) -> bool:
    """ByteLevel offsets must not be trimmed: trimming hides a token's leading space from its
    offsets, and with it the fact that the token crosses a span edge."""
    changed = False

    def visit(node: dict) -> None:
        nonlocal changed
        if node.get("trim_offsets"):
            node["trim_offsets"], changed = False, True

    _walk(state.get("post_processor"), visit)
    return changed


def _no_prefix(state: dict) -> bool:
    """A text piece encoded after the first must not get the word-start marker that
    SentencePiece-style tokenizers put at the start of an input (Metaspace's prepend_scheme,
    or a Prepend("▁") normalizer): it is the middle of the string, not its start."""
    changed = False

    def visit(node: dict) -> None:
        nonlocal changed
        if node.get("type") == "Metaspace" and node.get("prepend_scheme", "always") != "never":
            node["prepend_scheme"], node["add_prefix_space"], changed = "never", False, True
        if node.get("type") == "Sequence" and any(n.get("type") == "Prepend" for n in node.get("normalizers", [])):
            node["normalizers"], changed = [n for n in node["normalizers"] if n.get("type") != "Prepend"], True

    if (state.get("normalizer") or {}).get("type") == "Prepend":
        state["normalizer"], changed = None, True
    _walk(state.get("pre_tokenizer"), visit)
    _walk(state.get("normalizer"), visit)
    return changed


@dataclass(frozen=True, eq=False)
class Spelling:
    """What makes a byte-level BPE vocabulary's offsets derivable (`_spelling`): each token id's
    length in bytes, and the Unicode normal forms its normalizer applies."""

    lengths: np.ndarray
    forms: tuple[str, ...]

    def unchanged(self, text: str) -> bool:
        """Whether the normalizer leaves `text` as it is: an ASCII string always, any other when it
        is already in every normal form applied (one C call each; the data seen is all NFC)."""
        return text.isascii() or all(unicodedata.is_normalized(form, text) for form in self.forms)


def _spelling(backend: Tokenizer, read_vocabulary: Callable[[], dict[str, int]]) -> Spelling | None:
    """The token lengths and normal forms, when a token's offsets follow from the lengths of the
    tokens before it; None otherwise. That needs three things:

    * a byte-level BPE vocabulary: every model token spelled in ByteLevel's 256-character
      alphabet, one character per byte, with no word prefix or suffix; an added token is its text;
    * nothing added to the text: ByteLevel without a prefix space, no other pre-tokenizer that
      writes characters, and no normalizer other than Unicode normal forms, which
      `Encoder.encode_batch` applies only to strings already in them (`Spelling.unchanged`);
    * nothing removed, which `Encoder.encode_batch` checks string by string: the tokens' lengths
      add up to the string's. With nothing added, a shortfall is the only way to go wrong.
    """
    model = backend.model
    if type(model).__name__ != "BPE" or model.continuing_subword_prefix or model.end_of_word_suffix or model.byte_fallback:
        return None
    normalizers, pre_tokenizers = [], []  # every component, with those inside a Sequence
    _walk(_component_state(backend.normalizer), lambda node: "type" in node and normalizers.append(node))
    _walk(_component_state(backend.pre_tokenizer), lambda node: "type" in node and pre_tokenizers.append(node))
    if any(n["type"] not in _NORMAL_FORMS for n in normalizers):
        return None
    kinds = [p["type"] for p in pre_tokenizers]
    if "ByteLevel" not in kinds or set(kinds) - _WRITING_NOTHING or any(p.get("add_prefix_space") for p in pre_tokenizers if p["type"] == "ByteLevel"):
        return None
    vocabulary = read_vocabulary()  # only once the cheap checks pass: 0.1 s on 151k tokens
    if not set("".join(vocabulary)) <= set(ByteLevel.alphabet()):
        return None
    added = backend.get_added_tokens_decoder()
    lengths = np.zeros(max([*vocabulary.values(), *added]) + 1, dtype=np.int64)
    lengths[np.fromiter(vocabulary.values(), dtype=np.int64, count=len(vocabulary))] = np.fromiter(map(len, vocabulary), dtype=np.int64, count=len(vocabulary))
    for token_id, token in added.items():
        lengths[token_id] = len(token.content.encode("utf-8"))
    return Spelling(lengths, tuple(sorted({n["type"] for n in normalizers} - {"Sequence"})))


def _without_normalizer(backend: Tokenizer, spelling: Spelling) -> Tokenizer:
    """The tokenizer without its normalizer, for strings it would leave as they are
    (`Spelling.unchanged`): the same ids, and 8% less of the Rust encoder's time at 55k chats on
    Qwen2 (5.9 instead of 6.4 CPU-s), which NFC spent checking text that is already NFC.

    It shares the backend's model (a new `Tokenizer` takes the model, not a copy of the
    vocabulary: 0.1 ms, where copying 151k entries through JSON takes a second), pre-tokenizer
    and post-processor, and its added tokens are added again in id order, as `tokenizers` adds
    them when it loads a file, so they get the same ids (checked: a later version that numbered
    them otherwise must not change ids silently). The backend itself is used where the copy
    could differ: an added token whose text the normalizer would change (the backend matches a
    normalized token in normalized text), or truncation or padding set on the backend."""
    if backend.normalizer is None or backend.truncation is not None or backend.padding is not None:
        return backend
    copy = Tokenizer(backend.model)
    copy.pre_tokenizer, copy.post_processor = backend.pre_tokenizer, backend.post_processor
    copy.encode_special_tokens = backend.encode_special_tokens
    added = backend.get_added_tokens_decoder()
    copy.add_tokens([added[n] for n in sorted(added)])
    unchanged = all(spelling.unchanged(t.content) for t in added.values())
    return copy if unchanged and copy.get_added_tokens_decoder() == added else backend


def _characters(offsets: np.ndarray, bounds: np.ndarray, rows: np.ndarray, texts: list[str], utf8: list[bytes]) -> None:
    """Turn the byte offsets of the tokens of strings `rows` (`texts`, encoded as `utf8`) into
    character offsets, in place: a token starts at the character holding its first byte and ends
    after the one holding its last, so a character split between two tokens is in both, as the
    Rust tokenizer reports it:

        "é!"  bytes C3 A9 21   tokens [C3] [A9 21]   bytes (0, 1) (1, 3)  ->  characters (0, 1) (0, 2)
    """
    data = np.frombuffer(b"".join(utf8), dtype=np.uint8)
    character_of = np.cumsum((data & 0xC0) != 0x80) - 1  # of each byte: UTF-8 continuation bytes are 10xxxxxx
    counts = np.diff(bounds)[rows]
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    tokens = np.arange(int(counts.sum())) + np.repeat(bounds[rows] - first, counts)
    byte_base = np.repeat(np.concatenate([[0], np.cumsum([len(b) for b in utf8])[:-1]]), counts)
    character_base = np.repeat(np.concatenate([[0], np.cumsum([len(t) for t in texts])[:-1]]), counts)
    starts, ends = offsets[tokens, 0] + byte_base, offsets[tokens, 1] + byte_base
    offsets[tokens, 0] = character_of[starts] - character_base
    offsets[tokens, 1] = character_of[ends - 1] + 1 - character_base


# Normalizers that leave a string in their form as it is, and pre-tokenizers that write no character of their own.
_NORMAL_FORMS = frozenset({"Sequence", "NFC", "NFD", "NFKC", "NFKD"})
_WRITING_NOTHING = frozenset({"Sequence", "Split", "Digits", "Punctuation", "ByteLevel"})


def _in_order(count: int, parts: list[tuple[np.ndarray, EncodedBatch, np.ndarray]]) -> EncodedBatch:
    """One batch of `count` strings from several: in each part, string `rows[i]` of its batch is
    string `positions[i]` of the result."""
    bounds, index = _gathering(count, [(positions, batch.bounds, rows) for positions, batch, rows in parts])
    return EncodedBatch(np.concatenate([b.ids for _, b, _ in parts])[index], np.concatenate([b.offsets for _, b, _ in parts])[index], bounds)


def _gathering(count: int, parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """(bounds, index) that put the tokens of several parts, laid end to end, in string order:
    in each part (positions, bounds, rows), string `rows[i]` (tokens `bounds[rows[i]]` to
    `bounds[rows[i] + 1]`) is string `positions[i]` of the result."""
    lengths, sources = np.zeros(count, dtype=np.int64), np.zeros(count, dtype=np.int64)
    base = 0
    for positions, part_bounds, rows in parts:
        lengths[positions] = np.diff(part_bounds)[rows]
        sources[positions] = part_bounds[:-1][rows] + base
        base += int(part_bounds[-1])
    return np.concatenate([[0], np.cumsum(lengths)]), ranges(sources, lengths)


# Words whose merges a BPE model keeps (`tokenizers` keeps 10,000, and adds none once full): 55k
# chats hold about 23,000 distinct words; a kept word costs about 0.75 KB resident (measured),
# so a full cache at most about 40 MB.
BPE_CACHE_WORDS = 50_000


def _remember_more_words(model: object) -> None:
    """Let a BPE model keep the merges of `BPE_CACHE_WORDS` words, not the first 10,000 it meets:
    a word met again is then looked up, not merged again (the Rust encoder's time at 55k chats on
    Qwen2: 5.3 against 5.0 CPU-s). The ids are the same: the cache only remembers results. The
    model is shared with the loaded tokenizer, which keeps the size."""
    resize = getattr(model, "_resize_cache", None)  # tokenizers' BPE; not every version has it
    if resize is not None:
        resize(BPE_CACHE_WORDS)


def _vocabulary(backend: Tokenizer, source: str | None) -> dict[str, int]:
    """The model's vocabulary (without added tokens): 0.16 s to read out of Qwen2's model, 0.04 s
    to read back when kept (kept.py) for a folder tokenizer's tokenizer.json (`source`, its sha256)."""
    if source is None:
        return backend.get_vocab(with_added_tokens=False)
    name = kept.key("file", source, tokenizers.__version__, kept.TABLE_FORMAT)
    vocabulary = kept.read_table(VOCABULARIES, name)
    if vocabulary is None:
        vocabulary = backend.get_vocab(with_added_tokens=False)
        kept.keep_table(VOCABULARIES, name, vocabulary)
    return vocabulary


VOCABULARIES = "vocabulary"


def _same_bpe_for(loaded: Tokenizer, backend: Tokenizer, vocabulary: dict[str, int], source: str | None) -> SameBPE | None:
    """`same_bpe(backend)`, checked once per loaded tokenizer, before its first batch: 0.2 s of CPU
    on Qwen2's vocabulary with its verdict kept from an earlier run, 1.5 s without. Checked in a
    thread beside the first batches instead (which `tokenizers` encoded meanwhile), it held the
    interpreter lock against them: 55k chats took as long (medians of 4, A/B: 7.22 s against
    7.14 s checked first) and peaked higher (596 to 618 MB against 518 to 545 MB). A check that
    fails on something unforeseen leaves the encoding to `tokenizers`, which is always right (the
    tests call `same_bpe` itself, which raises)."""
    with _SAME_BPE_LOCK:
        if loaded not in _SAME_BPE:
            try:
                _SAME_BPE[loaded] = same_bpe(backend, vocabulary, source)
            except Exception:
                _SAME_BPE[loaded] = None
        return _SAME_BPE[loaded]


_SAME_BPE: weakref.WeakKeyDictionary[Tokenizer, SameBPE | None] = weakref.WeakKeyDictionary()
_SAME_BPE_LOCK = threading.Lock()


# How far the encoding threads stand back from the thread that runs Python (`Encoder.background`).
BACKGROUND_NICENESS = 10


def _stand_back() -> bool:
    """Lower the calling thread to BACKGROUND_NICENESS; False where that cannot be done. Linux
    only: elsewhere a thread's id is not a process id to `setpriority`."""
    if sys.platform != "linux":
        return False
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICENESS)
    except OSError:  # a sandbox that forbids it: the same ids, only the priority differs
        return False
    return True


_POOL_LOCK = threading.Lock()
_pool_started = False


def _start_pool(backend: Tokenizer) -> None:
    """Start the Rust tokenizer's thread pool from a thread that stands back (`_stand_back`),
    once per process. The pool is started by the first parallel encode anywhere in the process,
    and its threads keep the niceness of the thread that started them: started by the checks an
    `Encoder` runs in the caller's thread (same_bpe.py's probes), they ran at the Python thread's
    own priority. An encode before this one (a test's, a user's) leaves the pool as it started."""
    global _pool_started
    with _POOL_LOCK:
        if _pool_started:
            return
        starter = threading.Thread(target=lambda: _stand_back() and backend.encode_batch_fast(["", ""], add_special_tokens=False), name="masked-shards-pool")
        starter.start()
        starter.join()
        _pool_started = True


class Encoder:
    """Encodes rendered strings; one per worker (the Rust tokenizer is loaded once)."""

    def __init__(self, tokenizer) -> None:
        self._backend = _patched(tokenizer.backend_tokenizer, _untrim)
        # The tokenizer may be shared (load_tokenizer's cache), and transformers leaves this flag
        # set after a call with split_special_tokens=True (the seq2seq rows'): a template's own
        # special tokens must be encoded as themselves here, so say so.
        self._backend.encode_special_tokens = False
        self._stripping = {token_id: t.content for token_id, t in tokenizer.added_tokens_decoder.items() if t.lstrip or t.rstrip}
        self._stripping_ids = np.array(sorted(self._stripping), dtype=np.int32)
        # The model's vocabulary, read at most once for both checks below, and only by a byte-level BPE's.
        source = getattr(tokenizer, "source_sha256", None)
        vocabulary = functools.cache(lambda: _vocabulary(self._backend, source))
        self._spelling = _spelling(self._backend, vocabulary)
        _remember_more_words(self._backend.model)
        # For the strings `encode_batch` encodes without offsets, all of them left as they are by the normalizer.
        self._unnormalized = self._backend if self._spelling is None else _without_normalizer(self._backend, self._spelling)
        self._later_backend: Tokenizer | None = None
        self._plain_backend: Tokenizer | None = None
        self._ways = cores()
        self._same_pool: ThreadPoolExecutor | None = None
        _start_pool(self._backend)  # before the checks below encode in this thread
        self._same = _same_bpe_for(tokenizer.backend_tokenizer, self._unnormalized, vocabulary(), source) if self._spelling is not None else None

    def background(self) -> None:
        """Make the calling thread give way to the thread that runs Python; run first in the thread
        that calls `encode_batch` beside that work (the Rust pool already does: `_start_pool`).

        The Rust pool has a thread per core, so with the Python thread there is one thread more
        than cores, and the scheduler gave the Python thread two thirds of a core (at 55k chats on
        2 cores: 1.05 s of its 6.9 s spent runnable but not running). That thread holds the
        interpreter lock, so everything else in the worker (reading, rendering, labels, Arrow)
        waits while it waits; the encoding threads only fill the cores it leaves. At `nice` +10
        they still get a tenth of a core against it, never nothing."""
        _stand_back()

    @property
    def _later(self) -> Tokenizer:
        """For pieces that do not start the string; made on first use (rare)."""
        if self._later_backend is None:
            self._later_backend = _patched(self._backend, _no_prefix)
        return self._later_backend

    @property
    def _plain(self) -> Tokenizer:
        """For plain spans (never the start): special-token strings encoded as text."""
        if self._plain_backend is None:
            self._plain_backend = Tokenizer.from_str(self._later.to_str())
            self._plain_backend.encode_special_tokens = True
        return self._plain_backend

    def encode_batch(self, texts: list[str]) -> EncodedBatch:
        """Every string encoded whole. With a byte-level vocabulary (`_spelling`), strings are
        encoded without offsets, which costs the Rust encoder a sixth less CPU and this thread no
        offset lists to read; each token's offsets follow from the byte lengths of the tokens
        before it, as a token's bytes are exactly the bytes of the text it stands for:

            "Hi there"  ids ["Hi", " there"]  lengths [2, 6]  ->  offsets [(0, 2), (2, 8)]

        In a string with other than ASCII the byte offsets are then turned into characters
        (`_characters`). That holds only where nothing was left out or added, so a string whose
        tokens' lengths do not add up to its own (an added token that swallowed whitespace) is
        encoded again with offsets, as is every string the normalizer would change; the others
        skip the normalizer (`_without_normalizer`), as it would leave them as they are."""
        if self._spelling is None:
            return self._encode_with_offsets(texts)
        taken = np.array([n for n, text in enumerate(texts) if self._spelling.unchanged(text)], dtype=np.int64)
        chosen = [texts[n] for n in taken.tolist()]
        ids, counts = self._ids(chosen)
        lengths = self._spelling.lengths[ids]
        ends = np.concatenate([[0], np.cumsum(lengths)])
        bounds = np.concatenate([[0], np.cumsum(counts)])
        utf8 = {k: text.encode("utf-8") for k, text in enumerate(chosen) if not text.isascii()}  # the strings of more bytes than characters
        sizes = np.array([len(utf8[k]) if k in utf8 else len(text) for k, text in enumerate(chosen)], dtype=np.int64)
        adds_up = ends[bounds[1:]] - ends[bounds[:-1]] == sizes
        ends = ends[1:] - np.repeat(ends[bounds[:-1]], counts)
        offsets = np.stack([ends - lengths, ends], axis=1)
        wide = [k for k in utf8 if adds_up[k]]
        if wide:
            _characters(offsets, bounds, np.array(wide, dtype=np.int64), [chosen[k] for k in wide], [utf8[k] for k in wide])
        derived = EncodedBatch(ids, offsets.astype(np.int32), bounds)
        if adds_up.all() and len(taken) == len(texts):
            return derived
        rest = np.setdiff1d(np.arange(len(texts)), taken[adds_up])
        encoded = self._encode_with_offsets([texts[n] for n in rest.tolist()])
        return _in_order(len(texts), [(taken[adds_up], derived, np.flatnonzero(adds_up)), (rest, encoded, np.arange(len(rest)))])

    def _ids(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(ids, counts) of strings the normalizer leaves as they are, string after string: those
        tiktoken takes (same_bpe.py: ASCII, or characters both regex engines class alike) through
        it where it is shown to give the same ids (a third of the CPU), the others through `tokenizers`."""
        same = self._same
        fast = same.taken(texts) if same is not None else []
        if fast:
            if self._same_pool is None and self._ways > 1:
                self._same_pool = ThreadPoolExecutor(max_workers=self._ways - 1, thread_name_prefix="same-bpe")
            fast_ids, fast_counts = same.encode([texts[k] for k in fast], self._same_pool, self._ways)
            if len(fast) == len(texts):
                return fast_ids, fast_counts
        slow = np.setdiff1d(np.arange(len(texts)), fast)
        encodings = self._unnormalized.encode_batch_fast([texts[k] for k in slow.tolist()], add_special_tokens=False)
        slow_counts = np.array([len(e) for e in encodings], dtype=np.int64)
        slow_ids = np.fromiter(chain.from_iterable(e.ids for e in encodings), dtype=np.int32, count=int(slow_counts.sum()))
        if not fast:
            return slow_ids, slow_counts
        parts = [(np.array(fast, dtype=np.int64), fast_counts), (slow, slow_counts)]
        bounds, index = _gathering(len(texts), [(positions, np.concatenate([[0], np.cumsum(counts)]), np.arange(len(positions))) for positions, counts in parts])
        return np.concatenate([fast_ids, slow_ids])[index], np.diff(bounds)

    def uses_same_bpe(self) -> bool:
        """Whether tiktoken encodes the strings it takes (same_bpe.py)."""
        return self._same is not None

    def _encode_with_offsets(self, texts: list[str]) -> EncodedBatch:
        """Every string encoded whole, in one call to the Rust tokenizer, with its offsets."""
        encodings = self._backend.encode_batch(texts, add_special_tokens=False)
        bounds = np.zeros(len(texts) + 1, dtype=np.int64)
        np.cumsum([len(e) for e in encodings], out=bounds[1:])
        ids, offsets = self._arrays(texts, encodings, bounds)
        return EncodedBatch(ids, offsets, bounds)

    def _arrays(self, texts: list[str], encodings: list, bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The tokenizer's lists of several strings as flat arrays, each whitespace-stripping added
        token's range narrowed to its own text (see `Encoded`); only those few tokens are looked at
        one by one. Each encoding's lists are read straight into the arrays, not gathered first
        (13 ms instead of 18 ms per 1,024 chats, with the interpreter lock held)."""
        total = int(bounds[-1])
        id_array = np.fromiter(chain.from_iterable(e.ids for e in encodings), dtype=np.int32, count=total)
        offset_array = np.fromiter(chain.from_iterable(chain.from_iterable(e.offsets for e in encodings)), dtype=np.int32, count=2 * total).reshape(-1, 2)
        if self._stripping:
            for n in np.flatnonzero(np.isin(id_array, self._stripping_ids)).tolist():
                text = texts[int(np.searchsorted(bounds, n, side="right")) - 1]
                content = self._stripping[int(id_array[n])]
                at = text.find(content, int(offset_array[n, 0]), int(offset_array[n, 1]))
                if at >= 0:
                    offset_array[n] = (at, at + len(content))
        return id_array, offset_array

    def encode(self, text: str, edges: np.ndarray, plain_spans: tuple[tuple[int, int], ...] = (), whole: Encoded | None = None) -> Encoded:
        """Encode one string so that no token crosses a span edge and every plain span is
        tokenized as ordinary text. The common case is the single encode of the whole string
        (`whole`, when the caller already batched it), kept as it is."""
        if not plain_spans:
            whole = whole or self.encode_batch([text])[0]
            crossed = crossed_boundaries(whole.offsets, edges)
            if not len(crossed):
                return whole
            return self._encode_pieces(text, crossed.tolist(), ())
        crossed = crossed_boundaries(self._encode_pieces(text, [], plain_spans).offsets, edges)
        return self._encode_pieces(text, crossed.tolist(), plain_spans)

    def _encode_pieces(self, text: str, cuts: list[int], plain_spans: tuple[tuple[int, int], ...]) -> Encoded:
        """Encode `text` in pieces split at `cuts` and around each plain span, then join.

        Hugging Face tokenizers already split text at special tokens before the model sees it,
        so cutting at a plain span's edges (which begin with a special token's first character)
        changes nothing else.
        """
        points = sorted({0, len(text), *cuts, *(edge for span in plain_spans for edge in span)})
        plain = set(plain_spans)
        ids, offsets = [np.zeros(0, np.int32)], [np.zeros((0, 2), np.int32)]
        for start, end in zip(points, points[1:]):
            backend = self._plain if (start, end) in plain else self._later if start else self._backend
            encoding = backend.encode(text[start:end], add_special_tokens=False)
            piece_ids, piece_offsets = self._arrays([text[start:end]], [encoding], np.array([0, len(encoding)]))
            ids.append(piece_ids)
            offsets.append(piece_offsets + start)
        return Encoded(np.concatenate(ids), np.concatenate(offsets), split_at_boundaries=bool(cuts))

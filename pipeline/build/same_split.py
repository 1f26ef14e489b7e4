"""The characters that `tokenizers` and tiktoken split alike, past ASCII.

Why: same_bpe.py lets tiktoken encode a string only where both libraries cut it into the same
pieces before merging, and it can check that directly only on a small alphabet (every ASCII
character and pair). The other strings went to `tokenizers`: in the benchmark chats 7% of
strings and 10% of characters, but a quarter of the encoder's CPU (1.0 of 4.4 CPU-s at 55k
chats), and nearly all of it on Chinese or Russian data. This module widens the alphabet by an
argument about the split regex itself.

The two libraries run the pre-tokenizer's regex in different engines (Oniguruma in `tokenizers`,
fancy-regex over the regex crate in tiktoken). Both match leftmost-first with backtracking, so
on the patterns byte-level BPE tokenizers use (GPT-2's, Qwen2's, Llama 3's) a match depends on
the text only through which characters are each literal of the pattern and which belong to each
of its classes (`\\p{L}`, `\\p{N}`, `\\s`, ...). Where every character of a string is classed
alike by both engines, they cut it alike. The Unicode tables of the two engines come from
different releases, so "alike" is measured, not assumed: each class of the pattern is run
through both engines over every code point this Python's tables assign (`_tiktoken`,
`_oniguruma`; 0.6 s), and the answer kept between runs (kept.py, named by the pattern and the
versions) as a table over all code points. A string holding any character classed differently,
or any listed below, goes to `tokenizers` as before.

Also kept out, whatever the measure says:
- what is not measured: code points this Python does not assign (an engine with newer tables may
  class them), surrogates (no UTF-8 of their own), the private-use planes 15 and 16;
- same_bpe's separator (a private-use character);
- under a case-insensitive group (Qwen2's `(?i:'s|'t|...)`), characters whose case forms reach
  ASCII letters (U+017F LONG S folds to "s", U+212A KELVIN SIGN lowers to "k", "ß" folds to
  "ss"): folding rules for such compatibility and multi-character cases may differ between
  engines, and these characters are few.

A pattern this module cannot read whole (an escape other than a class or an ASCII literal, an
anchor, `.`, a non-ASCII literal, a flag other than `i`, POSIX or set operations in a class)
gets no alphabet past ASCII. Per tokenizer, same_bpe.py also encodes a sample of these
characters in several contexts through both libraries before trusting them (`agrees`).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

import numpy as np
import tiktoken
import tokenizers
from tokenizers import Regex, Tokenizer
from tokenizers.pre_tokenizers import Split

from masked_shards.build import kept

CHECK_VERSION = 1
KIND = "same-split"
CODE_POINTS = 0x110000

# One element of a pattern, left to right: a class escape, an ASCII-literal escape, another
# escape, a group opening with flags, or one character.
_ELEMENT = re.compile(r"\\[pP]\{\w+\}|\\[pP]\w|\\[sSdDwW]|\\.|\(\?(?:[A-Za-z-]*[:)]|[=!]|<[=!])|.", re.DOTALL)
_GROUPS = {"(?:", "(?=", "(?!"}
_FOLDING = {"(?i:", "(?i)"}


def unsure_characters(pattern: str, separator: str) -> np.ndarray:
    """Over every code point, whether a string holding it may be split differently by the two
    engines under `pattern` (ASCII never: same_bpe.py checks those per tokenizer)."""
    read = _classes(pattern)
    if read is None:
        return past_ascii()
    classes, folding = read
    name = kept.key(pattern, separator, str(CHECK_VERSION), tokenizers.__version__, tiktoken.__version__, unicodedata.unidata_version)
    data = kept.read(KIND, name)
    if data is not None and len(data) == CODE_POINTS // 8:
        return np.unpackbits(np.frombuffer(data, dtype=np.uint8)).astype(bool)
    points = _measured()
    text = "".join(map(chr, points.tolist()))
    unsure = np.zeros(len(points), dtype=bool)
    for cls in sorted(classes):
        matched = _tiktoken(cls, points, text)
        unsure |= matched != _oniguruma(cls, points, matched)
    unsure |= points == ord(separator)
    if folding:
        unsure |= np.fromiter((_reaches_ascii(c) for c in text), dtype=bool, count=len(text))
    table = past_ascii()
    table[points[~unsure]] = False
    kept.keep(KIND, name, np.packbits(table).tobytes())
    return table


def past_ascii() -> np.ndarray:
    """The table of a pattern this module cannot read: every character past ASCII kept out."""
    table = np.ones(CODE_POINTS, dtype=bool)
    table[:0x80] = False
    return table


def _classes(pattern: str) -> tuple[frozenset[str], bool] | None:
    """The classes a pattern tests characters against, and whether it folds case; None where the
    pattern holds anything else than classes, ASCII literals, plain groups and lookaheads."""
    if not pattern.isascii() or "[:" in pattern or "&&" in pattern or "--" in pattern or "~~" in pattern:
        return None
    classes, folding, after = set(), False, ""
    for element in _ELEMENT.findall(pattern):
        if element.startswith("\\p") or element.startswith("\\P"):
            classes.add("\\p" + element[2:])
        elif element in ("\\s", "\\S", "\\d", "\\D", "\\w", "\\W"):
            classes.add("\\" + element[1].lower())
        elif element.startswith("\\") and not re.fullmatch(r"\\[rntfv]|\\[^A-Za-z0-9]", element):
            return None  # \b, \A, \x.., \u...: not read here
        elif element.startswith("(?"):
            if element in _FOLDING:
                folding = True
            elif element not in _GROUPS:
                return None
        elif element in (".", "$") or (element == "^" and after != "["):
            return None
        after = element
    return frozenset(classes), folding


def _measured() -> np.ndarray:
    """The code points whose classes are measured: those this Python's Unicode tables assign,
    below the private-use planes (15 and 16). The rest (unassigned here, though perhaps assigned
    in an engine's newer tables; surrogates; private use past the BMP) are kept out unmeasured:
    they are rare in text, and measuring all 1.1M code points took 2.6 s, these 150k 0.4 s."""
    points = np.arange(0x80, 0xF0000)
    return points[np.fromiter((unicodedata.category(chr(p)) != "Cn" and not 0xD800 <= p <= 0xDFFF for p in points.tolist()), dtype=bool, count=len(points))]


def _tiktoken(cls: str, points: np.ndarray, text: str) -> np.ndarray:
    """Which of `points` (`text` is those code points in order, each once) fancy-regex's `cls`
    matches, through tiktoken: it encodes only what its regex matches, so with a vocabulary of
    single bytes the bytes back are the matched characters, each whole."""
    encoding = tiktoken.Encoding("same-split", pat_str=cls, mergeable_ranks={bytes([b]): b for b in range(256)}, special_tokens={})
    matched = bytes(encoding.encode_ordinary(text)).decode("utf-8")
    return np.isin(points, np.frombuffer(matched.encode("utf-32-le"), dtype=np.uint32))


def _oniguruma(cls: str, points: np.ndarray, guess: np.ndarray) -> np.ndarray:
    """Which of `points` Oniguruma's `cls` matches, through `tokenizers`' Split, which removes
    the matches and gives back the stretches between them. The points go in with those `guess`
    holds first, so where Oniguruma agrees there are two stretches to read back, not one per
    character (0.1 s instead of 0.7 s for \\p{L})."""
    order = np.argsort(~guess, kind="stable")
    left = Split(Regex(cls), "removed").pre_tokenize_str("".join(map(chr, points[order].tolist())))
    edges = np.zeros(len(points) + 1, dtype=np.int64)
    for _, (start, end) in left:
        edges[start] += 1
        edges[end] -= 1
    member = np.empty(len(points), dtype=bool)
    member[order] = np.cumsum(edges[:-1]) == 0
    return member


def _reaches_ascii(character: str) -> bool:
    """Whether a character's case forms hold an ASCII letter (U+017F folds to "s")."""
    return any(c.isascii() and c.isalpha() for form in (character.lower(), character.upper(), character.casefold(), character.title()) for c in form)


def taken(texts: list[str], unsure: np.ndarray) -> list[int]:
    """The indices of `texts` that hold no character `unsure` marks: all of them read at once,
    as code points looked up in the table (a regex class of the marked characters took 0.7 us a
    character)."""
    wide = [k for k, text in enumerate(texts) if not text.isascii()]
    if not wide:
        return list(range(len(texts)))
    lengths = np.array([len(texts[k]) for k in wide], dtype=np.int64)
    codes = np.frombuffer("".join(texts[k] for k in wide).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    kept_out = np.logical_or.reduceat(unsure[codes], np.cumsum(lengths) - lengths)
    keep = np.ones(len(texts), dtype=bool)
    keep[np.array(wide)[kept_out]] = False
    return np.flatnonzero(keep).tolist()


def agrees(backend: Tokenizer, encode: Callable[[list[str]], tuple[np.ndarray, np.ndarray]], unsure: np.ndarray) -> bool:
    """A sample of the characters past ASCII that `unsure` lets through, each alone and beside
    letters, digits, spaces, newlines, punctuation and the next sampled character, encoded to the
    same ids by `backend` and by `encode` (texts -> (ids, counts)): the whole of U+0080 to
    U+07FF (Latin, Greek, Cyrillic, Hebrew, Arabic, combining marks) and every 97th code point
    past it. About 45,000 strings, 0.2 s, once per tokenizer file."""
    points = np.arange(0x80, CODE_POINTS)
    sample = [chr(p) for p in points[((points < 0x800) | (points % 97 == 0)) & ~unsure[0x80:]].tolist()]
    texts = [t for c, d in zip(sample, sample[1:] + sample[:1]) for t in (c, f"a{c}b", f" {c}{c}", f"1{c}'s", f"{c}\n\n", f"'{c}!", f"{c}{d}")]
    expected = backend.encode_batch_fast(texts, add_special_tokens=False)
    ids, counts = encode(texts)
    return counts.tolist() == [len(e.ids) for e in expected] and ids.tolist() == [i for e in expected for i in e.ids]

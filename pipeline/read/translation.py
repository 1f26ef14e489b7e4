"""Translation data to training input: parallel pairs, their checks, and two ways to train on them.

Four input shapes become one `TranslationPair`:

    src/tgt             {"src": "Hello", "tgt": "Hallo"}
    Hugging Face        {"translation": {"en": "Hello", "de": "Hallo"}}   languages name the keys
    language-keyed      {"en": "Hello", "de": "Hallo"}                     WMT-style JSONL
    line-aligned files  train.en + train.de (read by sources.py into src/tgt records)

A pair then feeds one of two model kinds:

* decoder-only: `translation_prompt` renders `templates/translate.jinja` into the user turn and
  `pair_to_example` makes the target the only assistant turn, so `RowBuilder` supervises the
  target and its end-of-turn token and never the source.
* encoder-decoder: `RowBuilder`'s seq2seq encoding (rows.py) writes the source as `input_ids`
  and the target as `labels`.

Languages. A record in the `translation` or language-keyed shape can only be read when a source
and a target language are given. The caller checks that at start with `needs_languages` on the
first record and stops with a config error; a later record that still needs them is rejected
(`languages_not_set`), never an exception, so one odd record cannot kill a running job.

Like `formats.py`, bad input becomes a `Rejected` with a reason code (`pair_text` raises
`records.Invalid`, so `formats.to_example` can read the same shapes); only settings that are wrong
for every record (one language without the other, a ratio below 1, a broken prompt template,
line files of different lengths) raise `ValueError` with one sentence for a config error.
"""

from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from masked_shards.records import Example, Invalid, Rejected, Turn, unusable_text
from masked_shards.read.sources import RawRecord

_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean", type(None): "null"}


@dataclass(frozen=True)
class TranslationPair:
    """One source sentence (or passage) and its translation. `example_id` is `<name>:<index>`
    (input file name, 0-based record or line number); `source` is the input it belongs to."""

    example_id: str
    source: str
    src: str
    tgt: str
    raw: object = field(default=None, compare=False)


def _rejected(pair: TranslationPair, reason: str, detail: str) -> Rejected:
    """A `Rejected` pointing at the pair's file and index, as `rows.rejected` does for examples."""
    name, index = pair.example_id.rsplit(":", 1)
    return Rejected(name, int(index), reason, detail, pair.raw)


def needs_languages(value: object) -> bool:
    """Whether a record of this shape can only be read with a source and a target language
    (it is an object without `src`/`tgt`), so the caller can refuse to start without them."""
    return isinstance(value, dict) and "src" not in value and "tgt" not in value


_LANGUAGE_CODE = re.compile(r"[a-z]{2,3}(?:[_-][A-Za-z0-9]{2,8})*")


def looks_language_keyed(value: object) -> bool:
    """Whether a record looks like a WMT-style pair keyed by language codes (`{"en": .., "de": ..}`):
    two or more keys that look like codes (`en`, `deu`, `pt_BR`, `eng_Latn`), every value a string."""
    return (
        isinstance(value, dict)
        and len(value) >= 2
        and all(isinstance(k, str) and _LANGUAGE_CODE.fullmatch(k) and isinstance(v, str) for k, v in value.items())
    )


def pair_from_record(record: RawRecord, source_lang: str | None, target_lang: str | None) -> TranslationPair | Rejected:
    """One JSON record to a pair, or a `Rejected` saying why not.

    Raises ValueError when only one of the two languages is given (see `pair_text`).
    """
    try:
        src, tgt = pair_text(record.value, source_lang, target_lang)
    except Invalid as bad:
        return Rejected(record.name, record.index, bad.reason, bad.detail, record.value)
    return TranslationPair(record.example_id, record.source or record.name, src, tgt, record.value)


def pair_text(value: object, source_lang: str | None, target_lang: str | None) -> tuple[str, str]:
    """(source text, target text) of one record, or `records.Invalid` with a reason code.

    `src`/`tgt` fields win when present (languages, if given, are then only for the prompt);
    otherwise the languages name the keys of a `translation` object or of the record itself.
    Raises ValueError when only one of the two languages is given: that is wrong for every record.
    """
    if (source_lang is None) != (target_lang is None):
        raise ValueError("a source language and a target language must be given together, or neither")
    if not isinstance(value, dict):
        raise Invalid("not_an_object", f"record is {_json_type(value)}, not an object")
    if not needs_languages(value):
        return _text(value, "src", "record"), _text(value, "tgt", "record")
    if source_lang is None or target_lang is None:
        raise Invalid("languages_not_set", f"record has no 'src'/'tgt' fields (it has {sorted(map(str, value))[:8]}) and no source and target language were given to read it by")
    if "translation" in value:
        inner = value["translation"]
        if not isinstance(inner, dict):
            raise Invalid("wrong_type", f"record field 'translation' is {_json_type(inner)}, not an object")
        return _text(inner, source_lang, "'translation' object"), _text(inner, target_lang, "'translation' object")
    return _text(value, source_lang, "record"), _text(value, target_lang, "record")


def _text(value: dict[str, object], key: str, what: str) -> str:
    if key not in value:
        raise Invalid("missing_field", f"{what} has no '{key}' field")
    text = value[key]
    if not isinstance(text, str):
        raise Invalid("wrong_type", f"{what} field '{key}' is {_json_type(text)}, not a string")
    return text


def _json_type(value: object) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def check_pair(pair: TranslationPair, max_length_ratio: float | None) -> Rejected | None:
    """A `Rejected` for a pair not worth training on, else None. In order:

    * `empty_source`, `empty_target`: nothing but whitespace.
    * `reserved_character`, `invalid_unicode`: text no row can carry (`records.unusable_text`).
    * `punctuation_only_target`: no letter or digit (Unicode categories L*, N*) in the target
      after HTML entities are unescaped and NFKC applied, so "...", "—" and "&quot;" all count.
      Unescaping is for this check only: the text itself is never changed.
    * `length_ratio`: longer / shorter in characters (code points, whitespace at the ends
      stripped) above `max_length_ratio`; None (the default) turns it off. Scripts differ in
      characters per meaning (Chinese vs English is about 1:3), so the limit is the caller's.
    """
    if max_length_ratio is not None and max_length_ratio < 1:
        raise ValueError(f"the maximum length ratio must be at least 1, not {max_length_ratio}")
    problem = _problem(pair.src.strip(), pair.tgt.strip(), max_length_ratio)
    return None if problem is None else _rejected(pair, *problem)


def _problem(src: str, tgt: str, max_length_ratio: float | None) -> tuple[str, str] | None:
    if not src:
        return "empty_source", "source text is empty or only whitespace"
    if not tgt:
        return "empty_target", "target text is empty or only whitespace"
    for side, text in (("source", src), ("target", tgt)):
        problem = unusable_text(text)
        if problem:
            return problem[0], f"{side} text {problem[1]}"
    if not any(unicodedata.category(c)[0] in "LN" for c in unicodedata.normalize("NFKC", html.unescape(tgt))):
        return "punctuation_only_target", f"target {tgt[:40]!r} has no letter or digit, only punctuation or symbols"
    if max_length_ratio is not None:
        ratio = max(len(src), len(tgt)) / min(len(src), len(tgt))
        if ratio > max_length_ratio:
            return "length_ratio", f"source has {len(src)} characters and target {len(tgt)}, a length ratio of {ratio:.2f} above the limit of {max_length_ratio}"
    return None


def translation_prompt(template_source: str, source_text: str, source_lang: str | None, target_lang: str | None) -> str:
    """The user turn for a decoder-only model: the prompt template with `source_text`,
    `source_lang` and `target_lang` (names or codes as given; None when src/tgt records came
    without languages, which the bundled template leaves out of its sentence).

    Raises ValueError when the template does not compile or uses another variable: a config error
    for every pair, so the caller renders it once at start to find out."""
    try:
        return _prompt_template(template_source).render(source_text=source_text, source_lang=source_lang, target_lang=target_lang)
    except jinja2.TemplateError as err:
        raise ValueError(f"the translation prompt template cannot be rendered ({type(err).__name__}: {err})") from None


@lru_cache(maxsize=8)
def _prompt_template(source: str) -> jinja2.Template:
    """Compiled once per template text: a job renders the same template for every pair.
    Sandboxed because templates may come from users; StrictUndefined so a misspelt variable is
    an error, not a silently empty prompt."""
    env = ImmutableSandboxedEnvironment(keep_trailing_newline=False, undefined=jinja2.StrictUndefined)
    return env.from_string(source)


def to_pair(record: RawRecord, source_lang: str | None, target_lang: str | None, max_length_ratio: float | None) -> TranslationPair | Rejected:
    """A checked pair for the encoder-decoder path, or the reason it is not used."""
    pair = pair_from_record(record, source_lang, target_lang)
    return pair if isinstance(pair, Rejected) else check_pair(pair, max_length_ratio) or pair


def pair_to_example(pair: TranslationPair, prompt: str) -> Example:
    """A two-turn conversation whose only trainable turn is the target, for `RowBuilder`."""
    return Example(pair.example_id, pair.source, (Turn("user", prompt), Turn("assistant", pair.tgt, True)), pair.raw)


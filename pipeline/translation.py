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
* encoder-decoder: `Seq2SeqRowBuilder` writes the source as `input_ids` and the target as `labels`.

Languages. A record in the `translation` or language-keyed shape can only be read when a source
and a target language are given. The caller checks that at start with `needs_languages` on the
first record and stops with a config error; a later record that still needs them is rejected
(`languages_not_set`), never an exception, so one odd record cannot kill a running job.

Like `formats.py`, bad input becomes a `Rejected` with a reason code (`pair_text` raises
`formats.Invalid`, so `formats.to_example` can read the same shapes); only settings that are wrong
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

from pipeline.config import PipelineConfig
from pipeline.formats import Invalid, unusable_text
from pipeline.masking import IGNORE_INDEX
from pipeline.records import Dropped, Example, Rejected, TokenizedRow, Turn
from pipeline.shards import split_for
from pipeline.sources import RawRecord
from pipeline.tokenization import special_tokens

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
    """A `Rejected` pointing at the pair's file and index, as `RowBuilder` does for examples."""
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
    """(source text, target text) of one record, or `formats.Invalid` with a reason code.

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
    * `reserved_character`, `invalid_unicode`: text no row can carry (`formats.unusable_text`).
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


class Seq2SeqRowBuilder:
    """Pairs to encoder-decoder rows; build one per worker (it holds the tokenizer).

    * `input_ids`: the source with the tokenizer's own special tokens (T5 appends `</s>`).
    * `labels`: the target tokenized as a target (`text_target`), ending in EOS: appended when
      the tokenizer's post-processor does not add it. No decoder prompt: the model builds its
      decoder input by shifting the labels right.
    * Text that spells a special token is rejected (`special_token_in_text`) or, with
      `special_text="plain"`, tokenized as ordinary characters, as in `RowBuilder`.
    * Source and target are fitted to `max_length` separately. Truncation keeps the first tokens.
      A truncated source keeps its final special token (the `</s>` the encoder always saw), as
      the tokenizer's own truncation does. A truncated target loses its EOS: as with a cut
      assistant answer, a model must not learn to stop in the middle of a translation.
    * Padding per `pad_to`, each side to its own length: the source with the pad id and
      attention 0, the labels with -100, never the pad id. `labels` and `input_ids` may differ
      in length.
    * Language codes: see `_set_languages`.
    """

    def __init__(self, config: PipelineConfig, tokenizer) -> None:
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no EOS token, so a target's end cannot be supervised")
        if config.pad_to is not None and tokenizer.pad_token_id is None:
            raise ValueError(f"--pad-to {config.pad_to} needs a tokenizer with a pad token, and this one has none")
        _set_languages(tokenizer, config.source_lang, config.target_lang)
        self.config = config
        self._tokenizer = tokenizer
        self._specials = special_tokens(tokenizer)
        self._special_ids = frozenset(tokenizer.all_special_ids)

    def build(self, pairs: list[TranslationPair]) -> list[TokenizedRow | Rejected | Dropped]:
        """One result per pair, in order; sources and targets are each encoded in one call."""
        refused = [self._special_text(pair) for pair in pairs]
        kept = [pair for pair, refusal in zip(pairs, refused) if refusal is None]
        encoded = iter(zip(self._encode(kept, target=False), self._encode(kept, target=True)))
        return [refusal if refusal is not None else self._row(pair, *next(encoded)) for pair, refusal in zip(pairs, refused)]

    def _special_text(self, pair: TranslationPair) -> Rejected | None:
        if self.config.special_text == "plain":
            return None
        for side, text in (("source", pair.src), ("target", pair.tgt)):
            token = next((t for t in self._specials if t in text), None)
            if token is not None:
                return _rejected(pair, "special_token_in_text", f"{side} text contains the special token {token!r} as text")
        return None

    def _encode(self, pairs: list[TranslationPair], *, target: bool) -> list[list[int]]:
        # split_special_tokens: text spelling a special token (only left under special_text=plain)
        # becomes ordinary characters; the post-processor's own special tokens are unaffected.
        if not pairs:
            return []
        if target:
            return self._tokenizer(text_target=[p.tgt for p in pairs], split_special_tokens=True)["input_ids"]
        return self._tokenizer([p.src for p in pairs], split_special_tokens=True)["input_ids"]

    def _row(self, pair: TranslationPair, source_ids: list[int], target_ids: list[int]) -> TokenizedRow | Dropped:
        eos, max_length = self._tokenizer.eos_token_id, self.config.max_length
        labels = target_ids if target_ids[-1:] == [eos] else [*target_ids, eos]
        overlong = [f"{side} has {len(ids)} tokens" for side, ids in (("source", source_ids), ("target", labels)) if len(ids) > max_length]
        if overlong and self.config.overlong == "drop":
            return Dropped(pair.example_id, pair.source, "overlong", f"{' and '.join(overlong)}, more than --max-length {max_length}")
        input_ids, labels = self._cut_source(source_ids), labels[:max_length]
        source_padding = self.config.pad_length(len(input_ids)) - len(input_ids)
        label_padding = self.config.pad_length(len(labels)) - len(labels)
        return TokenizedRow(
            example_id=pair.example_id,
            source=pair.source,
            split=split_for(pair.example_id, self.config.validation_fraction),
            input_ids=input_ids + [self._tokenizer.pad_token_id] * source_padding,
            labels=labels + [IGNORE_INDEX] * label_padding,
            attention_mask=[1] * len(input_ids) + [0] * source_padding,
            truncated=bool(overlong),
            aligned=False,
        )

    def _cut_source(self, ids: list[int]) -> list[int]:
        """The first max_length tokens, ending with the source's final special token if it had one."""
        max_length = self.config.max_length
        if len(ids) <= max_length:
            return ids
        tail = ids[-1:] if ids[-1] in self._special_ids else []
        return ids[: max_length - len(tail)] + tail


def _set_languages(tokenizer, source_lang: str | None, target_lang: str | None) -> None:
    """Point a multilingual tokenizer's language codes at the pair's languages.

    NLLB- and mBART-style tokenizers (those with `src_lang`/`tgt_lang`) write a language code on
    each side: NLLB `eng_Latn Hello </s>` for the source and `deu_Latn Hallo </s>` for the target.
    Left alone, both sides get the tokenizer's default (eng_Latn), and the model learns to answer
    a German target with an English code. --source-lang/--target-lang must then be the tokenizer's
    own codes, which are special tokens (eng_Latn, not en); without them, or with a code it
    lacks (which it would silently encode as <unk> or as ordinary text), the job refuses to start
    (ValueError, one sentence). Other tokenizers are left as they are.
    """
    if not hasattr(tokenizer, "src_lang"):
        return
    default, codes = tokenizer.src_lang, special_tokens(tokenizer)
    if source_lang is None or target_lang is None:
        raise ValueError(f"the tokenizer writes a language code on each side (its default is {default}), so --source-lang and --target-lang must name its codes")
    for flag, code in (("--source-lang", source_lang), ("--target-lang", target_lang)):
        if code not in codes:
            raise ValueError(f"{flag} {code} is not a language code of the tokenizer, whose codes look like its default {default}")
    tokenizer.src_lang, tokenizer.tgt_lang = source_lang, target_lang

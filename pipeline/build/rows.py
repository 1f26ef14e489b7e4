"""Examples to training rows, a batch at a time, for decoder-only and encoder-decoder models alike.

This is the per-example work of the job, kept free of Beam so tests drive it directly. One
`RowBuilder` does the steps every row shares; only the encoding differs per model type:

    DecoderEncoding   Example --render--> text --encode with offsets--> ids --label by spans--> labels
    Seq2SeqEncoding   TranslationPair --encode--> source ids;  target ids + EOS --> labels

    shared            special-token text: reject (or keep as plain text)
                      fit: --overlong drop | truncate to --max-length
                      pad (--pad-to) and gather the batch into Arrow columns -> RowBatch

    [e0, e1, e2]  ->  RowBatch(rows: e0, e2 as BATCH_SCHEMA columns, others: (Rejected e1,))
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np
import pyarrow as pa

from masked_shards.config import PipelineConfig
from masked_shards.build.masking import IGNORE_INDEX, build_labels, crossed_boundaries, generated_part, select_spans, span_edges
from masked_shards.records import BATCH_SCHEMA, TEXT_ROLE, Dropped, Example, Rejected, RowBatch, Segment, Turn, json_bytes, strings_in
from masked_shards.write.shards import split_for
from masked_shards.build.direct_render import direct_renderer
from masked_shards.build.templates import ChatTemplate, Rendered, Renderer, TemplateError
from masked_shards.build.tokenization import EncodedBatch, Encoder, FolderTokenizer, TokenizerError, full_tokenizer, special_tokens
from masked_shards.read.translation import TranslationPair
from masked_shards.build.token_rows import FittedRows, TokenRows, bounds, concat_rows, fit_rows, padded_column, take_rows, token_rows
from masked_shards.build.turn_counts import EndOfTurn, MessageCounts, MessageSpans, MessageTokens, count_rows, locate, pair_counts

_PROBE = Example(
    "probe:0",
    "probe",
    (Turn("user", "Probe question one?"), Turn("assistant", "Probe answer one.", True), Turn("user", "Probe question two?"), Turn("assistant", "Probe answer two.", True)),
)


_TOOL_PROBE_TOOLS = [{"type": "function", "function": {"name": "probe_lookup", "description": "Look a word up.", "parameters": {"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]}}}]
_TOOL_PROBE = (
    {"role": "user", "content": "Probe question one?"},
    {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "probe_lookup", "arguments": {"word": "probe"}}}]},
    {"role": "tool", "tool_call_id": "call_1", "name": "probe_lookup", "content": "Probe result."},
    {"role": "assistant", "content": "Probe answer one."},
)


class Encoding(Protocol):
    """What differs between model types: which texts of an item are checked for special tokens,
    and how a batch of items becomes `TokenRows`."""

    aligned: bool

    def texts(self, item: Example | TranslationPair) -> Iterator[tuple[str, object]]:
        """(where, text) of every text the item's author wrote, as named in a rejection; a value
        that holds texts at any depth (tool calls, tools) is given whole (`_special_text`)."""
        ...

    def start(self, items: Sequence[Example | TranslationPair], spelled: Sequence[bool]) -> Callable[[], tuple[TokenRows, list[Rejected | None]]]:
        """Begin encoding; the function returned gives the rows and, per item, None for an item
        that has a row (rows in item order) or the Rejected it became (it may wait for work going
        on beside the caller's meanwhile). `spelled[i]`: item i writes a special token's text, to
        be kept as plain text (only happens under `--special-text plain`)."""
        ...


class RowBuilder:
    """Turns batches of examples (decoder) or translation pairs (seq2seq) into a `RowBatch`;
    build one per worker (it holds the tokenizer).

    Raises ValueError (one sentence, a config error) when the tokenizer cannot serve the config.
    """

    def __init__(self, config: PipelineConfig, tokenizer, template: ChatTemplate | None) -> None:
        if config.pad_to is not None and tokenizer.pad_token_id is None:
            raise ValueError(f"--pad-to {config.pad_to} needs a tokenizer with a pad token, and this one has none")
        self.config = config
        self._pad_id = tokenizer.pad_token_id
        specials = special_tokens(tokenizer)
        self._special_pattern = _alternation(specials)
        self._special_in_json = _alternation_in_json(specials)
        self.encoding: Encoding
        if config.model_type == "seq2seq":
            # Encoder-decoder rows call the tokenizer itself (text_target, language codes): transformers'.
            full = full_tokenizer(tokenizer.name_or_path) if isinstance(tokenizer, FolderTokenizer) else tokenizer
            self.encoding = Seq2SeqEncoding(full, config.source_lang, config.target_lang)
        elif template is None:
            raise ValueError("decoder rows need a chat template")
        else:
            self.encoding = DecoderEncoding(config, tokenizer, template, specials, self._special_pattern)

    def build(self, items: Sequence[Example | TranslationPair]) -> RowBatch:
        """The batch's rows and, in order, the items that gave none. Texts are encoded in one
        batched tokenizer call; only the steps that depend on one row look at rows one by one."""
        return self.start(items)()

    def start(self, items: Sequence[Example | TranslationPair]) -> Callable[[], RowBatch]:
        """`build` in two halves: the checks and rendering now, with the tokenizer's call then
        running in a thread; the function returned waits for it and makes the rows. A caller that
        starts the next batch before finishing this one keeps the Rust encoder busy beside the
        Python work on the other (the call releases the GIL):

            start(b1)  start(b2) finish(b1)  start(b3) finish(b2)  ...   [encoder: b1 | b2 | b3]
        """
        outcomes: list[Rejected | None] = []  # None: still to encode
        kept, spelled = [], []
        for item in items:
            found = _special_text(self.encoding.texts(item), self._special_pattern, self._special_in_json)
            if found and self.config.special_text == "reject":
                where, token = found
                outcomes.append(rejected(item, "special_token_in_text", f"{where} contains the special token {token!r} as text"))
            else:
                outcomes.append(None)
                kept.append(item)
                spelled.append(found is not None)
        encoding = self.encoding.start(kept, spelled)

        def finish() -> RowBatch:
            rows, failed = encoding()
            encoded = [item for item, failure in zip(kept, failed) if failure is None]
            config = self.config
            fitted, dropped = fit_rows(rows, self.encoding.aligned, config.max_length, config.overlong, config.keeps_overlong)
            failures, row = iter(failed), 0
            others: list[Rejected | Dropped] = []
            for outcome in outcomes:
                failure = outcome if outcome is not None else next(failures)
                if failure is not None:
                    others.append(failure)
                    continue
                if row in dropped:
                    item = encoded[row]
                    others.append(Dropped(item.example_id, item.source, *dropped[row]))
                row += 1
            return RowBatch(self._gather(fitted, [encoded[i] for i in fitted.kept.tolist()]), tuple(others), self.encoding.aligned)

        return finish

    def _count_messages(self, fitted: FittedRows) -> MessageCounts:
        """What each message of the rows became (turn_counts.py): for decoder rows from their
        tokens' messages; an encoder-decoder row is a source message and a target message."""
        rows = fitted.rows
        if self.encoding.aligned:
            return count_rows(rows.messages, rows.labels, np.diff(rows.label_bounds))
        return pair_counts(np.diff(rows.id_bounds), np.diff(rows.label_bounds), fitted.target_cut)

    def _gather(self, fitted: FittedRows, items: list[Example | TranslationPair]) -> pa.RecordBatch:
        """The rows as BATCH_SCHEMA columns, each list column built from one flat array and its
        offsets; padding (--pad-to) is the pad id in `input_ids`, -100 in `labels`, 0 in
        `attention_mask`, each column to the padded length of its own content."""
        rows = fitted.rows
        lengths, label_lengths = np.diff(rows.id_bounds), np.diff(rows.label_bounds)
        padded, label_padded = (lengths, label_lengths) if self.config.pad_to is None else (self._padded(lengths), self._padded(label_lengths))
        attention = np.ones(len(rows.ids), dtype=np.int8)
        columns = [
            padded_column(rows.ids, lengths, padded, self._pad_id or 0, pa.int32()),
            padded_column(rows.labels, label_lengths, label_padded, IGNORE_INDEX, pa.int32()),
            padded_column(attention, lengths, padded, 0, pa.int8()),
            pa.array([item.example_id for item in items], pa.string()),
            pa.array([item.source for item in items], pa.string()),
            pa.array([split_for(item.example_id, self.config.validation_fraction) for item in items], pa.string()),
            pa.array(fitted.truncated, pa.bool_()),
            pa.array(rows.split_at_boundaries, pa.bool_()),
            pa.array(fitted.tokens_before_truncation, pa.int32()),
            *_message_columns(self._count_messages(fitted)),
        ]
        return pa.RecordBatch.from_arrays(columns, schema=BATCH_SCHEMA)

    def _padded(self, lengths: np.ndarray) -> np.ndarray:
        return np.array([self.config.pad_length(n) for n in lengths.tolist()], dtype=np.int64)


def _message_columns(counts: MessageCounts) -> list[pa.ListArray]:
    """The report-only columns `turn_roles`, `turn_tokens`, `turn_supervised`, `turn_eot`,
    `turn_calls`, `turn_reasoning` (records.BATCH_SCHEMA), one list per row with one value per message."""
    offsets = bounds(counts.lengths).astype(np.int32)
    fields = (
        (counts.roles, pa.int8()),
        (counts.tokens, pa.int32()),
        (counts.supervised, pa.int32()),
        (counts.eot, pa.int8()),
        (counts.calls, pa.int16()),
        (counts.reasoning, pa.int32()),
    )
    return [pa.ListArray.from_arrays(offsets, values.astype(value_type.to_pandas_dtype(), copy=False), type=pa.list_(value_type)) for values, value_type in fields]


class DecoderEncoding:
    """Render through the chat template, encode the whole string once (with offsets), label the
    tokens inside the selected assistant spans (masking.py)."""

    aligned = True

    def __init__(self, config: PipelineConfig, tokenizer, template: ChatTemplate, specials: tuple[str, ...], special_pattern: re.Pattern[str] | None) -> None:
        self._config = config
        self._specials = specials
        self._special_pattern = special_pattern
        self._renderer = Renderer(template, bos_token=tokenizer.bos_token, eos_token=tokenizer.eos_token, special_tokens=self._specials)
        self._direct = direct_renderer(template, self._renderer)  # conversations without a Jinja call, when the template has a writer
        self._encoder = Encoder(tokenizer)
        self._eos = tokenizer.eos_token or ""
        self._end_of_turn = EndOfTurn(specials)
        self._prompt_tail = _prompt_tail(self._renderer)
        # One call at a time, in order, standing back from this thread's Python work (Encoder.background).
        self._encoding_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encode", initializer=self._encoder.background)

    def texts(self, example: Example) -> Iterator[tuple[str, object]]:
        for n, turn in enumerate(example.turns):
            yield f"turn {n}", turn.content
            if turn.reasoning:
                yield f"turn {n}", turn.reasoning
            if turn.tool_calls or turn.extra:
                yield f"turn {n}", (turn.tool_calls, turn.extra)
        if example.tools is not None:
            yield "tools", example.tools

    def start(self, examples: Sequence[Example], spelled: Sequence[bool]) -> Callable[[], tuple[TokenRows, list[Rejected | None]]]:
        """Strings without plain spans are encoded whole in one call (in the encoding thread) and
        labelled together; a string where a token crosses a span edge, or with plain spans, is
        then encoded alone in pieces (tokenization.py) and labelled alone."""
        results: list[Rendered | Rejected] = [self._render(example, plain) for example, plain in zip(examples, spelled)]
        turn_spans = {n: r.turn_spans() for n, r in enumerate(results) if isinstance(r, Rendered)}
        config = self._config
        spans = {n: select_spans(results[n].text, found, train_on=config.train_on, train_on_eot=config.train_on_eot, special_tokens=self._specials) for n, found in turn_spans.items()}
        whole = {n: k for k, n in enumerate(n for n in spans if not results[n].plain_spans)}  # example -> place in batch
        messages, plain = MessageSpans(), {}  # those of `whole`, in its order; those of the others
        for n, found in turn_spans.items():
            if n in whole:
                messages.add(results[n].text, found, examples[n].turns, self._end_of_turn)
            else:
                plain[n] = MessageSpans.of(results[n].text, found, examples[n].turns, self._end_of_turn)
        encoding = self._encoding_thread.submit(self._encoder.encode_batch, [results[n].text for n in whole])
        return lambda: self._label(results, spans, messages, plain, whole, encoding.result())

    def _label(self, results: list[Rendered | Rejected], spans: dict[int, list[tuple[int, int]]], messages: MessageSpans, plain: dict[int, MessageSpans], whole: dict[int, int], batch: EncodedBatch) -> tuple[TokenRows, list[Rejected | None]]:
        """The rows of the strings encoded together, labelled together; a string where a token
        crosses a span edge, or with plain spans, encoded and labelled alone in its place."""
        texts = [results[n].text for n in whole]
        starts, offsets = _laid_end_to_end(batch, texts)
        labels, crossing = _labels_together(batch, starts, offsets, [spans[n] for n in whole])
        together = TokenRows(batch.ids, batch.bounds, labels, batch.bounds, np.zeros(len(whole), bool), np.zeros(len(whole), bool), _messages_together(batch, starts, offsets, messages))
        parts, order = [together], []
        for n, rendered in enumerate(results):
            if isinstance(rendered, Rejected):
                continue
            if n in whole and whole[n] not in crossing:
                order.append(whole[n])
                continue
            encoded = self._encoder.encode(rendered.text, span_edges(spans[n]), rendered.plain_spans, batch[whole[n]] if n in whole else None)
            labelled = build_labels(encoded.ids, encoded.offsets, spans[n])
            alone = messages.example(whole[n]) if n in whole else plain[n]
            one = EncodedBatch(encoded.ids, encoded.offsets, np.array([0, len(encoded.ids)], dtype=np.int64))
            parts.append(token_rows([encoded.ids], [labelled], split_at_boundaries=[encoded.split_at_boundaries], messages=_messages_together(one, np.zeros(1, dtype=np.int64), encoded.offsets, alone)))
            order.append(len(whole) + len(parts) - 2)
        rows = together if len(parts) == 1 else take_rows(concat_rows(parts), np.array(order, dtype=np.int64))
        return rows, [r if isinstance(r, Rejected) else None for r in results]

    def _render(self, example: Example, plain: bool) -> Rendered | Rejected:
        if example.turns[0].role == TEXT_ROLE:  # continued pretraining: the document, then EOS
            content = example.turns[0].content
            document = content + self._eos
            plain_spans = tuple(m.span() for m in self._special_pattern.finditer(content)) if plain else ()
            return Rendered(document, (Segment(document, True, 0),), plain_spans)
        rendered = self._direct(example) if self._direct is not None and not plain else None
        if rendered is not None and not self._prompt_tail:
            return rendered  # direct_render.py: spans start where the prompt ends and end with the stop token, nothing to cut
        if rendered is None:
            try:
                rendered = self._renderer.render(example, protect=self._specials if plain else ())
            except TemplateError as err:
                return rejected(example, err.reason, str(err))
        return _generated(rendered, self._prompt_tail, self._end_of_turn)


def _prompt_tail(renderer: Renderer) -> str:
    """What a template's assistant spans repeat of its generation prompt, found on the probe
    conversation: the prompt for the first answer is the text before that answer's span plus
    this tail, which the span starts with ("\n" for TRL's Qwen2.5 training template; "" for a
    template whose span starts where the prompt ends). "" when the probe does not render."""
    first = next(n for n, turn in enumerate(_PROBE.turns) if turn.role == "assistant")
    try:
        rendered = renderer.render(_PROBE)
        prompt = renderer.generation_prompt(Example("probe:0", "probe", _PROBE.turns[:first]))
    except TemplateError:
        return ""
    spans = rendered.assistant_spans()
    if not spans:
        return ""
    start, text = spans[0][0], rendered.text
    if prompt.startswith(text[:start]) and text.startswith(prompt[start:], start):
        return prompt[start:]
    return ""


def _generated(rendered: Rendered, prompt_tail: str, end_of_turn: EndOfTurn) -> Rendered:
    """`rendered` with each assistant span cut to what the model generates (masking.generated_part);
    the characters cut off join the masked text around the span."""
    text, spans, position = rendered.text, [], 0
    for segment in rendered.segments:
        if segment.turn is not None:
            start, end = position, position + len(segment.text)
            stripped = start + len(segment.text.rstrip())
            spans.append((*generated_part(text, start, end, prompt_tail, end_of_turn.length(text, start, stripped)), segment))
        position += len(segment.text)
    if all(segment.text == text[start:end] for start, end, segment in spans):
        return rendered
    segments, cursor = [], 0
    for start, end, segment in spans:
        segments += [Segment(text[cursor:start], False), Segment(text[start:end], segment.trainable, segment.turn)]
        cursor = end
    segments.append(Segment(text[cursor:], False))
    return Rendered(text, tuple(s for s in segments if s.text), rendered.plain_spans)


def _laid_end_to_end(batch: EncodedBatch, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The batch's strings laid end to end: where each string starts, and its tokens' offsets
    moved by the characters before it (what the labels and the message counts both search)."""
    starts = np.zeros(len(texts), dtype=np.int64)
    np.cumsum([len(t) for t in texts[:-1]], out=starts[1:])
    return starts, batch.offsets + np.repeat(starts, np.diff(batch.bounds))[:, None]


def _labels_together(batch: EncodedBatch, starts: np.ndarray, offsets: np.ndarray, spans: list[list[tuple[int, int]]]) -> tuple[np.ndarray, set[int]]:
    """The labels of every string of `batch` in one pass, and the strings (by position) where a
    token crosses a span edge, whose labels are not to be used. The strings are laid end to end
    (`_laid_end_to_end`), so each one's spans move by the characters before it, as its offsets did:

        texts ["ab", "cde"]  spans [[(1, 2)], [(0, 3)]]  ->  spans [(1, 2), (2, 5)] over "abcde"

    A token lies inside its own string, so it can only cross or fall inside its own spans."""
    moved = np.array([(a + start, b + start) for start, row in zip(starts.tolist(), spans) for a, b in row], dtype=np.int64).reshape(-1, 2)
    crossed = crossed_boundaries(offsets, span_edges(moved))
    return build_labels(batch.ids, offsets, moved), set((np.searchsorted(starts, crossed, side="right") - 1).tolist())


def _messages_together(batch: EncodedBatch, starts: np.ndarray, offsets: np.ndarray, messages: MessageSpans) -> MessageTokens:
    """The strings' `MessageTokens` from one `locate` over the whole batch, its strings laid end
    to end (`_laid_end_to_end`); message and token indices are then made each string's own.
    A string encoded alone is a batch of one."""
    counts = np.array(messages.messages, dtype=np.int64)
    first = np.concatenate([[0], np.cumsum(counts)])
    moved = np.repeat(starts, counts)
    pieces = np.array(messages.pieces, dtype=np.int64)
    spans = np.array(messages.spans, dtype=np.int64).reshape(-1, 2) + np.repeat(starts, pieces)[:, None]
    owners = np.array(messages.owners, dtype=np.int64) + np.repeat(first[:-1], pieces)
    eot = np.array(messages.eot, dtype=np.int64)
    eot = np.where(eot >= 0, eot + moved, -1)
    token_starts = offsets[:, 0].astype(np.int64, copy=False)
    owner, eot_token = locate(token_starts, spans, owners, eot)
    owner = np.where(owner >= 0, owner - np.repeat(first[:-1], np.diff(batch.bounds)), -1)
    eot_token = np.where(eot_token >= 0, eot_token - np.repeat(batch.bounds[:-1], counts), -1)
    reasoning = np.array(messages.reasoning, dtype=np.int64).reshape(-1, 2)
    reasoning = np.where(reasoning >= 0, _token_range(token_starts, reasoning + moved[:, None]) - np.repeat(batch.bounds[:-1], counts)[:, None], reasoning)
    return MessageTokens(owner, np.array(messages.roles, dtype=np.int8), eot_token, np.array(messages.calls, dtype=np.int64), reasoning, counts)


def _token_range(token_starts: np.ndarray, spans: np.ndarray) -> np.ndarray:
    """(first, end) token index of each character span (m, 2): the tokens that start inside it."""
    return np.searchsorted(token_starts, spans, side="left")


class Seq2SeqEncoding:
    """Encoder-decoder rows for translation pairs (the shape Seq2SeqTrainer and
    DataCollatorForSeq2Seq expect):

    * `input_ids`: the source with the tokenizer's own special tokens (T5 appends `</s>`);
      truncation keeps its final special token.
    * `labels`: the target tokenized as a target (`text_target`), ending in EOS: appended when
      the tokenizer's post-processor does not add it. No decoder prompt: the model builds its
      decoder input by shifting the labels right. A truncated target loses its EOS: as with a
      cut assistant answer, a model must not learn to stop in the middle of a translation.
    * Each side is fitted and padded to its own length (labels with -100, never the pad id), so
      `labels` and `input_ids` may differ in length.
    * Language codes: see `_set_language_codes`.
    """

    aligned = False

    def __init__(self, tokenizer, source_lang: str | None, target_lang: str | None) -> None:
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no EOS token, so a target's end cannot be supervised")
        _set_language_codes(tokenizer, source_lang, target_lang)
        self._tokenizer = tokenizer
        self._eos = tokenizer.eos_token_id
        self._special_ids = frozenset(tokenizer.all_special_ids)

    def texts(self, pair: TranslationPair) -> Iterator[tuple[str, str]]:
        yield "source text", pair.src
        yield "target text", pair.tgt

    def start(self, pairs: Sequence[TranslationPair], spelled: Sequence[bool]) -> Callable[[], tuple[TokenRows, list[Rejected | None]]]:
        results = self.encode(pairs, spelled)  # transformers' call: nothing to overlap
        return lambda: results

    def encode(self, pairs: Sequence[TranslationPair], spelled: Sequence[bool]) -> tuple[TokenRows, list[Rejected | None]]:
        if not pairs:
            return token_rows([], []), []
        # split_special_tokens: text spelling a special token (only left under --special-text
        # plain) becomes ordinary characters; the post-processor's own special tokens are unaffected.
        sources = self._tokenizer([p.src for p in pairs], split_special_tokens=True)["input_ids"]
        targets = self._tokenizer(text_target=[p.tgt for p in pairs], split_special_tokens=True)["input_ids"]
        labels = [np.array(target if target[-1:] == [self._eos] else [*target, self._eos], dtype=np.int32) for target in targets]
        keep_last = [bool(source) and source[-1] in self._special_ids for source in sources]
        return token_rows([np.array(source, dtype=np.int32) for source in sources], labels, keep_last=keep_last), [None] * len(pairs)


def _set_language_codes(tokenizer, source_lang: str | None, target_lang: str | None) -> None:
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


def rejected(item: Example | TranslationPair, reason: str, detail: str) -> Rejected:
    """A `Rejected` for an item that reached the builder, pointing at its file and index."""
    name, index = item.example_id.rsplit(":", 1)
    raw = item.raw
    if raw is None and isinstance(item, Example):
        raw = {"messages": [t.message() for t in item.turns]}
    return Rejected(name, int(index), reason, detail, raw)


def _alternation(specials: tuple[str, ...]) -> re.Pattern[str] | None:
    """One pattern for all special tokens, longest first so a token is never matched by a prefix
    of it; compiled once per builder (Llama 3 tokenizers carry 256 special tokens)."""
    if not specials:
        return None
    return re.compile("|".join(re.escape(t) for t in sorted(specials, key=len, reverse=True)))


def _alternation_in_json(specials: tuple[str, ...]) -> re.Pattern[str] | None:
    """`_alternation` of the special tokens as JSON writes them inside a string (`json_bytes`),
    or None when JSON cannot write one."""
    shown = [json_bytes(t) for t in specials]
    return None if None in shown else _alternation(tuple(t.decode()[1:-1] for t in shown))


def _special_text(texts: Iterator[tuple[str, object]], pattern: re.Pattern[str] | None, in_json: re.Pattern[str] | None) -> tuple[str, str] | None:
    """The first (where, special token) that an author's text spells out, for both model types.
    A value holding texts (tool calls, tools) is walked string by string only when its JSON holds
    a special token's JSON (`in_json`): a string spelling a token has the token's escaped form
    in its own, and so in the value's; most have none, and one search of the JSON settles it."""
    if pattern is None:
        return None
    for where, value in texts:
        if not isinstance(value, str):
            shown = json_bytes(value) if in_json is not None else None
            if shown is not None and not in_json.search(shown.decode()):
                continue
        for text in (value,) if isinstance(value, str) else strings_in(value):
            found = pattern.search(text)
            if found:
                return where, found.group(0)
    return None


def check_template(template: ChatTemplate, tokenizer, tokenizer_name: str) -> str | None:
    """Fail at start, in one sentence, when a template cannot serve this tokenizer; return one
    warning line when some assistant turn of it ends with no stop token, else None.

    Two probe conversations: a plain one (it must render; `add_generation_prompt` must add the
    assistant header, else the header cannot be told from the answer; each span must hold its
    answer and after it only special tokens, the stop, which the tokenizer must have as such),
    and one with a tool call, its result and an answer (a template that renders no tool calls is
    not refused: such records are rejected one by one, `template_dropped_tool_calls`). A span
    that ends in no special token (the original GLM-4.5 ends its last answer with nothing)
    teaches no stop: the job runs, with the warning, and the report counts those turns (end of
    turn "none").
    """
    specials = special_tokens(tokenizer)
    renderer = Renderer(template, bos_token=tokenizer.bos_token, eos_token=tokenizer.eos_token, special_tokens=specials)
    try:
        rendered = renderer.render(_PROBE)
        first = [_PROBE.turns[0].message()]
        prompted = renderer.render_text(first, add_generation_prompt=True) != renderer.render_text(first, add_generation_prompt=False)
    except TemplateError as err:
        raise TemplateError(f"template {template.name!r} cannot render a plain user/assistant conversation: {err}") from None
    answers = [t.content for t in _PROBE.turns if t.role == "assistant"]
    spans = [s.text for s in rendered.segments if s.trainable]
    if not (prompted or template.has_generation_marks) or len(spans) != len(answers) or not all(answer in span for span, answer in zip(spans, answers)):
        raise TemplateError(f"template {template.name!r} gives no usable assistant span (found {spans!r}); it must support add_generation_prompt or mark {{% generation %}} blocks")
    closing = _alternation(specials)
    for span, answer in zip(spans, answers):
        end_of_turn = span[span.index(answer) + len(answer) :].strip()
        if end_of_turn and (closing is None or closing.sub("", end_of_turn).strip()):
            raise TokenizerError(f"template {template.name!r} ends assistant turns with {end_of_turn!r}, which tokenizer {tokenizer_name!r} does not have as one special token or a run of them")
    probes = {"a plain answer": spans}
    try:
        tool_use = renderer.render_messages([dict(m) for m in _TOOL_PROBE], [m["role"] == "assistant" for m in _TOOL_PROBE], tools=_TOOL_PROBE_TOOLS)
        probes["a tool call and its answer"] = [s.text for s in tool_use.segments if s.trainable]
    except TemplateError:
        pass  # no tool calls in this template: records with them are rejected, each with its reason
    unstopped = [f"{name} (turn {k + 1})" for name, found in probes.items() for k, span in enumerate(found) if not (specials and span.rstrip().endswith(specials))]
    if unstopped:
        return f"template {template.name!r} ends some assistant turns with no stop token ({', '.join(unstopped)}), so the model does not learn to stop there; the report counts such turns (end of turn: none)"
    return None

"""Examples to training rows: render, encode once with offsets, label, fit to length.

This is the per-example work of the job, kept free of Beam so tests drive it directly:

    Example --render--> Rendered --encode--> Encoded --label--> labels --fit--> TokenizedRow
                 \\________________________________________________________/--> Rejected | Dropped
"""

from __future__ import annotations

import re

from pipeline.config import PipelineConfig
from pipeline.formats import TEXT_ROLE
from pipeline.masking import IGNORE_INDEX, build_labels, select_spans, span_edges
from pipeline.records import Dropped, Example, Rejected, Segment, TokenizedRow, Turn
from pipeline.shards import split_for
from pipeline.templates import ChatTemplate, Rendered, Renderer, TemplateError
from pipeline.tokenization import Encoded, Encoder, TokenizerError, special_tokens

_PROBE = Example(
    "probe:0",
    "probe",
    (Turn("user", "Probe question one?"), Turn("assistant", "Probe answer one.", True), Turn("user", "Probe question two?"), Turn("assistant", "Probe answer two.", True)),
)


class RowBuilder:
    """Turns batches of examples into rows; build one per worker (it holds the tokenizer)."""

    def __init__(self, config: PipelineConfig, tokenizer, template: ChatTemplate) -> None:
        self.config = config
        self._specials = special_tokens(tokenizer)
        self._special_pattern = _alternation(self._specials)
        self._renderer = Renderer(template, bos_token=tokenizer.bos_token, eos_token=tokenizer.eos_token, special_tokens=self._specials)
        self._encoder = Encoder(tokenizer)
        self._pad_id = tokenizer.pad_token_id
        self._eos = tokenizer.eos_token or ""

    def build(self, examples: list[Example]) -> list[TokenizedRow | Rejected | Dropped]:
        """One result per example, in order. Strings are encoded in one batched call."""
        rendered: list[Rendered | Rejected] = [self._render(example) for example in examples]
        in_one_piece = [r for r in rendered if isinstance(r, Rendered) and not r.plain_spans]
        batch = iter(self._encoder.encode_batch([r.text for r in in_one_piece]))
        results: list[TokenizedRow | Rejected | Dropped] = []
        for example, item in zip(examples, rendered):
            if isinstance(item, Rejected):
                results.append(item)
                continue
            spans = select_spans(
                item.text, item.assistant_spans(), train_on=self.config.train_on, train_on_eot=self.config.train_on_eot, special_tokens=self._specials
            )
            whole = None if item.plain_spans else next(batch)
            encoded = self._encoder.encode(item.text, span_edges(spans), item.plain_spans, whole)
            results.append(self._fit(example, encoded, build_labels(encoded.ids, encoded.offsets, spans)))
        return results

    def _render(self, example: Example) -> Rendered | Rejected:
        source, index = example.example_id.rsplit(":", 1)
        found = _special_text(example, self._special_pattern)
        if found and self.config.special_text == "reject":
            turn, token = found
            return Rejected(source, int(index), "special_token_in_text", f"turn {turn} contains the special token {token!r} as text", _raw(example))
        if example.turns[0].role == TEXT_ROLE:  # continued pretraining: the document, then EOS
            document = example.turns[0].content + self._eos
            return Rendered(document, (Segment(document, True, 0),), tuple(m.span() for m in self._special_pattern.finditer(example.turns[0].content)) if found else ())
        try:
            return self._renderer.render(example, protect=self._specials if found else ())
        except TemplateError as err:
            return Rejected(source, int(index), "template_error", str(err), _raw(example))

    def _fit(self, example: Example, encoded: Encoded, labels: list[int]) -> TokenizedRow | Dropped:
        ids, max_length = encoded.ids, self.config.max_length
        truncated = len(ids) > max_length
        if truncated and self.config.overlong == "drop":
            return Dropped(example.example_id, example.source, "overlong", f"{len(ids)} tokens > --max-length {max_length}")
        ids, labels = ids[:max_length], labels[:max_length]
        if all(label == IGNORE_INDEX for label in labels):
            reason = "no_supervised_tokens_after_truncation" if truncated else "no_supervised_tokens"
            return Dropped(example.example_id, example.source, reason, f"no supervised token in the first {len(ids)} tokens")
        padding = self.config.pad_length(len(ids)) - len(ids)
        return TokenizedRow(
            example_id=example.example_id,
            source=example.source,
            split=split_for(example.example_id, self.config.validation_fraction),
            input_ids=ids + [self._pad_id] * padding,
            labels=labels + [IGNORE_INDEX] * padding,
            attention_mask=[1] * len(ids) + [0] * padding,
            truncated=truncated,
            split_at_boundaries=encoded.split_at_boundaries,
        )


def _alternation(specials: tuple[str, ...]) -> re.Pattern[str] | None:
    """One pattern for all special tokens, longest first so a token is never matched by a prefix
    of it; compiled once per builder (Llama 3 tokenizers carry 256 special tokens)."""
    if not specials:
        return None
    return re.compile("|".join(re.escape(t) for t in sorted(specials, key=len, reverse=True)))


def _special_text(example: Example, pattern: re.Pattern[str] | None) -> tuple[int, str] | None:
    """The first (turn index, special token) that a message spells out in its text or reasoning."""
    if pattern is None:
        return None
    for n, turn in enumerate(example.turns):
        for text in (turn.content, turn.reasoning or ""):
            found = pattern.search(text)
            if found:
                return n, found.group(0)
    return None


def _raw(example: Example) -> object:
    return example.raw if example.raw is not None else {"messages": [t.message() for t in example.turns]}


def check_template(template: ChatTemplate, tokenizer, tokenizer_name: str) -> None:
    """Fail at start, in one sentence, when a template cannot serve this tokenizer.

    A probe conversation must render with one trainable span per assistant turn, each starting
    with the assistant's text after at most some whitespace (else the role header would be
    trained on), and whatever follows
    that text in the span (the end-of-turn marker) must be one special token of the tokenizer.
    """
    renderer = Renderer(template, bos_token=tokenizer.bos_token, eos_token=tokenizer.eos_token, special_tokens=special_tokens(tokenizer))
    try:
        rendered = renderer.render(_PROBE)
    except TemplateError as err:
        raise TemplateError(f"template {template.name!r} cannot render a plain user/assistant conversation: {err}") from None
    answers = [t.content for t in _PROBE.turns if t.role == "assistant"]
    # A span may open with the separator whitespace the model generates after the prompt
    # (Vicuna's "ASSISTANT:" + " answer"), never with any other text.
    spans = [s.text.lstrip() for s in rendered.segments if s.trainable]
    if len(spans) != len(answers) or not all(span.startswith(answer) for span, answer in zip(spans, answers)):
        raise TemplateError(f"template {template.name!r} gives no usable assistant span (found {spans!r}); it must support add_generation_prompt or mark {{% generation %}} blocks")
    end_of_turn = spans[0][len(answers[0]) :].strip()
    if end_of_turn and end_of_turn not in special_tokens(tokenizer):
        raise TokenizerError(f"template {template.name!r} ends assistant turns with {end_of_turn!r}, which tokenizer {tokenizer_name!r} does not have as one special token")

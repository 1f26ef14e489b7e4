"""The label rule, in one place.

A label equals its `input_id` where the token lies inside a trainable span (an assistant turn's
text plus its end-of-turn token) and is IGNORE_INDEX everywhere else: system, user, role
headers, BOS, padding. Labels stay aligned with `input_ids`; Hugging Face models shift them.

    text    <|im_start|>assistant\\n Hello<|im_end|>\\n
    spans                           [-------------]
    tokens  <|im_start|> assistant \\n  ĠHello <|im_end|> \\n
    labels  -100         -100      -100 id    id         -100

Straddling tokens. Byte-level BPE can merge characters across a span edge ("\\n" of the header
and a leading "\\n" of the answer become one "\\n\\n" token). Such a token is neither prompt nor
answer, so no label for it can be right. We never label one: `crossed_boundaries` finds the
edges a token crosses and the tokenizer re-encodes the text with a token boundary forced at each
(tokenization.py). That is also the boundary the model sees at inference, where the prompt ends
at the generation header and the answer is generated from there. After that every token lies
wholly inside or outside a span, and a token is supervised exactly when its first character is
inside one.
"""

from __future__ import annotations

import numpy as np

IGNORE_INDEX = -100
TRAIN_ON = ("assistant", "last", "all")


def select_spans(text: str, spans: list[tuple[int, int, bool, int]], *, train_on: str, train_on_eot: bool, special_tokens: tuple[str, ...]) -> list[tuple[int, int]]:
    """The character spans to supervise, from the template's assistant spans
    `(start, end, trainable, message)` and the policy (a message written in pieces has several).

    train_on: `assistant` every trainable assistant turn; `last` the final assistant turn only
    (history masked), and only if that turn is trainable: a final turn marked `train: false`
    leaves nothing to supervise (the example is then dropped as `no_supervised_tokens`), it never
    moves the supervision to an earlier turn; `all` every character of the string (prompt included).
    train_on_eot: when false, the closing special token of each span (and the whitespace the
    template put before it, as Llama 2's " </s>") is left unsupervised.

        "Hello<|im_end|>"  train_on_eot=True -> "Hello<|im_end|>";  False -> "Hello"
    """
    if train_on == "all":
        return [(0, len(text))] if text else []
    final = spans[-1][3] if spans else None
    chosen = [(start, end) for start, end, trainable, message in spans if trainable and (train_on != "last" or message == final)]
    if train_on_eot:
        return chosen
    trimmed = []
    for start, end in chosen:
        piece = text[start:end]
        closing = next((t for t in sorted(special_tokens, key=len, reverse=True) if piece.endswith(t)), None)
        if closing:
            head = piece[: -len(closing)]
            end = start + len(head.rstrip() or head)
        if end > start:
            trimmed.append((start, end))
    return trimmed


def generated_part(text: str, start: int, end: int, prompt_tail: str, closing_length: int) -> tuple[int, int]:
    """The part of a template's assistant span `text[start:end]` that the model generates, which
    is what is trained. A template may mark more: TRL's training templates open the span with the
    "\n" that ends the generation prompt "<|im_start|>assistant\n" (`prompt_tail`, which the model
    is given, not writes), and close it with the "\n" after "<|im_end|>" (after its closing
    special token the model has stopped). `closing_length`: the length of the special token the
    span's text ends with once trailing whitespace is stripped, 0 for none (then the whitespace
    may be the answer's own and is kept).

        "\nHello<|im_end|>\n"  prompt_tail "\n"  ->  "Hello<|im_end|>"
    """
    if prompt_tail and text.startswith(prompt_tail, start) and end - start > len(prompt_tail):
        start += len(prompt_tail)
    stripped = start + len(text[start:end].rstrip())
    if stripped < end and closing_length:
        end = stripped
    return start, end


def span_edges(spans: list[tuple[int, int]]) -> np.ndarray:
    """Sorted character positions where trainability changes."""
    return np.unique(np.asarray(spans, dtype=np.int64))


def crossed_boundaries(offsets: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The edges (sorted, once each) that some token strictly contains (start < edge < end).

    `offsets` is (n, 2) [start, end) per token; a token contains the edges from the first one
    after its start up to the last one before its end, usually none:

        edges [5, 9, 10]   token [3, 7): 5            token [7, 12): 9 and 10
                           token [5, 9): none (an edge at a token's start or end is not crossed)

    Tokens in text order (`_in_order`) are searched from the edges: an edge is crossed when the
    tokens starting before it reach past it, so a batch of 1,024 chats (80k tokens, 2k edges)
    costs two searches of 2k positions, not two of 80k."""
    edges = np.asarray(edges)
    if not len(offsets):
        return edges[:0]
    if _in_order(offsets[:, 0]):
        before = np.searchsorted(offsets[:, 0], edges, side="left")  # tokens starting before each edge
        reach = np.maximum.accumulate(offsets[:, 1])
        return edges[(before > 0) & (reach[np.maximum(before - 1, 0)] > edges)]
    first = np.searchsorted(edges, offsets[:, 0], side="right")
    counts = np.maximum(np.searchsorted(edges, offsets[:, 1], side="left") - first, 0)
    if not counts.any():
        return edges[:0]
    within = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    return np.unique(edges[np.repeat(first, counts) + within])


def build_labels(input_ids: np.ndarray, offsets: np.ndarray, spans: list[tuple[int, int]]) -> np.ndarray:
    """Labels (int32) for one encoded string, given its trainable character spans (sorted,
    disjoint): a token is supervised when its first character is inside a span (`span_of_tokens`).

        spans [(4, 9)]   token starts [0, 4, 6, 9]  ->  labels [-100, id, id, -100]
    """
    inside = span_of_tokens(offsets[:, 0], np.asarray(spans, dtype=np.int64).reshape(-1, 2)) >= 0
    return np.where(inside, input_ids, IGNORE_INDEX).astype(np.int32, copy=False)


def span_of_tokens(starts: np.ndarray, spans: np.ndarray) -> np.ndarray:
    """For each token (by its first character, `starts`), the index of the span holding it among
    `spans` (m, 2) [start, end), sorted and disjoint; -1 for a token in none.

        spans [(4, 9), (12, 14)]   starts [0, 4, 6, 9, 12]  ->  [-1, 0, 0, -1, 1]

    Tokens in text order are found from the spans: span k holds the run of tokens from the first
    starting at or after its start to the first starting at or after its end, so the answer is
    the runs laid out in one `repeat` (-1, 0, -1, 1, -1 with the runs' lengths). Any other order
    (a tokenizer whose offsets go back) searches each token among the span starts."""
    if not len(spans):
        return np.full(len(starts), -1, dtype=np.int64)
    if not _in_order(starts):
        at = np.searchsorted(spans[:, 0], starts, side="right") - 1
        return np.where((at >= 0) & (starts < spans[np.maximum(at, 0), 1]), at, -1)
    first = np.searchsorted(starts, spans[:, 0], side="left")
    end = np.searchsorted(starts, spans[:, 1], side="left")
    runs = np.empty(2 * len(spans) + 1, dtype=np.int64)  # outside, span 0, outside, span 1, ..., outside
    runs[1::2] = end - first
    runs[0:-1:2] = first - np.concatenate([[0], end[:-1]])
    runs[-1] = len(starts) - end[-1]
    values = np.full(2 * len(spans) + 1, -1, dtype=np.int64)
    values[1::2] = np.arange(len(spans))
    return np.repeat(values, runs)


def _in_order(starts: np.ndarray) -> bool:
    """Whether token starts never go back: what every tokenizer's offsets do within a string,
    and a batch's too when its strings are laid end to end."""
    return bool((starts[1:] >= starts[:-1]).all())


def describe_training(*, train_on: str, train_on_eot: bool, model_type: str = "decoder", record_format: str = "auto") -> str:
    """What the labels supervise under these settings, in one sentence for the manifest, so a
    reader of the shards knows the policy without the command line that made them."""
    if model_type == "seq2seq":
        return "the target of each translation pair and its EOS (labels column); the source is encoder input"
    if record_format == "text":
        return "every token of each document and the EOS after it"
    if train_on == "all":
        return "every token of the rendered conversation, prompt included"
    turns = "the final assistant turn (earlier turns masked)" if train_on == "last" else "every trainable assistant turn"
    eot = "with its end-of-turn token" if train_on == "last" else "with their end-of-turn tokens"
    sentence = f"{turns} {eot if train_on_eot else 'without the end-of-turn token'}"
    return sentence + ("; records in text format: every token and the EOS after it" if record_format == "auto" else "")

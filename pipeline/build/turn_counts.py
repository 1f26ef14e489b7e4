"""Which message each token belongs to: what the coverage report counts per role and turn.

Labels say what is supervised; the report must also say *what* was supervised, so a template that
masks every answer or trains on user text shows up as a fraction per role (system, user,
assistant, ...) and per turn index, not just as one global number. This module finds each
message's characters in the rendered string, maps tokens to messages with the same searchsorted
over token offsets that labels use (masking.py), and counts each message's tokens after truncation:

    text    <|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\nHello<|im_end|>\\n
    spans                     [0]                                 [1-----------]
    tokens  <|im_start|> user \\n Hi <|im_end|> \\n <|im_start|> assistant \\n Hello <|im_end|> \\n
    message -1           -1   -1 0  -1         -1 -1           -1        -1 1     1          -1

* An assistant message (and a `text` document) is its template span, exactly as labelled: its
  text and its end-of-turn token, which is the closing special token of the span (of its last
  piece, for a message the template writes in pieces, as Gemma 4 writes a call, its results,
  then the message's text).
* Any other message is found by its stripped text, searched in order after the previous message
  and before the next assistant span (past the later piece of an earlier message). A message whose text the template changed (not found) has
  no tokens; one whose text also occurs in the markup just before it (a one-word message such as
  `user` after a `user` header) may be found there. Either only moves counts in the report,
  never a label.
* Tokens outside every message are markup: role headers, BOS, separators, a template's default
  system prompt.
* Tool use: an assistant message that calls tools counts under role TOOL_CALL (its text, its
  calls in the template's syntax and its end token), a tool result under `tool`; each message
  also carries the number of calls its span shows (each found by its function name). An
  assistant's reasoning is found by its stripped text inside the message's span
  (`templates.reasoning_shown`, the rule the rejection uses too); its supervised tokens are
  counted, and reasoning the template did not render (history left out by Qwen3's design) is
  counted as -n, its n characters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from masked_shards.build.masking import IGNORE_INDEX, span_of_tokens
from masked_shards.records import TOOL_CALL, TURN_EOT, TURN_ROLES, Turn
from masked_shards.build.templates import reasoning_shown

_ROLE_CODE = {role: code for code, role in enumerate(TURN_ROLES)}
_USER = _ROLE_CODE["user"]
NO_EOT, EOT_MASKED, EOT_TRAINED, EOT_CUT = range(len(TURN_EOT))


class MessageSpans:
    """Character spans of the messages of a batch's examples in their rendered strings, example
    after example, in flat lists that the batch turns into arrays at once (rows.py), not one
    small array, or one object, per example.

    Per example (`add`), `spans` [start, end), sorted and disjoint, and `owners` the message of
    each, counted within its example: one per message found, several for an assistant message
    written in pieces (Gemma 4's call, then its text after the results), none for a message not
    found. Per message, in message order: `roles` TURN_ROLES codes; `eot` the first character of
    each message's end-of-turn token, -1 for none; `calls` each message's tool calls shown in its
    span; `reasoning` the characters of its rendered reasoning, (0, 0) for none and (-n, -n) for n
    characters of reasoning the template left out. Pairs are flat (start, end, start, end, ...);
    `messages` and `pieces` hold each example's number of messages and of spans.
    """

    __slots__ = ("spans", "owners", "roles", "eot", "calls", "reasoning", "messages", "pieces")

    def __init__(self) -> None:
        self.spans: list[int] = []
        self.owners: list[int] = []
        self.roles: list[int] = []
        self.eot: list[int] = []
        self.calls: list[int] = []
        self.reasoning: list[int] = []
        self.messages: list[int] = []
        self.pieces: list[int] = []

    @classmethod
    def of(cls, text: str, turn_spans: list[tuple[int, int, bool, int]], turns: Sequence[Turn], end_of_turn: EndOfTurn) -> MessageSpans:
        """The spans of one example."""
        one = cls()
        one.add(text, turn_spans, turns, end_of_turn)
        return one

    def example(self, k: int) -> MessageSpans:
        """The spans of the batch's example `k` alone."""
        first_message, first_piece = sum(self.messages[:k]), sum(self.pieces[:k])
        messages, pieces = slice(first_message, first_message + self.messages[k]), slice(first_piece, first_piece + self.pieces[k])
        one = MessageSpans()
        one.spans, one.owners = self.spans[2 * pieces.start : 2 * pieces.stop], self.owners[pieces]
        one.roles, one.eot, one.calls = self.roles[messages], self.eot[messages], self.calls[messages]
        one.reasoning = self.reasoning[2 * messages.start : 2 * messages.stop]
        one.messages, one.pieces = [self.messages[k]], [self.pieces[k]]
        return one

    def add(self, text: str, turn_spans: list[tuple[int, int, bool, int]], turns: Sequence[Turn], end_of_turn: EndOfTurn) -> None:
        """Append the spans of `turns` in their rendered `text`, whose assistant pieces are
        `turn_spans` (`Rendered.turn_spans`); see the module docstring for how each is found."""
        assistant: dict[int, list[tuple[int, int]]] = {}
        pieces = []  # (start, end, message) of every assistant piece, in text order
        for start, end, _, turn in turn_spans:
            assistant.setdefault(turn, []).append((start, end))
            pieces.append((start, end, turn))
        spans, owners, eot, reasoning, calls, roles, cursor = [], [], self.eot, self.reasoning, self.calls, self.roles, 0
        for n, turn in enumerate(turns):
            roles.append(_ROLE_CODE[TOOL_CALL] if turn.tool_calls else _ROLE_CODE.get(turn.role, _USER))
            own = assistant.get(n)
            if own is not None:
                reasoning += _reasoning_span(text, turn, own) if turn.reasoning else (0, 0)
                calls.append(_rendered_calls(text, turn, own) if turn.tool_calls else 0)
                start, end = own[-1]
                closing = end_of_turn.length(text, start, end)
                eot.append(end - closing if closing else -1)
                spans += own
                owners += [n] * len(own)
                cursor = max(cursor, own[0][1])
                continue
            found, content = -1, turn.content.strip()
            for start, end, owner in pieces:  # sorted and disjoint: those before the cursor are behind it for good
                if start < cursor:
                    continue
                found = text.find(content, cursor, start) if content else -1
                if found >= 0 or owner > n:  # a later message's span: this one lies before it or nowhere
                    break
                cursor = end  # an earlier message's later piece (Gemma 4's text after its call's results)
            else:
                found = text.find(content, cursor) if content else -1
            if found >= 0:
                spans.append((found, found + len(content)))
                owners.append(n)
                cursor = found + len(content)
            eot.append(-1)
            reasoning += _reasoning_span(text, turn, []) if turn.reasoning else (0, 0)
            calls.append(0)
        if spans != sorted(spans):  # messages found out of order (a template that moves one): sort with their owners
            order = sorted(range(len(spans)), key=spans.__getitem__)
            spans, owners = [spans[k] for k in order], [owners[k] for k in order]
        for span in spans:
            self.spans += span
        self.owners += owners
        self.messages.append(len(turns))
        self.pieces.append(len(spans))


@dataclass(frozen=True, eq=False)
class MessageTokens:
    """Where the messages of a batch of rows lie among their tokens, flat in row order (row i has
    `counts[i]` messages): `token_message` the message of each token within its row (-1: markup),
    one per token of the rows' ids; per message `roles`, `eot` the token index within its row of
    its end-of-turn token (-1: none), `calls`, `reasoning` (m, 2) its reasoning tokens [first,
    end) within its row ((-n, -n): n characters left out)."""

    token_message: np.ndarray
    roles: np.ndarray
    eot: np.ndarray
    calls: np.ndarray
    reasoning: np.ndarray
    counts: np.ndarray


@dataclass(frozen=True, eq=False)
class MessageCounts:
    """Per message of a batch of rows after truncation, flat in row order: role code, tokens,
    supervised tokens, TURN_EOT code, tool calls, supervised reasoning tokens (-n: n characters of
    reasoning not rendered); `lengths` (rows,) the messages of each row."""

    roles: np.ndarray
    tokens: np.ndarray
    supervised: np.ndarray
    eot: np.ndarray
    lengths: np.ndarray
    calls: np.ndarray
    reasoning: np.ndarray


class EndOfTurn:
    """Finds the special token a span ends with, longest first, by one set lookup per distinct
    token length (a Llama 3 tokenizer has 256 special tokens but few lengths); build once.

    Spans of one job nearly all end with the same token, so the length found last is tried
    first: a token that ends no longer special token (`_maximal`) is then the longest match."""

    def __init__(self, special_tokens: Sequence[str]) -> None:
        self._tokens = frozenset(special_tokens)
        self._lengths = sorted({len(t) for t in self._tokens}, reverse=True)
        suffixes = {t[k:] for t in self._tokens for k in range(1, len(t))}
        self._maximal = self._tokens - suffixes
        self._last = 0

    def length(self, text: str, start: int, end: int) -> int:
        """The length of the special token `text[start:end]` ends with, 0 for none."""
        last = self._last
        if last and last <= end - start and text[end - last : end] in self._maximal:
            return last
        found = next((n for n in self._lengths if n <= end - start and text[end - n : end] in self._tokens), 0)
        self._last = found or last
        return found


def _rendered_calls(text: str, turn: Turn, own: list[tuple[int, int]]) -> int:
    """How many of the turn's tool calls its spans show, each found by its function name after
    the one before: a template that ignores tool calls (plain ChatML) shows none, and then none
    is counted as trained."""
    shown = 0
    pieces = iter(own)
    start, end = next(pieces)
    for call in turn.tool_calls:
        found = text.find(str(call["function"]["name"]), start, end)
        while found < 0 and (piece := next(pieces, None)):
            start, end = piece
            found = text.find(str(call["function"]["name"]), start, end)
        if found < 0:
            break
        shown, start = shown + 1, found + 1
    return shown


def _reasoning_span(text: str, turn: Turn, own: list[tuple[int, int]]) -> tuple[int, int]:
    """Where a message's reasoning lies inside its spans (`templates.reasoning_shown`): (0, 0)
    when it has none, (-n, -n) when its n characters (stripped) are not rendered."""
    wanted = (turn.reasoning or "").strip()
    if not wanted:
        return (0, 0)
    for start, end in own:
        found = reasoning_shown(text, start, end, wanted, turn.content)
        if found >= 0:
            return (found, found + len(wanted))
    return (-len(wanted), -len(wanted))


def locate(starts: np.ndarray, spans: np.ndarray, owners: np.ndarray, eot_chars: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(message of each token, token index of each end-of-turn character), for token start
    characters `starts` (sorted), message `spans` (sorted, disjoint) and the message `owners` of
    each: a token belongs to the span holding its first character (`masking.span_of_tokens`, as labels).
    Works on a whole batch at once when both are laid end to end (each string's positions moved
    by the characters before it).

        starts [0, 4, 6, 9]   spans [(4, 9)]   owners [1]   eot [6]   ->   [-1, 1, 1, -1], [2]
    """
    found = span_of_tokens(starts, spans)
    token_message = np.full(len(starts), -1, dtype=np.int32)
    inside = found >= 0
    token_message[inside] = owners[found[inside]]
    token = np.searchsorted(starts, eot_chars, side="left")
    hit = (eot_chars >= 0) & (token < len(starts))
    hit[hit] = starts[token[hit]] == eot_chars[hit]
    return token_message, np.where(hit, token, -1)


def count_rows(messages: MessageTokens, labels: np.ndarray, kept: np.ndarray) -> MessageCounts:
    """Each message's tokens, supervised tokens and end-of-turn state in a batch of rows, in one
    pass: row i has `kept[i]` tokens (`messages.token_message` and `labels` are those of the rows
    one after another); a truncated row counts what is left, and an end-of-turn token past the
    cut is `cut`.

        messages: token_message [-1, 0, 0]  eot [-1, 4]   labels (3 kept) [-100, -100, 7]
        ->  tokens [2, 0]  supervised [0, 0]  eot [none, cut]
    """
    counts = messages.counts.astype(np.int64, copy=False)
    kept = np.asarray(kept, dtype=np.int64)
    first_message = np.cumsum(counts) - counts
    first_token = np.cumsum(kept) - kept
    owner = np.where(messages.token_message >= 0, messages.token_message + np.repeat(first_message, kept), -1)
    inside = owner >= 0
    total = int(counts.sum())
    tokens = np.bincount(owner[inside], minlength=total)
    supervised = np.bincount(owner[inside & (labels != IGNORE_INDEX)], minlength=total)
    eot = messages.eot
    row_kept = np.repeat(kept, counts)
    present = (eot >= 0) & (eot < row_kept)
    trained = np.zeros(total, dtype=bool)
    trained[present] = labels[(eot + np.repeat(first_token, counts))[present]] != IGNORE_INDEX
    state = np.where(eot < 0, NO_EOT, np.where(eot >= row_kept, EOT_CUT, np.where(trained, EOT_TRAINED, EOT_MASKED)))
    return MessageCounts(messages.roles, tokens, supervised, state.astype(np.int8), counts, messages.calls, _reasoning_supervised(messages.reasoning, counts, labels, kept, first_token))


def _reasoning_supervised(ranges: np.ndarray, counts: np.ndarray, labels: np.ndarray, kept: np.ndarray, first_token: np.ndarray) -> np.ndarray:
    """Per message, its supervised reasoning tokens among the tokens a row kept (-n where n
    characters of reasoning were not rendered): a difference of the running count of supervised labels."""
    ranges = ranges.reshape(-1, 2)
    row_kept, row_first = np.repeat(kept, counts), np.repeat(first_token, counts)
    running = np.concatenate([[0], np.cumsum(labels != IGNORE_INDEX)])
    first = np.clip(ranges[:, 0], 0, row_kept) + row_first
    end = np.clip(ranges[:, 1], 0, row_kept) + row_first
    return np.where(ranges[:, 0] < 0, ranges[:, 0], np.maximum(running[np.maximum(end, first)] - running[first], 0))


def pair_counts(source_tokens: np.ndarray, target_tokens: np.ndarray, target_cut: np.ndarray) -> MessageCounts:
    """Encoder-decoder rows as two messages each: the source (user, never supervised) and the
    target (assistant, every token supervised, its EOS the end-of-turn token unless truncation
    cut it)."""
    rows = len(source_tokens)
    return MessageCounts(
        _interleave(_ROLE_CODE["user"], _ROLE_CODE["assistant"], rows).astype(np.int8),
        _interleave(source_tokens, target_tokens, rows),
        _interleave(0, target_tokens, rows),
        _interleave(NO_EOT, np.where(target_cut, EOT_CUT, EOT_TRAINED), rows).astype(np.int8),
        np.full(rows, 2, dtype=np.int64),
        np.zeros(2 * rows, dtype=np.int64),
        np.zeros(2 * rows, dtype=np.int64),
    )


def _interleave(first: np.ndarray | int, second: np.ndarray | int, rows: int) -> np.ndarray:
    """[first[0], second[0], first[1], second[1], ...] over `rows` rows (a scalar repeats)."""
    return np.stack([np.broadcast_to(first, rows), np.broadcast_to(second, rows)], axis=1).ravel()

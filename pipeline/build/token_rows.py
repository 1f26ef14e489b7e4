"""A batch's encoded items laid end to end, fitted to --max-length as one: no array per row.

Every step after the tokenizer works on the whole batch at once. Item i's tokens are
`ids[id_bounds[i]:id_bounds[i + 1]]`; fitting, dropping and gathering rows are index arithmetic
on those flat arrays (`ranges`), where one small array per row cost about 20 us of Python each
(slices, checks and concatenations: a fifth of a 55k-chat run's main thread).

    ids  [a b c | d e | f g h i]   id_bounds [0, 3, 5, 9]
    fit to 3 tokens               ->  rows 0, 1, 2 keep 3, 2, 3 tokens: ranges([0, 3, 5], [3, 2, 3])
                                      = [0 1 2 | 3 4 | 5 6 7]  (row 2 truncated)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from masked_shards.build.masking import IGNORE_INDEX
from masked_shards.build.turn_counts import MessageTokens


@dataclass(frozen=True, eq=False)
class TokenRows:
    """Encoded items before they are fitted to length. Aligned (decoder): `labels` is `ids` with
    IGNORE_INDEX where not supervised, under the same bounds. Not aligned (seq2seq): `ids` are the
    sources, `labels` the targets. Per item: `split_at_boundaries` (encoded in pieces so that no
    token crosses a span edge), `keep_last` (truncation keeps the final token of its ids: a
    source's closing special token, which the encoder always saw, as the tokenizer's own
    truncation does). `messages` (decoder): each token's message, for the coverage report."""

    ids: np.ndarray
    id_bounds: np.ndarray
    labels: np.ndarray
    label_bounds: np.ndarray
    split_at_boundaries: np.ndarray
    keep_last: np.ndarray
    messages: MessageTokens | None = None

    def __len__(self) -> int:
        return len(self.id_bounds) - 1


def token_rows(ids: Sequence[np.ndarray], labels: Sequence[np.ndarray], keep_last: Sequence[bool] | None = None, split_at_boundaries: Sequence[bool] | None = None, messages: MessageTokens | None = None) -> TokenRows:
    """TokenRows from one array per item (items the tokenizer gave one by one)."""
    count = len(ids)
    return TokenRows(
        np.concatenate(ids).astype(np.int32, copy=False) if count else np.zeros(0, np.int32),
        bounds(np.array([len(i) for i in ids], dtype=np.int64)),
        np.concatenate(labels).astype(np.int32, copy=False) if count else np.zeros(0, np.int32),
        bounds(np.array([len(i) for i in labels], dtype=np.int64)),
        np.array(split_at_boundaries if split_at_boundaries is not None else [False] * count, dtype=bool),
        np.array(keep_last if keep_last is not None else [False] * count, dtype=bool),
        messages,
    )


def bounds(lengths: np.ndarray) -> np.ndarray:
    """[0, l0, l0 + l1, ...] (int64)."""
    out = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=out[1:])
    return out


def ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The flat indices of [starts[i], starts[i] + lengths[i]), one range after another.

    starts [0, 5], lengths [2, 3]  ->  [0 1 5 6 7]"""
    lengths = np.asarray(lengths, dtype=np.int64)
    placed = np.cumsum(lengths) - lengths
    return np.arange(int(lengths.sum()), dtype=np.int64) + np.repeat(np.asarray(starts, dtype=np.int64) - placed, lengths)


def concat_rows(parts: Sequence[TokenRows]) -> TokenRows:
    """The rows of `parts`, one part after another."""
    messages = [p.messages for p in parts]
    return TokenRows(
        np.concatenate([p.ids for p in parts]),
        bounds(np.concatenate([np.diff(p.id_bounds) for p in parts])),
        np.concatenate([p.labels for p in parts]),
        bounds(np.concatenate([np.diff(p.label_bounds) for p in parts])),
        np.concatenate([p.split_at_boundaries for p in parts]),
        np.concatenate([p.keep_last for p in parts]),
        None if any(m is None for m in messages) else _concat_messages(messages),
    )


def take_rows(rows: TokenRows, chosen: np.ndarray, id_lengths: np.ndarray | None = None, label_lengths: np.ndarray | None = None) -> TokenRows:
    """Rows `chosen` of `rows`, in that order, each cut to its first `id_lengths` ids and
    `label_lengths` labels (default: whole); a `keep_last` row cut short keeps its last id."""
    id_whole, label_whole = np.diff(rows.id_bounds)[chosen], np.diff(rows.label_bounds)[chosen]
    id_lengths = id_whole if id_lengths is None else id_lengths
    label_lengths = label_whole if label_lengths is None else label_lengths
    id_index = ranges(rows.id_bounds[chosen], id_lengths)
    cut_last = rows.keep_last[chosen] & (id_lengths < id_whole) & (id_lengths > 0)
    if cut_last.any():
        id_index[(np.cumsum(id_lengths) - 1)[cut_last]] = rows.id_bounds[chosen + 1][cut_last] - 1
    label_index = ranges(rows.label_bounds[chosen], label_lengths)
    messages = None if rows.messages is None else _take_messages(rows.messages, chosen, label_index)
    return TokenRows(rows.ids[id_index], bounds(id_lengths), rows.labels[label_index], bounds(label_lengths), rows.split_at_boundaries[chosen], rows.keep_last[chosen], messages)


def _concat_messages(parts: Sequence[MessageTokens]) -> MessageTokens:
    return MessageTokens(*(np.concatenate([getattr(m, name) for m in parts]) for name in ("token_message", "roles", "eot", "calls", "reasoning", "counts")))


def _take_messages(messages: MessageTokens, chosen: np.ndarray, token_index: np.ndarray) -> MessageTokens:
    """The messages of rows `chosen`, with the message of each token of `token_index` (the rows'
    tokens kept: decoder rows are aligned, so their labels' index is their tokens')."""
    first = np.cumsum(messages.counts) - messages.counts
    index = ranges(first[chosen], messages.counts[chosen])
    return MessageTokens(messages.token_message[token_index], messages.roles[index], messages.eot[index], messages.calls[index], messages.reasoning[index], messages.counts[chosen])


@dataclass(frozen=True, eq=False)
class FittedRows:
    """The rows kept, cut to length (`rows`), which input rows they are (`kept`), and per row:
    whether truncation cut it, its tokens before (source and target for seq2seq), and whether the
    target was cut (seq2seq)."""

    rows: TokenRows
    kept: np.ndarray
    truncated: np.ndarray
    tokens_before_truncation: np.ndarray
    target_cut: np.ndarray


def fit_rows(rows: TokenRows, aligned: bool, max_length: int, overlong: str, keeps_overlong: bool) -> tuple[FittedRows, dict[int, tuple[str, str]]]:
    """Truncation and the drops it implies, for every row at once: the rows kept, and (reason,
    detail) of each row dropped. Aligned rows are cut as one; a source and its target are each cut
    to `max_length`. `overlong` drop: a row over the length is dropped; `keeps_overlong`: rows are
    kept whole (packing or striding cuts them later). A row with no supervised label left is dropped."""
    id_length, label_length = np.diff(rows.id_bounds), np.diff(rows.label_bounds)
    sides = [("example", id_length)] if aligned else [("source", id_length), ("target", label_length)]
    too_long = np.zeros(len(rows), dtype=bool)
    for _, length in sides:
        too_long |= length > max_length
    dropped: dict[int, tuple[str, str]] = {}
    if overlong == "drop":
        for i in np.flatnonzero(too_long).tolist():
            said = " and ".join(f"{side} has {int(length[i])} tokens" for side, length in sides if length[i] > max_length)
            dropped[i] = ("overlong", f"{said}, more than --max-length {max_length}")
    cap = id_length if keeps_overlong else np.full(len(rows), max_length, dtype=np.int64)
    truncated = np.zeros(len(rows), dtype=bool) if keeps_overlong else too_long
    id_kept, label_kept = np.minimum(id_length, cap), np.minimum(label_length, cap)
    supervised = bounds((rows.labels != IGNORE_INDEX).astype(np.int64))
    starts = rows.label_bounds[:-1]
    for i in np.flatnonzero(supervised[starts + label_kept] == supervised[starts]).tolist():
        if i not in dropped:
            reason = "no_supervised_tokens_after_truncation" if truncated[i] else "no_supervised_tokens"
            dropped[i] = (reason, f"no supervised token in the first {int(label_kept[i])} tokens")
    kept = np.setdiff1d(np.arange(len(rows)), np.fromiter(dropped, dtype=np.int64, count=len(dropped)))
    fitted = rows if not dropped and (id_kept == id_length).all() and (label_kept == label_length).all() else take_rows(rows, kept, id_kept[kept], label_kept[kept])
    before = sum(length for _, length in sides)
    return FittedRows(fitted, kept, truncated[kept], before[kept], (label_length > cap)[kept]), dropped


def padded_column(values: np.ndarray, lengths: np.ndarray, padded: np.ndarray, fill: int, value_type: pa.DataType) -> pa.ListArray:
    """A list column from flat `values` of rows of `lengths`, row i filled with `fill` to `padded[i]`.

        values [1 2 3], lengths [2, 1], padded [3, 2], fill 0  ->  [[1, 2, 0], [3, 0]]"""
    lengths, padded = np.asarray(lengths, np.int64), np.asarray(padded, np.int64)
    offsets = bounds(padded).astype(np.int32)
    dtype = value_type.to_pandas_dtype()
    if (padded == lengths).all():  # nothing to pad: the values as they are
        out = np.asarray(values).astype(dtype, copy=False)
    else:
        out = np.full(int(offsets[-1]), fill, dtype=dtype)
        out[ranges(offsets[:-1], lengths)] = values
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(out, value_type), type=pa.list_(value_type))

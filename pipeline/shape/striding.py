"""Striding: a document longer than `--max-length` L as overlapping windows, each token scored once.

This is the usual sliding-window evaluation of long documents. Windows begin at 0, S, 2S, ...
(`--stride S`, 1 <= S <= L), each L tokens long, the last one ending at the document's end (and
so shorter, unless it fits exactly); a document of at most L tokens is one window.

Labels are aligned with `input_ids` and the model shifts them, so the label at a window's
position i is predicted from positions < i of that window only; position 0 of a window has no
predecessor there and is never scored. In window k > 0 the tokens up to where window k - 1 ended
were already scored by an earlier window with more context, so their labels become -100:

    document 0 1 2 3 4 5 6 7 8,  L = 4, S = 2
    window 0  [0 1 2 3]          scores 1 2 3       (position 0, the document's first token: never)
    window 1      [2 3 4 5]      scores 4 5         (2 3: scored by window 0)
    window 2          [4 5 6 7]  scores 6 7
    window 3              [6 7 8] scores 8         (the last window, shorter)

Every supervised token but the document's first is scored in exactly one window, where it has
the most context available before it. With S = L the windows do not overlap, and the first token
of every window (a multiple of L) has no context in any window, so it is scored in none: the
same as cutting the document into rows. Prompt tokens are -100 in the document, so they are -100
in every window: striding only ever removes supervision.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from masked_shards.build.masking import IGNORE_INDEX
from masked_shards.build.token_rows import padded_column
from masked_shards.records import BATCH_SCHEMA

STRIDED_BATCH_SCHEMA = pa.schema([*BATCH_SCHEMA, pa.field("window_start", pa.int32())])  # the window's first token in its document


@dataclass(frozen=True)
class StridedBatch:
    """Windows (STRIDED_BATCH_SCHEMA) of one batch of example rows; `max_length` for the report."""

    rows: pa.RecordBatch
    max_length: int


def stride_windows(length: int, max_length: int, stride: int) -> list[tuple[int, int, int]]:
    """(start, end, first scored position in the window) of each window of a document:

    stride_windows(9, 4, 2) -> [(0, 4, 1), (2, 6, 2), (4, 8, 2), (6, 9, 2)]"""
    starts, ends, scored = _windows(np.array([length], np.int64), max_length, stride)[1:]
    return list(zip(starts.tolist(), ends.tolist(), scored.tolist()))


def _windows(lengths: np.ndarray, max_length: int, stride: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For every window of every document: its document, start, end, and first scored position."""
    count = 1 + -(-np.maximum(lengths - max_length, 0) // stride)
    document = np.repeat(np.arange(len(lengths)), count)
    k = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
    start = k * stride
    end = np.minimum(start + max_length, lengths[document])
    # window k - 1 ended at start - stride + max_length: everything before that is scored already
    scored = np.where(k == 0, 1, np.maximum(max_length - stride, 1))
    return document, start, end, scored


def stride_rows(rows: pa.RecordBatch, max_length: int, stride: int, pad_length: Callable[[int], int] | None = None, pad_id: int | None = None) -> StridedBatch:
    """The windows of every row of an unpadded, aligned batch (BATCH_SCHEMA), in row order, each
    padded to `pad_length(n)` when given (--pad-to: pad id, label -100, attention 0)."""
    ids_list, labels_list = rows.column("input_ids"), rows.column("labels")
    lengths = pc.list_value_length(ids_list).to_numpy(zero_copy_only=False).astype(np.int64)
    document, start, end, scored = _windows(lengths, max_length, stride)
    size = end - start
    placed = np.cumsum(size) - size
    local = np.arange(int(size.sum())) - np.repeat(placed, size)
    gather = np.repeat(ids_list.offsets.to_numpy().astype(np.int64)[document] + start, size) + local
    ids = ids_list.values.to_numpy()[gather]
    labels = np.where(local < np.repeat(scored, size), IGNORE_INDEX, labels_list.values.to_numpy()[gather]).astype(np.int32)
    padded = size if pad_length is None else np.array([pad_length(n) for n in size.tolist()], dtype=np.int64)
    take = pa.array(document, pa.int64())
    columns = {name: rows.column(name).take(take) for name in BATCH_SCHEMA.names}
    columns["input_ids"] = padded_column(ids, size, padded, pad_id or 0, pa.int32())
    columns["labels"] = padded_column(labels, size, padded, IGNORE_INDEX, pa.int32())
    columns["attention_mask"] = padded_column(np.ones(len(ids), np.int8), size, padded, 0, pa.int8())
    columns["window_start"] = pa.array(start, pa.int32())
    return StridedBatch(pa.RecordBatch.from_arrays([columns[name] for name in STRIDED_BATCH_SCHEMA.names], schema=STRIDED_BATCH_SCHEMA), max_length)

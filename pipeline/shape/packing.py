"""Packing: many examples in one row of `--max-length` tokens, with nothing learned across them.

Two ways to fill rows (`--packing`):

* `bfd` (instruction data): best-fit decreasing. Examples are taken longest first and each goes
  into the open row with the least room that still holds it, or opens a row. With windows of
  20,000 examples this fills 0.9988 of the rows on the shared chat mix at 2048 tokens, against
  0.9992 for one global pack (README).
* `wrap` (pretraining text): documents laid end to end in their sorted order and cut every
  `max_length` tokens; a document cut at a row's end goes on in the next row. Every document of
  `--format text` already ends with EOS (rows.py appends it) and every chat example with its
  template's end-of-turn token, so EOS stands between documents without inserting anything.

A *piece* is what one row holds of one example: the whole example, or (`--overlong split`, and
wrap) a cut of it. Each piece is a document of its own inside the row:

    pieces  a = [a0 a1 a2]   b = [b0 b1]          row (max_length 6, --pad-to max_length)
    input_ids      a0   a1   a2   b0   b1   pad
    labels       -100   l1   l2 -100   l1  -100     first token of every piece: -100
    position_ids    0    1    2    0    1    0      restart per piece; pads restart too
    attention_mask  1    1    1    1    1    0
    seq_lengths  [3, 2]     example_ids [a, b]     sources [source of a, source of b]

Why these choices:

* The first label of every piece is -100: labels are aligned with `input_ids` and the model
  shifts them, so the label at a piece's first position would be predicted from the previous
  piece's last token. (A row's position 0 is never scored anyway.)
* `position_ids` restart at 0 for every piece. Hugging Face models (transformers 5) read packed
  rows from them when no 2D `attention_mask` is passed: a position that does not follow its
  predecessor by one starts a new sequence, and eager and SDPA attention get a block-diagonal
  mask, flash attention its varlen boundaries. Passing the all-ones `attention_mask` instead
  turns that off and lets documents see each other, and so does a cache: transformers looks for
  packed sequences only when `use_cache` is False (Trainer and TRL's SFTTrainer pass it so; a
  hand-written loop must, since Llama-style configs default it to True even in training). So
  train on packed rows with `input_ids`, `labels` and `position_ids` (or `seq_lengths`), no
  `attention_mask`, and `use_cache=False` (tests/test_packing_leakage.py shows both mistakes).
* Pad tokens (`--pad-to`) restart at 0 as well, so to a model reading `position_ids` the pad run
  is a sequence of its own: it never lengthens a real example's attention block (with flash
  attention's varlen boundaries too), and no example attends to it. `seq_lengths` lists the
  examples only (one entry per `example_ids` entry), summing to the row's non-pad tokens, which
  come first. TRL's padding-free collator rebuilds `position_ids` from `seq_lengths` and so wants
  unpadded rows: `--pad-to` is for fixed-shape batches.
* `sources` is a list aligned with `example_ids`, so every piece keeps its provenance.

Everything here works on whole Arrow columns with numpy: the only Python loops are over
examples (choosing a row) and rows, never over tokens.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from masked_shards.build.masking import IGNORE_INDEX
from masked_shards.build.token_rows import ranges

PACKED_BATCH_SCHEMA = pa.schema(
    [
        ("input_ids", pa.list_(pa.int32())),
        ("labels", pa.list_(pa.int32())),
        ("attention_mask", pa.list_(pa.int8())),
        ("position_ids", pa.list_(pa.int32())),
        ("seq_lengths", pa.list_(pa.int32())),
        ("example_ids", pa.list_(pa.string())),
        ("sources", pa.list_(pa.string())),
        # Not written: what runs.py sorts a packed row by. A row's first piece is in no other row,
        # so (its example, its offset in that example) names the row uniquely and for good.
        ("example_id", pa.string()),
        ("window_start", pa.int32()),
        ("split", pa.string()),
    ]
)

# The example columns packing reads: only these are sorted, not the ones each row carries for the report.
_READ = ["input_ids", "labels", "example_id", "source", "split"]


@dataclass(frozen=True)
class PackedBatch:
    """Packed rows (PACKED_BATCH_SCHEMA) and what the report says about them.

    `capacity` is --max-length, for the fill; `examples_split`: examples cut into more than one
    piece (--overlong split, or a document wrap carried over a row's end)."""

    rows: pa.RecordBatch
    capacity: int
    examples_split: int


@dataclass(frozen=True)
class Pieces:
    """Where each piece comes from: example row `row`, tokens [start, start + length)."""

    row: np.ndarray
    start: np.ndarray
    length: np.ndarray


def pack_best_fit(lengths: np.ndarray, capacity: int) -> list[list[int]]:
    """Best-fit decreasing: the indices of `lengths` in each bin, bins in the order opened.

    Items are taken by length, longest first, ties in index order (the caller sorts its items,
    so the bins are a function of the input alone). Each goes into the bin with the least room
    left that still holds it. The open bins are kept by room left, and the distinct room values
    in a sorted list (at most `capacity` of them), so each item costs one bisection:
    O(n log capacity) over all.

        lengths [3, 5, 2, 4], capacity 7  ->  [[1, 2], [3, 0]]  (5 + 2, 4 + 3)
    """
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    bins: list[list[int]] = []
    open_with: dict[int, list[int]] = {}  # room left -> bins with exactly that room
    rooms: list[int] = []  # the keys of open_with, sorted
    for index in order.tolist():
        length = int(lengths[index])
        if length > capacity:
            raise ValueError(f"an item of length {length} does not fit in bins of {capacity}")
        at = bisect_left(rooms, length)
        if at == len(rooms):
            chosen, room = len(bins), capacity
            bins.append([])
        else:
            room = rooms[at]
            waiting = open_with[room]
            chosen = waiting.pop()
            if not waiting:
                del open_with[room]
                rooms.pop(at)
        bins[chosen].append(index)
        left = room - length
        if left:
            if left not in open_with:
                open_with[left] = []
                insort(rooms, left)
            open_with[left].append(chosen)
    return bins


def cut_pieces(lengths: np.ndarray, capacity: int) -> Pieces:
    """Each example as pieces of at most `capacity` tokens (one piece when it fits):

    lengths [3, 8], capacity 3  ->  rows [0, 1, 1, 1], starts [0, 0, 3, 6], lengths [3, 3, 3, 2]"""
    lengths = np.asarray(lengths, dtype=np.int64)
    count = -(-lengths // capacity)
    row = np.repeat(np.arange(len(lengths)), count)
    start = (np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)) * capacity
    return Pieces(row, start, np.minimum(capacity, lengths[row] - start))


def wrap_pieces(lengths: np.ndarray, capacity: int) -> tuple[Pieces, np.ndarray]:
    """Documents end to end, cut every `capacity` tokens: the pieces, and the packed row of each.

    lengths [4, 3], capacity 3  ->  stream a a a|a b b|b  ->  pieces a[0:3] a[3:4] b[0:2] b[2:3], rows [0, 1, 1, 2]"""
    lengths = np.asarray(lengths, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    total = int(starts[-1])
    edges = np.union1d(starts, np.arange(0, total + 1, capacity))
    begin, end = edges[:-1], edges[1:]
    row = np.searchsorted(starts, begin, side="right") - 1
    return Pieces(row, begin - starts[row], end - begin), begin // capacity


def pack_rows(examples: pa.Table, capacity: int, mode: str, pad_length: Callable[[int], int] | None = None, pad_id: int | None = None) -> PackedBatch:
    """Pack the example rows of one window (one split; BATCH_SCHEMA, aligned, unpadded) into rows.

    The examples are first sorted by id, so the result does not depend on the order they arrived
    in. `mode` is bfd or wrap; under bfd an example longer than `capacity` (kept whole only by
    --overlong split) is cut into pieces first. `pad_length` (--pad-to) gives a row's padded length."""
    examples = examples.select(_READ).sort_by([("example_id", "ascending")]).combine_chunks()
    lengths = pc.list_value_length(examples.column("input_ids")).to_numpy(zero_copy_only=False).astype(np.int64)
    if mode == "wrap":
        pieces, bin_of = wrap_pieces(lengths, capacity)
        order = np.arange(len(pieces.row))
        per_row = np.bincount(bin_of) if len(bin_of) else np.zeros(0, np.int64)
    else:
        pieces = cut_pieces(lengths, capacity)
        bins = pack_best_fit(pieces.length, capacity)
        order = np.fromiter((i for b in bins for i in b), dtype=np.int64, count=len(pieces.row))
        per_row = np.array([len(b) for b in bins], dtype=np.int64)
    pieces = Pieces(pieces.row[order], pieces.start[order], pieces.length[order])
    split = int((np.bincount(pieces.row, minlength=len(lengths)) > 1).sum())
    return PackedBatch(_assemble(examples, pieces, per_row, pad_length, pad_id), capacity, split)


def _assemble(examples: pa.Table, pieces: Pieces, per_row: np.ndarray, pad_length: Callable[[int], int] | None, pad_id: int | None) -> pa.RecordBatch:
    """The packed rows' columns from the pieces in row order (`per_row` pieces in each row)."""
    ids_list, labels_list = _one_chunk(examples.column("input_ids")), _one_chunk(examples.column("labels"))
    token_offsets = ids_list.offsets.to_numpy().astype(np.int64)
    length = pieces.length
    placed = np.cumsum(length) - length  # each piece's first token in the unpadded rows
    total = int(length.sum())
    gather = ranges(token_offsets[pieces.row] + pieces.start, length)
    ids = ids_list.values.to_numpy()[gather]
    labels = labels_list.values.to_numpy()[gather].copy()
    labels[placed] = IGNORE_INDEX

    first_piece = np.cumsum(per_row) - per_row
    row_length = np.add.reduceat(length, first_piece) if len(per_row) else np.zeros(0, np.int64)
    padded = row_length if pad_length is None else np.array([pad_length(n) for n in row_length.tolist()], dtype=np.int64)
    pad = padded - row_length
    row_offsets = _offsets(padded)
    if pad.any():
        ids, labels, position, attention = _padded_rows(ids, labels, length, per_row, row_length, pad, pad_id)
    else:  # the rows are the pieces end to end (without --pad-to): no copy into a padded layout
        position = np.arange(total) - np.repeat(placed, length)
        attention = np.ones(total, np.int8)
    piece_offsets = _offsets(per_row)
    example_ids = examples.column("example_id").combine_chunks().take(pa.array(pieces.row))
    sources = examples.column("source").combine_chunks().take(pa.array(pieces.row))
    firsts = pa.array(first_piece, pa.int64())
    split = examples.column("split").combine_chunks().take(pa.array(pieces.row)).take(firsts)
    columns = [
        _list(row_offsets, ids, pa.int32()),
        _list(row_offsets, labels, pa.int32()),
        _list(row_offsets, attention, pa.int8()),
        _list(row_offsets, position, pa.int32()),
        _list(piece_offsets, length, pa.int32()),
        pa.ListArray.from_arrays(pa.array(piece_offsets), example_ids),
        pa.ListArray.from_arrays(pa.array(piece_offsets), sources),
        example_ids.take(firsts),
        pa.array(pieces.start[first_piece], pa.int32()),
        split,
    ]
    return pa.RecordBatch.from_arrays(columns, schema=PACKED_BATCH_SCHEMA)


def _padded_rows(ids: np.ndarray, labels: np.ndarray, length: np.ndarray, per_row: np.ndarray, row_length: np.ndarray, pad: np.ndarray, pad_id: int | None) -> tuple[np.ndarray, ...]:
    """ids, labels, position_ids and attention_mask of rows each followed by `pad` padding
    tokens: the pieces (`length`, `per_row` of them in each row) moved to their padded places."""
    # Every row's segments, for position_ids: its pieces, then its pad run if it has one.
    segments_per_row = per_row + (pad > 0)
    segment_at = np.arange(len(length)) + np.repeat(np.cumsum(pad > 0) - (pad > 0), per_row)
    segments = np.zeros(int(segments_per_row.sum()), dtype=np.int64)
    segments[segment_at] = length
    segments[(np.cumsum(segments_per_row) - 1)[pad > 0]] = pad[pad > 0]
    destination = np.arange(len(ids)) + np.repeat(np.cumsum(pad) - pad, row_length)
    size = len(ids) + int(pad.sum())
    position = np.arange(size) - np.repeat(np.cumsum(segments) - segments, segments)
    attention = np.zeros(size, np.int8)
    attention[destination] = 1
    return _scatter(ids, destination, size, pad_id or 0), _scatter(labels, destination, size, IGNORE_INDEX), position, attention


def _scatter(values: np.ndarray, destination: np.ndarray, size: int, fill: int) -> np.ndarray:
    out = np.full(size, fill, dtype=values.dtype)
    out[destination] = values
    return out


def _offsets(lengths: np.ndarray) -> np.ndarray:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


def _list(offsets: np.ndarray, values: np.ndarray, value_type: pa.DataType) -> pa.ListArray:
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values, value_type), type=pa.list_(value_type))


def _one_chunk(column: pa.ChunkedArray) -> pa.ListArray:
    """The column as one list array (empty when the table has no rows)."""
    return column.combine_chunks() if column.num_chunks else pa.array([], column.type)

"""A batch's rows fitted as one (build/token_rows.py): each row as the per-row rules say."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from masked_shards.build.masking import IGNORE_INDEX as X
from masked_shards.build.token_rows import fit_rows, padded_column, ranges, take_rows, token_rows


def _rows(fitted, bounds_name="id_bounds", values="ids"):
    bounds, flat = getattr(fitted, bounds_name), getattr(fitted, values)
    return [flat[a:b].tolist() for a, b in zip(bounds[:-1], bounds[1:])]


def test_ranges_lays_each_range_after_the_one_before():
    assert ranges(np.array([0, 5, 2]), np.array([2, 3, 0])).tolist() == [0, 1, 5, 6, 7]


def test_aligned_rows_are_cut_as_one_and_a_row_left_without_supervision_is_dropped():
    rows = token_rows(
        [np.array([1, 2, 3, 4, 5]), np.array([6, 7]), np.array([8, 9, 10, 11])],
        [np.array([X, X, 3, 4, 5]), np.array([X, 7]), np.array([X, X, X, 11])],
    )
    fitted, dropped = fit_rows(rows, aligned=True, max_length=3, overlong="truncate", keeps_overlong=False)
    assert fitted.kept.tolist() == [0, 1]
    assert _rows(fitted.rows) == [[1, 2, 3], [6, 7]]
    assert _rows(fitted.rows, "label_bounds", "labels") == [[X, X, 3], [X, 7]]
    assert fitted.truncated.tolist() == [True, False]
    assert fitted.tokens_before_truncation.tolist() == [5, 2]
    assert dropped == {2: ("no_supervised_tokens_after_truncation", "no supervised token in the first 3 tokens")}


def test_drop_mode_names_the_overlong_side_and_split_mode_keeps_rows_whole():
    rows = token_rows([np.array([1, 2, 3, 4]), np.array([5])], [np.array([1, 2, 3, 4]), np.array([X])])
    _, dropped = fit_rows(rows, aligned=True, max_length=3, overlong="drop", keeps_overlong=False)
    assert dropped == {0: ("overlong", "example has 4 tokens, more than --max-length 3"), 1: ("no_supervised_tokens", "no supervised token in the first 1 tokens")}
    whole, _ = fit_rows(rows, aligned=True, max_length=3, overlong="split", keeps_overlong=True)
    assert _rows(whole.rows) == [[1, 2, 3, 4]] and whole.truncated.tolist() == [False]


def test_a_source_keeps_its_closing_token_and_each_side_is_cut_on_its_own():
    rows = token_rows([np.array([1, 2, 3, 4, 99]), np.array([5, 99])], [np.array([7, 8, 9, 0]), np.array([6, 0])], keep_last=[True, True])
    fitted, dropped = fit_rows(rows, aligned=False, max_length=3, overlong="truncate", keeps_overlong=False)
    assert not dropped
    assert _rows(fitted.rows) == [[1, 2, 99], [5, 99]]
    assert _rows(fitted.rows, "label_bounds", "labels") == [[7, 8, 9], [6, 0]]
    assert fitted.target_cut.tolist() == [True, False]
    assert fitted.tokens_before_truncation.tolist() == [9, 4]
    _, dropping = fit_rows(rows, aligned=False, max_length=3, overlong="drop", keeps_overlong=False)
    assert dropping == {0: ("overlong", "source has 5 tokens and target has 4 tokens, more than --max-length 3")}


def test_rows_are_taken_in_the_order_asked():
    rows = token_rows([np.array([1]), np.array([2, 3]), np.array([4, 5, 6])], [np.array([1]), np.array([2, 3]), np.array([4, 5, 6])], split_at_boundaries=[False, True, False])
    taken = take_rows(rows, np.array([2, 0, 1]))
    assert _rows(taken) == [[4, 5, 6], [1], [2, 3]]
    assert taken.split_at_boundaries.tolist() == [False, False, True]


def test_padded_column_fills_each_row_to_its_length():
    column = padded_column(np.array([1, 2, 3]), np.array([2, 1]), np.array([3, 2]), 0, pa.int32())
    assert column.to_pylist() == [[1, 2, 0], [3, 0]]

"""Striding: the windows rebuild the document and score each supervised token once, prompts never."""

from __future__ import annotations

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from masked_shards.shape.striding import stride_rows, stride_windows
from test_packing import examples_table

IGNORE = -100


@st.composite
def documents(draw):
    """(L, S, [(ids, labels), ...]) with 1 <= S <= L; labels a random mix of supervised and -100
    (prompt) tokens, as a chat example's are."""
    max_length = draw(st.integers(2, 24))
    stride = draw(st.integers(1, max_length))
    docs = []
    for n in range(draw(st.integers(1, 4))):
        length = draw(st.integers(1, 5 * max_length))
        ids = [n * 1000 + i for i in range(length)]
        mask = draw(st.lists(st.booleans(), min_size=length, max_size=length))
        docs.append((ids, [i if keep else IGNORE for i, keep in zip(ids, mask)]))
    return max_length, stride, docs


@settings(max_examples=150, deadline=None)
@given(documents(), st.booleans())
def test_windows_rebuild_the_document_and_score_each_token_once(case, padded):
    max_length, stride, docs = case
    batch = stride_rows(examples_table(docs).to_batches()[0], max_length, stride, (lambda n: max_length) if padded else None, pad_id=3)
    windows = batch.rows.to_pylist()
    for n, (ids, labels) in enumerate(docs):
        mine = [w for w in windows if w["example_id"] == f"f.jsonl:{n}"]
        starts = [w["window_start"] for w in mine]
        assert starts == list(range(0, stride * len(mine), stride))  # windows begin at 0, S, 2S, ...
        scored: list[int] = []
        for w in mine:
            real = sum(w["attention_mask"])
            assert w["input_ids"][:real] == ids[w["window_start"] : w["window_start"] + real]  # the window reproduces the document
            assert real == max_length or w is mine[-1]  # L tokens each, the last one shorter
            assert len(w["input_ids"]) == (max_length if padded else real) and w["labels"][real:] == [IGNORE] * (len(w["input_ids"]) - real)
            assert w["labels"][0] == IGNORE  # no predecessor inside the window
            for i, label in enumerate(w["labels"][:real]):
                if label != IGNORE:
                    assert label == labels[w["window_start"] + i]  # prompt tokens stay -100
                    scored.append(w["window_start"] + i)
        assert mine[-1]["window_start"] + sum(mine[-1]["attention_mask"]) == len(ids)  # the last window ends the document
        # Every supervised token but the first is scored exactly once; with S = L (no overlap) a
        # window's first token has no context in any window and is scored in none.
        unscorable = {0} | ({w["window_start"] for w in mine} if stride == max_length else set())
        assert sorted(scored) == [i for i, label in enumerate(labels) if label != IGNORE and i not in unscorable]


def test_windows_of_one_document():
    assert stride_windows(9, 4, 2) == [(0, 4, 1), (2, 6, 2), (4, 8, 2), (6, 9, 2)]
    assert stride_windows(8, 4, 4) == [(0, 4, 1), (4, 8, 1)]
    assert stride_windows(3, 4, 1) == [(0, 3, 1)]


def test_windows_keep_the_example_columns():
    table = examples_table([(list(range(10)), list(range(10)))])
    rows = stride_rows(table.to_batches()[0], 4, 3).rows
    assert rows.column("example_id").to_pylist() == ["f.jsonl:0"] * 3
    assert rows.column("window_start").to_pylist() == [0, 3, 6]
    assert rows.column("split").to_pylist() == ["train"] * 3 and rows.schema.field("window_start").type == pa.int32()

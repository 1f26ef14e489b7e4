"""Shared fixtures: the bundled demo tokenizer, Qwen2's production vocabulary, input writers, and
a per-row view of the row batches the builder makes (`Row`, `build_one`, `build_all`, `row_batch`)."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from masked_shards.config import DEMO_TOKENIZER  # noqa: E402
from masked_shards.records import BATCH_SCHEMA, Dropped, Example, Rejected, RowBatch  # noqa: E402
from masked_shards.build.tokenization import full_tokenizer  # noqa: E402
from finished_runs import shard_run  # noqa: E402,F401  (one finished run per row layout, for the training tests)


@pytest.fixture(scope="session", autouse=True)
def own_cache(tmp_path_factory):
    """Kept verdicts (build/same_bpe.py) go to a folder of the session's, not the user's cache:
    each session checks its vocabularies afresh, and jobs run as subprocesses inherit it."""
    os.environ["MASKED_SHARDS_CACHE"] = str(tmp_path_factory.mktemp("masked-shards-cache"))


@pytest.fixture(scope="session")
def demo_tokenizer():
    """transformers' object, whose API (add_tokens, convert_tokens_to_ids) tests use to build
    variants; the job loads the same folder with `tokenizers` alone (test_tokenization.py shows
    the two agree)."""
    return full_tokenizer(DEMO_TOKENIZER)


@pytest.fixture(scope="session")
def qwen2_tokenizer(tmp_path_factory):
    from qwen2_tokenizer import build_qwen2_tokenizer

    return build_qwen2_tokenizer(tmp_path_factory.mktemp("qwen2"))


@pytest.fixture(params=["demo", "qwen2"])
def tokenizer(request):
    """Every masking test runs on the small demo vocabulary and on Qwen2's 151k vocabulary."""
    return request.getfixturevalue(f"{request.param}_tokenizer")


def write_jsonl(path: Path, records: list[object]) -> Path:
    """Write records one per line; a `str` record is written verbatim (for broken lines)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in records]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


@dataclass(frozen=True)
class Row:
    """One row of a `RowBatch` as Python lists, for assertions (the pipeline never makes these).
    Decoder rows (`aligned`) have three lists of one length; seq2seq rows have the source in
    `input_ids`/`attention_mask` and the target in `labels`. `tokens_before_truncation` None
    means the row was not cut: its real tokens (plus the target's, for seq2seq)."""

    example_id: str
    source: str
    split: str
    input_ids: list[int]
    labels: list[int]
    attention_mask: list[int]
    truncated: bool = False
    split_at_boundaries: bool = False
    aligned: bool = True
    tokens_before_truncation: int | None = None
    # per message (records.BATCH_SCHEMA's report-only columns); None in a row made by hand: no messages
    turn_roles: list[int] | None = None
    turn_tokens: list[int] | None = None
    turn_supervised: list[int] | None = None
    turn_eot: list[int] | None = None
    turn_calls: list[int] | None = None
    turn_reasoning: list[int] | None = None


def rows_of(batch: RowBatch) -> list[Row]:
    """The batch's rows, in order, as `Row`s."""
    columns = batch.rows.to_pydict()
    return [Row(**{name: columns[name][n] for name in BATCH_SCHEMA.names}, aligned=batch.aligned) for n in range(batch.rows.num_rows)]


def build_all(builder, items: list) -> list[Row | Rejected | Dropped]:
    """One result per example or pair, in order: `builder.build(items)` with its rows and its
    others put back in the order of the items they came from."""
    batch = builder.build(items)
    rows, others = iter(rows_of(batch)), iter(batch.others)
    row, other = next(rows, None), next(others, None)
    results: list[Row | Rejected | Dropped] = []
    for item in items:
        if row is not None and row.example_id == item.example_id:
            results.append(row)
            row = next(rows, None)
        else:
            results.append(other)
            other = next(others, None)
    assert row is None and other is None, "every row and every other result belongs to one item"
    return results


def build_one(builder, item: Example) -> Row | Rejected | Dropped:
    """What `builder` makes of one example (or translation pair)."""
    (result,) = build_all(builder, [item])
    return result


def row_batch(rows: list[Row], others: tuple[Rejected | Dropped, ...] = ()) -> RowBatch:
    """A `RowBatch` made by hand from `Row`s (all aligned, or all not), for tests of what
    consumes batches: shards, coverage, Beam steps."""
    columns = {name: [getattr(row, name) for row in rows] for name in BATCH_SCHEMA.names}
    for name in ("turn_calls", "turn_reasoning"):  # no tool calls or reasoning unless a row says so
        columns[name] = [row.turn_roles and [0] * len(row.turn_roles) if value is None else value for row, value in zip(rows, columns[name])]
    columns["tokens_before_truncation"] = [
        row.tokens_before_truncation if row.tokens_before_truncation is not None else sum(row.attention_mask) + (0 if row.aligned else sum(label != -100 for label in row.labels))
        for row in rows
    ]
    return RowBatch(pa.RecordBatch.from_pydict(columns, schema=BATCH_SCHEMA), tuple(others), all(row.aligned for row in rows))

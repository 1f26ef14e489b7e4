"""The plain PyTorch loader: real Parquet files in, padded or flattened batches out, streamed."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import DataLoader

from masked_shards.check.loader import ShardStream, shard_files
from masked_shards.write.shards import PACKED_SCHEMA, SCHEMA

X = -100
# input_ids, labels, attention_mask: a row padded by --pad-to comes last
ROWS = [([5, 6, 7], [X, 6, 7], [1, 1, 1]), ([8, 9], [X, 9], [1, 1]), ([10, 11, 12, 0], [X, X, 12, X], [1, 1, 1, 0])]
# packed rows: two examples (3 + 2 tokens), then one example and a pad token
PACKED = [
    ([5, 6, 7, 8, 9], [X, 6, 7, X, 9], [1, 1, 1, 1, 1], [0, 1, 2, 0, 1], [3, 2]),
    ([10, 11, 12, 0], [X, 11, 12, X], [1, 1, 1, 0], [0, 1, 2, 3], [3]),
]


def _write(path: Path, rows: list[tuple], schema: pa.Schema = SCHEMA, row_group_size: int = 2048) -> str:
    names = [name for name in schema.names if name in ("input_ids", "labels", "attention_mask", "position_ids", "seq_lengths")]
    columns = {name: [list(row[n]) for row in rows] for n, name in enumerate(names)}
    if schema is SCHEMA:
        columns |= {"example_id": [f"f:{n}" for n in range(len(rows))], "source": ["f"] * len(rows)}
    else:
        columns |= {"example_ids": [[f"f:{n}:{k}" for k in range(len(row[4]))] for n, row in enumerate(rows)], "sources": [["f"] * len(row[4]) for row in rows]}
    pq.write_table(pa.Table.from_pydict(columns, schema=schema), path, row_group_size=row_group_size)
    return str(path)


def _lists(batch: dict) -> dict:
    return {name: value.tolist() if isinstance(value, torch.Tensor) else value for name, value in batch.items()}


def test_padded_batches_pad_inputs_with_the_pad_id_labels_with_minus_100_attention_with_0(tmp_path):
    shard = _write(tmp_path / "rows.parquet", ROWS)
    first, second = (_lists(b) for b in ShardStream([shard], layout="padded", rows_per_batch=2, pad_id=3))
    assert first == {"input_ids": [[5, 6, 7], [8, 9, 3]], "labels": [[X, 6, 7], [X, 9, X]], "attention_mask": [[1, 1, 1], [1, 1, 0]]}
    assert second == {"input_ids": [[10, 11, 12, 0]], "labels": [[X, X, 12, X]], "attention_mask": [[1, 1, 1, 0]]}
    assert all(t.dtype == torch.int64 for t in next(iter(ShardStream([shard]))).values())


def test_flattened_batches_lay_rows_end_to_end_without_padding_and_mask_each_first_label(tmp_path):
    shard = _write(tmp_path / "rows.parquet", [([4, 5, 6], [4, 5, 6], [1, 1, 1]), *ROWS])  # --train-on all: label 0 set
    (batch,) = (_lists(b) for b in ShardStream([shard], layout="flattened", rows_per_batch=4))
    assert batch == {
        "input_ids": [[4, 5, 6, 5, 6, 7, 8, 9, 10, 11, 12]],
        "labels": [[X, 5, 6, X, 6, 7, X, 9, X, X, 12]],
        "position_ids": [[0, 1, 2, 0, 1, 2, 0, 1, 0, 1, 2]],
        "cu_seq_lens": [0, 3, 6, 8, 11],
        "max_seq_len": 3,
    }
    assert next(iter(ShardStream([shard], layout="flattened")))["cu_seq_lens"].dtype == torch.int32  # what varlen kernels take


def test_packed_rows_keep_their_examples_apart(tmp_path):
    shard = _write(tmp_path / "packed.parquet", PACKED, PACKED_SCHEMA)
    (padded,) = (_lists(b) for b in ShardStream([shard], layout="padded", rows_per_batch=2))
    # no attention_mask: an all-ones mask would make transformers ignore the restarting positions
    assert padded == {"input_ids": [[5, 6, 7, 8, 9], [10, 11, 12, 0, 0]], "labels": [[X, 6, 7, X, 9], [X, 11, 12, X, X]], "position_ids": [[0, 1, 2, 0, 1], [0, 1, 2, 3, 0]]}
    (flat,) = (_lists(b) for b in ShardStream([shard], layout="flattened", rows_per_batch=2))
    assert flat == {"input_ids": [[5, 6, 7, 8, 9, 10, 11, 12]], "labels": [[X, 6, 7, X, 9, X, 11, 12]], "position_ids": [[0, 1, 2, 0, 1, 0, 1, 2]], "cu_seq_lens": [0, 3, 5, 8], "max_seq_len": 3}


def test_seq2seq_rows_pad_the_target_on_its_own_and_cannot_be_flattened(tmp_path):
    shard = _write(tmp_path / "s2s.parquet", [([5, 6, 7], [8, 9], [1, 1, 1]), ([5], [8, 9, 1], [1])])
    (batch,) = (_lists(b) for b in ShardStream([shard], rows_per_batch=2, pad_id=0))
    assert batch == {"input_ids": [[5, 6, 7], [5, 0, 0]], "labels": [[8, 9, X], [8, 9, 1]], "attention_mask": [[1, 1, 1], [1, 0, 0]]}
    with pytest.raises(ValueError, match="seq2seq rows have a separate target: use the padded layout"):
        next(iter(ShardStream([shard], layout="flattened")))


ROW_COUNT = 10


def _numbered_shards(tmp_path: Path) -> list[str]:
    """Two files, row groups of 3 rows; row n is [n, n] so every row can be told apart."""
    rows = [([n, n], [X, n], [1, 1]) for n in range(ROW_COUNT)]
    return [_write(tmp_path / "a.parquet", rows[:7], row_group_size=3), _write(tmp_path / "b.parquet", rows[7:], row_group_size=3)]


def test_rows_stream_row_group_by_row_group_across_files(tmp_path):
    files = _numbered_shards(tmp_path)
    seen = [row[0] for batch in ShardStream(files, rows_per_batch=2) for row in batch["input_ids"].tolist()]
    assert seen == list(range(ROW_COUNT))
    # a row group is only read when reached: garble the bytes of a.parquet's last one and the
    # first batch still comes, while reading on fails
    group = pq.ParquetFile(files[0]).metadata.row_group(2)
    data = bytearray(Path(files[0]).read_bytes())
    for chunk in map(group.column, range(group.num_columns)):
        start = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
        data[start : start + chunk.total_compressed_size] = b"\xff" * chunk.total_compressed_size
    Path(files[0]).write_bytes(bytes(data))
    stream = iter(ShardStream(files, rows_per_batch=3))
    assert next(stream)["input_ids"][:, 0].tolist() == [0, 1, 2]
    with pytest.raises(OSError, match="page header"):
        list(stream)


def test_dataloader_workers_share_the_row_groups_and_see_each_row_once(tmp_path):
    files = _numbered_shards(tmp_path)
    loader = DataLoader(ShardStream(files, rows_per_batch=2), batch_size=None, num_workers=2)
    seen = [row[0] for batch in loader for row in batch["input_ids"].tolist()]
    assert sorted(seen) == list(range(ROW_COUNT)) and seen != list(range(ROW_COUNT))  # interleaved by workers


def test_shard_files_come_from_the_manifest_and_a_folder_without_one_is_refused(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"shards": [{"path": "data/train-00000-of-00002.parquet", "split": "train"}, {"path": "data/validation-00000-of-00001.parquet", "split": "validation"}, {"path": "data/train-00001-of-00002.parquet", "split": "train"}]}))
    assert shard_files(str(tmp_path)) == [f"{tmp_path}/data/train-00000-of-00002.parquet", f"{tmp_path}/data/train-00001-of-00002.parquet"]
    with pytest.raises(ValueError, match="wrote no test rows"):
        shard_files(str(tmp_path), "test")
    with pytest.raises(ValueError, match=f"^{tmp_path / 'data'} has no manifest.json, so it holds no finished masked-shards run$"):
        shard_files(str(tmp_path / "data"))

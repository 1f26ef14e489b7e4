"""A plain PyTorch path from the shards to model batches: no `datasets`, no Trainer.

`ShardStream` is an `IterableDataset` that reads the shards (Parquet, or Arrow streams under
`--output-format arrow`, memory-mapped) a row group at a time, so memory holds one batch of
rows, never a shard. Each batch of
rows becomes one model batch, built with numpy over the Arrow buffers (no per-token Python loop),
in one of two layouts:

padded (`layout="padded"`): one row per sequence, right-padded to the longest row of the batch.

    input_ids       [[5, 6, 7], [8, 9, pad]]    pad: `pad_id` (no loss depends on it: ShardStream)
    labels          [[-100, 6, 7], [-100, 9, -100]]    padded with -100, never the pad id
    attention_mask  [[1, 1, 1], [1, 1, 0]]

  Packed rows (shards with a `position_ids` column) carry `position_ids` instead of
  `attention_mask`: given position ids that restart at 0 and no attention mask, Hugging Face
  models (transformers 5) attend within each example only, which an all-ones attention mask
  would undo. Seq2seq shards pad `labels` (the target) to the longest target of the batch.

flattened (`layout="flattened"`, padding-free): the batch's sequences laid end to end in one row,
pad tokens (attention 0) left out; a sequence is an unpacked row or one example of a packed row.

    input_ids     [[5, 6, 7, 8, 9]]
    labels        [[-100, 6, 7, -100, 9]]    the first label of every sequence is -100
    position_ids  [[0, 1, 2, 0, 1]]          restart at every sequence
    cu_seq_lens   [0, 3, 5]  (int32)          sequence boundaries, for varlen attention kernels
    max_seq_len   3                           the longest sequence (a Python int)

  A model shifts labels inside itself, so label i is predicted from token i-1: the first label
  of a sequence would be predicted from the end of the one before it, and is therefore -100
  (packed shards already have it so; in an unpacked row it is never predicted at all, so nothing
  trainable is lost). Pass `input_ids`, `labels`, `position_ids` and `use_cache=False` to a
  Hugging Face model: with a cache, transformers 5 ignores restarting position ids, as it does
  beside a 2D attention mask. Flash-attention kernels take `cu_seq_lens`/`max_seq_len` as
  `cu_seq_lens_q`/`_k` and `max_length_q`/`_k`. Seq2seq rows cannot be flattened (their labels
  are not aligned with `input_ids`); asking for it is a ValueError.

Rows come in shard order, which is already a seeded shuffle (shards.py). With DataLoader workers
each worker reads its own share of the row groups: `DataLoader(ShardStream(...), batch_size=None,
num_workers=N)`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import torch
from torch.utils.data import IterableDataset, get_worker_info

from masked_shards.build.masking import IGNORE_INDEX
from masked_shards.check.folder import filesystem
from masked_shards.write.arrow import ShardReader

LAYOUTS = ("padded", "flattened")
TOKEN_COLUMNS = ("input_ids", "labels", "attention_mask", "position_ids", "seq_lengths")
Batch = dict[str, torch.Tensor | int]


def read_manifest(output: str) -> dict:
    """The manifest of a finished run; a folder without one is no finished run (one sentence)."""
    fs, path = filesystem(output)
    try:
        with fs.open_input_stream(f"{path}/manifest.json") as handle:
            return json.loads(handle.read())
    except FileNotFoundError:
        raise ValueError(f"{output} has no manifest.json, so it holds no finished masked-shards run") from None


def shard_files(output: str, split: str = "train") -> list[str]:
    """The shard paths of one split, as the run's manifest lists them (in name order)."""
    manifest = read_manifest(output)
    base = output.rstrip("/")
    files = sorted(f"{base}/{shard['path']}" for shard in manifest["shards"] if shard["split"] == split)
    if not files:
        raise ValueError(f"the run in {output} wrote no {split} rows")
    return files


class ShardStream(IterableDataset):
    """Model batches of `rows_per_batch` rows from Parquet shards, streamed row group by row group.

    files: shard paths or URIs (`shard_files(output, split)` lists a run's); layout: `padded` or
    `flattened` (module docstring); pad_id: the id written into padded `input_ids` positions,
    which have attention 0 (or come after every real token of a packed row) and label -100, so
    no loss depends on it; use the tokenizer's pad id to match what a collator would do.
    """

    def __init__(self, files: Sequence[str], *, layout: str = "padded", rows_per_batch: int = 8, pad_id: int = 0) -> None:
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, not {layout!r}")
        if rows_per_batch < 1:
            raise ValueError(f"rows_per_batch must be at least 1, not {rows_per_batch}")
        self.files, self.layout, self.rows_per_batch, self.pad_id = list(files), layout, rows_per_batch, pad_id

    def __iter__(self) -> Iterator[Batch]:
        worker = get_worker_info()
        share = (worker.id, worker.num_workers) if worker is not None else (0, 1)
        for rows in read_rows(self.files, self.rows_per_batch, share):
            yield padded_batch(rows, self.pad_id) if self.layout == "padded" else flattened_batch(rows)


def read_rows(files: Sequence[str], rows_per_batch: int, share: tuple[int, int] = (0, 1)) -> Iterator[pa.RecordBatch]:
    """The token columns of the shards, `rows_per_batch` rows at a time, read row group by row
    group; `share` = (k, n) reads only every n-th row group from the k-th (a DataLoader worker's)."""
    k, n = share
    seen = 0
    for name in files:
        with open_shard(name) as handle:
            shard = ShardReader(handle, name)
            mine = [group for group in range(shard.num_row_groups) if (seen + group) % n == k]
            seen += shard.num_row_groups
            columns = [c for c in TOKEN_COLUMNS if c in shard.schema.names]
            if mine:
                yield from shard.iter_batches(rows_per_batch, row_groups=mine, columns=columns)


def open_shard(name: str) -> pa.NativeFile:
    """A shard file for ShardReader: memory-mapped on a local disk (an Arrow shard's batches are
    then read only where used, as `datasets` reads them), a stream anywhere else."""
    fs, path = filesystem(name)
    return pa.memory_map(path) if isinstance(fs, pafs.LocalFileSystem) else fs.open_input_file(path)


def padded_batch(rows: pa.RecordBatch, pad_id: int = 0) -> Batch:
    """One row per sequence, right-padded (module docstring); labels padded with -100."""
    ids, id_lengths = _lists(rows, "input_ids")
    labels, label_lengths = _lists(rows, "labels")
    batch: Batch = {"input_ids": _padded(ids, id_lengths, pad_id), "labels": _padded(labels, label_lengths, IGNORE_INDEX)}
    if "position_ids" in rows.schema.names:
        batch["position_ids"] = _padded(_lists(rows, "position_ids")[0], id_lengths, 0)
    else:
        batch["attention_mask"] = _padded(_lists(rows, "attention_mask")[0], id_lengths, 0)
    return batch


def flattened_batch(rows: pa.RecordBatch) -> Batch:
    """The batch's sequences end to end in one row, padding dropped (module docstring)."""
    ids, id_lengths = _lists(rows, "input_ids")
    labels, label_lengths = _lists(rows, "labels")
    if not np.array_equal(id_lengths, label_lengths):
        raise ValueError("flattened batches need labels aligned with input_ids, and seq2seq rows have a separate target: use the padded layout")
    attention, _ = _lists(rows, "attention_mask")
    real = attention.astype(bool)
    if "seq_lengths" in rows.schema.names:
        lengths = _lists(rows, "seq_lengths")[0]
    else:  # each unpacked row is one sequence of its real (attended) tokens
        lengths = np.bincount(np.repeat(np.arange(len(id_lengths)), id_lengths), weights=real, minlength=len(id_lengths)).astype(np.int64)
    cu = np.r_[0, np.cumsum(lengths)].astype(np.int32)
    if cu[-1] != real.sum():
        raise ValueError(f"the rows' seq_lengths add up to {cu[-1]} tokens but they hold {real.sum()} real tokens")
    starts = cu[:-1][lengths > 0]
    if "position_ids" in rows.schema.names:
        positions = _lists(rows, "position_ids")[0][real]
    else:
        positions = np.arange(cu[-1]) - np.repeat(cu[:-1], lengths)
    labels = labels[real].astype(np.int64)
    labels[starts] = IGNORE_INDEX
    return {
        "input_ids": torch.from_numpy(ids[real].astype(np.int64))[None],
        "labels": torch.from_numpy(labels)[None],
        "position_ids": torch.from_numpy(positions.astype(np.int64))[None],
        "cu_seq_lens": torch.from_numpy(cu),
        "max_seq_len": int(lengths.max(initial=0)),
    }


def _lists(rows: pa.RecordBatch, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A list column as its flat values and per-row lengths (zero-copy where Arrow allows)."""
    column = rows.column(name)
    return column.flatten().to_numpy(zero_copy_only=False), pc.list_value_length(column).to_numpy(zero_copy_only=False)


def _padded(values: np.ndarray, lengths: np.ndarray, fill: int) -> torch.Tensor:
    """Flat row-major values of ragged rows -> a [rows, longest] int64 tensor, `fill` after each row."""
    width = int(lengths.max(initial=0))
    out = np.full((len(lengths), width), fill, dtype=np.int64)
    out[np.arange(width) < lengths[:, None]] = values
    return torch.from_numpy(out)

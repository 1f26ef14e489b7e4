"""`--output-format arrow`: data/ in the layout `datasets.save_to_disk` writes, loaded by
`datasets.load_from_disk(OUT/data)`, with the rows, order and columns of the Parquet run of the
same settings, as reproducible, and read by validate, inspect, our loader and the smoke test.
Whole jobs on Beam's FnApiRunner; training on the CPU with the smoke test's tiny model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

from conftest import write_jsonl
from masked_shards.check.loader import read_rows, shard_files
from masked_shards.check.smoke_test import run_stage, tiny_model
from masked_shards.check.validation import validate_directory
from masked_shards.cli import main

GOOD = [{"prompt": f"Question {n}?" + " more" * (n % 7), "completion": f"Answer {n}." + " yes" * (n % 5)} for n in range(60)]
ARGS = ("--validation-fraction", "0.25", "--num-shards", "3", "--max-length", "64")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("arrow")
    write_jsonl(folder / "good.jsonl", GOOD)
    outputs = {}
    for name, fmt in (("parquet", "parquet"), ("arrow", "arrow"), ("arrow_again", "arrow")):
        outputs[name] = folder / name
        assert main(["run", "--smoke-test", "off", "--quiet", "--input", str(folder / "good.jsonl"), "--output", str(outputs[name]), "--output-format", fmt, *ARGS]) == 0
    return outputs


def _parquet_split(output: Path, split: str) -> pa.Table:
    return pa.concat_tables(pq.read_table(p) for p in sorted((output / "data").glob(f"{split}-*.parquet")))


def test_load_from_disk_returns_the_splits_with_the_parquet_rows_in_order(runs):
    loaded = datasets.load_from_disk(str(runs["arrow"] / "data"))
    assert isinstance(loaded, datasets.DatasetDict) and sorted(loaded) == ["train", "validation"]
    for split, data in loaded.items():
        parquet = _parquet_split(runs["parquet"], split)
        assert data.num_rows == parquet.num_rows > 0
        assert data.column_names == parquet.column_names
        for column in parquet.column_names:
            assert list(data[column]) == parquet.column(column).to_pylist()
    layout = sorted(str(p.relative_to(runs["arrow"] / "data")) for p in (runs["arrow"] / "data").rglob("*"))
    shards = [f"{split}/data-{i:05d}-of-00003.arrow" for split in ("train", "validation") for i in range(3)]
    assert layout == sorted(["dataset_dict.json", "train", "validation", *shards, *(f"{s}/{f}" for s in ("train", "validation") for f in ("dataset_info.json", "state.json"))])


def test_arrow_shards_are_reproducible_and_listed_with_their_metadata(runs):
    def files(output: Path) -> dict[str, bytes]:
        return {str(p.relative_to(output)): p.read_bytes() for p in sorted(output.rglob("*")) if p.is_file()}

    assert files(runs["arrow"]) == files(runs["arrow_again"])
    manifest = json.loads((runs["arrow"] / "manifest.json").read_text())
    assert manifest["config"]["output_format"] == "arrow"
    assert [s["path"] for s in manifest["shards"]] == [f"data/{split}/data-{i:05d}-of-00003.arrow" for split in ("train", "validation") for i in range(3)]
    assert {f["path"] for f in manifest["dataset_files"]} == {"data/dataset_dict.json", *(f"data/{s}/{f}" for s in ("train", "validation") for f in ("dataset_info.json", "state.json"))}
    parquet = json.loads((runs["parquet"] / "manifest.json").read_text())
    assert [s["rows"] for s in manifest["shards"]] == [s["rows"] for s in parquet["shards"]]


def test_validate_inspect_loader_and_smoke_test_read_arrow_shards(runs, capsys):
    assert main(["validate", str(runs["arrow"])]) == 0
    assert "6 shards, 60 rows" in capsys.readouterr().out
    assert main(["inspect", str(runs["arrow"]), "--rows", "1", "--plain"]) == 0
    assert "data/train/data-00000-of-00003.arrow row 0" in capsys.readouterr().out
    ours = [b.to_pylist() for b in read_rows(shard_files(str(runs["arrow"])), 7)]
    theirs = [b.to_pylist() for b in read_rows(shard_files(str(runs["parquet"])), 7)]
    assert ours == theirs and sum(map(len, ours)) == len(datasets.load_from_disk(str(runs["arrow"] / "data"))["train"])
    assert run_stage(str(runs["arrow"]), "cpu")["passed"]


def test_validate_catches_a_changed_arrow_shard(runs, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(runs["arrow"], copy)
    shard = copy / "data" / "train" / "data-00001-of-00003.arrow"
    table = pa.ipc.open_stream(shard.read_bytes()).read_all()  # in memory: the file is rewritten below
    labels = table.column("labels").to_pylist()
    labels[0] = list(table.column("input_ids")[0].as_py())  # every token supervised: the prompt too
    changed = table.set_column(table.schema.get_field_index("labels"), table.schema.field("labels"), pa.array(labels, table.schema.field("labels").type))
    with pa.ipc.new_stream(str(shard), changed.schema) as writer:
        writer.write_table(changed)
    counts = validate_directory(copy).counts
    assert counts["manifest_sha256"] == 1 and counts["manifest_size"] == 0


def test_arrow_splits_train_one_step(runs, demo_tokenizer, tmp_path):
    data = datasets.load_from_disk(str(runs["arrow"] / "data"))["train"].remove_columns(["example_id", "source"])
    args = TrainingArguments(output_dir=str(tmp_path / "run"), max_steps=1, report_to=[], use_cpu=True, save_strategy="no", per_device_train_batch_size=4)
    trainer = Trainer(model=tiny_model(False, len(demo_tokenizer), torch.device("cpu")), args=args, train_dataset=data, data_collator=DataCollatorForSeq2Seq(demo_tokenizer))
    batch = next(iter(trainer.get_train_dataloader()))
    ours = {tuple(row["input_ids"]): row["labels"] for row in data}
    for ids, labels, mask in zip(batch["input_ids"].tolist(), batch["labels"].tolist(), batch["attention_mask"].tolist()):
        n = sum(mask)
        assert ours[tuple(ids[:n])] == labels[:n] and set(labels[n:]) <= {-100}  # our rows, our labels
    result = trainer.train()
    assert result.global_step == 1 and math.isfinite(result.training_loss)

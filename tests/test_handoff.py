"""Trainer hand-off: a finished run's `data/` folder, loaded with `datasets`, trains one step in each
trainer the README names, with the collator it names for that row layout, and the labels each
trainer trains on are ours (CPU, the smoke test's tiny random model, nothing downloaded)."""

from __future__ import annotations

import math
from pathlib import Path

import datasets
import pytest
import torch
from transformers import DataCollatorForLanguageModeling, DataCollatorForSeq2Seq, DataCollatorWithFlattening, DataCollatorWithPadding, Seq2SeqTrainer, Seq2SeqTrainingArguments, Trainer, TrainingArguments
from trl import SFTConfig, SFTTrainer

from masked_shards.check.loader import flattened_batch, read_rows, shard_files
from masked_shards.check.smoke_test import tiny_model

CPU = torch.device("cpu")
ONE_STEP = {"max_steps": 1, "report_to": [], "use_cpu": True, "save_strategy": "no", "per_device_train_batch_size": 4}


def _train_split(output: Path, tmp_path: Path) -> datasets.Dataset:
    return datasets.load_dataset("parquet", data_dir=str(output / "data"), cache_dir=str(tmp_path / "cache"))["train"]


def _ours(output: Path, rows: int) -> dict[str, list]:
    """Our loader's flattened batch of the split's first rows, as lists."""
    batch = flattened_batch(next(read_rows(shard_files(str(output)), rows)))
    return {name: value.tolist() if isinstance(value, torch.Tensor) else value for name, value in batch.items()}


def _trained_one_step(trainer: Trainer) -> None:
    result = trainer.train()
    assert result.global_step == 1 and math.isfinite(result.training_loss)


def _assert_batch_holds_our_rows(batch: dict[str, torch.Tensor], data: datasets.Dataset) -> None:
    """Each row of a padded batch is one of ours, followed by label -100 (and attention 0)."""
    ours = {tuple(row["input_ids"]): row["labels"] for row in data}
    assert len(set(map(len, ours))) > 1, "the rows must need padding"
    for ids, labels, mask in zip(batch["input_ids"].tolist(), batch["labels"].tolist(), batch["attention_mask"].tolist()):
        n = sum(mask)
        assert ours[tuple(ids[:n])] == labels[:n] and set(labels[n:]) <= {-100}


def test_trainer_with_the_seq2seq_collator_trains_unpadded_decoder_rows_on_our_labels(shard_run, demo_tokenizer, tmp_path):
    data = _train_split(shard_run("decoder"), tmp_path)
    args = TrainingArguments(output_dir=str(tmp_path / "run"), **ONE_STEP)
    trainer = Trainer(model=tiny_model(False, len(demo_tokenizer), CPU), args=args, train_dataset=data, data_collator=DataCollatorForSeq2Seq(demo_tokenizer))
    _assert_batch_holds_our_rows(next(iter(trainer.get_train_dataloader())), data)
    _trained_one_step(trainer)


def test_collators_that_do_not_fit_unpadded_rows_fail_or_drop_our_masks(shard_run, demo_tokenizer, tmp_path):
    data = _train_split(shard_run("decoder"), tmp_path)
    rows = [{name: data[n][name] for name in ("input_ids", "labels", "attention_mask")} for n in range(4)]
    assert len({len(row["input_ids"]) for row in rows}) > 1
    for collator in (DataCollatorWithPadding(demo_tokenizer), DataCollatorForLanguageModeling(demo_tokenizer, mlm=False)):
        with pytest.raises(ValueError, match=r"Unable to create tensor.*\(`labels` in this case\)"):  # they pad inputs, not labels
            collator(rows)
    # rows that need no padding get through the language-modeling collator, which rebuilds labels from input_ids
    assert DataCollatorForLanguageModeling(demo_tokenizer, mlm=False)(rows[:1])["labels"][0].tolist() == rows[0]["input_ids"] != rows[0]["labels"]


def test_trainer_with_the_flattening_collator_trains_padding_free_as_our_loader_lays_rows_out(shard_run, tmp_path):
    output = shard_run("decoder")
    data = _train_split(output, tmp_path)
    collator = DataCollatorWithFlattening(return_flash_attn_kwargs=True)
    theirs, ours = collator([data[n] for n in range(4)]), _ours(output, 4)
    for name in ("input_ids", "labels", "position_ids"):
        assert theirs[name].tolist() == ours[name], name
    assert theirs["cu_seq_lens_q"].tolist() == ours["cu_seq_lens"] and theirs["max_length_q"] == ours["max_seq_len"]
    trainer = Trainer(model=tiny_model(False, 4096, CPU), args=TrainingArguments(output_dir=str(tmp_path / "run"), **ONE_STEP), train_dataset=data, data_collator=collator)
    _trained_one_step(trainer)


def test_sft_trainer_keeps_our_labels_on_unpadded_rows(shard_run, demo_tokenizer, tmp_path):
    data = _train_split(shard_run("decoder"), tmp_path)
    config = SFTConfig(output_dir=str(tmp_path / "run"), max_length=None, **ONE_STEP)  # TRL's default max_length 1024 would cut rows
    trainer = SFTTrainer(model=tiny_model(False, len(demo_tokenizer), CPU), args=config, train_dataset=data, processing_class=demo_tokenizer)
    prepared = dict(zip(trainer.train_dataset["example_id"], trainer.train_dataset["labels"]))
    assert prepared == dict(zip(data["example_id"], data["labels"]))  # not re-tokenized, not re-labelled, not cut
    _assert_batch_holds_our_rows(next(iter(trainer.get_train_dataloader())), data)
    _trained_one_step(trainer)


def test_sft_trainer_padding_free_keeps_the_examples_of_packed_rows_apart(shard_run, demo_tokenizer, tmp_path):
    output = shard_run("packed")
    data = _train_split(output, tmp_path)
    config = SFTConfig(output_dir=str(tmp_path / "run"), max_length=None, padding_free=True, **ONE_STEP | {"per_device_train_batch_size": 2})
    trainer = SFTTrainer(model=tiny_model(False, len(demo_tokenizer), CPU), args=config, train_dataset=data, processing_class=demo_tokenizer)
    theirs, ours = trainer.data_collator([data[0], data[1]]), _ours(output, 2)  # TRL rebuilds positions from seq_lengths
    for name in ("input_ids", "labels", "position_ids"):
        assert theirs[name].tolist() == ours[name], name
    assert theirs["cu_seq_lens_q"].tolist() == ours["cu_seq_lens"] and len(ours["cu_seq_lens"]) > 3
    # transformers' flattening collator takes a packed row for one sequence: its examples would see each other
    row = next(row for row in data if len(row["seq_lengths"]) > 1)
    assert DataCollatorWithFlattening()([row])["position_ids"].tolist() == [list(range(len(row["input_ids"])))] != [row["position_ids"]]
    _trained_one_step(trainer)


def test_seq2seq_trainer_trains_seq2seq_rows_with_the_seq2seq_collator(shard_run, demo_tokenizer, tmp_path):
    data = _train_split(shard_run("seq2seq"), tmp_path)
    model = tiny_model(True, len(demo_tokenizer), CPU)
    collator = DataCollatorForSeq2Seq(demo_tokenizer, model=model)  # pads labels with -100, makes decoder_input_ids
    rows = [{name: data[n][name] for name in ("input_ids", "labels", "attention_mask")} for n in range(4)]  # what the Trainer passes on
    batch = collator(rows)
    assert len({len(row["labels"]) for row in rows}) > 1, "the targets must need padding"
    for labels, row in zip(batch["labels"].tolist(), rows):
        assert labels[: len(row["labels"])] == row["labels"] and set(labels[len(row["labels"]) :]) <= {-100}
    args = Seq2SeqTrainingArguments(output_dir=str(tmp_path / "run"), **ONE_STEP)
    _trained_one_step(Seq2SeqTrainer(model=model, args=args, train_dataset=data, data_collator=collator, processing_class=demo_tokenizer))

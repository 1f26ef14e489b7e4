"""Rows (c) and (c2): TRL's own dataset preparation, through its public `SFTTrainer`.

    python benchmarks/trl_prep.py --data FILE.jsonl --tokenizer FOLDER --max-length 2048 [--packing] [--num-proc N]

Timed: `datasets.load_dataset("json")` of the file plus the `SFTTrainer(...)` constructor, which
tokenizes every conversation with `assistant_only_loss=True` (`apply_chat_template` with the
assistant mask from chatml.jinja's `{% generation %}` markers), builds `labels` (-100 outside the
assistant's turns), truncates to `--max-length` and, with `--packing`, packs best-fit decreasing
(`packing_strategy="bfd"`). `--num-proc N` sets `dataset_num_proc`: TRL then tokenizes in N
processes (row (c3): one per core, its fastest setting on a given machine). That is TRL's path from the file to training-ready rows, as our job's
is from the file to shards. Not timed: imports and building the model.

SFTTrainer needs a model: a randomly initialised one-layer Qwen2 of hidden size 64 with the
tokenizer's vocabulary, built from a config (nothing downloaded). The caller points
HF_DATASETS_CACHE at a fresh folder per run, so no run reuses an earlier run's cached Arrow files.
Prints one JSON line: seconds, rows, tokens and supervised tokens of the prepared dataset.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from data import load_chat_tokenizer

IGNORE_INDEX = -100


def measure_trl(data: Path, tokenizer_folder: Path, max_length: int, packing: bool, num_proc: int | None = None) -> dict[str, float]:
    import datasets
    import pyarrow.compute as pc
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from trl import SFTConfig, SFTTrainer

    tokenizer = load_chat_tokenizer(tokenizer_folder)
    shape = Qwen2Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_length, tie_word_embeddings=True)
    model = Qwen2ForCausalLM(shape)
    with tempfile.TemporaryDirectory() as output:
        config = SFTConfig(output_dir=output, report_to="none", use_cpu=True, max_length=max_length, assistant_only_loss=True, packing=packing, packing_strategy="bfd", dataset_num_proc=num_proc)
        start = time.perf_counter()
        dataset = datasets.load_dataset("json", data_files=str(data), split="train")
        trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)
        seconds = time.perf_counter() - start
    prepared = trainer.train_dataset.data
    labels = pc.list_flatten(prepared.column("labels"))
    return {
        "seconds": seconds,
        "rows": prepared.num_rows,
        "tokens": pc.sum(pc.list_value_length(prepared.column("input_ids"))).as_py(),
        "supervised": pc.sum(pc.not_equal(labels, IGNORE_INDEX)).as_py(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--tokenizer", type=Path, required=True)
    parser.add_argument("--max-length", type=int, required=True)
    parser.add_argument("--packing", action="store_true", help="pack best-fit decreasing (packing_strategy='bfd')")
    parser.add_argument("--num-proc", type=int, default=None, help="dataset_num_proc: tokenize in this many processes (default: one)")
    args = parser.parse_args()
    print(json.dumps(measure_trl(args.data, args.tokenizer, args.max_length, args.packing, args.num_proc)))


if __name__ == "__main__":
    main()

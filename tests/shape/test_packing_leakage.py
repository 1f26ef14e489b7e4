"""No leakage: inside a packed row each example's loss is its loss alone, for real attention code.

A tiny randomly initialised Llama (transformers 5, CPU) reads packed rows the way the README says
to feed them: `input_ids`, `labels`, `position_ids`, no `attention_mask`, and `use_cache=False`
(as Trainer and TRL's SFTTrainer pass it). transformers then finds the examples from where
`position_ids` restart and builds a block-diagonal causal mask, for eager and SDPA attention alike. Each example's mean token loss inside the row must equal the same
model's loss on the example alone within 1e-4, with the row unpadded and padded to max_length
(pad position ids restart at 0, packing.py). The same holds through TRL's padding-free collator,
which rebuilds positions from `seq_lengths`, and through transformers' DataCollatorWithFlattening
fed the examples cut out of packed rows by `seq_lengths`. Controls show the test can fail, and
the two ways to get it wrong: transformers looks for packed sequences only when it is given no
2D attention mask and holds no cache, so the all-ones `attention_mask` (what a padded collator
passes) or a forward call that leaves `use_cache` at the config's True (a hand-written loop)
lets examples see each other.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from transformers import DataCollatorWithFlattening, LlamaConfig, LlamaForCausalLM
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from masked_shards.shape.packing import pack_rows
from test_packing import examples_table

IGNORE = -100
CAPACITY = 96
VOCAB = 4096  # the demo tokenizer's size


@functools.cache
def _model(attention: str) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=CAPACITY, attn_implementation=attention)
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def examples() -> list[tuple[list[int], list[int]]]:
    """Chat-like examples: a masked prompt, then a supervised answer."""
    rng = np.random.default_rng(0)
    found = []
    for _ in range(9):
        prompt, answer = int(rng.integers(3, 20)), int(rng.integers(2, 20))
        ids = rng.integers(5, VOCAB, size=prompt + answer).tolist()
        found.append((ids, [IGNORE] * prompt + ids[prompt:]))
    return found


def _token_losses(model: LlamaForCausalLM, ids: torch.Tensor, labels: torch.Tensor, **inputs) -> torch.Tensor:
    """Per-token loss of one row, aligned with `labels` (the model shifts: logits i-1 predict label i)."""
    with torch.no_grad():
        logits = model(input_ids=ids[None], **({"use_cache": False} | inputs)).logits[0].float()
    losses = torch.zeros(len(labels))
    losses[1:] = torch.nn.functional.cross_entropy(logits[:-1], labels[1:].clamp(min=0), reduction="none") * (labels[1:] != IGNORE)
    return losses


def _alone(model: LlamaForCausalLM, ids: list[int], labels: list[int]) -> float:
    labels_t = torch.tensor(labels)
    labels_t[0] = IGNORE
    return float(_token_losses(model, torch.tensor(ids), labels_t).sum() / (labels_t[1:] != IGNORE).sum())


def _per_example(losses: torch.Tensor, labels: torch.Tensor, lengths: list[int], ids: list[str]) -> dict[str, float]:
    found, start = {}, 0
    for length, example_id in zip(lengths, ids):
        scored = (labels[start : start + length] != IGNORE).sum()
        found[example_id] = float(losses[start : start + length].sum() / scored)
        start += length
    return found


@pytest.fixture(scope="module")
def alone(examples) -> dict[str, dict[str, float]]:
    """attention -> example id -> the example's loss alone."""
    return {attention: {f"f.jsonl:{n}": _alone(_model(attention), ids, labels) for n, (ids, labels) in enumerate(examples)} for attention in ("eager", "sdpa")}


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
@pytest.mark.parametrize("padded", [False, True])
def test_each_example_in_a_packed_row_has_its_loss_alone(examples, alone, attention, padded):
    model = _model(attention)
    packed = pack_rows(examples_table(examples), CAPACITY, "bfd", (lambda n: CAPACITY) if padded else None, pad_id=0).rows.to_pylist()
    assert any(len(row["example_ids"]) > 2 for row in packed)
    found = {}
    for row in packed:
        ids, labels = torch.tensor(row["input_ids"]), torch.tensor(row["labels"])
        losses = _token_losses(model, ids, labels, position_ids=torch.tensor(row["position_ids"])[None])
        found |= _per_example(losses, labels, row["seq_lengths"], row["example_ids"])
    expected = alone[attention]
    assert found.keys() == expected.keys()
    for example_id, loss in found.items():
        assert loss == pytest.approx(expected[example_id], abs=1e-4), example_id


@pytest.mark.parametrize("wrong", [{"attention_mask": True}, {"use_cache": True}])
def test_an_attention_mask_or_a_cache_would_leak(examples, alone, wrong):
    """The controls: with a 2D mask passed, or a cache made, transformers does not look for
    packed sequences, and later examples in a row see the ones before them."""
    model = _model("sdpa")
    row = max(pack_rows(examples_table(examples), CAPACITY, "bfd").rows.to_pylist(), key=lambda r: len(r["example_ids"]))
    ids, labels = torch.tensor(row["input_ids"]), torch.tensor(row["labels"])
    if "attention_mask" in wrong:
        wrong = {"attention_mask": torch.ones(1, len(ids), dtype=torch.long)}
    losses = _token_losses(model, ids, labels, position_ids=torch.tensor(row["position_ids"])[None], **wrong)
    found, expected = _per_example(losses, labels, row["seq_lengths"], row["example_ids"]), alone["sdpa"]
    assert max(abs(found[i] - expected[i]) for i in row["example_ids"][1:]) > 1e-3


def test_trl_padding_free_and_flattening_collators_keep_examples_apart(examples, alone):
    """TRL's SFT collator (padding_free=True) reads our `seq_lengths`; DataCollatorWithFlattening
    takes the examples cut out of packed rows by `seq_lengths`. Both batches give each example
    its loss alone."""
    model = _model("sdpa")
    rows = pack_rows(examples_table(examples), CAPACITY, "bfd").rows.to_pylist()
    expected = alone["sdpa"]
    trl = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)([{k: row[k] for k in ("input_ids", "labels", "seq_lengths")} for row in rows])
    pieces = [(row["input_ids"][a : a + n], row["labels"][a : a + n]) for row in rows for a, n in zip(np.cumsum([0, *row["seq_lengths"][:-1]]), row["seq_lengths"])]
    flat = DataCollatorWithFlattening()([{"input_ids": ids, "labels": labels} for ids, labels in pieces])
    order = [i for row in rows for i in row["example_ids"]]
    lengths = [n for row in rows for n in row["seq_lengths"]]
    for batch in (trl, flat):
        assert torch.equal(batch["position_ids"][0], torch.tensor([p for row in rows for p in row["position_ids"]]))
        labels = batch["labels"][0]
        losses = _token_losses(model, batch["input_ids"][0], labels, position_ids=batch["position_ids"])
        found = _per_example(losses, labels, lengths, order)
        for example_id, loss in found.items():
            assert loss == pytest.approx(expected[example_id], abs=1e-4), example_id

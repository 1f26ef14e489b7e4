"""The smoke-test stage: a tiny model trains on the shards, and its loss is the masked loss.

The last stage of a run proves the shards are usable before anyone books GPU hours on them. It
reads a few rows back from the written Parquet shards with the plain PyTorch loader (loader.py),
exactly as a trainer would, and trains a tiny randomly initialised model built from a config
(nothing is downloaded): a Llama-style decoder for decoder shards, a T5-style encoder-decoder
for seq2seq shards, its vocabulary the tokenizer's (the manifest records its size).

Checks, each written with its numbers to DIR/smoke_test.json:

0. token_ids: every token id and label of the rows used is below the vocabulary size (a
   trainer's embedding lookup would crash on one that is not), and the rows train on something.
1. masked_loss: the model's own loss from `labels` equals the cross-entropy computed here by hand,
   on the shifted logits (decoder; seq2seq logits are already aligned with their labels), over
   the supervised tokens only (label != -100), averaged over them: |diff| < 1e-4 in fp32.
2. masked_no_gradient: masked positions carry no gradient. A hook on the output layer replaces
   the model's logits at every position whose target is masked (label -100) by random values cut
   from the graph; the model then computes its own loss as usual. Loss and every parameter
   gradient must be unchanged (|diff| <= 1e-6): what the model predicts where the labels are
   masked is invisible to training. (A masked target is the value -100 itself, so the targets
   there cannot be changed while staying masked; what can change is everything the model does
   at those positions, and that is what is scrambled.)
3. learns: 24 full-batch AdamW steps on the same fixed rows lower the loss by at least 30% with
   no NaN or inf (from about 8.3 to 3-4 with the demo tokenizer); steps, seconds, tokens/s and
   every step's loss are recorded.
4. packed_equals_unpacked (decoder shards): the rows laid end to end with restarting
   `position_ids` (the loader's flattened layout: packed rows keep their own) give every example
   the loss it has when run alone, within 1e-4 (fp32) or 1e-3 (bf16 on CUDA). For packed shards
   this is the packing check; for unpacked ones it checks padding-free training of the rows.
   It runs once per attention implementation, each on a fresh model (same seed) that first
   trains 8 steps on the padding-free rows (the loss must fall 10%; steps, tokens/s recorded):
   sdpa everywhere, and on CUDA also flash varlen (below). Before training, flash varlen must
   give the padding-free rows sdpa's last hidden states (same initial weights; relative RMS
   difference under 1e-2 in bf16, 1e-5 in fp32), which a kernel that is not causal (0.39), or
   mixes up heads, would not; a loss alone would hardly tell (2.6e-3 apart for a non-causal one).
   The examples a varlen kernel is told about (where `position_ids` restart) must be those of
   the loader's `seq_lengths`.

The rows used: the first `rows` rows of the first train shard, each cut to a window short enough
that `[tokens x vocabulary]` logits stay under `logit_budget` (so Qwen2's 151k vocabulary does
not cost gigabytes). A decoder row whose first answer lies beyond its window is cut to start half
a window before that answer, so every row trains on something; a packed row too, its cut first
example then counting its positions from the window's start as it would alone. Before, packed
rows kept their first tokens, and a 151k vocabulary's 32-token window over tool definitions held
no answer (found on an H200 with real tool data).

Device: `auto` is CUDA when torch sees a GPU, else the CPU; `cuda` without one is a ConfigError.
On CUDA training and flash varlen's packing comparison run under bf16 autocast; checks 1 and 2
and sdpa's packing comparison always run in fp32, where exactness means something. Attention is
PyTorch's sdpa: given `position_ids` that restart and no attention mask, transformers builds the
block-diagonal causal mask from them.

Flash varlen is the attention a padding-free trainer uses on a GPU: the tokens of all examples
end to end, the kernel told where each starts (`cu_seqlens`), causal within each. It needs no
`flash_attn` package: PyTorch's own `torch.nn.attention.varlen.varlen_attn` runs FlashAttention
kernels on CUDA, and `varlen_attention` (varlen_attention.py) plugs any such kernel into transformers'
AttentionInterface, finding `cu_seqlens` where `position_ids` restart at 0. On the CPU, where
PyTorch has no such kernel, it is reported as not run, with why; a kernel that raises on the GPU
(an unsupported dtype or chip) is reported with its error instead of stopping the stage.

A failed check writes smoke_test.json (`"passed": false`) and raises SmokeTestFailed, one
sentence; nothing is deleted, the shards stay.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, replace

import numpy as np
import pyarrow as pa
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, LlamaConfig, PreTrainedModel, T5Config

from masked_shards.config import ConfigError
from masked_shards.check.varlen_attention import FLASH_VARLEN_INTERFACE, cu_seqlens, register_varlen_attention, torch_varlen_kernel
from masked_shards.check.loader import Batch, filesystem, flattened_batch, padded_batch, read_manifest, read_rows, shard_files
from masked_shards.build.masking import IGNORE_INDEX
from masked_shards.write.shards import SMOKE_TEST_JSON

DEVICES = ("auto", "cuda", "cpu")
ATTENTION = "sdpa"
FLASH_VARLEN = "flash_varlen"  # its key in smoke_test.json


@dataclass(frozen=True)
class Settings:
    """The stage's knobs; the defaults keep it to seconds on two CPU cores."""

    rows: int = 8  # rows of the first train shard the checks use
    logit_budget: int = 2**22  # most [tokens x vocabulary] logits one forward makes (16 MB in fp32)
    steps: int = 24
    learning_rate: float = 1e-2
    min_loss_drop: float = 0.30
    exact_fp32: float = 1e-4
    exact_bf16: float = 1e-2  # bf16 rounding alone moved an example's mean loss by 2.4e-3 between two sdpa kernels on an H200
    no_gradient: float = 1e-6
    max_sequences: int = 16  # examples compared alone in check 4
    attention_steps: int = 8  # check 4: steps each attention implementation trains on the padding-free rows
    attention_min_drop: float = 0.10  # ... and the loss drop they need (check 3 is the learning check)
    across_fp32: float = 1e-5  # check 4: another attention's hidden states against sdpa's, same weights (relative RMS)
    across_bf16: float = 1e-2  # ... in bf16 (1.6e-3 measured on the CPU; a kernel that is not causal: 0.39)


class SmokeTestFailed(Exception):
    """A check failed; the message is one sentence and smoke_test.json holds the numbers."""


def device_for(mode: str) -> torch.device:
    """auto: CUDA when torch sees a GPU, else the CPU; cuda without a GPU is a ConfigError."""
    if mode not in DEVICES:
        raise ConfigError(f"the smoke test runs on {', '.join(DEVICES)}, not {mode!r}")
    if mode == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--smoke-test cuda needs a CUDA GPU and torch sees none; use --smoke-test cpu, auto or off")
    return torch.device("cuda" if mode == "cuda" or (mode == "auto" and torch.cuda.is_available()) else "cpu")


def run_stage(output: str, mode: str, settings: Settings = Settings(), named: str | None = None) -> dict:
    """Run every check on the run in `output`, write OUTPUT/smoke_test.json, return its content;
    raise SmokeTestFailed (after writing the file) if a check fails. `named`: the folder the
    failure names, where the run will be (the job runs the stage on its staged copy).

    On the CPU the checks run on one thread, then the thread count is put back: a model this
    small gains nothing from more, and OpenMP threads that spin-wait on a busy machine made the
    stage 7 times slower (56 s against 8 s, measured beside other jobs on 2 cores)."""
    started = time.perf_counter()
    device = device_for(mode)
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        result = _run_checks(output, device, settings)
    finally:
        torch.set_num_threads(threads)
    result["seconds"] = round(time.perf_counter() - started, 3)
    fs, path = filesystem(output)
    with fs.open_output_stream(f"{path}/{SMOKE_TEST_JSON}") as handle:
        handle.write((json.dumps(result, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    problems = [check["problem"] for check in result["checks"].values() if "problem" in check]
    if problems:
        raise SmokeTestFailed(f"smoke test failed: {problems[0]} (details in {(named or output).rstrip('/')}/{SMOKE_TEST_JSON})")
    return result


def _run_checks(output: str, device: torch.device, settings: Settings) -> dict:
    """Every check on the sample, in order; the model checks only once the token ids fit it."""
    try:
        manifest = read_manifest(output)
        files = shard_files(output, "train" if any(s["split"] == "train" for s in manifest["shards"]) else "validation")
    except ValueError as err:
        raise ConfigError(str(err)) from None
    seq2seq = manifest["config"].get("model_type") == "seq2seq"
    vocab = int(manifest["tokenizer"]["vocab_size"])
    raw = next(read_rows(files[:1], settings.rows))
    packed = "position_ids" in raw.schema.names
    sample = _windows(raw, _window_length(settings, vocab, raw.num_rows), seq2seq)
    bf16 = device.type == "cuda"
    result: dict = {
        "passed": False,
        "device": str(device),
        "precision": "bf16 autocast (checks 1 and 2 and sdpa's packing comparison in fp32)" if bf16 else "fp32",
        "attention": f"{ATTENTION} (check 4 also {FLASH_VARLEN} on CUDA)",
        "shards": {"model_type": "seq2seq" if seq2seq else "decoder", "packed": packed, "files": len(files), "first_file": files[0][len(output.rstrip("/")) + 1 :]},
        "settings": asdict(settings),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "checks": {},
    }
    checks = result["checks"]
    checks["token_ids"] = check_token_ids(sample, raw.num_rows, vocab)
    if checks["token_ids"]["passed"]:
        model = tiny_model(seq2seq, vocab, device)
        result["model"] = {"family": model.config.model_type, "vocab_size": vocab, "parameters": sum(p.numel() for p in model.parameters())}
        batch = _to(padded_batch(sample), device)
        checks["masked_loss"] = check_masked_loss(model, batch, seq2seq, settings.exact_fp32)
        checks["masked_no_gradient"] = check_masked_no_gradient(model, batch, seq2seq, settings.no_gradient)
        checks["learns"] = check_learns(model, batch, _tokens(sample, seq2seq), settings, _autocast(device, bf16))
        if seq2seq:
            checks["packed_equals_unpacked"] = {"passed": True, "skipped": "seq2seq rows are not packed"}
        else:
            run, not_run = attention_implementations(device)
            checks["packed_equals_unpacked"] = check_attention_implementations(run, not_run, _to(flattened_batch(sample), device), packed, vocab, settings, bf16)
    result["passed"] = all(check["passed"] for check in checks.values()) and len(checks) == 5
    return result


RUN_TO_RUN = ("seconds", "tokens_per_second")  # what differs between two runs of the same checks


def steady(result: dict) -> dict:
    """The result without its timings, for the coverage report: the same shards, settings and
    device give the same report bytes (and so the same manifest, which checksums the report);
    the timings stay in smoke_test.json, which the manifest names but does not checksum."""
    if isinstance(result, dict):
        return {key: steady(value) for key, value in result.items() if key not in RUN_TO_RUN}
    return result


def summary_line(result: dict) -> str:
    """One line for the terminal: where it ran and the number behind each check."""
    checks = result["checks"]
    learns, packing = checks["learns"], checks["packed_equals_unpacked"]
    parts = [
        f"masked loss = hand cross-entropy (diff {checks['masked_loss']['abs_diff']:.1e})",
        "masked positions carry no gradient",
        f"loss {learns['initial_loss']:.3f} -> {learns['final_loss']:.3f} (-{learns['drop']:.0%}) in {learns['steps']} steps, {learns['tokens_per_second']:,.0f} tokens/s",
    ]
    if "attention" in packing:
        parts.append(f"packed = alone for {packing['sequences']} examples: " + ", ".join(_attention_summary(name, entry) for name, entry in packing["attention"].items()))
    return f"smoke test passed on {result['device']} in {result['seconds']:.1f} s: " + "; ".join(parts)


def tiny_model(seq2seq: bool, vocab: int, device: torch.device, attention: str = ATTENTION) -> PreTrainedModel:
    """A two-layer model of width 64 from a config, seeded (the same weights for every
    `attention` implementation), with the tokenizer's vocabulary, and no cache (see below).

    The seq2seq model starts its decoder from id 0 and pads with it; no loss depends on the
    choice (padded labels are -100, padded source tokens have attention 0).
    """
    torch.manual_seed(0)
    if seq2seq:
        config = T5Config(vocab_size=vocab, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4, dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
        model = AutoModelForSeq2SeqLM.from_config(config, attn_implementation=attention)
    else:
        config = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192, tie_word_embeddings=True)
        model = AutoModelForCausalLM.from_config(config, attn_implementation=attention)
    # As Hugging Face's Trainer does (TrainingArguments.use_cache is False): with a cache, transformers
    # 5 skips the block-diagonal mask it builds from restarting position_ids, and examples packed in
    # one row would attend to each other.
    model.config.use_cache = False
    return model.to(device=device, dtype=torch.float32)


def check_token_ids(sample: pa.RecordBatch, read: int, vocab: int) -> dict:
    """Check 0: every id fits the embedding (a trainer would crash on one that does not), and the
    rows used train on something."""
    ids, labels = (sample.column(name).flatten().to_numpy() for name in ("input_ids", "labels"))
    supervised = labels[labels != IGNORE_INDEX]
    largest = int(max(ids.max(initial=0), supervised.max(initial=0)))
    smallest = int(min(ids.min(initial=0), supervised.min(initial=0)))
    check = {"rows_read": read, "rows_used": sample.num_rows, "tokens": int(ids.size), "supervised_tokens": int(supervised.size), "max_token_id": largest, "vocab_size": vocab}
    if not sample.num_rows:
        problem = f"none of the first {read} rows has a supervised token"
    elif largest >= vocab or smallest < 0:
        problem = f"token id {largest if largest >= vocab else smallest} is outside the tokenizer's vocabulary of {vocab}"
    else:
        problem = None
    return _verdict(check, problem)


def check_masked_loss(model: PreTrainedModel, batch: Batch, seq2seq: bool, tolerance: float) -> dict:
    """Check 1: the model's own loss is the mean cross-entropy over the supervised tokens only."""
    model.eval()
    with torch.no_grad():
        out = model(**batch)
    losses, supervised = _token_losses(out.logits, batch["labels"], seq2seq)
    hand = losses.sum() / supervised.sum()
    diff = abs(out.loss.item() - hand.item())
    check = {"model_loss": out.loss.item(), "hand_loss": hand.item(), "abs_diff": diff, "tolerance": tolerance, "supervised_tokens": int(supervised.sum())}
    return _verdict(check, None if diff < tolerance else f"the model's loss {out.loss.item():.6f} is not the masked cross-entropy {hand.item():.6f} (difference {diff:.1e}, allowed {tolerance:.0e})")


def check_masked_no_gradient(model: PreTrainedModel, batch: Batch, seq2seq: bool, tolerance: float) -> dict:
    """Check 2: random logits where the target is masked change neither the loss nor a gradient."""
    labels = batch["labels"]
    masked = (labels if seq2seq else torch.nn.functional.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)) == IGNORE_INDEX
    noise = torch.Generator(device=labels.device).manual_seed(1)

    def scramble(_module: torch.nn.Module, _inputs: object, logits: torch.Tensor) -> torch.Tensor:
        random = 10 * torch.randn(logits.shape, generator=noise, device=logits.device, dtype=logits.dtype)
        return torch.where(masked[..., None], logits.detach() + random, logits)

    model.eval()
    plain_loss, plain_grads = _loss_and_gradients(model, batch)
    hook = model.get_output_embeddings().register_forward_hook(scramble)
    try:
        scrambled_loss, scrambled_grads = _loss_and_gradients(model, batch)
    finally:
        hook.remove()
    loss_diff = abs(plain_loss - scrambled_loss)
    grad_diff = max(float((a - b).abs().max()) for a, b in zip(plain_grads, scrambled_grads))
    check = {"masked_positions": int(masked.sum()), "supervised_positions": int((~masked).sum()), "loss_diff": loss_diff, "max_gradient_diff": grad_diff, "tolerance": tolerance}
    ok = loss_diff <= tolerance and grad_diff <= tolerance
    return _verdict(check, None if ok else f"scrambling the model's predictions at label-masked positions changed the loss by {loss_diff:.1e} and a gradient by {grad_diff:.1e}, so masked positions carry gradient")


def check_learns(model: PreTrainedModel, batch: Batch, tokens: int, settings: Settings, autocast: Callable[[], AbstractContextManager]) -> dict:
    """Check 3: full-batch AdamW steps on the fixed rows lower the loss by `min_loss_drop`, finitely."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=0.0)
    model.train()
    losses: list[float] = []
    started = time.perf_counter()
    for _ in range(settings.steps):
        with autocast():
            loss = model(**batch).loss
        losses.append(loss.item())
        if not math.isfinite(losses[-1]):
            break
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - started
    model.eval()
    with torch.no_grad(), autocast():
        final = model(**batch).loss.item()
    drop = 1 - final / losses[0] if math.isfinite(losses[0]) and losses[0] > 0 else 0.0
    check = {
        "steps": len(losses),
        "seconds": round(seconds, 3),
        "tokens_per_step": tokens,
        "tokens_per_second": round(len(losses) * tokens / seconds, 1),
        "initial_loss": losses[0],
        "final_loss": final,
        "drop": drop,
        "min_drop": settings.min_loss_drop,
        "losses": [round(x, 4) for x in losses],
    }
    if not all(map(math.isfinite, [*losses, final])):
        return _verdict(check, f"the loss became NaN or infinite at step {next(n for n, x in enumerate([*losses, final]) if not math.isfinite(x))}")
    return _verdict(check, None if drop >= settings.min_loss_drop else f"the loss fell only {drop:.0%} in {len(losses)} steps ({losses[0]:.3f} to {final:.3f}), less than the {settings.min_loss_drop:.0%} required")


def check_packed_equals_unpacked(model: PreTrainedModel, flat: Batch, packed: bool, tolerance: float, most: int, autocast: Callable[[], AbstractContextManager]) -> dict:
    """Per-example losses inside one flattened row (position_ids restarting, no attention mask)
    against each example run alone."""
    ids, labels, cu = flat["input_ids"], flat["labels"], flat["cu_seq_lens"].tolist()
    model.eval()
    with torch.no_grad(), autocast():
        together, supervised = _token_losses(model(input_ids=ids, position_ids=flat["position_ids"]).logits, labels, False)
        diffs = []
        for start, end in list(zip(cu[:-1], cu[1:]))[:most]:
            count = supervised[0, start:end].sum()
            if count == 0:
                continue
            alone, alone_supervised = _token_losses(model(input_ids=ids[:, start:end]).logits, labels[:, start:end], False)
            diffs.append(abs(float(together[0, start:end].sum() / count) - float(alone.sum() / alone_supervised.sum())))
    diff = max(diffs, default=0.0)
    check = {"sequences_from": "packed rows" if packed else "unpacked rows laid end to end (padding-free)", "sequences": len(diffs), "tokens": int(ids.numel()), "max_abs_diff": diff, "tolerance": tolerance}
    return _verdict(check, None if diff < tolerance else f"an example's loss inside a packed row differs from its loss alone by {diff:.1e} (allowed {tolerance:.0e}), so examples in a row see each other")


def attention_implementations(device: torch.device) -> tuple[dict[str, str], dict[str, str]]:
    """Check 4's attention implementations for a device: those to run (key in smoke_test.json ->
    attn_implementation), sdpa first as the reference, and those not run, with why."""
    if device.type != "cuda":
        return {ATTENTION: ATTENTION}, {FLASH_VARLEN: "PyTorch has FlashAttention varlen kernels on CUDA only"}
    return {ATTENTION: ATTENTION, FLASH_VARLEN: register_varlen_attention(FLASH_VARLEN_INTERFACE, torch_varlen_kernel)}, {}


def check_attention_implementations(run: Mapping[str, str], not_run: Mapping[str, str], flat: Batch, packed: bool, vocab: int, settings: Settings, bf16: bool) -> dict:
    """Check 4 once per attention implementation in `run` (the first is the reference), on the
    flattened rows `flat`; each entry in `not_run` is recorded with why. An implementation after
    the first that raises (a kernel the GPU does not support) is recorded with its error."""
    found, _ = cu_seqlens(flat["position_ids"])
    check: dict = {"sequences_from": "packed rows" if packed else "unpacked rows laid end to end (padding-free)", "tokens": int(flat["input_ids"].numel()), "tolerance": settings.exact_fp32}
    check["cu_seqlens_match_seq_lengths"] = torch.equal(found.cpu(), flat["cu_seq_lens"].cpu().to(torch.int32).unique_consecutive())  # an empty example is no example
    entries: dict[str, dict] = {}
    problems: list[str] = []
    reference: torch.Tensor | None = None
    for name, implementation in run.items():
        try:
            hidden, entry, problem = _run_attention(implementation, reference, flat, packed, vocab, settings, bf16)
        except Exception as err:  # only after the reference: a kernel the device rejects is a finding, not a crash
            if reference is None:
                raise
            entries[name] = {"ran": False, "attn_implementation": implementation, "error": _first_line(err)}
            continue
        entries[name] = entry if reference is None else {**entry, "reference": next(iter(run))}
        reference = hidden if reference is None else reference
        if problem:
            problems.append(f"with {name} attention {problem}")
    entries |= {name: {"ran": False, "why": why} for name, why in not_run.items()}
    ran = [entry for entry in entries.values() if entry["ran"]]
    check |= {"sequences": ran[0]["sequences"], "max_abs_diff": max(entry["max_abs_diff"] for entry in ran), "attention": entries}
    if not check["cu_seqlens_match_seq_lengths"]:
        problems.insert(0, "the examples found where position_ids restart are not those of seq_lengths, so a varlen kernel would let examples attend to each other")
    return _verdict(check, problems[0] if problems else None)


def _run_attention(implementation: str, reference: torch.Tensor | None, flat: Batch, packed: bool, vocab: int, settings: Settings, bf16: bool) -> tuple[torch.Tensor, dict, str | None]:
    """One implementation's part of check 4 on a fresh model: its last hidden states on the
    padding-free rows (compared with the `reference` implementation's, if given), then it trains
    on them and each example's loss in the row is compared with its loss alone.

    The reference (sdpa) compares losses in fp32, where a difference means leakage: in bf16 the
    kernel chosen for a masked row and for an example alone round differently (2.4e-3 on an H200),
    about what a kernel that is not causal moves the loss (2.6e-3). FlashAttention's varlen kernel
    runs in 16 bits only, so it compares in bf16 with a bf16 tolerance; what proves it right is its
    hidden states against the reference's (a kernel that is not causal is 0.39 off, a right one
    1.6e-3)."""
    model = tiny_model(False, vocab, flat["input_ids"].device, attention=implementation)
    autocast = _autocast(flat["input_ids"].device, bf16)
    batch = {name: flat[name] for name in ("input_ids", "labels", "position_ids")}
    model.eval()
    with torch.no_grad(), autocast():
        hidden = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], output_hidden_states=True).hidden_states[-1].float()
    learning = check_learns(model, batch, int(flat["input_ids"].numel()), replace(settings, steps=settings.attention_steps, min_loss_drop=settings.attention_min_drop), autocast)
    fp32 = reference is None or not bf16
    packing = check_packed_equals_unpacked(model, flat, packed, settings.exact_fp32 if fp32 else settings.exact_bf16, settings.max_sequences, nullcontext if fp32 else autocast)
    keep = ("steps", "seconds", "tokens_per_second", "initial_loss", "final_loss", "drop")
    entry = {"ran": True, "attn_implementation": implementation, "sequences": packing["sequences"], "max_abs_diff": packing["max_abs_diff"], "tolerance": packing["tolerance"], "precision": "fp32" if fp32 else "bf16", **{key: learning[key] for key in keep}}
    problems = [packing.get("problem")]
    if reference is not None:
        diff = float((hidden - reference).pow(2).mean().sqrt() / reference.pow(2).mean().sqrt())
        allowed = settings.across_bf16 if bf16 else settings.across_fp32
        entry |= {"hidden_states_vs_reference": diff, "reference_tolerance": allowed}
        if diff >= allowed:
            problems.append(f"the padding-free rows' last hidden states differ from the reference's by {diff:.1e} (relative RMS, same initial weights, allowed {allowed:.0e}), so the two do not compute the same attention")
    if "problem" in learning:
        problems.append(f"on the padding-free rows {learning['problem']}")
    return hidden, entry, next(filter(None, problems), None)


def _attention_summary(name: str, entry: dict) -> str:
    if not entry["ran"]:
        return f"{name} not run ({entry.get('why') or entry['error']})"
    versus = f", hidden states {entry['hidden_states_vs_reference']:.1e} from {entry['reference']}'s" if "hidden_states_vs_reference" in entry else ""
    return f"{name} max diff {entry['max_abs_diff']:.1e}, {entry['tokens_per_second']:,.0f} tokens/s{versus}"


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def _token_losses(logits: torch.Tensor, labels: torch.Tensor, seq2seq: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-target negative log-likelihood by hand, 0 where the label is -100, and the supervised
    mask, both indexed by the label's position: a decoder's label i is predicted by logit i-1
    (position 0 predicts nothing), a seq2seq label i by logit i."""
    if not seq2seq:
        logits = torch.nn.functional.pad(logits[:, :-1], (0, 0, 1, 0))
    supervised = labels != IGNORE_INDEX
    log_probs = logits.float().log_softmax(-1)
    nll = -log_probs.gather(-1, labels.clamp(min=0)[..., None])[..., 0]
    if not seq2seq:
        supervised[:, 0] = False
    return torch.where(supervised, nll, torch.zeros_like(nll)), supervised


def _loss_and_gradients(model: PreTrainedModel, batch: Batch) -> tuple[float, list[torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = model(**batch).loss
    loss.backward()
    grads = [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    return loss.item(), grads


def _windows(rows: pa.RecordBatch, length: int, seq2seq: bool) -> pa.RecordBatch:
    """Each row cut to at most `length` tokens (module docstring); rows left with no supervised
    token are left out. Columns as read, `seq_lengths` recounted for cut packed rows."""
    columns = {name: rows.column(name).to_pylist() for name in rows.schema.names}
    kept: dict[str, list] = {name: [] for name in columns}
    for n in range(rows.num_rows):
        row = {name: np.asarray(values[n]) for name, values in columns.items()}
        if seq2seq:
            cut = {name: values[:length] for name, values in row.items()}
        else:
            answers = np.flatnonzero(row["labels"][1:] != IGNORE_INDEX) + 1
            start = 0 if not answers.size or answers[0] < length else int(answers[0]) - length // 2
            cut = {name: values[start : start + length] for name, values in row.items() if name != "seq_lengths"}
            if "seq_lengths" in row:  # packed: the examples that the window keeps, the first maybe cut (rotary positions are relative)
                bounds = np.clip(np.r_[0, np.cumsum(row["seq_lengths"])] - start, 0, min(length, int(row["attention_mask"].sum()) - start))
                cut["seq_lengths"] = np.diff(bounds)[np.diff(bounds) > 0]
                if start and cut["seq_lengths"].size:  # the cut first example counts its positions from the window's start
                    first = int(cut["seq_lengths"][0])
                    cut["position_ids"] = np.r_[np.arange(first), cut["position_ids"][first:]].astype(cut["position_ids"].dtype)
        trains = cut["labels"] if seq2seq else cut["labels"][1:]
        if (trains != IGNORE_INDEX).any():
            for name, values in cut.items():
                kept[name].append(values)
    return pa.RecordBatch.from_arrays([pa.array(kept[name], type=rows.schema.field(name).type) for name in columns], schema=rows.schema)


def _window_length(settings: Settings, vocab: int, rows: int) -> int:
    """Tokens per row so that a batch's logits stay within the budget: 128 a row for the demo
    tokenizer's 4,096 ids and 8 rows, never under 32 (256 tokens, 155 MB of logits for Qwen2's 151k)."""
    return max(32, settings.logit_budget // (vocab * max(rows, 1)))


def _tokens(sample: pa.RecordBatch, seq2seq: bool) -> int:
    """Tokens a step reads: the real (attended) input tokens, plus a seq2seq row's target."""
    real = int(sample.column("attention_mask").flatten().to_numpy().sum())
    return real + (int((sample.column("labels").flatten().to_numpy() != IGNORE_INDEX).sum()) if seq2seq else 0)


def _to(batch: Batch, device: torch.device) -> Batch:
    return {name: value.to(device) if isinstance(value, torch.Tensor) else value for name, value in batch.items()}


def _autocast(device: torch.device, bf16: bool) -> Callable[[], AbstractContextManager]:
    return (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else nullcontext


def _verdict(check: dict, problem: str | None) -> dict:
    return {**check, "passed": problem is None, **({"problem": problem} if problem else {})}

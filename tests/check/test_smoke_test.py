"""The smoke-test stage on finished runs of the real job: every check passes on good shards with its
numbers recorded, and each check fails, in one sentence, on a model or shards that break it.

Flash varlen attention runs on CUDA only; here its wiring (cu_seqlens from position_ids, the
transformers attention function) runs over a reference kernel that loops over the cu_seqlens
segments with sdpa, and kernels that are wrong in the ways a real one could be must fail check 4.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from contextlib import nullcontext
from pathlib import Path

import pyarrow as pa
import pytest
import torch

from finished_runs import write_inputs
from masked_shards.cli import main
from masked_shards.config import ConfigError
from masked_shards.check.loader import flattened_batch, padded_batch, read_rows, shard_files
from masked_shards.check.smoke_test import FLASH_VARLEN, Settings, _windows, SmokeTestFailed, check_attention_implementations, check_masked_loss, check_masked_no_gradient, check_packed_equals_unpacked, device_for, run_stage, steady, summary_line, tiny_model
from masked_shards.check.varlen_attention import FLASH_VARLEN_INTERFACE, cu_seqlens, register_varlen_attention, torch_varlen_kernel

CHECKS = ["learns", "masked_loss", "masked_no_gradient", "packed_equals_unpacked", "token_ids"]


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread, as the stage itself uses on the CPU (run_stage): with more, OpenMP threads
    spin-waiting on this busy 2-core machine make these tests many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _one_sentence(text: str) -> bool:
    return "\n" not in text.strip() and not re.search(r"\.\s+[A-Z]", text)


def test_unpadded_decoder_shards_pass_every_check_with_its_numbers(shard_run, capsys):
    output = shard_run("decoder")
    capsys.readouterr()  # the run's own report
    assert main(["smoke-test", str(output), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    result = json.loads((output / "smoke_test.json").read_text())
    assert result["passed"] and result["device"] == "cpu" and sorted(result["checks"]) == CHECKS
    assert printed.startswith("smoke test passed on cpu in ") and _one_sentence(printed)
    assert (result["model"]["family"], result["model"]["vocab_size"]) == ("llama", 4096)
    checks = result["checks"]
    assert checks["token_ids"]["rows_used"] == 8 and checks["token_ids"]["max_token_id"] < 4096
    loss = checks["masked_loss"]
    assert loss["abs_diff"] < 1e-4 and loss["supervised_tokens"] > 0 and 7 < loss["model_loss"] < 9.5  # about ln(4096) = 8.3 at random init
    assert checks["masked_no_gradient"]["masked_positions"] > 0 and checks["masked_no_gradient"]["max_gradient_diff"] == 0.0
    learns = checks["learns"]
    assert learns["steps"] == Settings().steps == len(learns["losses"]) and learns["drop"] >= 0.3 and learns["tokens_per_second"] > 0
    assert learns["final_loss"] == pytest.approx(learns["initial_loss"] * (1 - learns["drop"]))
    packing = checks["packed_equals_unpacked"]
    assert packing["sequences_from"] == "unpacked rows laid end to end (padding-free)" and packing["sequences"] >= 4 and packing["max_abs_diff"] < 1e-4
    sdpa = packing["attention"]["sdpa"]
    assert sdpa["ran"] and sdpa["max_abs_diff"] == packing["max_abs_diff"] and sdpa["steps"] == Settings().attention_steps and sdpa["drop"] >= 0.1 and sdpa["tokens_per_second"] > 0
    assert packing["attention"][FLASH_VARLEN] == {"ran": False, "why": "PyTorch has FlashAttention varlen kernels on CUDA only"}
    assert f"; packed = alone for {packing['sequences']} examples: sdpa max diff " in printed and printed.rstrip().endswith(", flash_varlen not run (PyTorch has FlashAttention varlen kernels on CUDA only)")


def test_packed_shards_give_each_example_inside_a_row_its_loss_alone(shard_run):
    result = run_stage(str(shard_run("packed")), "cpu")
    packing = result["checks"]["packed_equals_unpacked"]
    assert result["shards"]["packed"] and packing["sequences_from"] == "packed rows"
    assert packing["sequences"] > result["checks"]["token_ids"]["rows_used"]  # several examples a row
    assert packing["max_abs_diff"] < 1e-4 and packing["cu_seqlens_match_seq_lengths"] and result["passed"]
    assert not packing["attention"][FLASH_VARLEN]["ran"]


def test_seq2seq_shards_train_a_t5_style_model(shard_run):
    result = run_stage(str(shard_run("seq2seq")), "cpu")
    assert result["passed"] and result["model"]["family"] == "t5" and result["shards"]["model_type"] == "seq2seq"
    assert result["checks"]["masked_loss"]["abs_diff"] < 1e-4 and result["checks"]["learns"]["drop"] >= 0.3
    assert result["checks"]["packed_equals_unpacked"] == {"passed": True, "skipped": "seq2seq rows are not packed"}


def _rows(output: Path) -> tuple:
    raw = next(read_rows(shard_files(str(output)), 4))
    return padded_batch(raw), flattened_batch(raw)


def test_a_loss_that_trains_on_masked_positions_fails_checks_1_and_2(shard_run):
    batch, _ = _rows(shard_run("decoder"))
    model = tiny_model(False, 4096, torch.device("cpu"))
    model.loss_function = lambda logits, labels, vocab_size, **_: torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, vocab_size).float(), batch["input_ids"][:, 1:].reshape(-1))  # every token a target
    loss = check_masked_loss(model, batch, False, 1e-4)
    assert not loss["passed"] and loss["problem"].startswith("the model's loss ") and "is not the masked cross-entropy" in loss["problem"]
    gradient = check_masked_no_gradient(model, batch, False, 1e-6)
    assert not gradient["passed"] and gradient["max_gradient_diff"] > 1e-3
    assert gradient["problem"].endswith("so masked positions carry gradient")


def test_examples_that_see_each_other_in_a_packed_row_fail_check_4(shard_run):
    _, flat = _rows(shard_run("packed"))
    model = tiny_model(False, 4096, torch.device("cpu"))
    model.config.use_cache = True  # transformers then keeps no block-diagonal mask: examples attend across the row
    check = check_packed_equals_unpacked(model, flat, True, 1e-4, 16, nullcontext)
    assert not check["passed"] and check["max_abs_diff"] > 1e-2
    assert check["problem"].endswith("so examples in a row see each other")


def test_a_failed_check_writes_its_numbers_raises_one_sentence_and_keeps_the_shards(shard_run):
    output = shard_run("decoder")
    shards = {path: Path(path).read_bytes() for path in shard_files(str(output))}
    with pytest.raises(SmokeTestFailed) as failed:
        run_stage(str(output), "cpu", Settings(steps=2, min_loss_drop=0.99))
    message = str(failed.value)
    assert re.fullmatch(rf"smoke test failed: the loss fell only \d+% in 2 steps \([\d.]+ to [\d.]+\), less than the 99% required \(details in {re.escape(str(output))}/smoke_test.json\)", message)
    result = json.loads((output / "smoke_test.json").read_text())
    assert not result["passed"] and not result["checks"]["learns"]["passed"] and result["checks"]["masked_loss"]["passed"]
    assert {path: Path(path).read_bytes() for path in shards} == shards


def test_token_ids_beyond_the_vocabulary_fail_on_the_command_line_before_any_model_is_built(shard_run, tmp_path, capsys):
    copy = tmp_path / "out"
    shutil.copytree(shard_run("decoder"), copy)
    capsys.readouterr()
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["tokenizer"]["vocab_size"] = 100
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert main(["smoke-test", str(copy), "--device", "cpu"]) == 1
    error = capsys.readouterr().err
    assert re.fullmatch(rf"masked-shards: smoke test failed: token id \d+ is outside the tokenizer's vocabulary of 100 \(details in {re.escape(str(copy))}/smoke_test.json\)\n", error)
    assert list(json.loads((copy / "smoke_test.json").read_text())["checks"]) == ["token_ids"]


def test_a_folder_without_a_finished_run_is_a_config_error(tmp_path, capsys):
    assert main(["smoke-test", str(tmp_path), "--device", "cpu"]) == 2
    assert capsys.readouterr().err == f"masked-shards: {tmp_path} has no manifest.json, so it holds no finished masked-shards run\n"


def test_cuda_without_a_gpu_is_refused_before_any_data_flows(tmp_path, capsys):
    if torch.cuda.is_available():
        assert device_for("cuda").type == "cuda" and device_for("auto").type == "cuda"
        return
    assert device_for("auto").type == "cpu"
    with pytest.raises(ConfigError, match="^--smoke-test cuda needs a CUDA GPU and torch sees none; use --smoke-test cpu, auto or off$"):
        device_for("cuda")
    output = tmp_path / "out"
    assert main(["run", "--input", str(write_inputs(tmp_path, "decoder")), "--output", str(output), "--smoke-test", "cuda"]) == 2
    assert capsys.readouterr().err == "masked-shards: --smoke-test cuda needs a CUDA GPU and torch sees none; use --smoke-test cpu, auto or off\n"
    assert not output.exists()


def test_overwrite_replaces_an_earlier_runs_smoke_test_result(shard_run, tmp_path):
    copy = tmp_path / "out"
    shutil.copytree(shard_run("decoder"), copy)
    (copy / "smoke_test.json").write_text('{"passed": true}\n')
    assert main(["run", "--input", str(write_inputs(tmp_path, "decoder")), "--output", str(copy), "--overwrite", "--smoke-test", "off"]) == 0
    assert not (copy / "smoke_test.json").exists()


def test_a_run_ends_with_the_smoke_test_stage(tmp_path, capsys):
    output = tmp_path / "out"
    assert main(["run", "--input", str(write_inputs(tmp_path, "decoder")), "--output", str(output), "--smoke-test", "cpu"]) == 0
    assert "smoke test passed on cpu in " in capsys.readouterr().out
    result = json.loads((output / "smoke_test.json").read_text())
    assert result["passed"]
    # ... and its checks are in the coverage report, whose files the manifest lists as they now are.
    assert json.loads((output / "coverage_report.json").read_text())["smoke_test"] == steady(result)  # the timings stay in smoke_test.json
    for page in ("coverage_report.md", "coverage_report.html"):
        text = (output / page).read_text()
        assert "Smoke test" in text and all(name in text for name in result["checks"])
    assert (output / "coverage_report.html").read_text().count('id="smoke-test"') == 1
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["smoke_test"]["passed"] is True
    for entry in manifest["report_files"]:
        data = (output / entry["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"] and len(data) == entry["bytes"]
    assert main(["smoke-test", str(output), "--device", "cpu"]) == 0  # again: its table replaced, not repeated
    assert (output / "coverage_report.html").read_text().count('id="smoke-test"') == 1


def _reference_kernel(query, key, value, bounds, longest, scale, causal=True):
    """What a varlen kernel computes, slowly: sdpa on each cu_seqlens segment alone."""
    edges = bounds.tolist()
    assert longest == max(b - a for a, b in zip(edges[:-1], edges[1:])) and bounds.dtype == torch.int32
    pieces = [torch.nn.functional.scaled_dot_product_attention(*(x[a:b].transpose(0, 1) for x in (query, key, value)), is_causal=causal, scale=scale) for a, b in zip(edges[:-1], edges[1:])]
    return torch.cat([piece.transpose(0, 1) for piece in pieces])


KERNELS = {
    "reference": _reference_kernel,
    "one_segment": lambda q, k, v, bounds, longest, scale: _reference_kernel(q, k, v, bounds[[0, -1]], q.shape[0], scale),  # cu_seqlens lost: the row is one example
    "not_causal": lambda *args: _reference_kernel(*args, causal=False),
}


def _varlen_model(kernel: str) -> torch.nn.Module:
    return tiny_model(False, 4096, torch.device("cpu"), attention=register_varlen_attention(f"test_varlen_{kernel}", KERNELS[kernel]))


def test_cu_seqlens_start_an_example_where_position_ids_restart_and_at_every_row():
    bounds, longest = cu_seqlens(torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2, 3]]))
    assert bounds.tolist() == [0, 3, 5, 9] and bounds.dtype == torch.int32 and longest == 4
    bounds, longest = cu_seqlens(torch.tensor([[5, 6, 0, 1], [0, 0, 1, 2]]))  # a row cut inside an example; a one-token example
    assert bounds.tolist() == [0, 2, 4, 5, 8] and longest == 3


def test_cu_seqlens_from_a_packed_shards_position_ids_are_its_seq_lengths(shard_run):
    raw = next(read_rows(shard_files(str(shard_run("packed"))), 4))
    flat = flattened_batch(raw)
    bounds, longest = cu_seqlens(flat["position_ids"])
    assert len(bounds) - 1 > raw.num_rows  # several examples a row
    assert torch.equal(bounds, flat["cu_seq_lens"]) and longest == flat["max_seq_len"]


def test_varlen_attention_over_a_reference_kernel_is_sdpa_and_keeps_packed_examples_apart(shard_run):
    _, flat = _rows(shard_run("packed"))
    varlen, sdpa = _varlen_model("reference"), tiny_model(False, 4096, torch.device("cpu"))
    inputs = {"input_ids": flat["input_ids"], "position_ids": flat["position_ids"]}
    with torch.no_grad():
        assert torch.allclose(varlen(**inputs).logits, sdpa(**inputs).logits, atol=1e-5)
    check = check_packed_equals_unpacked(varlen, flat, True, 1e-4, 16, nullcontext)
    assert check["passed"] and check["max_abs_diff"] < 1e-4 and check["sequences"] > 4
    padded, _ = _rows(shard_run("decoder"))
    assert not padded["attention_mask"].all()
    with pytest.raises(ValueError, match="^varlen attention takes padding-free rows with position_ids, no attention mask and no dropout$"):
        varlen(**padded)


def test_a_varlen_kernel_told_one_segment_lets_examples_see_each_other_and_fails_check_4(shard_run):
    _, flat = _rows(shard_run("packed"))
    check = check_packed_equals_unpacked(_varlen_model("one_segment"), flat, True, 1e-4, 16, nullcontext)
    assert not check["passed"] and check["max_abs_diff"] > 1e-2 and check["problem"].endswith("so examples in a row see each other")


def test_the_name_the_stage_registers_builds_a_model_and_runs_its_kernel(shard_run):
    """transformers takes an attention name holding "flash" for a hub kernel to download and
    refuses it offline (an H200 run recorded that error for every shard); the stage's own name
    must build a model that calls the registered kernel."""
    calls = []

    def counting(*args):
        calls.append(1)
        return _reference_kernel(*args)

    _, flat = _rows(shard_run("packed"))
    model = tiny_model(False, 4096, torch.device("cpu"), attention=register_varlen_attention(FLASH_VARLEN_INTERFACE, counting))
    with torch.no_grad():
        model(input_ids=flat["input_ids"], position_ids=flat["position_ids"])
    assert calls


def test_a_packed_row_whose_answers_lie_past_the_window_is_cut_before_its_first_answer():
    """Two packed examples of 40 and 30 tokens whose first answer starts at token 35, in a
    32-token window (Qwen2's vocabulary): the window starts 16 tokens before the answer, keeps
    it, and its cut first example counts positions from 0, so the examples found from the
    restarting position ids are the recounted seq_lengths."""
    ids = list(range(1, 71))
    labels = [-100] * 35 + ids[35:40] + [-100] * 10 + ids[50:70]
    positions = list(range(40)) + list(range(30))
    schema = pa.schema([(name, pa.list_(pa.int32())) for name in ("input_ids", "labels", "attention_mask", "position_ids", "seq_lengths")])
    rows = pa.RecordBatch.from_pylist([{"input_ids": ids, "labels": labels, "attention_mask": [1] * 70, "position_ids": positions, "seq_lengths": [40, 30]}], schema=schema)
    cut = _windows(rows, 32, False).to_pylist()
    assert len(cut) == 1
    (row,) = cut
    assert row["input_ids"] == ids[19:51] and row["seq_lengths"] == [21, 11]
    assert row["position_ids"] == list(range(21)) + list(range(11))
    assert any(label != -100 for label in row["labels"][1:])
    bounds, _ = cu_seqlens(torch.tensor([row["position_ids"]]))
    assert bounds.tolist() == [0, 21, 32]


def _attention_check(shard_run, kernel, settings: Settings = Settings()) -> dict:
    _, flat = _rows(shard_run("packed"))
    return check_attention_implementations({"sdpa": "sdpa", FLASH_VARLEN: register_varlen_attention(f"test_varlen_{kernel}", KERNELS[kernel])}, {}, flat, True, 4096, settings, False)


def test_check_4_runs_every_attention_implementation_and_records_each(shard_run):
    check = _attention_check(shard_run, "reference")
    sdpa, varlen = check["attention"]["sdpa"], check["attention"][FLASH_VARLEN]
    assert check["passed"] and check["cu_seqlens_match_seq_lengths"] and varlen["ran"] and varlen["attn_implementation"] == "test_varlen_reference"
    assert varlen["hidden_states_vs_reference"] < 1e-5 and varlen["reference"] == "sdpa" and "hidden_states_vs_reference" not in sdpa
    for entry in (sdpa, varlen):
        assert entry["max_abs_diff"] < 1e-4 and entry["sequences"] == check["sequences"] > 4 and entry["steps"] == 8 and entry["drop"] >= 0.1 and entry["tokens_per_second"] > 0
    assert varlen["initial_loss"] == pytest.approx(sdpa["initial_loss"], abs=1e-4) and varlen["final_loss"] == pytest.approx(sdpa["final_loss"], abs=1e-3)
    line = summary_line({"device": "cpu", "seconds": 1.0, "checks": {"masked_loss": {"abs_diff": 0.0}, "learns": {"initial_loss": 8.0, "final_loss": 4.0, "drop": 0.5, "steps": 24, "tokens_per_second": 1.0}, "packed_equals_unpacked": check}})
    assert re.search(rf"packed = alone for {check['sequences']} examples: sdpa max diff [\d.e+-]+, [\d,]+ tokens/s, flash_varlen max diff [\d.e+-]+, [\d,]+ tokens/s, hidden states [\d.e+-]+ from sdpa's$", line)


def test_a_varlen_kernel_that_is_not_causal_keeps_examples_apart_but_fails_check_4_against_sdpa(shard_run):
    check = _attention_check(shard_run, "not_causal")
    varlen = check["attention"][FLASH_VARLEN]
    assert varlen["max_abs_diff"] < 1e-4  # each example sees only itself, packed or alone: only sdpa tells
    assert not check["passed"] and varlen["hidden_states_vs_reference"] > 0.1
    assert check["problem"].startswith("with flash_varlen attention the padding-free rows' last hidden states differ from the reference's by ")
    assert check["problem"].endswith("so the two do not compute the same attention")


def test_a_varlen_kernel_that_raises_is_recorded_with_its_error_and_sdpa_still_decides(shard_run):
    """As on a GPU that rejects the kernel; PyTorch's own varlen kernel has no CPU version, so here
    it raises once its arguments are accepted, at the FlashAttention operator."""
    def unsupported(*_):
        raise RuntimeError("FlashAttention only supports Ampere GPUs or newer.\nmore detail")

    _, flat = _rows(shard_run("packed"))
    run = {"sdpa": "sdpa", "fake": register_varlen_attention("test_varlen_raises", unsupported), FLASH_VARLEN: register_varlen_attention("test_torch_varlen_on_cpu", torch_varlen_kernel)}
    check = check_attention_implementations(run, {}, flat, True, 4096, Settings(attention_steps=2, attention_min_drop=0.0), False)
    assert check["passed"] and check["attention"]["sdpa"]["ran"]
    assert check["attention"]["fake"] == {"ran": False, "attn_implementation": "test_varlen_raises", "error": "RuntimeError: FlashAttention only supports Ampere GPUs or newer."}
    torch_kernel = check["attention"][FLASH_VARLEN]
    assert not torch_kernel["ran"] and torch_kernel["error"].startswith("NotImplementedError: Could not run 'aten::_flash_attention_forward' with arguments from the 'CPU' backend.")

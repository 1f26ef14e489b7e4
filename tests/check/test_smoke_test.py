"""The smoke-test stage on finished runs of the real job: every check passes on good shards with its
numbers recorded, and each check fails, in one sentence, on a model or shards that break it."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch

from finished_runs import write_inputs
from masked_shards.cli import main
from masked_shards.config import ConfigError
from masked_shards.check.loader import flattened_batch, padded_batch, read_rows, shard_files
from masked_shards.check.smoke_test import Settings, SmokeTestFailed, check_masked_loss, check_masked_no_gradient, check_packed_equals_unpacked, device_for, run_stage, tiny_model

CHECKS = ["learns", "masked_loss", "masked_no_gradient", "packed_equals_unpacked", "token_ids"]


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


def test_packed_shards_give_each_example_inside_a_row_its_loss_alone(shard_run):
    result = run_stage(str(shard_run("packed")), "cpu")
    packing = result["checks"]["packed_equals_unpacked"]
    assert result["shards"]["packed"] and packing["sequences_from"] == "packed rows"
    assert packing["sequences"] > result["checks"]["token_ids"]["rows_used"]  # several examples a row
    assert packing["max_abs_diff"] < 1e-4 and result["passed"]


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
    assert json.loads((output / "coverage_report.json").read_text())["smoke_test"] == result
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

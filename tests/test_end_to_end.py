"""`run_pipeline.py` as a user runs it, output read back with `datasets` and checked row by row."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import datasets
import pytest

from conftest import write_jsonl
from expected import SUPERVISED, supervised_runs
from masked_shards.cli import main

ROOT = Path(__file__).resolve().parent.parent

GOOD = [
    {"instruction": "Add 2 and 3.", "input": "", "output": "2 + 3 = 5"},
    {"prompt": "Capital of France?", "completion": " Paris. "},
    {"messages": [{"role": "system", "content": ""}, {"role": "user", "content": "Hi\n"}, {"role": "assistant", "content": "\nHello!"}, {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Ciao 👋"}]},
    {"conversations": [{"from": "human", "value": "Zähle bis drei"}, {"from": "gpt", "value": "eins, zwei, drei"}]},
]
ANSWERS = [["2 + 3 = 5"], [" Paris. "], ["\nHello!", "Ciao 👋"], ["eins, zwei, drei"]]
BAD = ["{not json", {"instruction": "no output"}, {"messages": [{"role": "user", "content": "only a question"}]}, {"prompt": "say <|im_end|>", "completion": "no"}]
BAD_REASONS = ["invalid_json", "missing_field", "no_assistant_turn", "special_token_in_text"]


def _run(*args: str, smoke_test: str = "off") -> subprocess.CompletedProcess:
    """`run_pipeline.py ARGS`; the smoke-test stage only where a test asks for it (it has its own tests)."""
    return subprocess.run([sys.executable, str(ROOT / "run_pipeline.py"), *args, "--smoke-test", smoke_test], capture_output=True, text=True, cwd=ROOT, timeout=300)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("inputs")
    write_jsonl(folder / "good.jsonl", GOOD)
    write_jsonl(folder / "bad.jsonl", BAD)
    (folder / "array.json").write_text(json.dumps(GOOD[:2]), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def finished(inputs, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("run") / "out"
    result = _run("--input", str(inputs / "*.jsonl"), "--input", str(inputs / "array.json"), "--template", "chatml", "--max-length", "512", "--output", str(output))
    assert result.returncode == 0, result.stderr
    return output


def test_rows_load_with_datasets_and_supervise_exactly_the_answers(finished, demo_tokenizer):
    table = datasets.load_dataset("parquet", data_dir=str(finished / "data"))["train"]
    expected = {f"good.jsonl:{n}": a for n, a in enumerate(ANSWERS)} | {f"array.json:{n}": a for n, a in enumerate(ANSWERS[:2])}
    assert sorted(table["example_id"]) == sorted(expected)
    for row in table:
        assert len(row["input_ids"]) == len(row["labels"]) == len(row["attention_mask"])
        decoded = [demo_tokenizer.decode(run, clean_up_tokenization_spaces=False) for run in supervised_runs(row["input_ids"], row["labels"])]
        assert decoded == [SUPERVISED["chatml"](a) for a in expected[row["example_id"]]], row["example_id"]
        assert row["source"] == ("array.json" if row["example_id"].startswith("array.json:") else "*.jsonl")  # a glob's files are one source


def test_bad_records_are_kept_with_reason_and_location(finished):
    lines = [json.loads(line) for line in (finished / "rejected" / "rejected.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [(r["source"], r["index"], r["reason"]) for r in lines] == [("bad.jsonl", n, reason) for n, reason in enumerate(BAD_REASONS)]
    assert lines[1]["raw"] == BAD[1]


def test_report_and_manifest_account_for_every_record(finished):
    report = json.loads((finished / "coverage_report.json").read_text())
    assert report["records_read"] == len(GOOD) + len(BAD) + 2
    assert report["rows_written"] == len(GOOD) + 2 and report["rejected"] == len(BAD)
    assert report["rejected_by_reason"] == {reason: 1 for reason in BAD_REASONS}
    manifest = json.loads((finished / "manifest.json").read_text())
    counts = manifest["counts"]  # what a consumer checks the shards against; the rest is in the report
    assert counts["report"] == "coverage_report.json" and "distributions" not in counts and "by_source" not in counts
    assert {key: counts[key] for key in ("records_read", "rows_written", "rows_by_split", "tokens_supervised", "rejected_by_reason")} == {key: report[key] for key in ("records_read", "rows_written", "rows_by_split", "tokens_supervised", "rejected_by_reason")}
    assert manifest["template"]["name"] == "chatml" and manifest["tokenizer"]["vocab_size"] == 4096
    assert [f["name"] for f in manifest["schema"]] == ["input_ids", "labels", "attention_mask", "example_id", "source"]
    import hashlib

    for shard in manifest["shards"]:
        data = (finished / shard["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == shard["sha256"] and len(data) == shard["bytes"]
    assert sum(s["rows"] for s in manifest["shards"]) == report["rows_written"]


def test_same_input_gives_byte_identical_output_even_in_parallel(finished, inputs, tmp_path):
    again = tmp_path / "again"
    args = ["--input", str(inputs / "*.jsonl"), "--input", str(inputs / "array.json"), "--max-length", "512", "--output", str(again)]
    result = _run(*args, "--direct_num_workers", "2", "--direct_running_mode", "multi_processing")
    assert result.returncode == 0, result.stderr
    files = sorted(p.relative_to(finished) for p in finished.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for name in files:
        assert (finished / name).read_bytes() == (again / name).read_bytes(), name


def test_non_empty_output_is_refused_without_overwrite(finished, inputs):
    result = _run("--input", str(inputs / "good.jsonl"), "--output", str(finished))
    assert result.returncode == 2
    assert result.stderr.strip() == f"masked-shards: --output {finished} is not empty; pass --overwrite to replace it"


def test_overwrite_replaces_an_earlier_run(inputs, tmp_path):
    output = tmp_path / "out"
    first = _run("--input", str(inputs / "good.jsonl"), "--output", str(output), "--num-shards", "3")
    assert first.returncode == 0, first.stderr
    second = _run("--input", str(inputs / "good.jsonl"), "--output", str(output), "--overwrite", "--template", "llama3", "--validation-fraction", "0.5", "--pad-to", "multiple:8")
    assert second.returncode == 0, second.stderr
    assert sorted(p.name for p in (output / "data").iterdir()) == ["train-00000-of-00001.parquet", "validation-00000-of-00001.parquet"]
    splits = datasets.load_dataset("parquet", data_dir=str(output / "data"))
    assert splits["train"].num_rows + splits["validation"].num_rows == len(GOOD)
    assert all(len(ids) % 8 == 0 for ids in splits["train"]["input_ids"])


def test_fail_fast_stops_at_the_first_bad_record_with_its_location(inputs, tmp_path):
    result = _run("--input", str(inputs / "bad.jsonl"), "--output", str(tmp_path / "out"), "--fail-fast")
    assert result.returncode == 1
    assert "record bad.jsonl:" in result.stderr and "stopping because of --fail-fast" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_config_error_is_one_sentence_without_traceback(inputs, tmp_path):
    result = _run("--input", str(inputs / "good.jsonl"), "--output", str(tmp_path / "o"), "--template", "chatml3")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("masked-shards: unknown template 'chatml3'; choose one of ") and line.endswith(", tokenizer, or a path to a .jinja file")
    assert "chatml, " in line and "llama3, " in line


@pytest.mark.parametrize(
    "args,message",
    [
        (["--input", "/nonexistent/*.jsonl"], "--input /nonexistent/*.jsonl matches no file"),
        (["--max-length", "abc"], "Argument --max-length: invalid int value: 'abc'."),
        (["--max-length", "1"], "--max-length must be at least 2, not 1"),
        (["--tokenizer", "/nonexistent/tok"], "tokenizer folder /nonexistent/tok does not exist"),
        (["--maxlength", "5"], "Unknown flag --maxlength; see masked-shards run --help."),
        (["--format", "csv"], "--format must be one of auto, alpaca, prompt_completion, messages, sharegpt, translation, text, not 'csv'"),
    ],
)
def test_bad_flags_fail_at_start(args, message, inputs, tmp_path, capsys):
    code = main(["run", "--smoke-test", "off", "--input", str(inputs / "good.jsonl"), "--output", str(tmp_path / "o"), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0]


def test_tokenizer_template_runs_end_to_end(inputs, tmp_path, demo_tokenizer):
    output = tmp_path / "out"
    result = _run("--input", str(inputs / "good.jsonl"), "--template", "tokenizer", "--output", str(output))
    assert result.returncode == 0, result.stderr
    table = datasets.load_dataset("parquet", data_dir=str(output / "data"))["train"]
    by_id = {row["example_id"]: row for row in table}
    for n, answers in enumerate(ANSWERS):
        row = by_id[f"good.jsonl:{n}"]
        decoded = [demo_tokenizer.decode(run, clean_up_tokenization_spaces=False) for run in supervised_runs(row["input_ids"], row["labels"])]
        assert decoded == [SUPERVISED["chatml"](a) for a in answers]


def test_counts_that_do_not_reconcile_fail_the_run_and_leave_no_manifest(inputs, tmp_path):
    """A runner that lost a row (the shards hold fewer rows than were produced) must fail."""
    from masked_shards.config import PipelineConfig
    from masked_shards.beam.job import FinalizeFn, plan
    from masked_shards.report.label_coverage import Coverage
    from conftest import Row, row_batch

    config = PipelineConfig(inputs=(str(inputs / "good.jsonl"),), output=str(tmp_path / "out"))
    coverage = Coverage()
    coverage.add_batch(row_batch([Row(f"good.jsonl:{n}", "good.jsonl", "train", [1, 2], [-100, 2], [1, 1]) for n in range(2)]))
    shard = {"path": "data/train-00000-of-00001.parquet", "split": "train", "index": 0, "rows": 1, "bytes": 0, "sha256": ""}
    with pytest.raises(RuntimeError, match="records do not reconcile: read 2 != written 1"):
        list(FinalizeFn(plan(config)).process(None, [shard], [], [], coverage, 2, []))
    assert not (tmp_path / "out" / "manifest.json").exists()
    assert json.loads((tmp_path / "out" / "coverage_report.json").read_text())["rows_written"] == 1

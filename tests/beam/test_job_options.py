"""The job's input kinds and training modes, through the real command line and Beam runner."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import write_jsonl
from expected import supervised_runs
from masked_shards.cli import main

CHAT = {"messages": [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"}, {"role": "user", "content": "Q2"}, {"role": "assistant", "content": "A2"}]}


def _run(tmp_path: Path, *args: str) -> Path:
    output = tmp_path / "out"
    assert main(["run", "--smoke-test", "off", "--output", str(output), "--overwrite", *args]) == 0
    return output


def _rows(output: Path) -> list[dict]:
    return list(datasets.load_dataset("parquet", data_dir=str(output / "data"))["train"])


def _report(output: Path) -> dict:
    return json.loads((output / "coverage_report.json").read_text())


def _decoded(tokenizer, row: dict) -> list[str]:
    return [tokenizer.decode(run, clean_up_tokenization_spaces=False) for run in supervised_runs(row["input_ids"], row["labels"])]


def test_every_input_kind_in_one_job_with_named_sources(tmp_path):
    records = [{"prompt": f"p{n}", "completion": f"c{n}"} for n in range(3)]
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "a.parquet")
    (tmp_path / "b.csv").write_text("prompt,completion\n" + "".join(f"p{n},c{n}\n" for n in range(3)))
    datasets.Dataset.from_list(records).save_to_disk(str(tmp_path / "saved"))
    splits = datasets.DatasetDict({"train": datasets.Dataset.from_list(records[:2]), "test": datasets.Dataset.from_list(records[2:])})
    splits.save_to_disk(str(tmp_path / "splits"))
    (tmp_path / "hub").mkdir()
    write_jsonl(tmp_path / "hub" / "train.jsonl", records)
    output = _run(
        tmp_path,
        "--input", f"pq={tmp_path / 'a.parquet'}",
        "--input", f"csv={tmp_path / 'b.csv'}",
        "--input", f"disk={tmp_path / 'saved'}",
        "--input", f"hub=hf:{tmp_path / 'hub'}",
        "--input", str(tmp_path / "splits"),
    )
    rows = _rows(output)
    named = sorted((r["source"], r["example_id"].rsplit(":", 1)[1]) for r in rows if r["source"] in ("pq", "csv", "disk", "hub"))
    assert named == sorted((s, str(n)) for s in ("pq", "csv", "disk", "hub") for n in range(3))
    assert sorted(r["example_id"] for r in rows if r["source"] not in ("pq", "csv", "disk", "hub")) == ["splits/test:0", "splits/train:0", "splits/train:1"]
    assert set(_report(output)["by_source"]) == {"pq", "csv", "disk", "hub", "splits/train", "splits/test"}


def test_mix_down_samples_to_the_weights_deterministically(tmp_path, demo_tokenizer):
    write_jsonl(tmp_path / "big.jsonl", [{"prompt": f"b{n}", "completion": "x"} for n in range(400)])
    write_jsonl(tmp_path / "small.jsonl", [{"prompt": f"s{n}", "completion": "y"} for n in range(100)])
    args = ["--input", f"big={tmp_path / 'big.jsonl'}", "--input", f"small={tmp_path / 'small.jsonl'}", "--mix", "big=0.5,small=0.5", "--seed", "3"]
    first = sorted(r["example_id"] for r in _rows(_run(tmp_path, *args)))
    report = _report(tmp_path / "out")
    assert report["by_source"]["small"]["rows"] == 100
    assert 70 <= report["by_source"]["big"]["rows"] <= 130
    assert report["sampled_out"] == 400 - report["by_source"]["big"]["rows"]
    assert first == sorted(r["example_id"] for r in _rows(_run(tmp_path, *args)))


def test_mix_must_weigh_every_source(tmp_path, capsys):
    write_jsonl(tmp_path / "a.jsonl", [{"prompt": "p", "completion": "c"}])
    code = main(["run", "--smoke-test", "off", "--input", f"a={tmp_path / 'a.jsonl'}", "--mix", "a=1,b=1", "--output", str(tmp_path / "o")])
    assert code == 2 and "--mix must give a weight to every source" in capsys.readouterr().err


@pytest.mark.parametrize(
    "mode,expected",
    [
        ([], ["A1<|im_end|>", "A2<|im_end|>"]),
        (["--train-on", "last"], ["A2<|im_end|>"]),
        (["--no-train-on-eot"], ["A1", "A2"]),
        (["--train-on", "last", "--no-train-on-eot"], ["A2"]),
    ],
)
def test_train_on_modes(tmp_path, demo_tokenizer, mode, expected):
    write_jsonl(tmp_path / "chat.jsonl", [CHAT])
    (row,) = _rows(_run(tmp_path, "--input", str(tmp_path / "chat.jsonl"), *mode))
    assert _decoded(demo_tokenizer, row) == expected


def test_train_on_all_supervises_every_token(tmp_path):
    write_jsonl(tmp_path / "chat.jsonl", [CHAT])
    (row,) = _rows(_run(tmp_path, "--input", str(tmp_path / "chat.jsonl"), "--train-on", "all"))
    assert row["labels"] == row["input_ids"]


def test_text_format_trains_on_every_token_with_eos_between_documents(tmp_path, demo_tokenizer):
    write_jsonl(tmp_path / "docs.jsonl", [{"text": "First document."}, {"text": "Second one, longer."}])
    rows = _rows(_run(tmp_path, "--input", str(tmp_path / "docs.jsonl"), "--format", "text"))
    for row in rows:
        assert row["labels"] == row["input_ids"] and row["input_ids"][-1] == demo_tokenizer.eos_token_id
    assert sorted(demo_tokenizer.decode(r["input_ids"]) for r in rows) == ["First document.<|im_end|>", "Second one, longer.<|im_end|>"]


def test_field_role_and_system_prompt_options(tmp_path, demo_tokenizer):
    write_jsonl(tmp_path / "odd.jsonl", [{"dialog": [{"who": "person", "said": "hi"}, {"who": "bot", "said": "hello"}]}])
    args = ["--field", "conversations=dialog", "--field", "from=who", "--field", "value=said", "--role-map", "person=user,bot=assistant", "--system-prompt", "Be brief."]
    (row,) = _rows(_run(tmp_path, "--input", str(tmp_path / "odd.jsonl"), *args))
    assert demo_tokenizer.decode(row["input_ids"]).startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi")
    assert _decoded(demo_tokenizer, row) == ["hello<|im_end|>"]


def test_decoder_only_translation_supervises_only_the_target(tmp_path, demo_tokenizer):
    pairs = [{"en": "Good morning .", "de": "Guten Morgen ."}, {"en": "Thanks", "de": "&quot; ..."}, {"en": "", "de": "leer"}, {"en": "Yes", "de": "Ja, das ist absolut und ganz sicher so."}]
    write_jsonl(tmp_path / "wmt.jsonl", pairs)
    output = _run(tmp_path, "--input", str(tmp_path / "wmt.jsonl"), "--source-lang", "en", "--target-lang", "de", "--max-length-ratio", "5")
    (row,) = _rows(output)
    assert _decoded(demo_tokenizer, row) == ["Guten Morgen .<|im_end|>"]
    assert "Good morning ." in demo_tokenizer.decode(row["input_ids"])
    assert _report(output)["rejected_by_reason"] == {"empty_source": 1, "length_ratio": 1, "punctuation_only_target": 1}


def test_seq2seq_rows_from_line_aligned_files(tmp_path, demo_tokenizer):
    (tmp_path / "train.en").write_text("Good morning .\nThank you .\n")
    (tmp_path / "train.de").write_text("Guten Morgen .\nDanke .\n")
    output = _run(tmp_path, "--input-pair", str(tmp_path / "train.en"), str(tmp_path / "train.de"), "--model-type", "seq2seq", "--pad-to", "multiple:8", "--max-length", "64")
    rows = {r["example_id"]: r for r in _rows(output)}
    row = rows["train.en:0"]
    target = [t for t in row["labels"] if t != -100]
    assert demo_tokenizer.decode(target) == "Guten Morgen .<|im_end|>" and target[-1] == demo_tokenizer.eos_token_id
    assert demo_tokenizer.decode([t for t, a in zip(row["input_ids"], row["attention_mask"]) if a]) == "Good morning ."
    assert len(row["labels"]) % 8 == 0 and demo_tokenizer.pad_token_id not in target


def test_line_files_of_different_lengths_fail_at_start(tmp_path, capsys):
    (tmp_path / "a.txt").write_text("one\ntwo\n")
    (tmp_path / "b.txt").write_text("eins\n")
    code = main(["run", "--smoke-test", "off", "--input-pair", str(tmp_path / "a.txt"), str(tmp_path / "b.txt"), "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == f"masked-shards: --input-pair {tmp_path / 'a.txt'} has 2 lines but {tmp_path / 'b.txt'} has 1"


def test_template_file_from_the_user(tmp_path, demo_tokenizer):
    custom = tmp_path / "mine.jinja"
    custom.write_text("{% for m in messages %}{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] + '<|im_end|>' }}{% endgeneration %}{% else %}{{ m['role'] + ': ' + m['content'] + '\\n' }}{% endif %}{% endfor %}")
    write_jsonl(tmp_path / "chat.jsonl", [CHAT])
    (row,) = _rows(_run(tmp_path, "--input", str(tmp_path / "chat.jsonl"), "--template", str(custom)))
    assert demo_tokenizer.decode(row["input_ids"]).startswith("user: Q1\nA1<|im_end|>user: Q2\n")
    assert _decoded(demo_tokenizer, row) == ["A1<|im_end|>", "A2<|im_end|>"]


def test_templates_command_lists_and_shows(capsys):
    from masked_shards import bundled_templates as templates

    assert main(["templates"]) == 0
    listing = capsys.readouterr().out
    for name, description in templates.bundled().items():
        assert f"{name}  " in listing and description in listing
    assert main(["templates", "chatml"]) == 0
    assert "<|im_start|>assistant\n[[2 + 2 = 4.<|im_end|>]]\n" in capsys.readouterr().out


def test_broken_translation_prompt_fails_at_start(tmp_path, capsys):
    write_jsonl(tmp_path / "pairs.jsonl", [{"src": "a", "tgt": "b"}])
    (tmp_path / "bad.jinja").write_text("Translate {{ source_txt }}")
    code = main(["run", "--smoke-test", "off", "--input", str(tmp_path / "pairs.jsonl"), "--translate-template", str(tmp_path / "bad.jinja"), "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "source_txt" in err[0]


def test_train_on_last_means_the_final_assistant_turn_never_an_earlier_one(tmp_path, demo_tokenizer):
    untrained_last = json.loads(json.dumps(CHAT))
    untrained_last["messages"][3]["train"] = False
    write_jsonl(tmp_path / "chat.jsonl", [CHAT, untrained_last])
    output = _run(tmp_path, "--input", str(tmp_path / "chat.jsonl"), "--train-on", "last")
    (row,) = _rows(output)
    assert row["example_id"] == "chat.jsonl:0" and _decoded(demo_tokenizer, row) == ["A2<|im_end|>"]
    assert _report(output)["dropped_by_reason"] == {"no_supervised_tokens": 1}


@pytest.mark.parametrize(
    "mode,policy,words",
    [
        ([], ("assistant", True), ("every trainable assistant turn", "with their end-of-turn tokens")),
        (["--train-on", "last", "--no-train-on-eot"], ("last", False), ("final assistant turn", "without the end-of-turn token")),
        (["--train-on", "all"], ("all", True), ("every token", "prompt included")),
    ],
)
def test_manifest_records_what_was_trained(tmp_path, mode, policy, words):
    write_jsonl(tmp_path / "chat.jsonl", [CHAT])
    labels = json.loads((_run(tmp_path, "--input", str(tmp_path / "chat.jsonl"), *mode) / "manifest.json").read_text())["labels"]
    assert (labels["train_on"], labels["train_on_eot"]) == policy
    assert all(word in labels["trained_on"] for word in words)


@pytest.mark.parametrize("extra", [[], ["--model-type", "seq2seq"], ["--format", "translation"]])
def test_language_keyed_pairs_without_languages_fail_at_start(tmp_path, capsys, extra):
    write_jsonl(tmp_path / "wmt.jsonl", [{"en": "Hello.", "de": "Hallo."}, {"en": "Yes.", "de": "Ja."}])
    code = main(["run", "--smoke-test", "off", "--input", str(tmp_path / "wmt.jsonl"), "--output", str(tmp_path / "o"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and "keyed by language (de, en)" in err and "--source-lang" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_language_keyed_pairs_with_languages_still_run(tmp_path):
    write_jsonl(tmp_path / "wmt.jsonl", [{"en": "Hello.", "de": "Hallo."}])
    assert len(_rows(_run(tmp_path, "--input", str(tmp_path / "wmt.jsonl"), "--source-lang", "en", "--target-lang", "de"))) == 1


# --- start-up checks: the tokenizer, hf: inputs, --max-length against the model's -----------------


@pytest.mark.parametrize(
    "args,sentence",
    [
        (["--tokenizer", "./missing-folder"], "tokenizer folder ./missing-folder does not exist"),
        (["--tokenizer", "someorg/somemodel"], "tokenizer 'someorg/somemodel' "),
        (["--input", "hf:./no-such-dataset"], "--input hf:./no-such-dataset: dataset folder ./no-such-dataset does not exist"),
        (["--input", "hf:someorg/somedataset"], "--input hf:someorg/somedataset: dataset someorg/somedataset "),
        (["--input", "hf:{tmp}/hub::validation"], "--input hf:{tmp}/hub::validation: dataset {tmp}/hub has no split 'validation'; it has train"),
    ],
)
def test_missing_tokenizers_and_datasets_fail_at_start_in_one_sentence(tmp_path, capfd, args, sentence):
    """Hub ids too, with or without a network: offline, one request tells that the hub is out of
    reach (no retries for half a minute, none of their 45 log lines)."""
    write_jsonl(tmp_path / "hub" / "train.jsonl", [{"prompt": "p", "completion": "c"}])
    code = main(["run", "--smoke-test", "off", *(a.format(tmp=tmp_path) for a in args), "--output", str(tmp_path / "o")])
    err = capfd.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("masked-shards: " + sentence.format(tmp=tmp_path)), err


def test_max_length_above_the_models_is_refused_unless_allowed(tmp_path, capsys):
    from masked_shards.config import PipelineConfig
    from masked_shards.beam.job import plan

    write_jsonl(tmp_path / "chat.jsonl", [CHAT])
    args = ["--input", str(tmp_path / "chat.jsonl"), "--max-length", "100000", "--pad-to", "max_length", "--output", str(tmp_path / "o")]
    assert main(["run", "--smoke-test", "off", *args]) == 2
    assert capsys.readouterr().err == (
        "masked-shards: --max-length 100000 is above the tokenizer's model_max_length of 4096;"
        " use at most 4096, or pass --allow-max-length-above-model if the model takes longer rows\n"
    )
    allowed = PipelineConfig(inputs=(str(tmp_path / "chat.jsonl"),), max_length=100_000, allow_max_length_above_model=True, output=str(tmp_path / "o"))
    assert plan(allowed).config.max_length == 100_000

"""`masked-shards validate DIR`: a directory written by the real job passes, and each planted
corruption is caught, named with its shard and row, and exits 1. Packed shards are built by hand
with pyarrow in the layout the packer writes (seq_lengths, position_ids, example_ids)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import write_jsonl
from masked_shards.cli import main
from masked_shards.check.validation import validate_directory

RECORDS = [{"instruction": f"Say {n} twice.", "output": f"{n} {n}."} for n in range(24)] + [
    {"messages": [{"role": "user", "content": f"Hi {n}"}, {"role": "assistant", "content": f"Hello {n}!"}, {"role": "user", "content": "Again"}, {"role": "assistant", "content": "Hello again."}]} for n in range(8)
]
PAIRS = [{"en": f"The house number {n}.", "de": f"Das Haus Nummer {n}."} for n in range(6)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Two real jobs: padded decoder rows in two splits, and seq2seq rows."""
    folder = tmp_path_factory.mktemp("validate")
    out = {"decoder": folder / "decoder", "seq2seq": folder / "seq2seq"}
    chat = write_jsonl(folder / "chat.jsonl", RECORDS)
    assert main(["run", "--smoke-test", "off", "--input", str(chat), "--output", str(out["decoder"]), "--pad-to", "multiple:16", "--validation-fraction", "0.3"]) == 0
    pairs = write_jsonl(folder / "pairs.jsonl", PAIRS)
    assert main(["run", "--smoke-test", "off", "--input", str(pairs), "--output", str(out["seq2seq"]), "--model-type", "seq2seq", "--source-lang", "en", "--target-lang", "de", "--pad-to", "multiple:8"]) == 0
    return out


def _copy(source: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(source, tmp_path / "copy"))


def _train(directory: Path) -> Path:
    return directory / "data" / "train-00000-of-00001.parquet"


def _rewrite(path: Path, change) -> None:
    """Read a shard as Python rows, let `change` edit them, write them back with the same schema."""
    table = pq.read_table(path)
    rows = table.to_pylist()
    change(rows)
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)


def _first(rows: list[dict], wanted) -> int:
    return next(n for n, row in enumerate(rows) if wanted(row))


@pytest.mark.parametrize("kind", ["decoder", "seq2seq"])
def test_a_directory_written_by_the_job_passes(kind, runs, capsys):
    assert main(["validate", str(runs[kind])]) == 0
    out = capsys.readouterr().out
    assert "OK: no violation" in out
    manifest = json.loads((runs[kind] / "manifest.json").read_text())
    assert f"{manifest['counts']['rows_written']:,} rows" in out
    assert "manifest (" in out


def _flip_label(rows):
    n = _first(rows, lambda r: any(label != -100 for label in r["labels"]))
    at = next(i for i, label in enumerate(rows[n]["labels"]) if label != -100)
    rows[n]["labels"][at] = rows[n]["input_ids"][at] + 1
    return n


def _label_on_pad(rows):
    n = _first(rows, lambda r: 0 in r["attention_mask"])
    at = r_pad = rows[n]["attention_mask"].index(0)
    rows[n]["labels"][r_pad] = rows[n]["input_ids"][at]
    return n


def _unsupervise(rows):
    rows[3]["labels"] = [-100] * len(rows[3]["labels"])
    return 3


def _shorten_labels(rows):
    rows[5]["labels"] = rows[5]["labels"][:-1]
    return 5


ROW_CORRUPTIONS = {"label_not_input": _flip_label, "label_on_padding": _label_on_pad, "no_supervised_token": _unsupervise, "length_mismatch": _shorten_labels}


@pytest.mark.parametrize("kind", ROW_CORRUPTIONS)
def test_a_planted_row_corruption_is_caught_with_its_shard_and_row(kind, runs, tmp_path, capsys):
    directory = _copy(runs["decoder"], tmp_path)
    changed: list[int] = []
    _rewrite(_train(directory), lambda rows: changed.append(ROW_CORRUPTIONS[kind](rows)))
    result = validate_directory(directory)
    assert result.counts[kind] == 1
    assert result.counts["manifest_sha256"] == 1  # the file's bytes changed too
    assert any(v.kind == kind and v.shard == "data/train-00000-of-00001.parquet" and v.row == changed[0] for v in result.listed)
    assert main(["validate", str(directory)]) == 1
    assert f"data/train-00000-of-00001.parquet row {changed[0]}: {kind}:" in capsys.readouterr().out


def test_a_truncated_file_is_caught(runs, tmp_path):
    directory = _copy(runs["decoder"], tmp_path)
    data = _train(directory).read_bytes()
    _train(directory).write_bytes(data[: len(data) // 2])
    result = validate_directory(directory)
    assert {"unreadable", "manifest_sha256", "manifest_size"} <= set(result.counts)
    assert not result.ok


def test_a_wrong_checksum_or_row_count_in_the_manifest_is_caught(runs, tmp_path):
    directory = _copy(runs["decoder"], tmp_path)
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["shards"][0]["sha256"] = "0" * 64
    manifest["shards"][-1]["rows"] += 1
    (directory / "manifest.json").write_text(json.dumps(manifest))
    result = validate_directory(directory)
    assert result.counts == {"manifest_sha256": 1, "manifest_rows": 2}  # the shard's rows, and rows_written no longer adds up
    assert [v.shard for v in result.listed if v.kind == "manifest_sha256"] == [manifest["shards"][0]["path"]]


def test_a_shard_the_manifest_does_not_list_is_caught(runs, tmp_path):
    directory = _copy(runs["decoder"], tmp_path)
    shutil.copy(_train(directory), directory / "data" / "train-00001-of-00001.parquet")
    assert validate_directory(directory).counts == {"unlisted_shard": 1}


def test_seq2seq_rows_skip_alignment_but_keep_the_other_rules(runs, tmp_path):
    """seq2seq labels are the target, longer or shorter than the source: no length or label=input
    rule applies, but a row with no target token is still caught."""
    directory = _copy(runs["seq2seq"], tmp_path)
    rows = pq.read_table(_train(directory)).to_pylist()
    assert any(len(r["labels"]) != len(r["input_ids"]) for r in rows)  # the layout this test is about
    _rewrite(_train(directory), _unsupervise)
    counts = validate_directory(directory).counts
    assert {kind: n for kind, n in counts.items() if not kind.startswith("manifest_")} == {"no_supervised_token": 1}


# --- packed rows, built by hand in the packer's layout --------------------------------------

PACKED_SCHEMA = pa.schema(
    [
        pa.field("input_ids", pa.list_(pa.int32())),
        pa.field("labels", pa.list_(pa.int32())),
        pa.field("attention_mask", pa.list_(pa.int8())),
        pa.field("position_ids", pa.list_(pa.int32())),
        pa.field("seq_lengths", pa.list_(pa.int32())),
        pa.field("example_ids", pa.list_(pa.string())),
    ]
)


def _packed_row(examples: list[tuple[str, list[int], list[int]]], pad: int) -> dict:
    """Examples (id, tokens, labels) end to end, their first labels -100, then `pad` pad tokens."""
    row = {"input_ids": [], "labels": [], "attention_mask": [], "position_ids": [], "seq_lengths": [], "example_ids": []}
    for name, tokens, labels in examples:
        row["input_ids"] += tokens
        row["labels"] += [-100, *labels[1:]]
        row["attention_mask"] += [1] * len(tokens)
        row["position_ids"] += list(range(len(tokens)))
        row["seq_lengths"].append(len(tokens))
        row["example_ids"].append(name)
    row["input_ids"] += [0] * pad
    row["labels"] += [-100] * pad
    row["attention_mask"] += [0] * pad
    row["position_ids"] += list(range(pad))
    return row


def _packed_rows() -> list[dict]:
    return [
        _packed_row([("a:0", [5, 6, 7, 8], [-100, -100, 7, 8]), ("a:1", [9, 10, 11], [-100, 10, 11])], pad=2),
        _packed_row([("a:2", [12, 13, 14], [-100, 13, 14]), ("a:3", [15, 16], [-100, 16]), ("a:4", [17, 18, 19], [-100, -100, 19])], pad=0),
    ]


def _write_packed(folder: Path, rows: list[dict]) -> Path:
    (folder / "data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=PACKED_SCHEMA), folder / "data" / "train-00000-of-00001.parquet")
    return folder


def test_good_packed_rows_pass_and_a_bare_folder_is_said_to_get_structural_checks_only(tmp_path, capsys):
    directory = _write_packed(tmp_path / "packed", _packed_rows())
    assert main(["validate", str(directory), "--bare"]) == 0
    out = capsys.readouterr().out
    assert "no manifest.json: structural checks only" in out and "packing (" in out


def _boundary_label(rows):
    rows[1]["labels"][3] = rows[1]["input_ids"][3]  # a:3's first token (a:2 has 3 tokens)
    return 1, "packed_boundary_label"


def _positions_continue(rows):
    rows[0]["position_ids"][4:7] = [4, 5, 6]  # a:1 counting on from a:0
    return 0, "position_ids"


def _lengths_off(rows):
    rows[0]["seq_lengths"] = [4, 4]  # 8 tokens, but the row has 7 before its padding
    return 0, "packing"


def _pad_inside(rows):
    rows[1]["attention_mask"][4] = 0  # a hole inside a:3
    return 1, "packing"


@pytest.mark.parametrize("corrupt", [_boundary_label, _positions_continue, _lengths_off, _pad_inside], ids=lambda f: f.__name__.strip("_"))
def test_a_planted_packing_corruption_is_caught(corrupt, tmp_path):
    rows = _packed_rows()
    row, kind = corrupt(rows)
    result = validate_directory(_write_packed(tmp_path / "packed", rows))
    assert kind in result.counts
    assert any(v.kind == kind and v.row == row for v in result.listed)


def test_not_a_folder_is_a_one_sentence_error(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "nothing")]) == 2
    assert capsys.readouterr().err.strip() == f"masked-shards: {tmp_path / 'nothing'} is not a folder"


def test_validate_and_inspect_read_a_run_on_any_beam_filesystem(runs, capsys):
    """A run in an object store (`memtest://`, known to Beam only): validate reads it through Beam's
    filesystems and passes; a shard changed there fails it, named; inspect shows its rows."""
    from memory_fs import MemoryFileSystem

    MemoryFileSystem.objects.clear()
    for path in sorted(runs["decoder"].rglob("*")):
        if path.is_file():
            MemoryFileSystem.objects[f"memtest://bucket/run/{path.relative_to(runs['decoder']).as_posix()}"] = path.read_bytes()
    assert main(["validate", "memtest://bucket/run"]) == 0
    local, remote = validate_directory(runs["decoder"]), capsys.readouterr().out
    assert f"{local.shards} shards, {local.rows:,} rows, {local.tokens:,} tokens" in remote and "OK" in remote
    assert main(["inspect", "memtest://bucket/run", "--rows", "1", "--plain"]) == 0
    assert "[[" in capsys.readouterr().out  # a supervised span, shown
    shard = "memtest://bucket/run/data/train-00000-of-00001.parquet"
    MemoryFileSystem.objects[shard] = MemoryFileSystem.objects[shard][: len(MemoryFileSystem.objects[shard]) // 2]
    assert main(["validate", "memtest://bucket/run"]) == 1
    assert "data/train-00000-of-00001.parquet" in capsys.readouterr().out
    assert main(["validate", "memtest://bucket/nothing"]) == 2
    assert "memtest://bucket/nothing is not a folder" in capsys.readouterr().err

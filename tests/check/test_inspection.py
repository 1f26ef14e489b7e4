"""`masked-shards inspect DIR`: rows of a real job shown token by token, checked in both modes
(plain markers for pipes, ANSI colours for terminals) against the tokenizer's own decoding of the
supervised runs read back from the shard; `row_html` escapes and keeps the same runs."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import write_jsonl
from masked_shards.cli import main
from masked_shards.config import DEMO_TOKENIZER
from masked_shards.check.inspection import row_html, token_texts
from masked_shards.build.tokenization import full_tokenizer

RECORDS = [
    {"messages": [{"role": "user", "content": f"Wie groß ist {n}?"}, {"role": "assistant", "content": f"Das Ausmaß ist {n} 🎂."}, {"role": "user", "content": "Und 日本語?"}, {"role": "assistant", "content": "日本語 <b>&amp;</b> ok."}]}
    for n in range(6)
] + [{"instruction": f"Count to {n}.", "output": " ".join(map(str, range(n + 1)))} for n in range(6)]
DECODE = {"skip_special_tokens": False, "clean_up_tokenization_spaces": False}
GREEN = ("\x1b[32m", "\x1b[92m")  # ANSI green, normal and bright


@pytest.fixture(scope="module")
def tokenizer():
    return full_tokenizer(DEMO_TOKENIZER)  # transformers: the test encodes with its __call__


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("inspect")
    data = write_jsonl(folder / "chat.jsonl", RECORDS)
    assert main(["run", "--smoke-test", "off", "--input", str(data), "--output", str(folder / "out"), "--pad-to", "multiple:16"]) == 0
    return folder / "out"


def _shard_rows(directory: Path) -> list[dict]:
    manifest = json.loads((directory / "manifest.json").read_text())
    return [row for entry in sorted(manifest["shards"], key=lambda e: e["path"]) for row in pq.read_table(directory / entry["path"]).to_pylist()]


def _runs(row: dict, tokenizer) -> list[str]:
    """The decoded supervised runs of a row, found from its labels here, not by the code tested."""
    runs, start = [], None
    for n, label in enumerate([*row["labels"], -100]):
        if label != -100 and start is None:
            start = n
        elif label == -100 and start is not None:
            runs.append(tokenizer.decode(row["input_ids"][start:n], **DECODE))
            start = None
    return runs


def _blocks(out: str) -> list[str]:
    return out.split("\n== ")[1:]


def _listed_texts(block: str) -> list[str]:
    return [json.loads(text) for text in re.findall(r"^  \d+\. tokens \d+\.\.\d+: (.*)$", block, re.M)]


def test_plain_mode_marks_exactly_the_supervised_runs(run, tokenizer, capsys):
    assert main(["inspect", str(run), "--rows", "4", "--plain"]) == 0
    out = capsys.readouterr().out
    rows = _shard_rows(run)[:4]
    assert "\x1b[" not in out
    blocks = _blocks(out)
    assert len(blocks) == 4
    assert any(len(_runs(row, tokenizer)) == 2 for row in rows)  # a two-turn row is among them
    for row, block in zip(rows, blocks):
        assert f"example {row['example_id']}" in block.splitlines()[0]
        assert re.findall(r"\[\[(.*?)\]\]", block, re.S) == _runs(row, tokenizer)
        assert _listed_texts(block) == _runs(row, tokenizer)
        assert ("{pad" in block) == (0 in row["attention_mask"])


def test_colour_mode_paints_exactly_the_supervised_runs_green(run, tokenizer, capsys):
    assert main(["inspect", str(run), "--rows", "4", "--color"]) == 0
    out = capsys.readouterr().out
    for row, block in zip(_shard_rows(run)[:4], _blocks(out)):
        painted = re.findall(r"\x1b\[(\d+)m(.*?)\x1b\[0m", block.split("supervised text")[0], re.S)
        runs, current = [], None
        for code, text in painted:
            if f"\x1b[{code}m" in GREEN:
                current = (current or "") + text
            elif current is not None:
                runs.append(current)
                current = None
        runs += [current] if current is not None else []
        assert runs == _runs(row, tokenizer)
        assert "[[" not in block


def test_a_pipe_gets_plain_mode_and_ids_show_every_token(run, capsys):
    assert main(["inspect", str(run), "--rows", "1", "--ids"]) == 0  # capsys is no terminal
    out = capsys.readouterr().out
    row = _shard_rows(run)[0]
    table = [line.split()[:3] for line in out.splitlines() if re.match(r"^\s+\d+\s+-?\d+\s+-?\d+\s", line)]
    assert [[int(v) for v in cells] for cells in table] == [[n, t, label] for n, (t, label) in enumerate(zip(row["input_ids"], row["labels"]))]
    assert "\x1b[" not in out


def test_example_id_picks_its_row(run, tokenizer, capsys):
    row = _shard_rows(run)[7]
    assert main(["inspect", str(run), "--example-id", row["example_id"], "--plain"]) == 0
    (block,) = _blocks(capsys.readouterr().out)
    assert f"row 7  example {row['example_id']} " in block
    assert _listed_texts(block) == _runs(row, tokenizer)
    assert main(["inspect", str(run), "--example-id", "nosuch:0"]) == 2
    assert capsys.readouterr().err.strip() == f"masked-shards: no row of {run} holds example nosuch:0"


def test_token_texts_join_to_the_decoded_row_even_across_split_characters(run, tokenizer):
    """'ß', '🎂' and '日本語' take several byte-level tokens; no U+FFFD is shown for them."""
    for row in _shard_rows(run):
        texts = token_texts(tokenizer, row["input_ids"])
        assert len(texts) == len(row["input_ids"])
        assert "".join(texts) == tokenizer.decode(row["input_ids"], **DECODE)
        assert "\ufffd" not in "".join(texts)


class _Spans(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.spans: list[tuple[str, str]] = []
        self._class: str | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self._class = dict(attrs).get("class") if tag == "span" else None
        if tag == "span":
            self.spans.append((self._class, ""))

    def handle_data(self, data: str) -> None:
        if self._class is not None:
            self.spans[-1] = (self.spans[-1][0], self.spans[-1][1] + data)

    def handle_endtag(self, tag: str) -> None:
        self._class = None


def test_row_html_is_escaped_and_keeps_the_supervised_runs(run, tokenizer):
    row = next(r for r in _shard_rows(run) if "&amp;" in tokenizer.decode(r["input_ids"]) and 0 in r["attention_mask"])
    texts = token_texts(tokenizer, row["input_ids"])
    page = row_html(texts, row["labels"], row["attention_mask"], row["input_ids"])
    assert "<|im_end|>" not in page and "&lt;|im_end|&gt;" in page and "<b>" not in page
    parser = _Spans()
    parser.feed(page)
    supervised = "".join(text for cls, text in parser.spans if cls.startswith("ms-supervised"))
    assert supervised == "".join(_runs(row, tokenizer))
    assert "".join(text for cls, text in parser.spans if not cls.startswith("ms-pad")) == tokenizer.decode([t for t, a in zip(row["input_ids"], row["attention_mask"]) if a], **DECODE)
    assert any(cls == "ms-pad" for cls, _ in parser.spans)


def test_packed_rows_are_shown_example_by_example(tmp_path, tokenizer, capsys):
    ids = tokenizer("Hello there. Fine, thanks.", add_special_tokens=False)["input_ids"]
    first, second = ids[:3], ids[3:]
    row = {
        "input_ids": first + second + [0],
        "labels": [-100, *first[1:], -100, *second[1:], -100],
        "attention_mask": [1] * len(ids) + [0],
        "position_ids": [*range(len(first)), *range(len(second)), 0],
        "seq_lengths": [len(first), len(second)],
        "example_ids": ["p:0", "p:1"],
    }
    (tmp_path / "data").mkdir()
    pq.write_table(pa.Table.from_pylist([row]), tmp_path / "data" / "train-00000-of-00001.parquet")
    assert main(["inspect", str(tmp_path), "--tokenizer", DEMO_TOKENIZER, "--example-id", "p:1", "--plain"]) == 0
    out = capsys.readouterr().out
    assert f"-- example p:1 (tokens {len(first)}..{len(ids) - 1})" in out and "example p:0 (" not in out
    assert _listed_texts(out) == [tokenizer.decode(second[1:], **DECODE)]
    assert main(["inspect", str(tmp_path)]) == 2
    assert "has no manifest.json naming its tokenizer; pass --tokenizer" in capsys.readouterr().err


def test_a_tool_call_and_a_tool_result_are_shown_distinctly(tmp_path, capsys):
    """A real job on a tool-using record through TRL's Qwen2.5 training template (from the trl
    wheel): the call's run is named a tool call, the result is listed as masked."""
    import trl

    template = str(Path(trl.__file__).parent / "chat_templates" / "qwen2_5_training.jinja")
    record = {"tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}], "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "content": "21 degrees"},
        {"role": "assistant", "content": "It is 21 degrees."},
    ]}
    data = write_jsonl(tmp_path / "tools.jsonl", [record])
    assert main(["run", "--smoke-test", "off", "--input", str(data), "--output", str(tmp_path / "out"), "--template", template]) == 0
    capsys.readouterr()
    assert main(["inspect", str(tmp_path / "out"), "--plain"]) == 0
    out = capsys.readouterr().out
    call = '"<tool_call>\\n{\\"name\\": \\"get_weather\\", \\"arguments\\": {\\"city\\": \\"Paris\\"}}\\n</tool_call><|im_end|>"'
    assert re.search(r"  1\. tool call, tokens \d+\.\.\d+: " + re.escape(call), out), out
    assert re.search(r'  2\. tokens \d+\.\.\d+: "It is 21 degrees\.<\|im_end\|>"', out), out
    results = out.split("tool results (masked), one line per run holding one:\n")[1].splitlines()
    assert len(results) == 1 and "<tool_response>\\n21 degrees\\n</tool_response>" in results[0]

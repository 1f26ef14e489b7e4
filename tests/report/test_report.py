"""The coverage report of a real run (FnApiRunner), checked against the shards it wrote: counts
recomputed from the Parquet files, per-role and per-turn counts recomputed from the decoded tokens
by ChatML's own structure, gates that fail the run after it wrote everything, and an HTML page
that stands alone.

One run serves every test: two sources, rejected records of two reasons, truncated rows, an
example truncation left nothing to train (dropped), a turn marked `train: false`, padding, a
validation split, and three gates set so that each one breaks."""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections import Counter
from html.parser import HTMLParser

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import Row, row_batch, write_jsonl
from masked_shards.cli import main
from masked_shards.report.histograms import Histogram
from masked_shards.report.label_coverage import Coverage, gate_failure
from masked_shards.write.shards import sha256

MAX_LENGTH = 96
WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima".split()


def _text(n: int, words: int) -> str:
    return " ".join(WORDS[(n + k) % len(WORDS)] for k in range(words))


def _chat(n: int, answer_words: int = 4, question_words: int = 3, first_trained: bool = True) -> dict:
    return {
        "messages": [
            {"role": "system", "content": f"System rule {n}."},
            {"role": "user", "content": _text(n, question_words)},
            {"role": "assistant", "content": _text(n + 1, answer_words), "train": first_trained},
            {"role": "user", "content": f"Follow up {n}?"},
            {"role": "assistant", "content": f"Final answer {n}."},
        ]
    }


CHATS = [_chat(n) for n in range(12)] + [_chat(12, answer_words=200), _chat(13, answer_words=150), _chat(14, first_trained=False)]
CHATS += [{"messages": [{"role": "user", "content": _text(15, 200)}, {"role": "assistant", "content": "Too late."}]}]  # cut, nothing left: dropped
TRUNCATED_KEPT, TRUNCATED_DROPPED = {"chat.jsonl:12", "chat.jsonl:13"}, {"chat.jsonl:15"}
PAIRS = [{"prompt": f"Question {n}: {_text(n, 2)}?", "completion": _text(n + 3, 3)} for n in range(10)]
BAD = ["{broken 0", {"prompt": "no completion"}, "{broken 2", "{broken 3", "{broken 4"]
GATES = ("--min-supervised-fraction", "0.9", "--max-rejected-fraction", "0.05", "--max-truncated-fraction", "0.02")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict[str, object]:
    folder = tmp_path_factory.mktemp("report")
    write_jsonl(folder / "chat.jsonl", CHATS)
    write_jsonl(folder / "pc.jsonl", PAIRS + BAD)
    output = folder / "out"
    args = ["run", "--smoke-test", "off", "--input", f"chat={folder / 'chat.jsonl'}", "--input", f"pc={folder / 'pc.jsonl'}", "--max-length", str(MAX_LENGTH)]
    args += ["--pad-to", "multiple:8", "--validation-fraction", "0.3", "--output", str(output), *GATES]
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(args)
    shards = [pq.read_table(path).to_pylist() for path in sorted((output / "data").glob("*.parquet"))]
    return {
        "code": code,
        "stdout": stdout.getvalue(),
        "stderr": stderr.getvalue(),
        "output": output,
        "report": json.loads((output / "coverage_report.json").read_text(encoding="utf-8")),
        "rows": [row | {"split": path.name.split("-")[0]} for path, table in zip(sorted((output / "data").glob("*.parquet")), shards) for row in table],
    }


def test_a_broken_gate_exits_1_naming_each_gate_after_writing_everything(run):
    assert run["code"] == 1
    (line,) = run["stderr"].splitlines()
    report = run["report"]
    fractions = report["fractions"]
    assert line == (
        f"masked-shards: quality gate failed: the supervised fraction of tokens is {fractions['supervised']}, below --min-supervised-fraction 0.9;"
        f" the fraction of records rejected is {fractions['rejected']}, above --max-rejected-fraction 0.05;"
        f" the fraction of examples truncated is {fractions['truncated']}, above --max-truncated-fraction 0.02 (shards and report are written)"
    )
    assert [g["passed"] for g in report["gates"]] == [False, False, False]
    assert run["rows"] and (run["output"] / "manifest.json").exists() and (run["output"] / "coverage_report.html").exists()
    assert fractions["rejected"] == round(len(BAD) / report["records_read"], 6)
    assert fractions["truncated"] == round(3 / (len(run["rows"]) + report["dropped"]), 6)


def test_gates_that_hold_pass_and_a_min_gate_fails_on_no_tokens():
    coverage = Coverage()
    coverage.add_batch(row_batch([Row("f:0", "f", "train", [1, 2, 3, 4], [-100, -100, 3, 4], [1, 1, 1, 1])]))
    limits = {"--min-supervised-fraction": 0.5, "--max-rejected-fraction": 0.0, "--max-truncated-fraction": 0.0}
    report = coverage.report(1, 1, gates=limits)
    assert [g["passed"] for g in report["gates"]] == [True, True, True] and gate_failure(report) is None
    empty = Coverage().report(0, 0, gates={"--min-supervised-fraction": 0.1})
    assert gate_failure(empty) == "quality gate failed: the supervised fraction of tokens is None, below --min-supervised-fraction 0.1 (shards and report are written)"
    assert Coverage().report(0, 0, splits=("train", "validation"))["rows_by_split"] == {"train": 0, "validation": 0}


def test_report_numbers_equal_counts_from_the_shards(run):
    report, rows = run["report"], run["rows"]
    real = [sum(r["attention_mask"]) for r in rows]
    supervised = [sum(label != -100 for label in r["labels"]) for r in rows]
    assert report["rows_written"] == len(rows) == len(CHATS) + len(PAIRS) - len(TRUNCATED_DROPPED)
    assert report["rows_by_split"] == dict(sorted(Counter(r["split"] for r in rows).items())) and len(report["rows_by_split"]) == 2
    assert report["tokens_total"] == sum(real) and report["tokens_supervised"] == sum(supervised)
    assert report["tokens_padding"] == sum(len(r["input_ids"]) for r in rows) - sum(real) > 0
    for source in ("chat", "pc"):
        mine = [n for n, r in enumerate(rows) if r["source"] == source]
        counts = report["by_source"][source]
        assert counts["rows"] == len(mine) and counts["tokens"] == sum(real[n] for n in mine) and counts["tokens_supervised"] == sum(supervised[n] for n in mine)
    assert report["by_source"]["chat"] | {"tokens": 0, "tokens_supervised": 0, "supervised_fraction": 0} == {
        "read": len(CHATS), "rows": len(CHATS) - 1, "rejected": 0, "dropped": 1, "sampled_out": 0, "truncated": 3, "tokens": 0, "tokens_supervised": 0, "supervised_fraction": 0
    }
    assert (report["by_source"]["pc"]["read"], report["by_source"]["pc"]["rejected"]) == (len(PAIRS) + len(BAD), len(BAD))
    cut = [r for r in rows if r["example_id"] in TRUNCATED_KEPT]
    assert report["truncated"] == len(cut) == 2 and all(sum(r["attention_mask"]) == MAX_LENGTH for r in cut)
    assert report["truncated_then_dropped"] == 1 and report["dropped_by_reason"] == {"no_supervised_tokens_after_truncation": 1}
    fractions = sorted(s / t for s, t in zip(supervised, real))
    distributions = report["distributions"]
    assert (distributions["tokens"]["min"], distributions["tokens"]["max"], distributions["tokens"]["p50"]) == (min(real), max(real), sorted(real)[(len(real) + 1) // 2 - 1])
    assert (distributions["tokens_supervised"]["min"], distributions["tokens_supervised"]["max"]) == (min(supervised), max(supervised))
    assert abs(distributions["supervised_fraction"]["p50"] - fractions[(len(fractions) + 1) // 2 - 1]) <= 0.0005
    assert distributions["tokens_before_truncation"]["max"] > MAX_LENGTH == distributions["tokens"]["max"]


def test_rejected_and_dropped_records_are_counted_shown_and_located(run):
    report, output = run["report"], run["output"]
    listed = [json.loads(line) for line in (output / "rejected" / "rejected.jsonl").read_text(encoding="utf-8").splitlines()]
    assert report["rejected_by_reason"] == dict(Counter(r["reason"] for r in listed)) == {"invalid_json": 4, "missing_field": 1}
    assert [e["index"] for e in report["rejected_examples"]["invalid_json"]] == [len(PAIRS) + n for n in (0, 2, 3)]
    assert report["dropped_examples"]["no_supervised_tokens_after_truncation"][0]["example_id"] == "chat.jsonl:15"
    assert report["record_files"] == {"rejected": "rejected/rejected.jsonl", "dropped": "dropped/dropped.jsonl"}
    assert "-> rejected/rejected.jsonl" in run["stdout"] and "-> dropped/dropped.jsonl" in run["stdout"]
    assert "1 more cut and dropped" in run["stdout"]
    markdown = (output / "coverage_report.md").read_text(encoding="utf-8")
    assert "Every one is listed in rejected/rejected.jsonl" in markdown and "| invalid_json | 4 |" in markdown


def _regions(tokenizer, ids: list[int]) -> tuple[list[tuple[str, int, int]], list[int]]:
    """From the decoded tokens alone: (role, first char, end char) of each message as ChatML lays
    it out (an assistant's span includes its <|im_end|>), and each token's first character."""
    pieces = [tokenizer.decode([i]) for i in ids]
    starts = np.cumsum([0] + [len(p) for p in pieces[:-1]]).tolist()
    text = "".join(pieces)
    regions = []
    for found in re.finditer(r"<\|im_start\|>(system|user|assistant)\n(.*?)(<\|im_end\|>|$)", text, re.S):
        end = found.end(3) if found.group(1) == "assistant" else found.end(2)
        regions.append((found.group(1), found.start(2), end))
    return regions, starts


def test_per_role_turn_and_end_of_turn_counts_match_the_decoded_tokens(run, demo_tokenizer):
    roles, turns, eot = Counter(), Counter(), Counter()
    for row in run["rows"]:
        real = sum(row["attention_mask"])
        ids, labels = row["input_ids"][:real], row["labels"][:real]
        regions, starts = _regions(demo_tokenizer, ids)
        owner = [next((n for n, (_, low, high) in enumerate(regions) if low <= s < high), None) for s in starts]
        for n, (role, _, high) in enumerate(regions):
            mine = [k for k, o in enumerate(owner) if o == n]
            trained = sum(labels[k] != -100 for k in mine)
            roles[(role, "tokens")] += len(mine)
            turns[(str(n), "tokens")] += len(mine)
            roles[(role, "supervised")] += trained
            turns[(str(n), "supervised")] += trained
            if role == "assistant" and trained:
                closing = [k for k in mine if ids[k] == demo_tokenizer.convert_tokens_to_ids("<|im_end|>")]
                eot["cut" if not closing else "supervised" if labels[closing[0]] != -100 else "masked"] += 1
        roles[("markup", "tokens")] += owner.count(None)
        roles[("markup", "supervised")] += sum(labels[k] != -100 for k, o in enumerate(owner) if o is None)
    report = run["report"]
    assert {r: (v["tokens"], v["tokens_supervised"]) for r, v in report["by_role"].items()} == {
        r: (roles[(r, "tokens")], roles[(r, "supervised")]) for r in ("system", "user", "assistant", "tool", "markup")
    }
    assert report["by_role"]["assistant"]["supervised_fraction"] < 1  # the turn marked train: false
    assert [(t["turn"], t["tokens"], t["tokens_supervised"]) for t in report["by_turn"]] == [(t, turns[(t, "tokens")], turns[(t, "supervised")]) for t in sorted({t for t, _ in turns if turns[(t, "tokens")]}, key=int)]
    assert report["end_of_turn"] == {"trained_turns": sum(eot.values()), "supervised": eot["supervised"], "not_supervised": eot["masked"], "cut_by_truncation": eot["cut"], "no_end_of_turn_token": 0}
    assert eot["cut"] == 2 and eot["masked"] == 0


class _Page(HTMLParser):
    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.urls: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value or "" for name, value in attrs if name in ("src", "href")]
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open.pop() == tag, f"</{tag}> closes nothing open"

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_html_report_is_one_self_contained_page_with_its_plots_and_rows(run):
    page = (run["output"] / "coverage_report.html").read_text(encoding="utf-8")
    parser = _Page()
    parser.feed(page)
    parser.close()
    assert parser.open == []
    assert not re.search(r"(https?:)?//|url\(|@import", page)
    assert all(url.startswith("#") for url in parser.urls)
    plots = re.findall(r"<figure><svg [^>]*>(.*?)</svg><figcaption>", page)
    assert len(plots) == 3 and all("<rect" in p or "<polyline" in p for p in plots)
    assert f"{run['report']['records_read']:,} records read" in plots[0] and "supervised fraction by turn index" in plots[1]
    text = " ".join(parser.text)
    assert "Quality gate failed" in text and "invalid_json" in text and "rejected/rejected.jsonl" in text
    assert page.count('class="ms-row"') == 3 and "ms-supervised" in page
    report = run["report"]
    assert f"{report['by_role']['assistant']['tokens']:,}" in text and report["run"]["template"]["name"] == "chatml"


def test_manifest_lists_the_report_files_with_their_checksums(run):
    manifest = json.loads((run["output"] / "manifest.json").read_text(encoding="utf-8"))
    listed = {entry["path"]: entry for entry in manifest["report_files"]}
    assert set(listed) == {"coverage_report.json", "coverage_report.md", "coverage_report.html", "coverage_by_file.jsonl"}
    for name, entry in listed.items():
        data = (run["output"] / name).read_bytes()
        assert (entry["bytes"], entry["sha256"]) == (len(data), sha256(data))


def test_count_histogram_quantiles_are_exact_below_128_and_within_1_6_percent_above():
    values = np.random.default_rng(0).lognormal(5, 1.2, 20_000).astype(np.int64)
    whole, left, right = Histogram.counts(), Histogram.counts(), Histogram.counts()
    whole.add(values)
    left.add(values[:7_000])
    right.add(values[7_000:])
    assert left.merge(right) == whole
    ordered = np.sort(values)
    for q in (0.01, 0.1, 0.5, 0.9, 0.99):
        true = ordered[int(np.ceil(q * len(values))) - 1]
        found = whole.quantile(q)
        assert found == true if true < 128 else true * (1 - 1 / 64) <= found <= true
    assert (whole.quantile(0), whole.quantile(1)) == (ordered[0], ordered[-1])

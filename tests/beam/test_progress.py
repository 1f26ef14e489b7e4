"""The live progress line: counted by the workers, summed across processes, shown by the driver."""

from __future__ import annotations

import multiprocessing
import re
from collections import Counter

from conftest import write_jsonl

from masked_shards.beam import progress
from masked_shards.cli import main
from masked_shards.beam.progress import progress_text, read_counts, tally

LINE = re.compile(r"^records ([\d,]+)(?: / ([\d,]+) \((\d+)%\))? · [\d,]+ tokens/s · \d+:\d\d elapsed(?: · ETA \d+:\d\d)?$")


def _add_in_another_process(folder: str, records: int) -> None:
    counts = tally(folder)
    counts.add(records=records, tokens=10 * records)
    counts.flush()


def test_tallies_of_worker_processes_are_summed(tmp_path):
    workers = [multiprocessing.get_context("spawn").Process(target=_add_in_another_process, args=(str(tmp_path), n)) for n in (3, 4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert read_counts(str(tmp_path)) == Counter(records=7, tokens=70)


def test_the_eta_is_the_time_left_at_the_rate_so_far():
    # 50 of 200 records in 30 s: 150 more at 50 per 30 s take 90 s.
    text = progress_text(Counter(records=50, total=200, ranges=2, uncounted=0, tokens=3000), 30.0)
    assert "records 50 / 200 (25%)" in text and "100 tokens/s" in text and "0:30 elapsed" in text and "ETA 1:30" in text


def test_no_total_and_no_eta_when_a_range_was_not_counted():
    text = progress_text(Counter(records=50, total=120, ranges=2, uncounted=1, tokens=10), 5.0)
    assert "/" not in text.split("·")[0] and "ETA" not in text


def test_a_piped_run_prints_plain_progress_lines_and_quiet_prints_none(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(progress, "PIPED_EVERY_S", 0.02)
    records = [{"messages": [{"role": "user", "content": f"question {i} " * 10}, {"role": "assistant", "content": f"answer {i} " * 10}]} for i in range(1000)]
    write_jsonl(tmp_path / "chat.jsonl", records)
    common = ["run", "--input", str(tmp_path / "chat.jsonl"), "--smoke-test", "off", "--batch-size", "16"]

    assert main([*common, "--output", str(tmp_path / "loud")]) == 0
    shown = [line for line in capsys.readouterr().err.splitlines() if line.startswith("records ")]
    assert shown, "no progress line while the job ran"
    for line in shown:
        match = LINE.match(line)
        assert match, line
        done, total = (int(g.replace(",", "")) for g in match.group(1, 2))
        assert total == 1000 and 0 < done <= total

    assert main([*common, "--output", str(tmp_path / "quiet"), "--quiet"]) == 0
    assert not [line for line in capsys.readouterr().err.splitlines() if line.startswith("records ")]

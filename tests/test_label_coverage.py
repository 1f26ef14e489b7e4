"""Coverage counts merge like one pass over all rows, and reconciliation catches lost records."""

from __future__ import annotations

from conftest import Row, row_batch
from masked_shards.label_coverage import Coverage, reconcile, report_text
from masked_shards.records import Dropped, Rejected


def _row(supervised: int, total: int, split: str = "train") -> Row:
    return Row("f:0", "f", split, list(range(total)), [1] * supervised + [-100] * (total - supervised), [1] * total)


ITEMS = [row_batch([_row(1, 4), _row(3, 4)]), row_batch([_row(2, 4, "validation")]), Rejected("f", 1, "invalid_json", "x"), Dropped("f:2", "f", "overlong", "y")]


def _add(coverage: Coverage, item: object) -> None:
    if isinstance(item, (Rejected, Dropped)):
        coverage.add(item)
    else:
        coverage.add_batch(item)


def test_report_counts_everything():
    coverage = Coverage()
    for item in ITEMS:
        _add(coverage, item)
    report = coverage.report(records_read=5, rows_in_shards=3)
    assert report["rows_by_split"] == {"train": 2, "validation": 1}
    assert report["rejected_by_reason"] == {"invalid_json": 1}
    assert report["dropped_by_reason"] == {"overlong": 1}
    assert (report["tokens_total"], report["tokens_supervised"]) == (12, 6)
    assert report["supervised_fraction"] == 0.5
    assert report["supervised_fraction_per_example"] == {"min": 0.25, "median": 0.5, "max": 0.75}
    assert reconcile(report) is None
    assert "records read" in report_text(report)


def test_merged_partial_counts_equal_one_pass():
    whole, left, right = Coverage(), Coverage(), Coverage()
    for n, item in enumerate(ITEMS):
        _add(whole, item)
        _add(left if n % 2 else right, item)
    assert left.merge(right).report(5, 3) == whole.report(5, 3)


def test_a_lost_record_fails_reconciliation():
    coverage = Coverage()
    for item in ITEMS:
        _add(coverage, item)
    assert "do not reconcile" in reconcile(coverage.report(records_read=6, rows_in_shards=3))
    assert "do not reconcile" in reconcile(coverage.report(records_read=5, rows_in_shards=2))


def test_batches_count_padding_targets_and_what_truncation_cut():
    """Per-row counts come from the batch's flat arrays: padding is not a token, an encoder-decoder
    row's target tokens are (the decoder reads them), and the report says how many tokens the rows
    had before truncation."""
    decoder = row_batch(
        [
            Row("f:0", "f", "train", [5, 6, 7, 8], [-100, -100, 7, 8], [1, 1, 1, 1], truncated=True, tokens_before_truncation=10),
            Row("f:1", "f", "train", [5, 6, 0, 0], [-100, 6, -100, -100], [1, 1, 0, 0]),
        ]
    )
    seq2seq = row_batch([Row("g:0", "g", "validation", [5, 6, 1], [7, 8, 1, -100], [1, 1, 1], aligned=False)])
    coverage = Coverage()
    coverage.add_batch(decoder)
    coverage.add_batch(seq2seq)
    report = coverage.report(records_read=3, rows_in_shards=3)
    assert (report["tokens_total"], report["tokens_supervised"], report["tokens_padding"]) == (4 + 2 + 6, 2 + 1 + 3, 2)
    assert (report["truncated"], report["tokens_before_truncation"]) == (1, 10 + 2 + 6)
    assert report["by_source"] == {
        "f": {"rows": 2, "tokens": 6, "tokens_supervised": 3, "supervised_fraction": 0.5},
        "g": {"rows": 1, "tokens": 6, "tokens_supervised": 3, "supervised_fraction": 0.5},
    }
    assert report["rows_by_split"] == {"train": 2, "validation": 1}
    assert report["supervised_fraction_per_example"] == {"min": 0.5, "median": 0.5, "max": 0.5}

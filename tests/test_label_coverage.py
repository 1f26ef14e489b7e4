"""Coverage counts merge like one pass over all rows, and reconciliation catches lost records."""

from __future__ import annotations

from pipeline.label_coverage import Coverage, reconcile, report_text
from pipeline.records import Dropped, Rejected, TokenizedRow


def _row(supervised: int, total: int, split: str = "train") -> TokenizedRow:
    return TokenizedRow("f:0", "f", split, list(range(total)), [1] * supervised + [-100] * (total - supervised), [1] * total)


ITEMS = [_row(1, 4), _row(3, 4), _row(2, 4, "validation"), Rejected("f", 1, "invalid_json", "x"), Dropped("f:2", "f", "overlong", "y")]


def test_report_counts_everything():
    coverage = Coverage()
    for item in ITEMS:
        coverage.add(item)
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
        whole.add(item)
        (left if n % 2 else right).add(item)
    assert left.merge(right).report(5, 3) == whole.report(5, 3)


def test_a_lost_record_fails_reconciliation():
    coverage = Coverage()
    for item in ITEMS:
        coverage.add(item)
    assert "do not reconcile" in reconcile(coverage.report(records_read=6, rows_in_shards=3))
    assert "do not reconcile" in reconcile(coverage.report(records_read=5, rows_in_shards=2))

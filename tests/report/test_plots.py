"""The report's plots are SVG drawn from the report alone: the same report gives the same markup,
every bar carries its number, and a run without tokens gets only the outcome plot."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from masked_shards.report.plots import _ticks, report_plots


def _report(**changes: object) -> dict[str, object]:
    report = {"records_read": 5_003, "rows_written": 5_000, "rejected_by_reason": {"invalid_json": 2}, "dropped_by_reason": {"overlong": 1}, "sampled_out": 0, "tokens_total": 0}
    return report | changes


def _texts(svg: str) -> list[str]:
    return re.findall(r"<text [^>]*>([^<]*)</text>", svg)


def test_outcome_bars_carry_their_counts_and_labels():
    plots = report_plots(_report())
    assert [caption for caption, _ in plots] == ["Where every record went"]  # no tokens: nothing else to plot
    texts = _texts(plots[0][1])
    assert "5,003 records read" in texts
    assert {"written", "5,000", "rejected: invalid_json", "2", "dropped: overlong", "1"} <= set(texts)


def test_the_markup_is_balanced_and_the_same_for_the_same_report():
    class Balanced(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.open: list[str] = []

        def handle_starttag(self, tag, attrs):
            self.open.append(tag)

        def handle_endtag(self, tag):
            assert self.open.pop() == tag

    svg = report_plots(_report(rejected_by_reason={"a <b> & 'c'": 3}))[0][1]
    parser = Balanced()
    parser.feed(svg)
    assert parser.open == [] and "a &lt;b&gt; &amp; &#x27;c&#x27;" in svg
    assert report_plots(_report()) == report_plots(_report())


def test_axis_ticks_are_round_numbers_and_counts_whole():
    assert _ticks(0, 930) == [0, 200, 400, 600, 800]
    assert _ticks(0, 1.3) == [0, 0.25, 0.5, 0.75, 1, 1.25]
    assert _ticks(0, 11, 5, whole=True) == [0, 5, 10]

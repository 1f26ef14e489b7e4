"""The coverage report's plots, as inline SVG drawn from the report's JSON dict alone.

Drawn by hand rather than with matplotlib: importing and drawing it cost about 1.9 s of every run,
more than the rest of the report. The shapes are few (bars, histograms, axes with ticks, labels),
the text stays text (selectable, searchable, sharp at any zoom), and the markup is a pure function
of the report with every coordinate rounded to 0.1 px, so the same report gives the same bytes.
Axes are linear and every bar carries its number: a rejection of 1 beside 5,000 rows written is
unreadable on a log axis and invisible on a linear one without its label.

    report_plots(report) -> [("Where every record went", '<svg viewBox="0 0 860 120" ...>...</svg>'), ...]
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from masked_shards.report.tables import roles_in_order

BLUE, GREEN, GREY, RED, ORANGE, PURPLE = "#3b6ea8", "#2e7d32", "#9e9e9e", "#c62828", "#ef6c00", "#6a4c93"
FONT = 12  # px; titles FONT + 2, small labels FONT - 2
CHAR = 0.6 * FONT  # a character's width, near enough for a sans-serif font, to size margins
_DASHES = {"p10": "2 3", "p50": "6 4", "p90": "2 3"}  # dotted p10 and p90, the median dashed


def report_plots(report: Mapping[str, object]) -> list[tuple[str, str]]:
    """(caption, SVG markup) of every plot the report has data for."""
    plots = [("Where every record went", _outcomes(report))]
    if report["tokens_total"]:
        plots.append(("Supervised fraction by role and by turn index", _shares(report)))
        plots.append(("Distributions per example (row); dotted lines p10 and p90, dashed the median", _distributions(report)))
    if report.get("packing", {}).get("rows"):
        plots.append(("Packed rows: examples per row and fill per row (real tokens / --max-length)", _packing(report["packing"]["distributions"])))
    return plots


@dataclass(frozen=True)
class _Box:
    """A panel's plotting area in the figure's pixels; y grows downwards, as in SVG."""

    left: float
    top: float
    width: float
    height: float

    @property
    def bottom(self) -> float:
        return self.top + self.height

    def x(self, value: float, low: float, high: float) -> float:
        return self.left + (value - low) / (high - low) * self.width

    def y(self, value: float, low: float, high: float) -> float:
        return self.bottom - (value - low) / (high - low) * self.height


def _svg(width: float, height: float, parts: list[str], label: str) -> str:
    return (
        f'<svg viewBox="0 0 {width:.0f} {height:.0f}" width="{width:.0f}" height="{height:.0f}" role="img" aria-label="{html.escape(label)}" '
        f'font-family="system-ui,-apple-system,Segoe UI,Roboto,sans-serif" font-size="{FONT}" fill="#222">' + "".join(parts) + "</svg>"
    )


def _text(x: float, y: float, text: str, *, anchor: str = "start", size: int = FONT, weight: str = "", rotate: bool = False) -> str:
    extra = (f' font-size="{size}"' if size != FONT else "") + (f' font-weight="{weight}"' if weight else "") + (f' transform="rotate(-90 {x:.1f} {y:.1f})"' if rotate else "")
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{extra}>{html.escape(text)}</text>'


def _line(x1: float, y1: float, x2: float, y2: float, colour: str = "#222", dash: str = "") -> str:
    return f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{colour}"' + (f' stroke-dasharray="{dash}"' if dash else "") + "></line>"


def _rect(x: float, y: float, width: float, height: float, colour: str) -> str:
    return f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(width, 0):.1f}" height="{max(height, 0):.1f}" fill="{colour}"></rect>'


def _ticks(low: float, high: float, most: int = 6, *, whole: bool = False) -> list[float]:
    """Round values from low to high, at most `most` of them, a step of 1, 2, 2.5 or 5 x 10^k
    (`whole`: a whole number, for counts).

        _ticks(0, 930) -> [0, 200, 400, 600, 800]      _ticks(0, 11, 5, whole=True) -> [0, 5, 10]"""
    if high <= low:
        return [low]
    raw = (high - low) / most
    power = 10 ** math.floor(math.log10(raw))
    step = next(power * m for m in (1, 2, 2.5, 5, 10) if power * m >= raw and (not whole or float(power * m).is_integer()))
    first = math.ceil(low / step - 1e-9)
    return [round(k * step, 10) for k in range(first, int(math.floor(high / step + 1e-9)) + 1)]


def _number(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:g}"


def _x_axis(box: _Box, low: float, high: float, label: str = "") -> list[str]:
    parts = [_line(box.left, box.bottom, box.left + box.width, box.bottom)]
    for tick in _ticks(low, high):
        x = box.x(tick, low, high)
        parts += [_line(x, box.bottom, x, box.bottom + 4), _text(x, box.bottom + 4 + FONT, _number(tick), anchor="middle", size=FONT - 1)]
    if label:
        parts.append(_text(box.left + box.width / 2, box.bottom + 8 + 2 * FONT, label, anchor="middle"))
    return parts


def _y_axis(box: _Box, low: float, high: float, ticks: Sequence[float], label: str = "") -> list[str]:
    parts = [_line(box.left, box.top, box.left, box.bottom)]
    for tick in ticks:
        y = box.y(tick, low, high)
        parts += [_line(box.left - 4, y, box.left, y), _text(box.left - 6, y + FONT / 3, _number(tick), anchor="end", size=FONT - 1)]
    if label:
        parts.append(_text(box.left - 10 - CHAR * max(len(_number(t)) for t in ticks), box.top + box.height / 2, label, anchor="middle", rotate=True))
    return parts


def _title(box: _Box, title: str) -> str:
    return _text(box.left, box.top - 10, title, size=FONT + 2)


def _outcomes(report: Mapping[str, object]) -> str:
    """One bar per outcome: rows written, each rejection and drop reason, --mix leave-outs."""
    bars = [("written", report["rows_written"] if not report.get("packing") else report["packing"]["examples"], BLUE)]
    bars += [(f"rejected: {reason}", n, RED) for reason, n in report["rejected_by_reason"].items()]
    bars += [(f"dropped: {reason}", n, ORANGE) for reason, n in report["dropped_by_reason"].items()]
    if report["sampled_out"]:
        bars.append(("sampled out (--mix)", report["sampled_out"], GREY))
    width, row = 860, 26
    left = min(width / 2, 16 + CHAR * max(len(label) for label, _, _ in bars))
    box = _Box(left, 34, width - left - 70, row * len(bars))
    high = max(max(n for _, n, _ in bars), 1) * 1.08
    parts = [_title(box, f"{report['records_read']:,} records read")]
    for k, (label, n, colour) in enumerate(bars):
        y = box.top + k * row
        end = box.x(n, 0, high)
        parts += [_rect(box.left, y + 4, end - box.left, row - 8, colour), _text(box.left - 6, y + row / 2 + FONT / 3, label, anchor="end"), _text(end + 4, y + row / 2 + FONT / 3, f"{n:,}")]
    parts += _x_axis(box, 0, high, "records")
    parts.append(_line(box.left, box.top, box.left, box.bottom))
    return _svg(width, box.bottom + 48, parts, "where every record went")


def _shares(report: Mapping[str, object]) -> str:
    """Supervised fraction per role (left) and per turn index (right), tokens on each bar."""
    width, height, gap = 1040, 300, 60
    panel = (width - 60 - gap - 20) / 2
    turns = [(t["turn"], t) for t in report["by_turn"]]
    parts: list[str] = []
    for k, (found, title) in enumerate(((roles_in_order(report), "by role"), (turns, "by turn index"))):
        box = _Box(60 + k * (panel + gap), 34, panel, height - 34 - 40)
        shares = dict(found)
        names = [name for name, v in found if v["tokens"]]
        parts += [_title(box, f"supervised fraction {title}"), *_y_axis(box, 0, 1.3, [0, 0.25, 0.5, 0.75, 1])]
        parts.append(_line(box.left, box.bottom, box.left + box.width, box.bottom))
        slot = box.width / max(len(names), 1)
        for n, name in enumerate(names):
            fraction = shares[name]["supervised_fraction"]
            centre, top = box.left + (n + 0.5) * slot, box.y(fraction, 0, 1.3)
            bar = min(slot * 0.8, 90)
            parts += [
                _rect(centre - bar / 2, top, bar, box.bottom - top, GREEN if fraction > 0 else GREY),
                _text(centre, top - 4 - FONT, f"{fraction:.2f}", anchor="middle", size=FONT - 2),
                _text(centre, top - 4, f"{shares[name]['tokens']:,} tok", anchor="middle", size=FONT - 2),
                _text(centre, box.bottom + 4 + FONT, str(name), anchor="middle", size=FONT - 2),
            ]
    return _svg(width, height, parts, "supervised fraction by role and by turn index")


def _distributions(report: Mapping[str, object]) -> str:
    """Three histograms: tokens per example before and after truncation (one panel), supervised
    tokens per row, supervised fraction per row; lines at p10, the median and p90 (the quantiles
    themselves are in the report's Distributions table)."""
    found = report["distributions"]
    return _histograms(
        [
            ([(found["tokens_before_truncation"], "before truncation", GREY), (found["tokens"], "after truncation", BLUE)], "tokens per example", None),
            ([(found["tokens_supervised"], "supervised tokens", GREEN)], "supervised tokens per row", None),
            ([(found["supervised_fraction"], "supervised fraction", GREEN)], "supervised fraction per row", (0.0, 1.0)),
        ],
        1120,
        "distributions per example",
    )


def _packing(found: Mapping[str, Mapping[str, object]]) -> str:
    return _histograms(
        [
            ([(found["examples_per_row"], "examples per row", PURPLE)], "examples per packed row", None),
            ([(found["fill_per_row"], "fill", BLUE)], "fill per packed row", (0.0, 1.0)),
        ],
        760,
        "packed rows",
    )


_Series = Sequence[tuple[Mapping[str, object], str, str]]


def _histograms(panels: list[tuple[_Series, str, tuple[float, float] | None]], width: float, label: str) -> str:
    height, gap, left = 300, 70, 70
    panel = (width - left - gap * (len(panels) - 1) - 20) / len(panels)
    parts: list[str] = []
    for k, (series, title, span) in enumerate(panels):
        parts += _histogram(_Box(left + k * (panel + gap), 34, panel, height - 34 - 48), series, title, span)
    return _svg(width, height, parts, label)


def _histogram(box: _Box, series: _Series, title: str, span: tuple[float, float] | None) -> list[str]:
    """Histograms of the report's fixed bins, regrouped into 40 equal bins for reading: filled
    for one series, outlines for several (with a legend)."""
    lows = [s["min"] for s, _, _ in series if s["count"]]
    highs = [s["max"] for s, _, _ in series if s["count"]]
    if not lows:
        return [_title(box, title), _text(box.left, box.top + FONT, "no rows", size=FONT - 1)]
    low, high = span or (min(lows), max(highs))
    high = high if high > low else low + 1
    edges = np.linspace(low, high, 41)
    counted = []
    for summary, name, colour in series:
        if summary["count"]:
            values, weights = np.array(summary["bins"], dtype=np.float64).T
            counted.append((np.histogram(np.clip(values, low, high), bins=edges, weights=weights)[0], name, colour))
    top = max(float(c.max()) for c, _, _ in counted) or 1.0
    ticks = _ticks(0, top, 5, whole=True)
    top = max(top * 1.05, ticks[-1])
    parts = [_title(box, title), *_y_axis(box, 0, top, ticks, "rows"), *_x_axis(box, low, high)]
    for counts, name, colour in counted:
        points = [(box.x(edges[0], low, high), box.bottom)]
        for n, count in enumerate(counts.tolist()):
            y = box.y(count, 0, top)
            points += [(box.x(edges[n], low, high), y), (box.x(edges[n + 1], low, high), y)]
        points.append((box.x(edges[-1], low, high), box.bottom))
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        fill = f'fill="{colour}" fill-opacity="0.75"' if len(series) == 1 else 'fill="none"'
        parts.append(f'<polyline points="{path}" {fill} stroke="{colour}" stroke-width="1.5"></polyline>')
    main = series[-1][0]
    for q, dash in _DASHES.items():
        if main.get(q) is not None and low <= main[q] <= high:
            x = box.x(main[q], low, high)
            parts.append(_line(x, box.top, x, box.bottom, dash=dash))
    if len(series) > 1:
        for n, (_, name, colour) in enumerate(series):
            y = box.top + 8 + n * (FONT + 4)
            parts += [_line(box.left + box.width - 150, y, box.left + box.width - 128, y, colour), _text(box.left + box.width - 122, y + FONT / 3, name, size=FONT - 1)]
    return parts

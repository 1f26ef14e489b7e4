"""The coverage report's plots, as PNG bytes drawn from the report's JSON dict alone.

Each plot is a matplotlib `Figure` drawn without pyplot (no global state, so concurrent workers
cannot mix figures) and saved without a timestamp, so the same report gives the same bytes.
Axes are linear and every bar carries its number: a rejection of 1 beside 5,000 rows written is
unreadable on a log axis and invisible on a linear one without its label.

    report_plots(report) -> [("Where every record went", b"\\x89PNG..."), ...]
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np

from masked_shards.report.tables import roles_in_order

BLUE, GREEN, GREY, RED, ORANGE, PURPLE = "#3b6ea8", "#2e7d32", "#9e9e9e", "#c62828", "#ef6c00", "#6a4c93"
DPI = 96


def report_plots(report: Mapping[str, object]) -> list[tuple[str, bytes]]:
    """(caption, PNG) of every plot the report has data for."""
    plots = [("Where every record went", _outcomes(report))]
    if report["tokens_total"]:
        plots.append(("Supervised fraction by role and by turn index", _shares(report)))
        plots.append(("Distributions per example (row); dotted lines p10 and p90, dashed the median", _distributions(report)))
    if report.get("packing", {}).get("rows"):
        plots.append(("Packed rows: examples per row and fill per row (real tokens / --max-length)", _packing(report["packing"]["distributions"])))
    return plots


def _packing(found: Mapping[str, Mapping[str, object]]) -> bytes:
    figure, panels = _figure(8, 3.4, columns=2, left=0.08, bottom=0.14)
    _histogram(panels[0], [(found["examples_per_row"], "examples per row", PURPLE)], "examples per packed row")
    _histogram(panels[1], [(found["fill_per_row"], "fill", BLUE)], "fill per packed row", (0.0, 1.0))
    return _png(figure)


def _figure(width: float, height: float, columns: int = 1, rows: int = 1, left: float = 0.07, bottom: float = 0.12):
    """A figure with fixed margins (inches): a layout engine would draw every figure twice."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI)
    top = 0.4 / height
    figure.subplots_adjust(left=left, right=0.97, bottom=bottom, top=1 - top, wspace=0.22, hspace=0.45)
    return figure, figure.subplots(rows, columns, squeeze=False).ravel()


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _outcomes(report: Mapping[str, object]) -> bytes:
    """One bar per outcome: rows written, each rejection and drop reason, --mix leave-outs."""
    bars = [("written", report["rows_written"] if not report.get("packing") else report["packing"]["examples"], BLUE)]
    bars += [(f"rejected: {reason}", n, RED) for reason, n in report["rejected_by_reason"].items()]
    bars += [(f"dropped: {reason}", n, ORANGE) for reason, n in report["dropped_by_reason"].items()]
    if report["sampled_out"]:
        bars.append(("sampled out (--mix)", report["sampled_out"], GREY))
    height = 1.2 + 0.3 * len(bars)
    widest = max(len(label) for label, _, _ in bars)
    figure, (axes,) = _figure(9, height, left=min(0.5, 0.02 + 0.0105 * widest), bottom=0.55 / height)
    labels, counts, colours = zip(*bars[::-1])
    drawn = axes.barh(labels, counts, color=colours)
    axes.bar_label(drawn, labels=[f"{n:,}" for n in counts], padding=3)
    axes.set_xlim(0, max(max(counts), 1) * 1.15)
    axes.set_title(f"{report['records_read']:,} records read", loc="left")
    axes.set_xlabel("records")
    axes.spines[["top", "right"]].set_visible(False)
    return _png(figure)


def _shares(report: Mapping[str, object]) -> bytes:
    """Supervised fraction per role (left) and per turn index (right), tokens on each bar."""
    figure, (by_role, by_turn) = _figure(11, 3.6, columns=2, bottom=0.1)
    turns = [(t["turn"], t) for t in report["by_turn"]]
    for axes, found, title in ((by_role, roles_in_order(report), "by role"), (by_turn, turns, "by turn index")):
        shares = dict(found)
        names = [name for name, v in found if v["tokens"]]
        fractions = [shares[name]["supervised_fraction"] for name in names]
        colours = [GREEN if f > 0 else GREY for f in fractions]
        drawn = axes.bar(names, fractions, color=colours)
        axes.bar_label(drawn, labels=[f"{f:.2f}\n{shares[n]['tokens']:,} tok" for n, f in zip(names, fractions)], padding=2, fontsize=8)
        axes.set_ylim(0, 1.3)
        axes.set_yticks([0, 0.25, 0.5, 0.75, 1])
        axes.set_title(f"supervised fraction {title}", loc="left")
        axes.spines[["top", "right"]].set_visible(False)
        axes.tick_params(axis="x", labelsize=8)
    return _png(figure)


def _distributions(report: Mapping[str, object]) -> bytes:
    """Three histograms: tokens per example before and after truncation (one panel), supervised
    tokens per row, supervised fraction per row; lines at p10, the median and p90 (the quantiles
    themselves are in the report's Distributions table)."""
    found = report["distributions"]
    figure, panels = _figure(12, 3.4, columns=3, left=0.05, bottom=0.14)
    _histogram(panels[0], [(found["tokens_before_truncation"], "before truncation", GREY), (found["tokens"], "after truncation", BLUE)], "tokens per example")
    _histogram(panels[1], [(found["tokens_supervised"], "supervised tokens", GREEN)], "supervised tokens per row")
    _histogram(panels[2], [(found["supervised_fraction"], "supervised fraction", GREEN)], "supervised fraction per row", (0.0, 1.0))
    return _png(figure)


def _histogram(axes, series: Sequence[tuple[Mapping[str, object], str, str]], title: str, span: tuple[float, float] | None = None) -> None:
    """Histograms of the report's fixed bins, regrouped into at most 40 equal bins for reading."""
    lows = [s["min"] for s, _, _ in series if s["count"]]
    highs = [s["max"] for s, _, _ in series if s["count"]]
    if not lows:
        axes.set_axis_off()
        return
    low, high = span or (min(lows), max(highs))
    edges = np.linspace(low, high if high > low else low + 1, 41)
    for summary, label, colour in series:
        if summary["count"]:
            values, counts = np.array(summary["bins"], dtype=np.float64).T
            axes.hist(np.clip(values, low, high), bins=edges, weights=counts, color=colour, alpha=0.75, label=label, histtype="stepfilled" if len(series) == 1 else "step", linewidth=1.5)
    main = series[-1][0]
    for q, style in (("p10", ":"), ("p50", "--"), ("p90", ":")):
        if main.get(q) is not None:
            axes.axvline(main[q], color="black", linestyle=style, linewidth=1)
    axes.set_title(title, loc="left", fontsize=10)
    axes.set_ylabel("rows")
    axes.spines[["top", "right"]].set_visible(False)
    if len(series) > 1:
        axes.legend(frameon=False, fontsize=8)

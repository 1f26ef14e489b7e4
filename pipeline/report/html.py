"""The coverage report as one self-contained HTML page: what a person opens after a run.

Everything is inside the file: the CSS inline, the plots as inline SVG (plots.py), no script and
no link to anything outside, so the page reads the same from a laptop, a CI artifact or an
object store. The tables are tables.py's (the Markdown report renders the same ones);
on top come the headline numbers as cards, red where something needs a look (a failed gate, no
supervised end-of-turn token, rejections), then the plots, then the first rows token by token
(inspection.row_html, the view `masked-shards inspect` prints) when the caller passes them.

    report_html(report, examples=[("alpaca.jsonl:0", '<div class="ms-row">...</div>')])
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

import pyarrow as pa

from masked_shards.check.inspection import ROW_CSS, row_html, token_texts
from masked_shards.report.plots import report_plots
from masked_shards.report.tables import Table, cell, report_tables, smoke_test_table

EXAMPLE_ROWS = 3  # rows shown token by token
EXAMPLE_TOKENS = 400  # tokens shown of each

CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;background:#f6f7f9;margin:0}
main{max-width:1180px;margin:0 auto;padding:24px 28px 60px}
h1{font-size:26px;margin:0 0 4px}h2{font-size:19px;margin:34px 0 6px;border-bottom:1px solid #dde;padding-bottom:4px}
p.note{color:#555;margin:4px 0 10px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(160px,1fr));gap:10px;margin:18px 0}
.card{background:#fff;border:1px solid #dde;border-left:5px solid #3b6ea8;border-radius:6px;padding:10px 12px}
.card.bad{border-left-color:#c62828;background:#fff5f5}.card.warn{border-left-color:#ef6c00}
.card .value{font-size:22px;font-weight:600}.card .label{color:#555;font-size:13px}
.banner{padding:10px 14px;border-radius:6px;margin:12px 0;font-weight:600}
.banner.bad{background:#fdecea;color:#8e1c1c;border:1px solid #f5c2c0}.banner.good{background:#e8f5e9;color:#1b5e20;border:1px solid #c8e6c9}
table{border-collapse:collapse;background:#fff;border:1px solid #dde;margin:6px 0 8px;font-size:14px;max-width:100%}
th,td{padding:5px 10px;border-bottom:1px solid #eee;text-align:left;vertical-align:top}
th{background:#eef1f6;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;word-break:break-word;max-width:760px}
tr.failed td{background:#fdecea}
figure{background:#fff;border:1px solid #dde;border-radius:6px;margin:12px 0;padding:10px}
figure svg{max-width:100%;height:auto;display:block}figcaption{color:#555;font-size:13px;margin-top:4px}
nav{font-size:13px;color:#555}nav a{color:#3b6ea8;margin-right:10px;text-decoration:none}
.example{background:#fff;border:1px solid #dde;border-radius:6px;padding:10px;margin:10px 0}
.example h3{font-size:14px;margin:0 0 6px;font-family:ui-monospace,Menlo,Consolas,monospace}
"""


def report_html(report: Mapping[str, object], examples: Sequence[tuple[str, str]] = ()) -> str:
    """The page; `examples` are (example id, `inspection.row_html` block) of the first rows."""
    tables = report_tables(report)
    body = ["<h1>Label-coverage report</h1>", '<p class="note">What the loss trains on in this run: where every record went, which tokens are supervised, by source, role and turn.</p>']
    body.append("<nav>" + "".join(f'<a href="#{t.anchor}">{html.escape(t.title)}</a>' for t in tables) + '<a href="#plots">Plots</a>' + ('<a href="#examples">Rows</a>' if examples else "") + "</nav>")
    body += [_banner(report), _cards(report)]
    by_anchor = {t.anchor: t for t in tables}
    leading = [t for t in tables if t.anchor in ("summary", "gates", "sources", "rejected", "dropped")]
    body += [_table(t) for t in leading]
    body.append('<h2 id="plots">Plots</h2>')
    body += [_figure(caption, svg) for caption, svg in report_plots(report)]
    body += [_table(t) for t in tables if t not in leading and t.anchor not in ("files", "identity", "config")]
    if examples:
        body.append('<h2 id="examples">The first rows, token by token</h2><p class="note">Green: supervised (the loss trains on it); grey: masked context; red: padding. Shades alternate so token boundaries show.</p>')
        body += [f'<div class="example"><h3>{html.escape(example_id)}</h3>{block}</div>' for example_id, block in examples]
    body += [_table(by_anchor[a]) for a in ("files", "identity", "config") if a in by_anchor]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Label-coverage report</title><style>{CSS}{ROW_CSS}</style></head>\n<body><main>\n" + "\n".join(body) + "\n</main></body></html>\n"
    )


def with_smoke_test(page: str, report: Mapping[str, object]) -> str:
    """A written page with the smoke-test table added at its end (the stage runs after the page
    is written, and the page's first rows cannot be rebuilt from the report alone)."""
    table = smoke_test_table(report)
    end, earlier = "\n</main></body></html>\n", '\n<h2 id="smoke-test">'
    if table is None or not page.endswith(end):
        return page
    body = page[: page.index(earlier)] if earlier in page else page[: -len(end)]  # a rerun replaces its table
    return body + "\n" + _table(table) + end


def _banner(report: Mapping[str, object]) -> str:
    gates = report.get("gates", ())
    if not gates:
        return ""
    broken = [g for g in gates if not g["passed"]]
    if broken:
        names = ", ".join(f"{g['flag']} {g['limit']} (value {g['value']})" for g in broken)
        return f'<div class="banner bad">Quality gate failed: {html.escape(names)}. The run exited 1.</div>'
    return f'<div class="banner good">All {len(gates)} quality gates passed.</div>'


def _cards(report: Mapping[str, object]) -> str:
    eot = report["end_of_turn"]
    cards = [
        ("records read", cell(report["records_read"]), ""),
        ("rows written", cell(report["rows_written"]), "bad" if not report["rows_written"] else ""),
        ("rejected", cell(report["rejected"]), "warn" if report["rejected"] else ""),
        ("dropped", cell(report["dropped"]), "warn" if report["dropped"] else ""),
        ("truncated (kept + dropped)", cell(report["truncated"] + report["truncated_then_dropped"]), "warn" if report["truncated"] + report["truncated_then_dropped"] else ""),
        ("of the tokens supervised", _percent(report["supervised_fraction"]), "bad" if not report["supervised_fraction"] else ""),
        ("of the assistant tokens supervised", _percent(report["by_role"].get("assistant", {}).get("supervised_fraction")), ""),
        ("end-of-turn tokens supervised", f"{cell(eot['supervised'])} / {cell(eot['trained_turns'])}", "bad" if eot["trained_turns"] and not eot["supervised"] else ""),
    ]
    return '<div class="cards">' + "".join(f'<div class="card {kind}"><div class="value">{html.escape(value)}</div><div class="label">{html.escape(label)}</div></div>' for label, value, kind in cards) + "</div>"


def _percent(fraction: float | None) -> str:
    return "-" if fraction is None else f"{fraction:.1%}"


def _table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    rows = []
    for row in table.rows:
        failed = ' class="failed"' if "FAILED" in row else ""
        cells = "".join(_td(value, table.code and n == len(row) - 1) for n, value in enumerate(row))
        rows.append(f"<tr{failed}>{cells}</tr>")
    return f'<h2 id="{table.anchor}">{html.escape(table.title)}</h2><p class="note">{html.escape(table.note)}</p><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _td(value: object, code: bool) -> str:
    text = html.escape(cell(value))
    if value is None or isinstance(value, (int, float)) and not isinstance(value, bool):
        return f'<td class="num">{text}</td>'
    return f'<td class="code">{text}</td>' if code else f"<td>{text}</td>"


def _figure(caption: str, svg: str) -> str:
    return f"<figure>{svg}<figcaption>{html.escape(caption)}</figcaption></figure>"


def example_views(rows: pa.Table, tokenizer) -> list[tuple[str, str]]:
    """(example id, token-by-token HTML) of the first EXAMPLE_ROWS rows of a decoder shard (its
    first EXAMPLE_TOKENS tokens), as `masked-shards inspect` shows them."""
    views = []
    for row in rows.slice(0, EXAMPLE_ROWS).to_pylist():
        ids, labels = row["input_ids"][:EXAMPLE_TOKENS], row["labels"][:EXAMPLE_TOKENS]
        attention = (row.get("attention_mask") or [1] * len(ids))[:EXAMPLE_TOKENS]
        more = len(row["input_ids"]) - len(ids)
        block = row_html(token_texts(tokenizer, ids), labels, attention, ids)
        name = row.get("example_id") or ", ".join(row.get("example_ids") or [])
        views.append((name + (f" (first {EXAMPLE_TOKENS} of {EXAMPLE_TOKENS + more} tokens)" if more else ""), block))
    return views

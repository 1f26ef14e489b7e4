"""The coverage report as tables: one list of `Table`s that the Markdown and the HTML report both
render, so the two files can never say different things.

Every table is built from the report's JSON dict alone (label_coverage.Coverage.report), never
from rows, so a report can be re-rendered from a `coverage_report.json` later:

    report_tables(report) -> [Table("Summary", ...), Table("Records per source", ...), ...]
    report_markdown(report) -> "# Label-coverage report\\n\\n## Summary\\n..."
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from masked_shards.report.histograms import QUANTILES
from masked_shards.records import MARKUP, TURN_ROLES

Cell = str | int | float | None


@dataclass(frozen=True)
class Table:
    """A titled table; `note` says what it shows and where to look next; `anchor` names it in HTML;
    `code`: the last column holds raw records or settings (shown in a fixed-width font)."""

    anchor: str
    title: str
    note: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    code: bool = False


def cell(value: Cell) -> str:
    """How a value reads in a table: 12,345 / 0.5846 / - for none."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.1f}".removesuffix(".0") if abs(value) >= 100 else f"{round(value, 4):g}"
    return str(value)


def report_tables(report: Mapping[str, object]) -> list[Table]:
    """Every table of the report, in reading order (tables with nothing to show are left out)."""
    tables = [_summary(report), _gates(report), _sources(report), *_outcomes(report), *_shares(report), _end_of_turn(report), *_tool_use(report), _distributions(report), *_reshaped(report), smoke_test_table(report), _files(report), *_run(report)]
    return [table for table in tables if table is not None and table.rows]


def _summary(report: Mapping[str, object]) -> Table:
    splits = ", ".join(f"{split} {n:,}" for split, n in report["rows_by_split"].items())
    files = report.get("record_files", {})
    per = report["supervised_fraction_per_example"]
    rows = [
        ("records read", report["records_read"], "every record of every input (blank lines are not records)"),
        ("rows written", report["rows_written"], splits + ("; a split with 0 rows got no file" if 0 in report["rows_by_split"].values() else "")),
        ("rejected", report["rejected"], f"listed with their raw input in {files['rejected']}" if "rejected" in files else "none"),
        ("dropped", report["dropped"], f"listed in {files['dropped']}" if "dropped" in files else "none"),
        ("truncated", report["truncated"], f"rows cut to --max-length and kept; {report['truncated_then_dropped']:,} more cut and then dropped (nothing left to train), counted in dropped"),
        ("sampled out (--mix)", report["sampled_out"], "left out to meet --mix weights; counted, not listed"),
        ("blank lines", report["blank_lines"], "not records; they still advance line-number ids"),
        ("tokens", report["tokens_total"], f"real tokens in the rows; {report['tokens_padding']:,} padding besides, {report['tokens_dropped_by_truncation']:,} cut by truncation"),
        ("supervised tokens", report["tokens_supervised"], f"fraction {cell(report['supervised_fraction'])}; per example min {cell(per['min'])}, median {cell(per['median'])}, max {cell(per['max'])}"),
    ]
    if "limit" in report:
        rows.append(("--limit", report["limit"], "only the first records of each input were read: a quick look, not the whole data"))
    return Table("summary", "Summary", "Where every record went, and how much of what remained the loss sees.", ("", "count", ""), tuple(rows))


def _gates(report: Mapping[str, object]) -> Table:
    rows = tuple((g["flag"], g["limit"], g["value"], "passed" if g["passed"] else "FAILED") for g in report.get("gates", ()))
    return Table("gates", "Quality gates", "A failed gate makes the run exit 1 after its shards and this report are written.", ("gate", "limit", "value", "result"), rows)


TOP_SOURCES = 20  # sources shown one by one; the rest are summed in one row


def _sources(report: Mapping[str, object]) -> Table:
    """The sources with the most records read, then the rest summed, so the page stays readable
    however many inputs a run names (every file's own counts are in coverage_by_file.jsonl)."""
    fields = ("read", "rows", "rejected", "dropped", "truncated", "sampled_out", "tokens", "tokens_supervised")
    ranked = sorted(report["by_source"].items(), key=lambda item: (-item[1]["read"], item[0]))
    rows = [(name, *(v[f] for f in fields), v["supervised_fraction"]) for name, v in ranked[:TOP_SOURCES]]
    if rest := ranked[TOP_SOURCES:]:
        sums = [sum(v[f] for _, v in rest) for f in fields]
        rows.append((f"{len(rest):,} more sources", *sums, round(sums[-1] / sums[-2], 6) if sums[-2] else None))
    rows = tuple(rows)
    note = "read = rows + rejected + dropped + sampled out; truncated counts rows cut and kept plus examples cut and then dropped. Each input file's counts: coverage_by_file.jsonl."
    return Table("sources", "Records per source", note, ("source", "read", "rows", "rejected", "dropped", "truncated", "sampled out", "tokens", "supervised", "fraction"), rows)


def _outcomes(report: Mapping[str, object]) -> list[Table]:
    files = report.get("record_files", {})
    tables = []
    for kind, title in (("rejected", "Rejected records by reason"), ("dropped", "Dropped examples by reason")):
        examples = report.get(f"{kind}_examples", {})
        rows = tuple((reason, count, " | ".join(_example(e) for e in examples.get(reason, ()))) for reason, count in report[f"{kind}_by_reason"].items())
        where = f"Every one is listed in {files[kind]}" if kind in files else "None"
        tables.append(Table(kind, title, f"{where}; the first three of each reason, in input order:", ("reason", "count", "first examples"), rows, code=True))
    return tables


def _example(entry: Mapping[str, object]) -> str:
    """'f.jsonl:3: detail; raw {...}' for a rejected record, 'id: detail' for a dropped example."""
    if "example_id" in entry:
        return f"{entry['example_id']}: {entry['detail']}"
    where = entry["source"] if entry["index"] is None else f"{entry['source']}:{entry['index']}"
    return f"{where}: {entry['detail']}; raw {entry['raw']}"


def _shares(report: Mapping[str, object]) -> list[Table]:
    def rows(shares: Sequence[tuple[str, Mapping[str, object]]]) -> tuple[tuple[Cell, ...], ...]:
        return tuple((name, v["tokens"], v["tokens_supervised"], v["supervised_fraction"]) for name, v in shares)

    columns = ("", "tokens", "supervised", "fraction")
    role_note = "Each message's tokens after truncation; markup is every token outside a message (role headers, BOS, separators, a template's default system prompt). Normally only assistant tokens are supervised."
    turn_note = "By the message's place in its conversation (0 = first message, system or user)."
    return [
        Table("roles", "Supervised tokens by role", role_note, ("role", *columns[1:]), rows(roles_in_order(report))),
        Table("turns", "Supervised tokens by turn index", turn_note, ("turn", *columns[1:]), rows([(t["turn"], t) for t in report["by_turn"]])),
    ]


def _end_of_turn(report: Mapping[str, object]) -> Table:
    eot = report["end_of_turn"]
    rows = (
        ("supervised", eot["supervised"], "the model learns to stop here"),
        ("not supervised", eot["not_supervised"], "masked (--no-train-on-eot): the model never learns to stop"),
        ("cut by truncation", eot["cut_by_truncation"], "the turn was cut before its end (a cut answer must not teach stopping)"),
        ("no end-of-turn token", eot["no_end_of_turn_token"], "the turn's span ends in no special token"),
    )
    note = f"Of the {eot['trained_turns']:,} trained turns (messages with a supervised token), whether each one's end-of-turn token was supervised."
    return Table("end-of-turn", "End-of-turn tokens", note, ("end-of-turn token", "turns", ""), rows)


def _tool_use(report: Mapping[str, object]) -> list[Table]:
    """Tool calls, tool results and reasoning, when the run had any (plain chat shows no table)."""
    tools = report.get("tool_use")
    if not tools or not any(tools.values()):
        return []
    rows = (
        ("tool calls", tools["tool_calls"], "calls made by assistant messages, in the template's own syntax"),
        ("tool calls trained", tools["tool_calls_trained"], "calls in a message with supervised tokens (role tool_call)"),
        ("turns with parallel calls", tools["parallel_call_turns"], "assistant messages making more than one call"),
        ("tool results", tools["tool_results"], "tool messages read back to the assistant (role tool)"),
        ("tool results supervised", tools["tool_results_supervised"], "should be 0: a result is input, not output"),
        ("reasoning tokens trained", tools["reasoning_tokens_supervised"], f"in {tools['reasoning_turns_trained']:,} turns"),
        ("reasoning not rendered", tools["reasoning_not_rendered"], f"turns whose reasoning ({tools['reasoning_characters_not_rendered']:,} characters) the template left out (Qwen3 drops it from history by design)"),
    )
    return [Table("tool-use", "Tool use and reasoning", "Counted over the messages of the rows written.", ("", "count", ""), rows)]


DISTRIBUTIONS = {
    "tokens_before_truncation": "tokens per example before truncation",
    "tokens": "tokens per row (after truncation)",
    "tokens_supervised": "supervised tokens per row",
    "supervised_fraction": "supervised fraction per row",
}


def _distributions(report: Mapping[str, object]) -> Table:
    quantiles = [f"p{round(q * 100)}" for q in QUANTILES]
    rows = tuple(
        (DISTRIBUTIONS[name], d["count"], d.get("mean"), d.get("min"), *(d.get(q) for q in quantiles), d.get("max"))
        for name, d in ((name, report["distributions"][name]) for name in DISTRIBUTIONS)
        if d["count"]
    )
    note = "From fixed-bin histograms: token counts exact below 128 and within 1.6% above, fractions within 0.0005; min, max and mean exact."
    return Table("distributions", "Distributions", note, ("", "rows", "mean", "min", *quantiles, "max"), rows)


def _reshaped(report: Mapping[str, object]) -> list[Table]:
    """The packing or striding block (packing.py, striding.py), key by key; a distribution by
    its quantiles (its bins are plotted)."""
    tables = []
    for kind in ("packing", "striding"):
        if kind not in report:
            continue
        block = report[kind]
        rows = [(key, _flat(value)) for key, value in block.items() if key != "distributions"]
        for name, found in block.get("distributions", {}).items():
            rows.append((name, ", ".join(f"{q} {_flat(found[q])}" for q in ("min", "p10", "p50", "p90", "max"))))
        tables.append(Table(kind, kind.capitalize(), f"Rows made from the example rows by --{'packing' if kind == 'packing' else 'stride'}.", ("", "value"), tuple(rows), code=True))
    return tables


def smoke_test_table(report: Mapping[str, object]) -> Table | None:
    """The smoke-test stage's checks (smoke_test.py), once it has run: it runs after the job, so
    the report gains this table afterwards (job.record_smoke_test)."""
    result = report.get("smoke_test")
    if not result:
        return None
    rows = []
    for name, check in result["checks"].items():
        numbers = ", ".join(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {_flat(value)}" for key, value in sorted(check.items()) if key not in ("passed", "losses", "problem"))
        rows.append((name, "passed" if check["passed"] else "FAILED", check.get("problem", numbers)))
    note = f"A tiny random model trained on rows read back from the shards, on {result.get('device', '?')}; every number, and the timings, are in smoke_test.json."
    return Table("smoke-test", "Smoke test", note, ("check", "result", "numbers"), tuple(rows))


def _files(report: Mapping[str, object]) -> Table:
    files = report.get("record_files", {})
    rows = [("data/", "the shards: one Parquet file per shard and split (manifest.json lists each with its rows and sha256)")]
    rows += [(path, f"every {kind} record, one JSON object a line") for kind, path in files.items()]
    rows += [("coverage_report.json", "this report's numbers"), ("coverage_report.md / .html", "this report"), ("manifest.json", "settings, tokenizer, shards and checksums (written last; absent when no row was written)")]
    return Table("files", "Files", "Everything lies under the run's --output.", ("path", "what"), tuple(rows))


def _run(report: Mapping[str, object]) -> list[Table]:
    run = report.get("run")
    if not run:
        return []
    tokenizer = run.get("tokenizer", {})
    identity = [("template", f"{run['template']['name']} (sha256 {run['template']['sha256'][:16]}...)")]
    for key, value in sorted(tokenizer.items()):
        found = value.items() if isinstance(value, dict) else [(None, value)]
        identity += [(f"tokenizer {key}" + (f" {name}" if name else ""), _flat(item)) for name, item in sorted(found, key=lambda pair: str(pair[0]))]
    settings = tuple((key, _flat(value)) for key, value in run["config"].items())
    return [
        Table("identity", "Tokenizer and template", "What made the tokens: the same names and checksums are in manifest.json.", ("", "value"), tuple(identity), code=True),
        Table("config", "Settings", "Every setting of the run (all but --output and --overwrite).", ("setting", "value"), settings, code=True),
    ]


def roles_in_order(report: Mapping[str, object]) -> list[tuple[str, Mapping[str, object]]]:
    """(role, its counts) in TURN_ROLES order, markup last (the JSON file sorts keys by name)."""
    order = {role: n for n, role in enumerate((*TURN_ROLES, MARKUP))}
    return sorted(report["by_role"].items(), key=lambda item: order.get(item[0], len(order)))


def _flat(value: object) -> str:
    """A setting as it reads in the manifest: strings as they are, anything else as compact JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def report_markdown(report: Mapping[str, object]) -> str:
    """The whole report as Markdown (the plots are in the HTML report)."""
    parts = ["# Label-coverage report", "", "Plots of the distributions are in coverage_report.html; the numbers in coverage_report.json.", ""]
    for table in report_tables(report):
        parts += [f"## {table.title}", "", table.note, "", _markdown_row(table.columns), _markdown_row(tuple("---" for _ in table.columns))]
        parts += [_markdown_row(tuple(cell(value) for value in row)) for row in table.rows]
        parts.append("")
    return "\n".join(parts)


def _markdown_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(" ".join(text.replace("|", "\\|").split()) for text in cells) + " |"

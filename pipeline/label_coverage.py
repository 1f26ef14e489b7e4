"""What the loss actually trains on: mergeable counts and the coverage report built from them.

`Coverage` is a plain accumulator so Beam can combine it across workers (`merge`) and tests can
fill it by hand. Rows come in whole batches (`add_batch`), counted with array operations over the
batch's columns; rejected, dropped and sampled-out records and blank lines one by one (`add`).
The per-example supervised fraction is kept as a 1,000-bin histogram: min and max are exact, the
median is exact to within 0.001, and memory stays fixed however many rows pass.
"""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from masked_shards.masking import IGNORE_INDEX
from masked_shards.records import BlankLines, Dropped, Rejected, RowBatch, SampledOut

BINS = 1000
PLOT_BINS = 20


@dataclass
class Coverage:
    rows: Counter = field(default_factory=Counter)  # split -> rows
    rejected: Counter = field(default_factory=Counter)  # reason -> records
    dropped: Counter = field(default_factory=Counter)  # reason -> examples
    sampled_out: Counter = field(default_factory=Counter)  # source -> examples left out by --mix
    source_rows: Counter = field(default_factory=Counter)
    source_tokens: Counter = field(default_factory=Counter)
    source_supervised: Counter = field(default_factory=Counter)
    blank_lines: int = 0  # skipped in line-based inputs: no records, but they shift ids (sources.py)
    truncated: int = 0
    split_at_boundaries: int = 0
    tokens: int = 0
    supervised: int = 0
    padding: int = 0
    tokens_before_truncation: int = 0  # minus tokens: the tokens truncation cut (issue 8/9)
    fraction_bins: list[int] = field(default_factory=lambda: [0] * (BINS + 1))
    fraction_min: float = 1.0
    fraction_max: float = 0.0

    def add(self, item: Rejected | Dropped | SampledOut | BlankLines) -> None:
        """Count one record that gave no row (rows come through `add_batch`)."""
        if isinstance(item, Rejected):
            self.rejected[item.reason] += 1
        elif isinstance(item, Dropped):
            self.dropped[item.reason] += 1
        elif isinstance(item, SampledOut):
            self.sampled_out[item.source] += 1
        elif isinstance(item, BlankLines):
            self.blank_lines += item.count
        else:
            raise TypeError(f"Coverage.add counts records without rows, not {type(item).__name__}; rows go to add_batch")

    def add_batch(self, batch: RowBatch) -> None:
        """Count a batch's rows, per row from the flat label and mask values and the lists' row
        of each value, never per token in Python. `batch.others` are not counted here: they reach
        `add` on their own, like every rejected or dropped record.

        Tokens a row costs a step: its real (unpadded) tokens, plus for encoder-decoder rows the
        target's (its supervised labels), which the decoder reads as well."""
        rows = batch.rows
        if not rows.num_rows:
            return
        supervised = _per_row(rows.column("labels"), lambda labels: labels != IGNORE_INDEX)
        real = _per_row(rows.column("attention_mask"), lambda mask: mask)
        length = pc.list_value_length(rows.column("input_ids")).to_numpy()
        tokens = real + (0 if batch.aligned else supervised)
        self.tokens += int(tokens.sum())
        self.supervised += int(supervised.sum())
        self.padding += int((length - real).sum())
        self.truncated += int(pc.sum(rows.column("truncated").cast(pa.int64())).as_py() or 0)
        self.split_at_boundaries += int(pc.sum(rows.column("split_at_boundaries").cast(pa.int64())).as_py() or 0)
        self.tokens_before_truncation += int(pc.sum(rows.column("tokens_before_truncation")).as_py() or 0)
        self.rows.update(_sums(rows.column("split"), np.ones(rows.num_rows, dtype=np.int64)))
        self.source_rows.update(_sums(rows.column("source"), np.ones(rows.num_rows, dtype=np.int64)))
        self.source_tokens.update(_sums(rows.column("source"), tokens))
        self.source_supervised.update(_sums(rows.column("source"), supervised))
        fraction = supervised / tokens
        self.fraction_bins = (np.asarray(self.fraction_bins) + np.bincount(np.rint(fraction * BINS).astype(np.int64), minlength=BINS + 1)).tolist()
        self.fraction_min = min(self.fraction_min, float(fraction.min()))
        self.fraction_max = max(self.fraction_max, float(fraction.max()))

    def merge(self, other: Coverage) -> Coverage:
        self.rows += other.rows
        self.rejected += other.rejected
        self.dropped += other.dropped
        self.sampled_out += other.sampled_out
        self.blank_lines += other.blank_lines
        self.source_rows += other.source_rows
        self.source_tokens += other.source_tokens
        self.source_supervised += other.source_supervised
        self.truncated += other.truncated
        self.split_at_boundaries += other.split_at_boundaries
        self.tokens += other.tokens
        self.supervised += other.supervised
        self.padding += other.padding
        self.tokens_before_truncation += other.tokens_before_truncation
        self.fraction_bins = [a + b for a, b in zip(self.fraction_bins, other.fraction_bins)]
        self.fraction_min = min(self.fraction_min, other.fraction_min)
        self.fraction_max = max(self.fraction_max, other.fraction_max)
        return self

    def median_fraction(self) -> float | None:
        total = sum(self.fraction_bins)
        if not total:
            return None
        seen = 0
        for index, count in enumerate(self.fraction_bins):
            seen += count
            if seen * 2 >= total:
                return index / BINS
        return None

    def histogram(self) -> list[int]:
        """Rows per 0.05-wide bin of supervised fraction (the last bin includes 1.0)."""
        coarse = [0] * PLOT_BINS
        for index, count in enumerate(self.fraction_bins):
            coarse[min(index * PLOT_BINS // BINS, PLOT_BINS - 1)] += count
        return coarse

    def report(self, records_read: int, rows_in_shards: int) -> dict[str, object]:
        """The JSON report. `rows_in_shards` is counted from the files written, not from here."""
        written = sum(self.rows.values())
        return {
            "records_read": records_read,
            "rows_written": rows_in_shards,
            "rows_by_split": dict(sorted(self.rows.items())),
            "rejected": sum(self.rejected.values()),
            "rejected_by_reason": dict(sorted(self.rejected.items())),
            "dropped": sum(self.dropped.values()),
            "dropped_by_reason": dict(sorted(self.dropped.items())),
            "sampled_out": sum(self.sampled_out.values()),
            "sampled_out_by_source": dict(sorted(self.sampled_out.items())),
            "blank_lines": self.blank_lines,
            "by_source": {
                source: {
                    "rows": rows,
                    "tokens": self.source_tokens[source],
                    "tokens_supervised": self.source_supervised[source],
                    "supervised_fraction": round(self.source_supervised[source] / self.source_tokens[source], 6) if self.source_tokens[source] else None,
                }
                for source, rows in sorted(self.source_rows.items())
            },
            "truncated": self.truncated,
            "split_at_span_boundaries": self.split_at_boundaries,
            "tokens_total": self.tokens,
            "tokens_supervised": self.supervised,
            "tokens_padding": self.padding,
            "tokens_before_truncation": self.tokens_before_truncation,
            "supervised_fraction": round(self.supervised / self.tokens, 6) if self.tokens else None,
            "supervised_fraction_per_example": {
                "min": round(self.fraction_min, 6) if written else None,
                "median": self.median_fraction(),
                "max": round(self.fraction_max, 6) if written else None,
            },
            "supervised_fraction_histogram": {"bin_width": 1 / PLOT_BINS, "rows": self.histogram()},
        }


def _per_row(lists: pa.ListArray, count) -> np.ndarray:
    """Per row, the sum of `count(flat values)` over the row's values: the values are counted
    into the row each belongs to (`list_parent_indices`), so a sliced array counts right too."""
    values = pc.list_flatten(lists).to_numpy()
    parents = pc.list_parent_indices(lists).to_numpy()
    return np.bincount(parents, weights=count(values), minlength=len(lists)).astype(np.int64)


def _sums(keys: pa.Array, values: np.ndarray) -> dict[str, int]:
    """`values` summed per distinct key: {key: total}."""
    encoded = keys.dictionary_encode()
    totals = np.bincount(encoded.indices.to_numpy(), weights=values, minlength=len(encoded.dictionary))
    return dict(zip(encoded.dictionary.to_pylist(), totals.astype(np.int64).tolist()))


def reconcile(report: dict[str, object]) -> str | None:
    """None when every record read is accounted for, else the sentence saying what is missing."""
    read, written = report["records_read"], report["rows_written"]
    rejected, dropped, sampled_out = report["rejected"], report["dropped"], report["sampled_out"]
    if read == written + rejected + dropped + sampled_out and written == sum(report["rows_by_split"].values()):
        return None
    return (
        f"records do not reconcile: read {read} != written {written} + rejected {rejected} + dropped {dropped}"
        f" + sampled out {sampled_out}"
        f" (rows produced before writing: {sum(report['rows_by_split'].values())})"
    )


def report_text(report: dict[str, object]) -> str:
    """The human-readable summary printed at the end of a run and saved beside the JSON."""
    per = report["supervised_fraction_per_example"]
    lines = [
        f"records read        {report['records_read']:>10,}",
        f"rows written        {report['rows_written']:>10,}  {report['rows_by_split']}",
        f"rejected            {report['rejected']:>10,}  {report['rejected_by_reason']}",
        f"dropped             {report['dropped']:>10,}  {report['dropped_by_reason']}",
        f"sampled out (--mix) {report['sampled_out']:>10,}  {report['sampled_out_by_source']}",
        f"blank lines         {report['blank_lines']:>10,}  (not records; they still advance line-number ids)",
        f"truncated           {report['truncated']:>10,}",
        f"tokens              {report['tokens_total']:>10,}  (padding {report['tokens_padding']:,})",
        f"supervised tokens   {report['tokens_supervised']:>10,}  fraction {report['supervised_fraction']}",
        f"per-example fraction  min {per['min']}  median {per['median']}  max {per['max']}",
    ]
    lines += [f"  source {name}: {v['rows']:,} rows, {v['tokens']:,} tokens, supervised fraction {v['supervised_fraction']}" for name, v in report["by_source"].items()]
    return "\n".join(lines) + "\n"


def report_png(report: dict[str, object]) -> bytes:
    """Two panels: how supervised each row is, and where every record went."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    histogram = report["supervised_fraction_histogram"]
    width = histogram["bin_width"]
    left.bar([i * width for i in range(len(histogram["rows"]))], histogram["rows"], width=width, align="edge", edgecolor="white")
    left.set(title="Supervised fraction per row", xlabel="supervised tokens / tokens", ylabel="rows", xlim=(0, 1))
    outcomes = {"written": report["rows_written"]}
    outcomes |= {f"rejected: {k}": v for k, v in report["rejected_by_reason"].items()}
    outcomes |= {f"dropped: {k}": v for k, v in report["dropped_by_reason"].items()}
    right.barh(list(outcomes)[::-1], list(outcomes.values())[::-1])
    right.set(title=f"{report['records_read']:,} records read", xlabel="records", xscale="log" if any(outcomes.values()) else "linear")  # no log axis for an empty input
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80, metadata={"Software": None})
    plt.close(figure)
    return buffer.getvalue()

"""Coverage counts merge like one pass over all rows, and reconciliation catches lost records."""

from __future__ import annotations

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import Row, row_batch
from masked_shards.report.label_coverage import Coverage, _per_row, reconcile, report_text
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
    outcomes = {"read": 2, "rows": 2, "rejected": 0, "dropped": 0, "sampled_out": 0}
    assert report["by_source"] == {
        "f": outcomes | {"truncated": 1, "tokens": 6, "tokens_supervised": 3, "supervised_fraction": 0.5},
        "g": outcomes | {"read": 1, "rows": 1, "truncated": 0, "tokens": 6, "tokens_supervised": 3, "supervised_fraction": 0.5},
    }
    assert report["rows_by_split"] == {"train": 2, "validation": 1}
    assert report["supervised_fraction_per_example"] == {"min": 0.5, "median": 0.5, "max": 0.5}


def test_examples_are_the_first_three_in_input_order_however_records_arrive():
    """Which rejected records the report shows must not depend on how Beam spread them: the first
    three by (file, index), whatever the arrival order and however the partial counts merge."""
    records = [Rejected("b.jsonl" if n % 2 else "a.jsonl", n, "invalid_json", f"line {n}", {"n": n}) for n in range(10)]
    drops = [Dropped(f"a.jsonl:{n}", "a", "overlong", "long") for n in (7, 3, 5, 9)]
    expected = [("a.jsonl", 0), ("a.jsonl", 2), ("a.jsonl", 4)]
    for order in (records, records[::-1], records[3:] + records[:3]):
        left, right = Coverage(), Coverage()
        for n, item in enumerate(order + drops):
            (left if n % 3 else right).add(item)
        report = left.merge(right).report(records_read=14, rows_in_shards=0, sources={"a.jsonl": "a", "b.jsonl": "b"})
        assert [(e["source"], e["index"]) for e in report["rejected_examples"]["invalid_json"]] == expected
        assert report["rejected_examples"]["invalid_json"][0]["raw"] == '{"n": 0}'
        assert [e["example_id"] for e in report["dropped_examples"]["overlong"]] == ["a.jsonl:3", "a.jsonl:5", "a.jsonl:7"]
        assert {name: v["read"] for name, v in report["by_source"].items()} == {"a": 5 + 4, "b": 5}


def test_per_message_counts_give_role_turn_and_end_of_turn_shares():
    """Two rows' report-only message columns: tokens outside every message are markup, turn 1 is
    the second message of each conversation, and only trained turns count for end-of-turn."""
    rows = [
        Row("f:0", "f", "train", [0] * 10, [-100] * 6 + [1] * 4, [1] * 10, turn_roles=[1, 2], turn_tokens=[3, 4], turn_supervised=[0, 4], turn_eot=[0, 2]),
        Row("f:1", "f", "train", [0] * 12, [-100] * 9 + [1] * 3, [1] * 12, truncated=True, turn_roles=[0, 1, 2], turn_tokens=[2, 3, 3], turn_supervised=[0, 0, 3], turn_eot=[0, 0, 3]),
    ]
    coverage = Coverage()
    coverage.add_batch(row_batch(rows))
    report = coverage.report(records_read=2, rows_in_shards=2)
    assert {role: (v["tokens"], v["tokens_supervised"]) for role, v in report["by_role"].items()} == {
        "system": (2, 0), "user": (6, 0), "assistant": (7, 7), "tool": (0, 0), "markup": (3 + 4, 0)
    }
    assert [(t["turn"], t["tokens"], t["tokens_supervised"]) for t in report["by_turn"]] == [("0", 5, 0), ("1", 7, 4), ("2", 3, 3)]
    assert report["end_of_turn"] == {"trained_turns": 2, "supervised": 1, "not_supervised": 0, "cut_by_truncation": 1, "no_end_of_turn_token": 0}
    assert report["distributions"]["tokens"] | {"bins": None} == {"count": 2, "mean": 11.0, "min": 10.0, "p1": 10.0, "p10": 10.0, "p25": 10.0, "p50": 10.0, "p75": 12.0, "p90": 12.0, "p99": 12.0, "max": 12.0, "bins": None}


def test_tool_calls_results_and_reasoning_are_counted_from_real_rows(demo_tokenizer):
    """Rows from the row builder through TRL's Qwen3 training template (reasoning rendered on
    every turn) and through plain ChatML (which shows neither calls nor reasoning, so records with
    calls are rejected): calls and results counted per message, past reasoning left out counted."""
    import trl
    from pathlib import Path

    from conftest import build_all
    from masked_shards.build.rows import RowBuilder
    from masked_shards.build.templates import ChatTemplate, resolve_template
    from masked_shards.config import PipelineConfig
    from masked_shards.read.formats import to_example
    from masked_shards.read.sources import RawRecord

    def call(city: str) -> dict:
        return {"type": "function", "function": {"name": "get_weather", "arguments": {"city": city}}}

    records = [
        {"messages": [
            {"role": "user", "content": "Paris and Rome?"},
            {"role": "assistant", "content": "", "reasoning_content": "Two cities, two calls.", "tool_calls": [call("Paris"), call("Rome")]},
            {"role": "tool", "content": "21"},
            {"role": "tool", "content": "25"},
            {"role": "assistant", "content": "21 and 25."},
        ]},
        {"messages": [{"role": "user", "content": "Oslo?"}, {"role": "assistant", "tool_calls": [call("Oslo")]}]},
    ]
    examples = [to_example(RawRecord("f", n, record, "f")) for n, record in enumerate(records)]
    qwen3 = str(Path(trl.__file__).parent / "chat_templates" / "qwen3_training.jinja")
    # ChatML that shows no tool calls rejects those records (a row would lack the call); it shows
    # no reasoning either: a past turn's is counted as not rendered.
    plain = ChatTemplate("plain", "{%- for message in messages -%}{{- '<|im_start|>' + message['role'] + '\\n' -}}{%- if message['role'] == 'assistant' -%}{%- generation -%}{{- (message['content'] or '') + '<|im_end|>' -}}{%- endgeneration -%}{{- '\\n' -}}{%- else -%}{{- message['content'] + '<|im_end|>\\n' -}}{%- endif -%}{%- endfor -%}")
    past = {"messages": [{"role": "user", "content": "Paris?"}, {"role": "assistant", "content": "21.", "reasoning_content": "Two cities, two calls."}, {"role": "user", "content": "Rome?"}, {"role": "assistant", "content": "25."}]}
    inputs = {qwen3: examples, "chatml": [*examples, to_example(RawRecord("f", 2, past, "f"))]}
    templates = {qwen3: resolve_template(qwen3, None), "chatml": plain}
    reports, others = {}, {}
    for name in (qwen3, "chatml"):
        coverage = Coverage()
        batch = RowBuilder(PipelineConfig(template=name), demo_tokenizer, templates[name]).build(inputs[name])
        coverage.add_batch(batch)
        reports[name] = coverage.report(records_read=len(inputs[name]), rows_in_shards=batch.rows.num_rows)
        others[name] = [o.reason for o in batch.others]
    assert others == {qwen3: [], "chatml": ["template_dropped_tool_calls"] * 2}
    tool_use = reports[qwen3]["tool_use"]
    reasoning = len(demo_tokenizer("Two cities, two calls.", add_special_tokens=False)["input_ids"])
    assert tool_use == {
        "tool_calls": 3, "tool_calls_trained": 3, "parallel_call_turns": 1, "tool_results": 2, "tool_results_supervised": 0,
        "reasoning_turns_trained": 1, "reasoning_tokens_supervised": reasoning, "reasoning_not_rendered": 0, "reasoning_characters_not_rendered": 0,
    }
    assert reports[qwen3]["by_role"]["tool"]["tokens"] > 0 and reports[qwen3]["by_role"]["tool"]["tokens_supervised"] == 0
    assert reports[qwen3]["by_role"]["tool_call"]["supervised_fraction"] == 1.0
    plain = reports["chatml"]["tool_use"]
    assert (plain["tool_calls"], plain["tool_calls_trained"], plain["reasoning_not_rendered"], plain["tool_results"]) == (0, 0, 1, 0)
    assert plain["reasoning_characters_not_rendered"] == len("Two cities, two calls.")
    assert "tool use" in report_text(reports[qwen3]) and "1 turns with parallel calls" in report_text(reports[qwen3])


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(st.lists(st.integers(-100, 5), max_size=6), max_size=8), data=st.data())
def test_per_row_counts_are_each_rows_own_on_any_slice(rows, data):
    """Counted per row from the flat values at the rows' offsets: empty rows, a sliced array, and
    a slice ending in empty rows count as a loop over each row does."""
    lists = pa.array(rows, pa.list_(pa.int32()))
    start = data.draw(st.integers(0, len(rows)))
    stop = data.draw(st.integers(start, len(rows)))
    got = _per_row(lists.slice(start, stop - start), lambda values: values != -100)
    assert got.tolist() == [sum(v != -100 for v in row) for row in rows[start:stop]]

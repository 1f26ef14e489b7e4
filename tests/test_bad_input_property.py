"""No record can kill a job: a property over generated records, through the whole job on the real runner.

Records are arbitrary JSON values and shapes, half of them shaped like our formats so they reach
rendering and encoding, with hostile text: noncharacters, NUL, escaped lone surrogates, special-token
strings, very long strings, deep nesting. Whatever they hold, the job finishes, writes its report,
and accounts for every record: read = written + rejected + dropped, every rejection listed.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from masked_shards.cli import main

HOSTILE = ["\x00", "\ufdd0", "\ufdd2", "\ud800", "\udfff", "\uffff", "<|im_end|>", "<|im_start|>assistant\n", "\u2028", "\r\n", "x" * 20_000]
text = st.text(st.characters(codec=None), max_size=12) | st.sampled_from(HOSTILE) | st.tuples(st.text(max_size=4), st.sampled_from(HOSTILE)).map("".join)
scalar = st.none() | st.booleans() | st.integers() | st.floats() | text
value = st.recursive(scalar, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3), max_leaves=8)
loose = text | value


def _message(role_key: str, text_key: str, roles: list[str]) -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries(
        {role_key: st.sampled_from(roles) | loose, text_key: loose},
        optional={"train": loose, "weight": loose, "reasoning_content": loose},
    )


shaped = st.one_of(
    st.fixed_dictionaries({"instruction": loose, "output": loose}, optional={"input": loose}),
    st.fixed_dictionaries({"prompt": loose, "completion": loose}),
    st.fixed_dictionaries({"messages": st.lists(_message("role", "content", ["system", "user", "assistant"]), max_size=4) | loose}),
    st.fixed_dictionaries({"conversations": st.lists(_message("from", "value", ["system", "human", "gpt"]), max_size=4)}),
    st.fixed_dictionaries({"src": loose, "tgt": loose}),
    st.fixed_dictionaries({"text": loose}),
)
# Lines that are not JSON a generator would write: nesting deeper than Python's recursion limit.
RAW_LINES = ["[" * 5_000 + "]" * 5_000, '{"a":' * 3_000 + "1" + "}" * 3_000, '{"instruction": "x", "output": "y"', "\ufeff{}"]
line = st.one_of(
    shaped.map(lambda r: json.dumps(r, ensure_ascii=True)),
    value.map(lambda r: json.dumps(r, ensure_ascii=True)),
    st.sampled_from(RAW_LINES),
)


# Each example is a whole job (about a second): no shrinking, which would run hundreds of them;
# the failing records are printed as generated.
@settings(max_examples=12, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate], suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(lines=st.lists(line, min_size=1, max_size=20), template=st.sampled_from(["chatml", "qwen3"]))
def test_any_records_leave_a_finished_job_that_accounts_for_each(tmp_path: Path, lines: list[str], template: str) -> None:
    run = Path(tempfile.mkdtemp(dir=tmp_path))  # hypothesis shares tmp_path between examples, and a run with no rows never replaces a finished one
    source = run / "records.jsonl"
    source.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    output = run / "out"
    code = main(["run", "--smoke-test", "off", "--input", str(source), "--output", str(output), "--overwrite", "--template", template, "--max-length", "256"])
    report = json.loads((output / "coverage_report.json").read_text(encoding="utf-8"))
    assert code == 0 or (code == 1 and report["rows_written"] == 0)
    assert report["records_read"] == len(lines)
    assert report["records_read"] == report["rows_written"] + report["rejected"] + report["dropped"]
    listed = output / "rejected" / "rejected.jsonl"  # written when anything was rejected
    rejected = listed.read_text(encoding="utf-8").split("\n")[:-1] if listed.exists() else []
    assert len(rejected) == report["rejected"]
    assert all(json.loads(entry)["reason"] for entry in rejected)


def test_an_exception_on_one_example_rejects_only_that_example(tmp_path: Path) -> None:
    """A user's template that divides by zero on two-message conversations: our code meets an
    exception it never foresaw, in the middle of a tokenizer batch."""
    template = tmp_path / "fragile.jinja"
    template.write_text(
        "{% for m in messages %}<|im_start|>{{ m.role }}\n"
        "{% if m.role == 'assistant' %}{% generation %}{{ m.content }}<|im_end|>{% endgeneration %}"
        "{% else %}{{ m.content }}<|im_end|>{% endif %}\n{% endfor %}{{ '' if (1 / (messages | length - 2)) else '' }}",
        encoding="utf-8",
    )
    long_chat = {"messages": [{"role": r, "content": c} for r, c in (("user", "Q1"), ("assistant", "A1"), ("user", "Q2"), ("assistant", "A2"))]}
    short_chat = {"messages": long_chat["messages"][:2]}
    source = tmp_path / "chats.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in (long_chat, short_chat, long_chat)), encoding="utf-8")
    args = ["run", "--smoke-test", "off", "--input", str(source), "--template", str(template), "--overwrite"]
    assert main([*args, "--output", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "coverage_report.json").read_text())
    assert (report["rows_written"], report["rejected_by_reason"]) == (2, {"internal_error": 1})
    (entry,) = [json.loads(line) for line in (tmp_path / "out" / "rejected" / "rejected.jsonl").read_text().splitlines()]
    assert (entry["index"], entry["raw"]) == (1, short_chat) and entry["detail"].startswith("ZeroDivisionError")
    assert main([*args, "--output", str(tmp_path / "fast"), "--fail-fast"]) == 1

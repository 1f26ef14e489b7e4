"""`--template auto` at start-up: the choice is printed in one line and recorded in the manifest.

A tokenizer folder carrying Qwen3's original chat template (from the `trl` wheel) on Qwen2's
vocabulary: a run without --template picks the bundled `qwen3`, says so on stderr, and the
manifest names it with the sha256 of the template it was matched against.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import trl
from tokenizers import AddedToken

from conftest import write_jsonl
from masked_shards.cli import main

QWEN3_ORIGINAL = (Path(trl.__file__).parent / "chat_templates" / "qwen3.jinja").read_text(encoding="utf-8")


def test_auto_is_printed_at_start_and_recorded_in_the_manifest(qwen2_tokenizer, tmp_path, capsys):
    tokenizer = copy.deepcopy(qwen2_tokenizer)
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in ("<think>", "</think>")])
    tokenizer.chat_template = QWEN3_ORIGINAL
    tokenizer.save_pretrained(str(tmp_path / "tokenizer"))
    data = write_jsonl(tmp_path / "in" / "chat.jsonl", [{"messages": [{"role": "user", "content": f"Q{n}"}, {"role": "assistant", "content": f"A{n}"}]} for n in range(3)])
    out = tmp_path / "out"
    assert main(["run", "--input", str(data), "--tokenizer", str(tmp_path / "tokenizer"), "--output", str(out), "--quiet"]) == 0
    assert "masked-shards: --template auto: qwen3 (renders the tokenizer's chat template identically)\n" in capsys.readouterr().err
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["config"]["template"] == "auto"
    assert manifest["template"]["name"] == "qwen3"
    assert manifest["template"]["matched_tokenizer_template_sha256"] == hashlib.sha256(QWEN3_ORIGINAL.encode("utf-8")).hexdigest()

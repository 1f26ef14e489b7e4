"""Shared fixtures: the bundled demo tokenizer, Qwen2's production vocabulary, input writers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from pipeline.config import DEMO_TOKENIZER  # noqa: E402
from pipeline.tokenization import load_tokenizer  # noqa: E402


@pytest.fixture(scope="session")
def demo_tokenizer():
    return load_tokenizer(DEMO_TOKENIZER)


@pytest.fixture(scope="session")
def qwen2_tokenizer(tmp_path_factory):
    from qwen2_tokenizer import build_qwen2_tokenizer

    return build_qwen2_tokenizer(tmp_path_factory.mktemp("qwen2"))


@pytest.fixture(params=["demo", "qwen2"])
def tokenizer(request):
    """Every masking test runs on the small demo vocabulary and on Qwen2's 151k vocabulary."""
    return request.getfixturevalue(f"{request.param}_tokenizer")


def write_jsonl(path: Path, records: list[object]) -> Path:
    """Write records one per line; a `str` record is written verbatim (for broken lines)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in records]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path

"""Finished runs of the real job, one per row layout, made once a session for the tests that train
on shards (test_smoke_test.py, test_handoff.py): `shard_run("decoder" | "packed" | "seq2seq")`.

decoder: 48 demo conversations (sharegpt and alpaca), unpadded rows. packed: the same examples
packed best-fit into rows of 256 tokens. seq2seq: 24 translation pairs, encoder-decoder rows.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from masked_shards.cli import main
from masked_shards.config import DEMO_INPUTS

WORDS = [("the house", "das Haus"), ("a green tree", "ein grüner Baum"), ("my old dog", "mein alter Hund"), ("the small cat", "die kleine Katze")]
PAIRS = [{"src": f"I see {a} and {b}.", "tgt": f"Ich sehe {c} und {d}."} for (a, c), (b, d) in itertools.permutations(WORDS, 2)] * 2
FLAGS = {"decoder": [], "packed": ["--packing", "bfd", "--max-length", "256"], "seq2seq": ["--model-type", "seq2seq"]}


def chat_records() -> list[str]:
    """The first 24 lines of the demo sharegpt and alpaca files."""
    folder = Path(DEMO_INPUTS[0]).parent
    return [line for name in ("sharegpt.jsonl", "alpaca.jsonl") for line in (folder / name).read_text(encoding="utf-8").splitlines()[:24]]


def write_inputs(folder: Path, layout: str) -> Path:
    """The input file of a layout's run."""
    path = folder / ("pairs.jsonl" if layout == "seq2seq" else "chat.jsonl")
    lines = [json.dumps(pair, ensure_ascii=False) for pair in PAIRS] if layout == "seq2seq" else chat_records()
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def shard_run(tmp_path_factory) -> Callable[[str], Path]:
    made: dict[str, Path] = {}

    def finished(layout: str) -> Path:
        if layout not in made:
            folder = tmp_path_factory.mktemp(layout)
            output = folder / "out"
            assert main(["run", "--input", str(write_inputs(folder, layout)), "--output", str(output), "--smoke-test", "off", *FLAGS[layout]]) == 0
            made[layout] = output
        return made[layout]

    return finished

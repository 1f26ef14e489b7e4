"""The Rust encoder's threads give way to the thread that runs Python (tokenization.Encoder.background).

Checked in a fresh interpreter: the tokenizer's thread pool is started once per process, so in
this test process an earlier test may already have started it at the ordinary priority."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from masked_shards.build.tokenization import BACKGROUND_NICENESS

BUILD_AND_LIST_PRIORITIES = """
import json, os, threading
from masked_shards.config import DEMO_TOKENIZER, PipelineConfig
from masked_shards.records import Example, Turn
from masked_shards.build.rows import RowBuilder
from masked_shards.build.templates import resolve_template
from masked_shards.build.tokenization import load_tokenizer

builder = RowBuilder(PipelineConfig(max_length=2048), load_tokenizer(DEMO_TOKENIZER), resolve_template("chatml", None))
examples = [Example(f"t.jsonl:{n}", "t.jsonl", (Turn("user", "Say hi " * n), Turn("assistant", "hi " * n, True))) for n in range(1, 64)]
built = builder.build(examples)

def niceness(tid):
    stat = open(f"/proc/self/task/{tid}/stat").read()
    return int(stat[stat.rindex(")") + 2 :].split()[16])

print(json.dumps({
    "rows": built.rows.num_rows,
    "main": niceness(threading.get_native_id()),
    "others": sorted(niceness(tid) for tid in os.listdir("/proc/self/task") if int(tid) != threading.get_native_id()),
}))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="thread priorities are set on Linux only (Encoder.background)")
def test_the_encoding_thread_and_the_tokenizer_pool_stand_back_from_the_python_thread():
    done = subprocess.run([sys.executable, "-c", BUILD_AND_LIST_PRIORITIES], capture_output=True, text=True, check=True)
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["rows"] == 63
    assert seen["main"] == 0
    # the encoding thread, and the Rust pool it started: a thread per core, at least one
    assert seen["others"].count(BACKGROUND_NICENESS) >= 2

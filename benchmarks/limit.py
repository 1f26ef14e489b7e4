"""Row (a), the limit: what the bare fast tokenizer alone needs for the same token ids.

    python benchmarks/limit.py --data FILE.jsonl --tokenizer FOLDER    # prints one JSON line
    python benchmarks/limit.py --data FILE.jsonl --tokenizer FOLDER --encoder    # row (a2)

Every example is first rendered with the same chat template as the other rows (untimed); then only
the Rust tokenizer's `encode_batch` is timed, with offsets and without added special tokens, which is
the encode our job does. No system that tokenizes these strings can go faster on this machine, so the
other rows are read as a share of it. `encode_batch` spreads over every core; it is called on chunks
of `CHUNK` strings and the encodings are dropped once counted, since holding every encoding with its
offsets would take gigabytes at a million examples.

With `--encoder`, row (a2): our own encoder alone (`Encoder.encode_batch` of
pipeline/build/tokenization.py) on the same strings, in the job's batches. It gives the same ids
and offsets as (a) with less work in Rust (ids only, offsets from the tokens' byte lengths; no NFC
pass over text already in NFC; a larger BPE word cache), so it is the floor of our job's
encoding, below the limit the job is measured against.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from data import load_chat_tokenizer, read_conversations

CHUNK = 10_000


def measure_limit(data: Path, tokenizer_folder: Path) -> dict[str, float]:
    tokenizer = load_chat_tokenizer(tokenizer_folder)
    texts = tokenizer.apply_chat_template(read_conversations(data), tokenize=False)
    seconds, tokens = 0.0, 0
    for first in range(0, len(texts), CHUNK):
        start = time.perf_counter()
        encodings = tokenizer.backend_tokenizer.encode_batch(texts[first : first + CHUNK], add_special_tokens=False)
        seconds += time.perf_counter() - start
        tokens += sum(len(e.ids) for e in encodings)
    return {"seconds": seconds, "rows": len(texts), "tokens": tokens}


def measure_encoder(data: Path, tokenizer_folder: Path) -> dict[str, float]:
    from masked_shards.build.tokenization import Encoder, load_tokenizer
    from masked_shards.config import PipelineConfig

    texts = load_chat_tokenizer(tokenizer_folder).apply_chat_template(read_conversations(data), tokenize=False)
    encoder, size = Encoder(load_tokenizer(str(tokenizer_folder))), PipelineConfig().batch_size
    seconds, tokens = 0.0, 0
    for first in range(0, len(texts), size):
        start = time.perf_counter()
        encoded = encoder.encode_batch(texts[first : first + size])
        seconds += time.perf_counter() - start
        tokens += len(encoded.ids)
    return {"seconds": seconds, "rows": len(texts), "tokens": tokens}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--tokenizer", type=Path, required=True)
    parser.add_argument("--encoder", action="store_true", help="time our Encoder instead: row (a2)")
    args = parser.parse_args()
    print(json.dumps((measure_encoder if args.encoder else measure_limit)(args.data, args.tokenizer)))


if __name__ == "__main__":
    main()

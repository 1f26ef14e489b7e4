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
pipeline/build/tokenization.py) on the same strings, in the job's batches (its check of tiktoken,
build/same_bpe.py, done when it is made, untimed). It gives the same ids and offsets as (a) with less work
(tiktoken for ASCII strings where it gives the same ids; else ids only, offsets from the tokens'
byte lengths, no NFC pass over text already in NFC, a larger BPE word cache), so it is the floor
of our job's encoding, below the limit the job is measured against.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

from data import load_chat_tokenizer, read_conversations

CHUNK = 10_000


def measure_limit(data: Path, tokenizer_folder: Path) -> dict[str, float]:
    backend = load_chat_tokenizer(tokenizer_folder).backend_tokenizer
    return _timed(_rendered(data, tokenizer_folder), CHUNK, lambda texts: backend.encode_batch(texts, add_special_tokens=False), lambda encodings: sum(len(e.ids) for e in encodings))


def measure_encoder(data: Path, tokenizer_folder: Path) -> dict[str, float]:
    from masked_shards.build.tokenization import Encoder, load_tokenizer
    from masked_shards.config import PipelineConfig

    encoder = Encoder(load_tokenizer(str(tokenizer_folder)))  # with its check of tiktoken, untimed
    return _timed(_rendered(data, tokenizer_folder), PipelineConfig().batch_size, encoder.encode_batch, lambda encoded: len(encoded.ids))


def _rendered(data: Path, tokenizer_folder: Path) -> list[str]:
    """Every example rendered with the chat template (untimed)."""
    return load_chat_tokenizer(tokenizer_folder).apply_chat_template(read_conversations(data), tokenize=False)


def _timed(texts: list[str], size: int, encode: Callable[[list[str]], object], count: Callable[[object], int]) -> dict[str, float]:
    """Only `encode` timed, over `texts` in chunks of `size`; what it gives back counted untimed and dropped."""
    seconds, tokens = 0.0, 0
    for first in range(0, len(texts), size):
        start = time.perf_counter()
        encoded = encode(texts[first : first + size])
        seconds += time.perf_counter() - start
        tokens += count(encoded)
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

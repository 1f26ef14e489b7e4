"""Train the bundled demo tokenizer in ``pipeline/assets/demo_tokenizer/``.

Why: the pipeline's tests and demos need a real Hugging Face tokenizer that
loads offline, is tiny enough to commit, and behaves like the hub tokenizers
the pipeline targets: byte-level BPE (so any unicode text round-trips), the
ChatML and Llama-3 style special tokens, and a plain ChatML chat template
with no ``{% generation %}`` markers, so the pipeline has to find assistant
spans itself.  It is trained on the demo data (run
``python -m masked_shards.assets.make_demo_data`` first) plus generated general
English, single-threaded so that ``python -m
masked_shards.assets.make_demo_tokenizer`` reproduces the folder byte-identically.
"""

from __future__ import annotations

import os

# The BPE trainer must run single-threaded to be reproducible; rayon reads
# these when tokenizers first spins up its thread pool, so set them first.
os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import json  # noqa: E402
import random  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers  # noqa: E402
from transformers import PreTrainedTokenizerFast  # noqa: E402

ASSETS_DIR = Path(__file__).resolve().parent
DATA_DIR = ASSETS_DIR / "demo_data"
OUT_DIR = ASSETS_DIR / "demo_tokenizer"

VOCAB_SIZE = 4096
MIN_FREQUENCY = 2
MODEL_MAX_LENGTH = 4096
SEED = 4242
N_ENGLISH_SENTENCES = 400

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
]

# Plain ChatML: every message is <|im_start|>{role}\n{content}<|im_end|>\n.
CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- endif %}"
)

# Vocabulary for the general-English coverage sentences (written for this file).
PEOPLE = [
    "the teacher", "my sister", "a young doctor", "the farmer", "our manager",
    "the pilot", "an old friend", "the students", "her brother", "the engineer",
    "a tourist", "the mayor", "my grandmother", "the children", "a musician",
    "the nurse", "a journalist", "the carpenter", "our neighbors", "the captain",
    "a scientist", "the photographer", "my uncle", "the waiter", "a volunteer",
]
ACTIONS = [
    "opened", "wrote", "found", "sold", "bought", "watched", "fixed", "visited",
    "explained", "remembered", "planted", "cooked", "answered", "followed", "built",
    "described", "noticed", "ordered", "recommended", "prepared", "borrowed",
    "returned", "organized", "celebrated", "compared", "improved", "printed",
]
ADJECTIVES = [
    "small", "famous", "quiet", "expensive", "comfortable", "ancient", "bright",
    "crowded", "friendly", "beautiful", "heavy", "delicious", "modern", "narrow",
    "surprising", "wonderful", "ordinary", "complicated", "peaceful", "enormous",
]
THINGS = [
    "house", "newspaper", "book", "door", "cup of tea", "garden", "computer",
    "museum", "letter", "bus", "jacket", "beach", "restaurant", "bridge",
    "painting", "concert", "hospital", "village", "recipe", "umbrella",
    "apartment", "bicycle", "festival", "mountain", "theater", "question",
]
PLACES = [
    "near the station", "in the village", "at the market", "by the river",
    "on the second floor", "across the street", "in the mountains", "at home",
    "behind the church", "outside the library", "along the coast", "in the kitchen",
    "downtown", "at the airport", "next to the bakery", "in another country",
]
WHEN = [
    "yesterday", "this morning", "every weekend", "in 2019", "after dinner",
    "three years ago", "at 7:30", "last month", "before the meeting", "on Friday",
    "during the summer", "in December", "twice a week", "tonight", "at midnight",
]
CONNECTORS = ["because", "although", "while", "so", "and then", "but", "since", "even though"]
REASONS = [
    "it was raining", "everyone was tired", "the shop had closed early",
    "nobody else had time", "the weather was perfect", "it seemed important",
    "the train was delayed", "the tickets were cheaper", "they wanted a change",
    "the instructions were unclear", "a friend had suggested it", "prices were rising",
]


def _thing(rng: random.Random) -> str:
    return f"the {rng.choice(ADJECTIVES)} {rng.choice(THINGS)}"


def english_sentence(rng: random.Random) -> str:
    """One general-English sentence: a statement, compound sentence or question."""
    who, did = rng.choice(PEOPLE), rng.choice(ACTIONS)
    kind = rng.randrange(4)
    if kind == 0:
        return f"{who.capitalize()} {did} {_thing(rng)} {rng.choice(PLACES)} {rng.choice(WHEN)}."
    if kind == 1:
        return f"{who.capitalize()} {did} {_thing(rng)} {rng.choice(CONNECTORS)} {rng.choice(REASONS)}."
    if kind == 2:
        return f"Why did {who} say that {_thing(rng)} was {rng.choice(ADJECTIVES)}?"
    return f"{rng.choice(WHEN).capitalize()}, {who} {did} {_thing(rng)}; it was {rng.choice(ADJECTIVES)}."


def english_sentences(n: int, seed: int = SEED) -> list[str]:
    rng = random.Random(seed)
    return [english_sentence(rng) for _ in range(n)]


def iter_strings(value: Any) -> Iterator[str]:
    """Every string value nested anywhere inside a parsed JSON value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from iter_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from iter_strings(item)


def load_json_values(path: Path) -> Iterator[Any]:
    """Parsed content of a .json file, or of each valid line of a .jsonl file."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        yield json.loads(text)
        return
    for line in text.splitlines():
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            continue  # bad_records.jsonl deliberately contains a non-JSON line


def training_corpus() -> list[str]:
    data_files = sorted(DATA_DIR.glob("*.json*"))
    if not data_files:
        raise FileNotFoundError(f"No demo data in {DATA_DIR}; run masked_shards.assets.make_demo_data first.")
    texts = [s for path in data_files for value in load_json_values(path) for s in iter_strings(value)]
    return texts + english_sentences(N_ENGLISH_SENTENCES)


def train_tokenizer(corpus: list[str]) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=MIN_FREQUENCY,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    if tokenizer.get_vocab_size() != VOCAB_SIZE:
        raise ValueError(
            f"Corpus only supports {tokenizer.get_vocab_size()} tokens, not {VOCAB_SIZE}; add coverage sentences."
        )
    return tokenizer


def wrap_for_transformers(tokenizer: Tokenizer) -> PreTrainedTokenizerFast:
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|begin_of_text|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        model_max_length=MODEL_MAX_LENGTH,
    )
    wrapped.chat_template = CHATML_TEMPLATE
    return wrapped


def main() -> None:
    tokenizer = train_tokenizer(training_corpus())
    wrap_for_transformers(tokenizer).save_pretrained(str(OUT_DIR))


if __name__ == "__main__":
    main()

"""What each bundled template supervises, written from the model families' published formats
(not from our templates): the trained text of an assistant turn and its end-of-turn token.

ChatML keeps content verbatim and closes a turn with <|im_end|>. Llama 3 trims content
(its official template applies Jinja's `trim`) and closes a turn with <|eot_id|>.
"""

from __future__ import annotations

SUPERVISED = {
    "chatml": lambda content: content + "<|im_end|>",
    "llama3": lambda content: content.strip() + "<|eot_id|>",
}


def supervised_runs(input_ids: list[int], labels: list[int]) -> list[list[int]]:
    """Maximal runs of consecutive supervised positions, as token-id lists."""
    runs, current = [], []
    for token, label in zip(input_ids, labels):
        if label != -100:
            assert label == token, "a supervised label must equal its input id"
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return runs


def normalized(tokenizer, text: str) -> str:
    """The text as the tokenizer's normalizer sees it (Qwen2 applies NFC; decode returns that)."""
    normalizer = tokenizer.backend_tokenizer.normalizer
    return normalizer.normalize_str(text) if normalizer else text

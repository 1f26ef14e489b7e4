"""EndOfTurn finds the longest special token a span ends with, whatever span it was asked about
before (it tries the length it found last first)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from masked_shards.build.turn_counts import EndOfTurn

# Tokens that end one another ("<|end|>" ends "<|eot|><|end|>"), share lengths, or are one character.
_tokens = st.lists(st.sampled_from(["<|end|>", "<|eot|><|end|>", "|>", ">", "<|im_end|>", "</s>", "<eos>", "d|>", "<|eot|>"]), min_size=1, unique=True)
_spans = st.lists(st.tuples(st.text(alphabet="ab<|>/setodnim_", max_size=20), st.integers(0, 5)), min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(_tokens, _spans)
def test_the_longest_special_token_at_a_spans_end_is_found_in_any_order_of_calls(tokens, spans):
    end_of_turn = EndOfTurn(tokens)
    for body, cut in spans:
        for token in tokens[:2]:  # spans ending in a token, then in none
            text = "x" + body + token
            start = min(cut, len(text))
            expected = max((len(t) for t in tokens if text[start:].endswith(t)), default=0)
            assert end_of_turn.length(text, start, len(text)) == expected
        start = min(cut, len(body))
        assert end_of_turn.length(body, start, len(body)) == max((len(t) for t in tokens if body[start:].endswith(t)), default=0)

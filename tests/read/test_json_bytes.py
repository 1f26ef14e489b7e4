"""The checks that read a structure of strings (tool calls, tools, a record read whole) from its
JSON in one call (`records.json_bytes`) agree with walking its strings one by one, whatever the
strings hold: quotes, backslashes, control characters, text past ASCII, lone surrogates, and
special tokens that JSON writes escaped."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from masked_shards.build.rows import _alternation, _alternation_in_json, _special_text
from masked_shards.read.formats import _ascii
from masked_shards.read.sources import _text_bytes
from masked_shards.records import json_bytes, strings_in

# Special tokens with characters JSON escapes, past ASCII, and ones JSON's own syntax spells.
SPECIALS = ("<|im_end|>", '<|"|>', "<\\s>", "<\t>", "<|ü|>", "}", "null", ":")
_pieces = st.sampled_from(["a", " ", '"', "\\", "\n", "\x00", "ü", "中", "😀", "\ud800", "<|", "|>", "im_end", *SPECIALS])
_texts = st.lists(_pieces, max_size=6).map("".join)
_values = st.recursive(
    _texts | st.integers() | st.none() | st.booleans(),
    lambda inner: st.lists(inner, max_size=3) | st.tuples(inner, inner) | st.dictionaries(_texts, inner, max_size=3),
    max_leaves=10,
)
PATTERN, IN_JSON = _alternation(SPECIALS), _alternation_in_json(SPECIALS)


@settings(max_examples=500, deadline=None)
@given(value=_values)
@example(value={"k": ['say <|"|>', ("x", 1)]})
@example(value=[{"a": None}])  # no string spells "null", the JSON does
def test_a_special_token_is_found_in_a_structure_as_walking_its_strings_finds_it(value):
    walked = next(((text, found.group(0)) for text in strings_in(value) if (found := PATTERN.search(text))), None)
    found = _special_text(iter([("tools", value)]), PATTERN, IN_JSON)
    assert found == (None if walked is None else ("tools", walked[1]))


@settings(max_examples=500, deadline=None)
@given(value=_values)
def test_a_structure_is_ascii_when_every_string_in_it_is(value):
    """Where JSON cannot write the value (an integer past 64 bits), it is walked: not told ASCII."""
    every = all(text.isascii() for text in strings_in(value))
    assert _ascii(value) == (every and json_bytes(value) is not None)


@settings(max_examples=500, deadline=None)
@given(value=_values, max_bytes=st.integers(0, 120))
def test_a_record_is_over_the_size_limit_when_its_strings_are(value, max_bytes):
    size = sum(len(text.encode("utf-8", "surrogatepass")) for text in strings_in(value, keys=False))
    assert (_text_bytes(value, max_bytes) > max_bytes) == (size > max_bytes)
    if size > max_bytes:
        assert _text_bytes(value, max_bytes) == size

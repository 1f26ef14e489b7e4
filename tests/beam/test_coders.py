"""The batches' coders: what Beam gives each batch step, that elements come back equal, and that a
size estimate is cheap arithmetic on the element, not an encoding."""

from __future__ import annotations

import pickle

import apache_beam as beam
import pyarrow as pa

from conftest import write_jsonl
from masked_shards.beam.coders import ExampleCoder, PackedBatchCoder, PairCoder, RowBatchCoder, StridedBatchCoder
from masked_shards.beam.transforms import PackRows, ReadExamples, StrideRows, TokenizeExamples
from masked_shards.build.templates import resolve_template
from masked_shards.config import DEMO_TOKENIZER, PipelineConfig
from masked_shards.read.formats import ParseOptions
from masked_shards.read.sources import InputFile
from masked_shards.read.translation import TranslationPair
from masked_shards.records import Example, RowBatch, Turn
from masked_shards.shape.packing import PackedBatch
from masked_shards.shape.striding import StridedBatch

EXAMPLE = Example("in.jsonl:3", "in.jsonl", (Turn("user", "Hello there"), Turn("assistant", "Hi, ünïcode", True)), raw={"x": 1})


def _coder_of(collection: beam.PCollection) -> beam.coders.Coder:
    return beam.coders.registry.get_coder(collection.element_type)


def test_batch_steps_get_the_coders_of_their_types(tmp_path):
    """Decoder batches are lists of examples, seq2seq batches lists of pairs, tokenized batches
    RowBatches, packed and strided rows their batches; each PCollection gets the registered coder,
    not Beam's pickling fallback."""
    path = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "one", "completion": "1"}])
    unit = [InputFile("in.jsonl", "in.jsonl", str(path), "jsonl")]
    pipe = beam.Pipeline()
    read = pipe | "Decoder" >> ReadExamples(unit)
    pairs = pipe | "Seq2seq" >> ReadExamples(unit, ParseOptions(PipelineConfig(model_type="seq2seq", source_lang="en", target_lang="de")))
    tokenized = read["batches"] | TokenizeExamples(PipelineConfig(tokenizer=DEMO_TOKENIZER), resolve_template("chatml", None))
    packed = (tokenized["rows"] | PackRows(PipelineConfig(tokenizer=DEMO_TOKENIZER, packing="bfd", output=str(tmp_path / "out"))))["rows"]
    strided = tokenized["rows"] | StrideRows(PipelineConfig(tokenizer=DEMO_TOKENIZER, stride=8, max_length=16))
    assert _coder_of(read["batches"]) == beam.coders.ListCoder(ExampleCoder())
    assert _coder_of(pairs["batches"]) == beam.coders.ListCoder(PairCoder())
    assert _coder_of(tokenized["rows"]) == RowBatchCoder()
    assert _coder_of(packed) == PackedBatchCoder()
    assert _coder_of(strided) == StridedBatchCoder()


def test_elements_come_back_equal_and_sizes_are_the_texts_and_the_bytes():
    pair = TranslationPair("p.tsv:0", "p.tsv", "Guten Morgen", "Good morning")
    rows = pa.RecordBatch.from_pydict({"input_ids": [[1, 2, 3]], "example_id": ["in.jsonl:3"]})
    batch = RowBatch(rows)
    packed, strided = PackedBatch(rows, 8, 0), StridedBatch(rows, 8)
    for coder, value in ((ExampleCoder(), EXAMPLE), (PairCoder(), pair), (RowBatchCoder(), batch), (PackedBatchCoder(), packed), (StridedBatchCoder(), strided)):
        back = coder.decode(coder.encode(value))
        assert back == value if not hasattr(value, "rows") else back.rows.equals(rows) and type(back) is type(value)
    assert ExampleCoder().estimate_size(EXAMPLE) == len("Hello there") + len("Hi, ünïcode")
    assert PairCoder().estimate_size(pair) == len("Guten Morgen") + len("Good morning")
    assert RowBatchCoder().estimate_size(batch) == PackedBatchCoder().estimate_size(packed) == StridedBatchCoder().estimate_size(strided) == rows.nbytes


def test_a_list_of_examples_is_sized_without_pickling_them(monkeypatch):
    """Beam sizes a sampled element through the coder's impl; with these coders no example is
    pickled to be sized (the cost this module removes)."""
    impl = beam.coders.ListCoder(ExampleCoder()).get_impl()
    calls = []
    real = pickle.dumps
    monkeypatch.setattr(pickle, "dumps", lambda *a, **k: calls.append(1) or real(*a, **k))
    size, _ = impl.get_estimated_size_and_observables([EXAMPLE] * 5)
    assert calls == []
    assert size >= 5 * ExampleCoder().estimate_size(EXAMPLE)

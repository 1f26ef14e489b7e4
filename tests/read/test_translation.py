"""Translation: record shapes, line-aligned files, pair checks, the decoder-only prompt path, and
encoder-decoder rows that Hugging Face's Seq2SeqTrainer trains on unchanged."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from conftest import Row, build_all
from expected import normalized, supervised_runs
from masked_shards.config import PipelineConfig
from masked_shards.records import Dropped, Rejected
from masked_shards.build.rows import RowBuilder
from masked_shards.read.sources import RawRecord
from masked_shards.build.templates import resolve_template
from masked_shards.build.tokenization import load_tokenizer
from masked_shards.read.translation import (
    TranslationPair,
    check_pair,
    needs_languages,
    pair_from_record,
    pair_to_example,
    translation_prompt,
)
from masked_shards.bundled_templates import template_path

PROMPT = template_path("translate").read_text(encoding="utf-8")
CORPUS = [
    ("The cat sat on the mat .", "Die Katze sass auf der Matte ."),
    ("I like green tea .", "Ich mag gruenen Tee ."),
    ("Where is the station ?", "Wo ist der Bahnhof ?"),
    ("The weather is nice today .", "Das Wetter ist heute schoen ."),
    ("We read a book .", "Wir lesen ein Buch ."),
]


def _record(value: object, source: str = "") -> RawRecord:
    return RawRecord("wmt.jsonl", 3, value, source)


def _pair(src: str, tgt: str, index: int = 0) -> TranslationPair:
    return TranslationPair(f"pairs.jsonl:{index}", "pairs.jsonl", src, tgt, {"src": src, "tgt": tgt})


# --- record shapes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value,langs",
    [
        ({"src": "Hello", "tgt": "Hallo"}, (None, None)),
        ({"src": "Hello", "tgt": "Hallo", "en": "ignored"}, ("en", "de")),
        ({"translation": {"en": "Hello", "de": "Hallo"}}, ("en", "de")),
        ({"en": "Hello", "de": "Hallo", "id": 7}, ("en", "de")),
    ],
    ids=["src_tgt", "src_tgt_wins_over_languages", "hugging_face_translation", "language_keyed"],
)
def test_every_record_shape_becomes_a_pair(value, langs):
    assert pair_from_record(_record(value), *langs) == TranslationPair("wmt.jsonl:3", "wmt.jsonl", "Hello", "Hallo")


def test_a_pair_keeps_its_raw_record_and_named_source():
    value = {"translation": {"en": "Hello", "de": "Hallo"}}
    pair = pair_from_record(_record(value, source="news"), "en", "de")
    assert pair.raw is value and (pair.example_id, pair.source) == ("wmt.jsonl:3", "news")


def test_languages_pick_the_direction():
    assert pair_from_record(_record({"en": "Hello", "de": "Hallo"}), "de", "en").src == "Hallo"


@pytest.mark.parametrize(
    "value,langs,reason,detail",
    [
        (["Hello", "Hallo"], ("en", "de"), "not_an_object", "record is an array, not an object"),
        ({"src": "Hello"}, (None, None), "missing_field", "record has no 'tgt' field"),
        ({"src": "Hello", "tgt": None}, (None, None), "wrong_type", "record field 'tgt' is null, not a string"),
        ({"src": ["Hello"], "tgt": "Hallo"}, (None, None), "wrong_type", "record field 'src' is an array, not a string"),
        ({"translation": "Hello"}, ("en", "de"), "wrong_type", "record field 'translation' is a string, not an object"),
        ({"translation": {"en": "Hello"}}, ("en", "de"), "missing_field", "'translation' object has no 'de' field"),
        ({"translation": {"en": "Hello", "de": 3}}, ("en", "de"), "wrong_type", "'translation' object field 'de' is a number, not a string"),
        ({"en": "Hello", "fr": "Bonjour"}, ("en", "de"), "missing_field", "record has no 'de' field"),
        ({"translation": {"en": "Hello", "de": "Hallo"}}, (None, None), "languages_not_set", "no source and target language were given"),
    ],
)
def test_bad_records_are_rejected_with_a_reason(value, langs, reason, detail):
    rejected = pair_from_record(_record(value), *langs)
    assert isinstance(rejected, Rejected)
    assert (rejected.source, rejected.index, rejected.reason, rejected.raw) == ("wmt.jsonl", 3, reason, value)
    assert detail in rejected.detail


def test_one_language_without_the_other_is_a_config_error():
    with pytest.raises(ValueError, match="given together"):
        pair_from_record(_record({"src": "a", "tgt": "b"}), "en", None)


@pytest.mark.parametrize(
    "value,needed",
    [({"src": "a", "tgt": "b"}, False), ({"tgt": "b"}, False), ({"translation": {}}, True), ({"en": "a", "de": "b"}, True), ("text", False)],
)
def test_needs_languages_tells_the_caller_at_start(value, needed):
    assert needs_languages(value) is needed


# --- pair checks ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "src,tgt,reason",
    [
        ("", "Hallo", "empty_source"),
        (" \n\t", "Hallo", "empty_source"),
        ("Hello", "   ", "empty_target"),
        ("Hello \ufdd0", "Hallo", "reserved_character"),
        ("Hello", "...", "punctuation_only_target"),
        ("Hello", "\u2014", "punctuation_only_target"),
        ("Hello", "\u2026 !", "punctuation_only_target"),
        ("Hello", "&quot;", "punctuation_only_target"),
        ("Hello", "&nbsp;&#8212;", "punctuation_only_target"),
        ("Hello", "\uff01\uff1f", "punctuation_only_target"),
    ],
)
def test_unusable_pairs_are_rejected_with_a_specific_reason(src, tgt, reason):
    rejected = check_pair(_pair(src, tgt, 5), None)
    assert isinstance(rejected, Rejected)
    assert (rejected.source, rejected.index, rejected.reason, rejected.raw) == ("pairs.jsonl", 5, reason, {"src": src, "tgt": tgt})
    assert rejected.detail.endswith(("whitespace", "(U+FDD0..U+FDEF)", "only punctuation or symbols"))


@pytest.mark.parametrize("tgt", ["Tom &amp; Jerry", "42", "\u4f60\u597d\u3002", "\u00bd", "a"])
def test_targets_with_a_letter_or_digit_pass(tgt):
    assert check_pair(_pair("Hello", tgt), None) is None


def test_length_ratio_is_off_by_default_and_compares_characters():
    lopsided = _pair("Hi", "Hallo, wie geht es Ihnen heute?")
    assert check_pair(lopsided, None) is None
    assert check_pair(_pair(" abcd ", "ab"), 2.0) is None  # 4 / 2, stripped, is not above 2
    rejected = check_pair(_pair("abcde", "ab"), 2.0)
    assert rejected.reason == "length_ratio"
    assert rejected.detail == "source has 5 characters and target 2, a length ratio of 2.50 above the limit of 2.0"


def test_a_ratio_below_one_is_a_config_error():
    with pytest.raises(ValueError, match="at least 1"):
        check_pair(_pair("a", "b"), 0.5)


# --- decoder-only -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "langs,expected",
    [(("English", "German"), "Translate the following English text into German."), ((None, None), "Translate the following text.")],
)
def test_prompt_renders_the_bundled_template_exactly(langs, expected):
    assert translation_prompt(PROMPT, "Hello {{ 7*7 }}\n", *langs) == expected + "\n\nHello {{ 7*7 }}\n"


def test_prompt_template_with_an_unknown_variable_is_a_config_error():
    with pytest.raises(ValueError, match="cannot be rendered"):
        translation_prompt("Translate {{ source_txt }}", "a", "en", "de")


def test_decoder_only_rows_supervise_exactly_the_target(tokenizer):
    pairs = [
        _pair("The cat sat on the mat.", "Die Katze saß auf der Matte.", 0),
        _pair("  Leading and trailing spaces \n", "\n Führende Leerzeichen  ", 1),
        _pair("你好，世界", "Hallo, Welt 🙂", 2),
    ]
    builder = RowBuilder(PipelineConfig(max_length=4096), tokenizer, resolve_template("chatml", None))
    rows = build_all(builder, [pair_to_example(p, translation_prompt(PROMPT, p.src, "English", "German")) for p in pairs])
    for pair, row in zip(pairs, rows):
        assert isinstance(row, Row), row
        runs = supervised_runs(row.input_ids, row.labels)
        decoded = [tokenizer.decode(run, skip_special_tokens=False, clean_up_tokenization_spaces=False) for run in runs]
        assert decoded == [normalized(tokenizer, pair.tgt + "<|im_end|>")]
        unsupervised = [t for t, label in zip(row.input_ids, row.labels) if label == -100]
        assert normalized(tokenizer, pair.src) in tokenizer.decode(unsupervised, skip_special_tokens=False, clean_up_tokenization_spaces=False)


# --- encoder-decoder --------------------------------------------------------------------------


def _t5_style_tokenizer(*, appends_eos: bool = True) -> PreTrainedTokenizerFast:
    """A word-level tokenizer trained here, with T5's special tokens; like T5 its post-processor
    appends `</s>` to every sequence (or, with `appends_eos=False`, adds nothing)."""
    backend = Tokenizer(models.WordLevel(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.train_from_iterator([text for pair in CORPUS for text in pair], trainers.WordLevelTrainer(special_tokens=["<pad>", "</s>", "<unk>"]))
    if appends_eos:
        backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", backend.token_to_id("</s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


@pytest.fixture(scope="module")
def t5_tokenizer() -> PreTrainedTokenizerFast:
    return _t5_style_tokenizer()


def _seq2seq(tokenizer, pairs: list[TranslationPair], **settings) -> list[Row | Rejected | Dropped]:
    return build_all(RowBuilder(PipelineConfig(model_type="seq2seq", **settings), tokenizer, None), pairs)


def test_seq2seq_rows_are_source_with_eos_and_target_labels(t5_tokenizer):
    (row,) = _seq2seq(t5_tokenizer, [_pair(*CORPUS[0])])
    eos = t5_tokenizer.eos_token_id
    assert row.input_ids == t5_tokenizer(CORPUS[0][0])["input_ids"] and row.input_ids[-1] == eos
    assert row.labels == t5_tokenizer(text_target=CORPUS[0][1])["input_ids"] and row.labels[-1] == eos
    assert row.labels.count(eos) == 1 and row.attention_mask == [1] * len(row.input_ids)
    assert t5_tokenizer.decode(row.labels, skip_special_tokens=True) == CORPUS[0][1]
    assert not row.truncated and row.split == "train"


def test_eos_is_appended_when_the_tokenizer_does_not_add_it():
    plain = _t5_style_tokenizer(appends_eos=False)
    (row,) = _seq2seq(plain, [_pair(*CORPUS[1])])
    assert row.labels == plain(CORPUS[1][1])["input_ids"] + [plain.eos_token_id]
    assert row.input_ids == plain(CORPUS[1][0])["input_ids"]  # the source keeps the tokenizer's own (no) specials


@pytest.mark.parametrize("pad_to", ["max_length", "multiple:8"])
def test_seq2seq_padding_labels_are_ignored_never_the_pad_id(t5_tokenizer, pad_to):
    unpadded, padded = (_seq2seq(t5_tokenizer, [_pair(*CORPUS[2])], max_length=16, pad_to=p)[0] for p in (None, pad_to))
    n_src, n_tgt = len(unpadded.input_ids), len(unpadded.labels)
    assert padded.input_ids[:n_src] == unpadded.input_ids and set(padded.input_ids[n_src:]) == {t5_tokenizer.pad_token_id}
    assert padded.attention_mask == [1] * n_src + [0] * (len(padded.input_ids) - n_src)
    assert padded.labels[:n_tgt] == unpadded.labels and set(padded.labels[n_tgt:]) == {-100}
    assert len(padded.labels) == (16 if pad_to == "max_length" else 8)


def test_truncation_keeps_the_source_eos_and_cuts_the_target_eos(t5_tokenizer):
    long_src, long_tgt = " ".join(p[0] for p in CORPUS), " ".join(p[1] for p in CORPUS)
    (row,) = _seq2seq(t5_tokenizer, [_pair(long_src, long_tgt)], max_length=8)
    eos = t5_tokenizer.eos_token_id
    assert row.truncated and len(row.input_ids) == len(row.labels) == 8
    assert row.tokens_before_truncation == len(t5_tokenizer(long_src)["input_ids"]) + len(t5_tokenizer(text_target=long_tgt)["input_ids"])
    assert row.input_ids == t5_tokenizer(long_src)["input_ids"][:7] + [eos]
    assert row.labels == t5_tokenizer(text_target=long_tgt)["input_ids"][:8] and eos not in row.labels


def test_overlong_pairs_are_dropped_when_asked(t5_tokenizer):
    long_tgt = " ".join(p[1] for p in CORPUS)
    (dropped,) = _seq2seq(t5_tokenizer, [_pair("Hello", long_tgt, 4)], max_length=8, overlong="drop")
    assert isinstance(dropped, Dropped) and (dropped.example_id, dropped.reason) == ("pairs.jsonl:4", "overlong")
    assert dropped.detail == "target has 29 tokens, more than --max-length 8"


def test_special_token_text_is_rejected_or_kept_plain(t5_tokenizer):
    pairs = [_pair(*CORPUS[0], 0), _pair("stop </s> here", "Halt", 1), _pair(*CORPUS[1], 2)]
    first, rejected, last = _seq2seq(t5_tokenizer, pairs)
    assert isinstance(rejected, Rejected) and (rejected.index, rejected.reason) == (1, "special_token_in_text")
    assert "source text contains the special token '</s>'" in rejected.detail
    assert (first.example_id, last.example_id) == ("pairs.jsonl:0", "pairs.jsonl:2")
    (plain,) = _seq2seq(t5_tokenizer, [pairs[1]], special_text="plain")
    assert plain.input_ids.count(t5_tokenizer.eos_token_id) == 1 and plain.input_ids[-1] == t5_tokenizer.eos_token_id


def test_seq2seq_shards_train_one_step_with_the_stock_trainer_and_collator(t5_tokenizer, tmp_path: Path):
    import datasets
    import torch
    from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer, Seq2SeqTrainingArguments, T5Config, T5ForConditionalGeneration

    batch = RowBuilder(PipelineConfig(model_type="seq2seq"), t5_tokenizer, None).build([_pair(src, tgt, n) for n, (src, tgt) in enumerate(CORPUS)])
    shard = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_batches([batch.rows]).select(["input_ids", "labels", "attention_mask"]), shard)
    dataset = datasets.load_dataset("parquet", data_files=str(shard), split="train", cache_dir=str(tmp_path / "cache"))

    tok = t5_tokenizer
    config = T5Config(vocab_size=len(tok), d_model=32, d_ff=64, num_layers=1, num_heads=2, d_kv=16, decoder_start_token_id=tok.pad_token_id, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(config)
    collator = DataCollatorForSeq2Seq(tok, model=model)

    batch = collator([dataset[i] for i in range(len(dataset))])
    lengths = [len(dataset[i]["labels"]) for i in range(len(dataset))]
    assert len(set(lengths)) > 1, "the batch must need label padding"
    for labels, length in zip(batch["labels"].tolist(), lengths):
        assert labels[length:] == [-100] * (max(lengths) - length)
        assert tok.pad_token_id not in labels

    args = Seq2SeqTrainingArguments(output_dir=str(tmp_path / "run"), max_steps=1, per_device_train_batch_size=4, report_to=[], use_cpu=True, save_strategy="no")
    result = Seq2SeqTrainer(model=model, args=args, train_dataset=dataset, data_collator=collator, processing_class=tok).train()
    assert result.global_step == 1 and math.isfinite(result.training_loss)


# --- language codes (NLLB / mBART style) -------------------------------------------------------

LANGUAGE_CODES = ["eng_Latn", "deu_Latn", "fra_Latn"]


@pytest.fixture(scope="module")
def nllb_folder(tmp_path_factory) -> Path:
    """transformers' NllbTokenizer (a language code before the text, `</s>` after it) on a BPE
    vocabulary trained here, saved as a folder: the job's workers load the tokenizer by path."""
    import json

    from transformers import NllbTokenizer

    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.BpeTrainer(special_tokens=["<s>", "<pad>", "</s>", "<unk>"], vocab_size=300, show_progress=False)
    backend.train_from_iterator([text for pair in CORPUS for text in pair], trainer)
    model = json.loads(backend.to_str())["model"]
    folder = tmp_path_factory.mktemp("nllb")
    NllbTokenizer(vocab=model["vocab"], merges=[tuple(m) for m in model["merges"]], extra_special_tokens=LANGUAGE_CODES).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def nllb_rows(nllb_folder, tmp_path_factory) -> list[dict]:
    """One real seq2seq job over line-aligned files with the NLLB tokenizer, read back."""
    import datasets

    from masked_shards.cli import main

    folder = tmp_path_factory.mktemp("nllb_job")
    for suffix, side in ((".en", 0), (".de", 1)):
        (folder / f"train{suffix}").write_text("".join(pair[side] + "\n" for pair in CORPUS), encoding="utf-8")
    args = ["--input-pair", str(folder / "train.en"), str(folder / "train.de"), "--model-type", "seq2seq", "--tokenizer", str(nllb_folder)]
    assert main(["run", "--smoke-test", "off", *args, "--source-lang", "eng_Latn", "--target-lang", "deu_Latn", "--output", str(folder / "out")]) == 0
    rows = datasets.load_dataset("parquet", data_dir=str(folder / "out" / "data"), cache_dir=str(folder / "cache"))["train"]
    return sorted(rows, key=lambda r: int(r["example_id"].rsplit(":", 1)[1]))


def test_seq2seq_rows_carry_the_source_and_target_language_codes(nllb_folder, nllb_rows):
    tokenizer = load_tokenizer(str(nllb_folder))
    eng, deu, eos = tokenizer.convert_tokens_to_ids("eng_Latn"), tokenizer.convert_tokens_to_ids("deu_Latn"), tokenizer.eos_token_id
    assert [(r["input_ids"][0], r["input_ids"][-1], r["labels"][0], r["labels"][-1]) for r in nllb_rows] == [(eng, eos, deu, eos)] * len(CORPUS)
    tokenizer.src_lang, tokenizer.tgt_lang = "eng_Latn", "deu_Latn"  # as NLLB's own documentation prepares a pair
    for (src, tgt), row in zip(CORPUS, nllb_rows):
        own = tokenizer(src, text_target=tgt)
        assert (row["input_ids"], row["labels"]) == (own["input_ids"], own["labels"])


@pytest.mark.parametrize(
    "langs,message",
    [
        ((None, None), "the tokenizer writes a language code on each side (its default is eng_Latn), so --source-lang and --target-lang must name its codes"),
        (("en", "deu_Latn"), "--source-lang en is not a language code of the tokenizer, whose codes look like its default eng_Latn"),
        (("eng_Latn", "xx_Latn"), "--target-lang xx_Latn is not a language code of the tokenizer, whose codes look like its default eng_Latn"),
    ],
)
def test_language_codes_the_tokenizer_lacks_are_refused_at_start(nllb_folder, langs, message):
    tokenizer = load_tokenizer(str(nllb_folder))
    with pytest.raises(ValueError) as raised:
        RowBuilder(PipelineConfig(model_type="seq2seq", source_lang=langs[0], target_lang=langs[1]), tokenizer, None)
    assert str(raised.value) == message

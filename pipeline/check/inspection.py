"""What `masked-shards inspect DIR` shows: rows token by token, with what the loss trains on.

Every token is one of three kinds, read from the row alone:

    supervised   label != -100            the loss trains on it
    masked       label == -100, attended  context only (system, user, headers, BOS, boundaries)
    pad          attention 0              padding

Three renderings of the same view, each a pure function of the tokens' texts, labels and
attention, so the HTML report can embed exactly what the terminal shows:

    row_plain  supervised runs in [[...]], a run of pad tokens as {pad} or {pad xN}  (pipes, logs)
    row_ansi   supervised green, masked grey, pad red; shades alternate token by token so token
               boundaries show                                                   (terminals)
    row_html   <span class="ms-supervised|ms-masked|ms-pad"> per token, text escaped  (reports)

Under each row, the decoded text of every supervised run (one per assistant turn, as the label
rule makes them: one run is a turn's text and its end-of-turn token) is printed as a JSON string,
so whitespace and newlines are visible; a run holding a tool call is named so, and the masked
runs holding tool results are listed after them. That text is `tokenizer.decode` of the run, exact. A
token's own text is what it adds to the decoding of the few tokens before it, which keeps the
word-start spaces SentencePiece drops from a token decoded alone; a character whose bytes span
two byte-level tokens still shows as U+FFFD on the first of them.

Packed rows (`seq_lengths`) are shown example by example; seq2seq rows (the manifest's model
type) as the source (`input_ids`, all masked) and the target (`labels`, all supervised, its -100
padding shown as pad).
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from masked_shards.config import ConfigError
from masked_shards.build.masking import IGNORE_INDEX
from masked_shards.check.folder import SHARD_SUFFIXES, RunFolder
from masked_shards.write.arrow import ShardReader

SUPERVISED, MASKED, PAD = "supervised", "masked", "pad"
OPEN, CLOSE = "[[", "]]"
RESET = "\x1b[0m"
# Two shades per kind, alternating token by token (bright/normal green, default/grey, red).
ANSI = {SUPERVISED: ("\x1b[92m", "\x1b[32m"), MASKED: ("\x1b[37m", "\x1b[90m"), PAD: ("\x1b[31m", "\x1b[91m")}
ROW_CSS = (
    ".ms-row{font-family:monospace;white-space:pre-wrap;word-break:break-all;line-height:1.5}"
    ".ms-supervised{background:#c8f0c8}.ms-supervised.ms-odd{background:#a6e3a6}"
    ".ms-masked{color:#555}.ms-masked.ms-odd{color:#888}"
    ".ms-pad{color:#b00;background:#fde2e2}"
)
CONTEXT_TOKENS = 8  # tokens decoded before each token to find its own text (a character has at most 4 bytes)
REPLACEMENT = "\ufffd"


def token_kinds(labels: Sequence[int], attention: Sequence[int]) -> list[str]:
    return [PAD if a == 0 else SUPERVISED if label != IGNORE_INDEX else MASKED for label, a in zip(labels, attention)]


def kind_runs(kinds: Sequence[str]) -> list[tuple[str, int, int]]:
    """(kind, start, end) of each maximal run of one kind; end exclusive."""
    runs: list[tuple[str, int, int]] = []
    for n, kind in enumerate(kinds):
        if runs and runs[-1][0] == kind:
            runs[-1] = (kind, runs[-1][1], n + 1)
        else:
            runs.append((kind, n, n + 1))
    return runs


def supervised_runs(labels: Sequence[int], attention: Sequence[int]) -> list[tuple[int, int]]:
    """(start, end) of each run of supervised tokens: one per trained assistant turn."""
    return [(start, end) for kind, start, end in kind_runs(token_kinds(labels, attention)) if kind == SUPERVISED]


def _pad_marker(count: int) -> str:
    return "{pad}" if count == 1 else f"{{pad x{count}}}"


def row_plain(tokens: Sequence[str], labels: Sequence[int], attention: Sequence[int]) -> str:
    """'<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n[[Hello<|im_end|>]]{pad x3}'."""
    pieces = []
    for kind, start, end in kind_runs(token_kinds(labels, attention)):
        text = "".join(tokens[start:end])
        pieces.append(OPEN + text + CLOSE if kind == SUPERVISED else _pad_marker(end - start) if kind == PAD else text)
    return "".join(pieces)


def row_ansi(tokens: Sequence[str], labels: Sequence[int], attention: Sequence[int]) -> str:
    """The row in terminal colours, token by token (pad runs folded into one marker)."""
    pieces = []
    for kind, start, end in kind_runs(token_kinds(labels, attention)):
        if kind == PAD:
            pieces.append(ANSI[PAD][0] + _pad_marker(end - start) + RESET)
        else:
            pieces += [ANSI[kind][n % 2] + tokens[n] + RESET for n in range(start, end)]
    return "".join(pieces)


def row_html(tokens: Sequence[str], labels: Sequence[int], attention: Sequence[int], ids: Sequence[int] | None = None) -> str:
    """The row as one escaped HTML block (style it with ROW_CSS); with `ids`, each token's id and
    label in its tooltip. Pad runs are folded into one marker as in the terminal."""
    pieces = []
    for kind, start, end in kind_runs(token_kinds(labels, attention)):
        if kind == PAD:
            pieces.append(f'<span class="ms-pad" title="{end - start} pad tokens">{html.escape(_pad_marker(end - start))}</span>')
            continue
        for n in range(start, end):
            title = f' title="id {ids[n]}, label {labels[n]}"' if ids is not None else ""
            odd = " ms-odd" if n % 2 else ""
            pieces.append(f'<span class="ms-{kind}{odd}"{title}>{html.escape(tokens[n])}</span>')
    return '<div class="ms-row">' + "".join(pieces) + "</div>"


def token_table(tokens: Sequence[str], ids: Sequence[int], labels: Sequence[int], attention: Sequence[int], color: bool = False) -> str:
    """One line per token: position, id, label, kind and its text as a JSON string."""
    lines = [f"{'pos':>5} {'id':>8} {'label':>8}  {'kind':<10} text"]
    for n, kind in enumerate(token_kinds(labels, attention)):
        line = f"{n:>5} {ids[n]:>8} {labels[n]:>8}  {kind:<10} {json.dumps(tokens[n], ensure_ascii=False)}"
        lines.append(ANSI[kind][0] + line + RESET if color else line)
    return "\n".join(lines)


def token_texts(tokenizer, ids: Sequence[int]) -> list[str]:
    """Each token's text: what it adds to the decoding of the CONTEXT_TOKENS tokens before it
    (decoded in two batches, not one call per token). A byte-level token holding the first bytes
    of a character decodes to a trailing U+FFFD; that is left to the token completing the
    character, so "Ausmaß" cut inside "ß" shows as "Ausma", "", "ß" (the last token keeps any).
    A window starting inside a character begins with U+FFFD in both decodings alike."""
    ids = list(ids)
    starts = [max(0, n - CONTEXT_TOKENS) for n in range(len(ids))]
    decode = dict(skip_special_tokens=False, clean_up_tokenization_spaces=False)
    upto = tokenizer.batch_decode([ids[s : n + 1] for n, s in enumerate(starts)], **decode)
    before = tokenizer.batch_decode([ids[s:n] for n, s in enumerate(starts)], **decode)
    texts = []
    for n, (now, prior) in enumerate(zip(upto, before)):
        lead = len(now) - len(now.lstrip(REPLACEMENT))
        prior = prior[: max(len(prior.rstrip(REPLACEMENT)), min(lead, len(prior)))]
        if n < len(ids) - 1:
            now = now[: max(len(now.rstrip(REPLACEMENT)), lead)]
        texts.append(now[len(prior) :] if now.startswith(prior) else tokenizer.decode([ids[n]], **decode))
    return texts


@dataclass(frozen=True)
class ShownRow:
    """One row picked for showing: where it is and its columns as Python lists."""

    shard: str
    row: int
    columns: dict[str, object]


def render_row(shown: ShownRow, tokenizer, color: bool, show_ids: bool, seq2seq: bool = False, only_example: str | None = None) -> str:
    """The terminal view of one row: a header, then per example (one, or each packed example) the
    tokens and the decoded text of each supervised run."""
    columns = shown.columns
    ids, labels = list(columns["input_ids"]), list(columns["labels"])
    attention = list(columns.get("attention_mask") or [1] * len(ids))
    where = f"{shown.shard} row {shown.row}"
    if seq2seq:
        target = [t if t != IGNORE_INDEX else 0 for t in labels]
        parts = [("source", ids, [IGNORE_INDEX] * len(ids), attention), ("target", target, labels, [int(t != IGNORE_INDEX) for t in labels])]
        header = f"== {where}  example {columns.get('example_id')}  source {columns.get('source')}: {sum(attention)} source tokens, {sum(t != IGNORE_INDEX for t in labels)} target tokens"
    else:
        lengths = columns.get("seq_lengths") or [len(ids)]
        names = columns.get("example_ids") or [columns.get("example_id")] * len(lengths)
        parts, start = [], 0
        for name, length in zip(names, lengths):
            if only_example is None or name == only_example:
                parts.append((f"example {name} (tokens {start}..{start + length - 1})" if "seq_lengths" in columns else None, ids[start : start + length], labels[start : start + length], attention[start : start + length]))
            start += length
        if start < len(ids) and only_example is None:  # padding after the packed examples
            parts.append(("padding", ids[start:], labels[start:], attention[start:]))
        supervised = sum(label != IGNORE_INDEX for label in labels)
        source = columns.get("source") or ", ".join(sorted(set(columns.get("sources") or [])))
        header = f"== {where}  example {columns.get('example_id', ', '.join(map(str, names)))}  source {source}: {len(ids)} tokens, {supervised} supervised, {len(ids) - sum(attention)} pad"
    lines = [header]
    for title, part_ids, part_labels, part_attention in parts:
        texts = token_texts(tokenizer, part_ids)
        if title:
            lines.append(f"-- {title}")
        if show_ids:
            lines.append(token_table(texts, part_ids, part_labels, part_attention, color))
        else:
            lines.append((row_ansi if color else row_plain)(texts, part_labels, part_attention))
        runs = supervised_runs(part_labels, part_attention)
        if runs and title != "source":
            lines += _tool_lines(tokenizer, part_ids, part_labels, part_attention)
    return "\n".join(lines) + "\n"


# How today's chat templates open a tool call and a tool result (Qwen/Hermes, Llama 3.1, Mistral,
# gpt-oss, DeepSeek, Kimi, GLM, Gemma, Functionary, ...). The shards hold tokens and labels only,
# so `inspect` names a run by the markers its text holds; the labels themselves never depend on this.
TOOL_CALL_MARKERS = ("<tool_call>", "<|python_tag|>", "[TOOL_CALLS]", "<|call|>", "to=functions.", "<｜tool▁calls▁begin｜>", "<|tool_calls_section_begin|>", "<|tool_call_begin|>", "<function=", "<start_function_call>", "<tool_calls>")
TOOL_RESULT_MARKERS = ("<tool_response>", "<|start_header_id|>ipython", "[TOOL_RESULTS]", "<|start|>functions.", "<｜tool▁output▁begin｜>", "<|observation|>", "<|im_start|>tool", "<start_function_response>", "<tool_result>", "<|tool_response|>")


def _tool_lines(tokenizer, ids: Sequence[int], labels: Sequence[int], attention: Sequence[int]) -> list[str]:
    """The decoded text of every supervised run (one per trained turn), a run holding a tool call
    marked as one, then each masked run holding a tool result: the results the model reads and
    must not learn to write."""
    decode = dict(skip_special_tokens=False, clean_up_tokenization_spaces=False)
    texts = [(kind, start, end, tokenizer.decode(ids[start:end], **decode)) for kind, start, end in kind_runs(token_kinds(labels, attention)) if kind != PAD]
    lines = ["supervised text, one line per run (turn):"]
    for n, (start, end, text) in enumerate(((a, b, t) for kind, a, b, t in texts if kind == SUPERVISED), 1):
        call = "tool call, " if any(m in text for m in TOOL_CALL_MARKERS) else ""
        lines.append(f"  {n}. {call}tokens {start}..{end - 1}: {json.dumps(text, ensure_ascii=False)}")
    results = [(start, end, text) for kind, start, end, text in texts if kind == MASKED and any(m in text for m in TOOL_RESULT_MARKERS)]
    if results:
        lines.append("tool results (masked), one line per run holding one:")
        lines += [f"  tokens {start}..{end - 1}: {json.dumps(text, ensure_ascii=False)}" for start, end, text in results]
    return lines


def shard_paths(root: RunFolder, manifest: dict | None) -> list[str]:
    """The shards, relative to `root`: the manifest's list, else every Parquet or Arrow file below it."""
    if manifest is not None:
        return sorted(entry["path"] for entry in manifest.get("shards", []))
    return root.files(*SHARD_SUFFIXES)


def pick_rows(root: RunFolder, shards: list[str], rows: int, example_id: str | None) -> Iterator[ShownRow]:
    """The first `rows` rows in shard order, or the row holding `example_id` (its own row, or the
    packed row listing it), streamed batch by batch."""
    left = rows
    for shard in shards:
        for start, batch in _batches(ShardReader(root.open(shard), shard)):
            if example_id is None:
                for n in range(min(left, batch.num_rows)):
                    yield ShownRow(shard, start + n, {name: batch.column(name)[n].as_py() for name in batch.schema.names})
                left -= min(left, batch.num_rows)
                if not left:
                    return
                continue
            if "example_ids" in batch.schema.names:  # packed: the row whose list names it
                names = batch.column("example_ids")
                matches = pc.list_parent_indices(names).take(pc.indices_nonzero(pc.equal(pc.list_flatten(names), example_id))).to_pylist()
            else:
                matches = pc.indices_nonzero(pc.equal(batch.column("example_id"), example_id)).to_pylist()
            for n in matches[:1]:
                yield ShownRow(shard, start + n, {name: batch.column(name)[n].as_py() for name in batch.schema.names})
                return


def _batches(shard: ShardReader) -> Iterator[tuple[int, object]]:
    start = 0
    for batch in shard.iter_batches(2048):
        yield start, batch
        start += batch.num_rows


def inspect_directory(directory: str | Path, rows: int = 3, example_id: str | None = None, tokenizer_name: str | None = None, color: bool = False, show_ids: bool = False, fs: pafs.FileSystem | None = None) -> str:
    """The whole `inspect` output; ConfigError (one sentence) when there is nothing to show. `fs`
    reads the folder, as in `validate_directory`."""
    from masked_shards.build.tokenization import TokenizerError, load_tokenizer

    root = RunFolder.at(str(directory), fs)
    if not root.is_folder():
        raise ConfigError(f"{directory} is not a folder")
    try:
        manifest = json.loads(root.read_bytes("manifest.json").decode("utf-8"))
    except (OSError, ValueError, pa.ArrowException):
        manifest = None
    name = tokenizer_name or (manifest or {}).get("tokenizer", {}).get("name_or_path")
    if not name:
        raise ConfigError(f"{directory} has no manifest.json naming its tokenizer; pass --tokenizer")
    try:
        tokenizer = load_tokenizer(name)
    except TokenizerError as err:
        raise ConfigError(f"cannot load the tokenizer {name} ({err}); pass --tokenizer") from None
    shards = shard_paths(root, manifest)
    if not shards:
        raise ConfigError(f"{directory} holds no Parquet shards")
    seq2seq = bool(manifest) and manifest.get("config", {}).get("model_type") == "seq2seq"
    picked = list(pick_rows(root, shards, rows, example_id))
    if not picked:
        raise ConfigError(f"no row of {directory} holds example {example_id}")
    key = "[[supervised]]  masked  {pad}" if not color else f"{ANSI[SUPERVISED][0]}supervised{RESET}  {ANSI[MASKED][1]}masked{RESET}  {ANSI[PAD][0]}{{pad}}{RESET}"
    shown = [render_row(row, tokenizer, color, show_ids, seq2seq, example_id) for row in picked]
    return f"tokenizer {name}; {key}\n\n" + "\n".join(shown)

"""What `masked-shards validate DIR` runs: check any shard directory on its own, without the job.

A shard directory is trusted only as far as it can be re-checked: the job's own tests cannot
catch a file truncated by a copy, a shard edited by hand, or a label bug in a version that wrote
the files. So every rule the job promises is re-derived from the bytes on disk:

    columns      input_ids, labels: lists of integers; with a manifest, exactly the manifest's schema
    lengths      input_ids, labels, attention_mask (and position_ids) equally long in each row
    labels       each label is -100 or the input id at the same position; a pad token
                 (attention 0) has label -100; every row has at least one supervised token
    packing      (rows with seq_lengths) sum(seq_lengths) = the row's non-pad tokens, which come
                 first; position_ids count 0, 1, 2 .. from each example's first token; that first
                 token is unsupervised; one example id per example
    manifest     every listed shard exists with its row count, size and sha256; no unlisted shard
                 in data/; the record files' lines and sha256; the written rows add up to the counts

Without `manifest.json` (a bare folder of Parquet shards, ours or anyone's with `input_ids` and
`labels`) only the structural checks run, and the summary says so.

Seq2seq shards (the manifest's `config.model_type` is `seq2seq`) hold the source in `input_ids`
and `attention_mask` and the target in `labels`, so labels are not aligned with the input: the
alignment rules (same length, label = input id, pad unsupervised) are skipped for them, and each
label must instead be -100 or a token id. The other rules hold as for decoder rows. A bare
folder has no model type, so its rows are checked as decoder rows.

Fast because nothing runs per token in Python: each file is streamed in record batches
(`ParquetFile.iter_batches`, only the checked columns), each list column is one flat numpy
array plus offsets, and each rule is a few vectorised operations over the whole batch; per-row
answers come from differences of cumulative sums at the row offsets. A row's first offending
token is found by `searchsorted` over the offending positions only.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from masked_shards.build.masking import IGNORE_INDEX
from masked_shards.check.folder import SHARD_SUFFIXES, RunFolder
from masked_shards.write.arrow import ShardReader

MANIFEST = "manifest.json"
MAX_LISTED = 20
BATCH_ROWS = 16_384
# Our written column types; other columns (example_id, source, ...) are not checked.
TOKEN_COLUMNS = ("input_ids", "labels", "attention_mask", "position_ids", "seq_lengths")
REQUIRED = ("input_ids", "labels")


@dataclass(frozen=True)
class Violation:
    """One broken rule: the shard (path below DIR), its 0-based row (None: the whole file), a
    short code for the rule, and what was found."""

    shard: str
    row: int | None
    kind: str
    detail: str

    def line(self) -> str:
        where = self.shard if self.row is None else f"{self.shard} row {self.row}"
        return f"{where}: {self.kind}: {self.detail}"


@dataclass
class Validation:
    """The outcome: what was read, every violation counted by kind, the first few listed."""

    directory: str
    has_manifest: bool
    seq2seq: bool
    shards: int = 0
    rows: int = 0
    tokens: int = 0
    seconds: float = 0.0
    packed: bool = False
    counts: Counter[str] = field(default_factory=Counter)
    listed: list[Violation] = field(default_factory=list)
    max_listed: int = MAX_LISTED

    @property
    def ok(self) -> bool:
        return not self.counts

    def add(self, violation: Violation, count: int = 1) -> None:
        self.counts[violation.kind] += count
        if len(self.listed) < self.max_listed:
            self.listed.append(violation)


def validate_directory(directory: str | Path, max_listed: int = MAX_LISTED, fs: pafs.FileSystem | None = None, bare: bool = False) -> Validation:
    """Check every shard under `directory` (see the module docstring); never raises for bad data.
    `fs` reads it (default: pyarrow's filesystem for the path; the command line passes Beam's for
    a path with a scheme, so any store the job writes to is checked where it was written).

    A folder with no shard fails, and so does one with no manifest unless `bare` asks for a folder
    of shards on its own: a run that was killed or failed leaves no manifest (its shards, if any,
    are not the dataset it was to write), and `OK` on it read as a finished run."""
    start = time.perf_counter()
    root = RunFolder.at(str(directory), fs)
    manifest = _read_manifest(root)
    seq2seq = bool(manifest) and manifest.get("config", {}).get("model_type") == "seq2seq"
    result = Validation(str(directory), manifest is not None, seq2seq, max_listed=max_listed)
    if manifest is None and root.is_file(MANIFEST):
        result.add(Violation(MANIFEST, None, "manifest_unreadable", "manifest.json is not valid JSON; only the structural checks ran"))
    listed = {entry["path"]: entry for entry in (manifest or {}).get("shards", [])}
    on_disk = root.files(*SHARD_SUFFIXES)  # a run's leftovers (_runs/, _staging/) are not its shards
    vocab = (manifest or {}).get("tokenizer", {}).get("vocab_size")
    schema = _normalised(manifest.get("schema")) if manifest else None
    for path in sorted(set(on_disk) | set(listed)):
        entry = listed.get(path)
        if manifest is not None and entry is None:
            result.add(Violation(path, None, "unlisted_shard", "a Parquet file under the directory that the manifest does not list"))
        if not root.is_file(path):
            result.add(Violation(path, None, "missing_shard", "listed in the manifest but not found"))
            continue
        if entry is not None:
            _check_listing(root, path, entry, result)
        rows = _check_shard(root, path, result, seq2seq, vocab, schema)
        if entry is not None and rows is not None and rows != entry.get("rows"):
            result.add(Violation(path, None, "manifest_rows", f"the manifest says {entry.get('rows')} rows, the file holds {rows}"))
        result.shards += 1
    if manifest is not None:
        for entry in manifest.get("dataset_files", []):  # the save_to_disk metadata of Arrow shards
            if root.is_file(entry["path"]):
                _check_listing(root, entry["path"], entry, result)
            else:
                result.add(Violation(entry["path"], None, "missing_dataset_file", "listed in the manifest but not found"))
        _check_record_files(root, manifest, result)
        _check_counts(manifest, result)
    elif not bare and not root.is_file(MANIFEST):
        result.add(Violation(MANIFEST, None, "no_manifest", "no manifest.json, so no finished run: one that was stopped or failed, or not a masked-shards output (validate --bare checks a folder of shards on its own)"))
    if not result.shards:
        result.add(Violation(".", None, "no_shards", "no shard under the directory"))
    result.seconds = time.perf_counter() - start
    return result


def _read_manifest(root: RunFolder) -> dict | None:
    try:
        value = json.loads(root.read_bytes(MANIFEST).decode("utf-8"))
    except (OSError, ValueError, pa.ArrowException):
        return None
    return value if isinstance(value, dict) else None


def _normalised(schema: object) -> list[tuple[str, str]] | None:
    """The manifest's schema as (name, type)."""
    if not isinstance(schema, list):
        return None
    return [(str(f.get("name")), _type_name(str(f.get("type")))) for f in schema if isinstance(f, dict)]


def _type_name(kind: str) -> str:
    """A type's name without list item names: Arrow says `list<item: int32>`, the same type read
    back from Parquet says `list<element: int32>`."""
    return re.sub(r"<\w+: ", "<", kind)


def file_sha256(root: RunFolder, name: str) -> str:
    digest = hashlib.sha256()
    with root.open(name) as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_listing(root: RunFolder, path: str, entry: dict, result: Validation) -> None:
    size = root.size(path)
    if "bytes" in entry and size != entry["bytes"]:
        result.add(Violation(path, None, "manifest_size", f"the manifest says {entry['bytes']} bytes, the file has {size}"))
    digest = file_sha256(root, path)
    if digest != entry.get("sha256"):
        result.add(Violation(path, None, "manifest_sha256", f"sha256 is {digest[:16]}.., the manifest says {str(entry.get('sha256'))[:16]}.."))


def _check_record_files(root: RunFolder, manifest: dict, result: Validation) -> None:
    """rejected/ and dropped/ files: present, as many lines as listed, same sha256."""
    for entry in manifest.get("record_files", []):
        if not root.is_file(entry["path"]):
            result.add(Violation(entry["path"], None, "missing_record_file", "listed in the manifest but not found"))
            continue
        data = root.read_bytes(entry["path"])
        if hashlib.sha256(data).hexdigest() != entry.get("sha256"):
            result.add(Violation(entry["path"], None, "manifest_sha256", "sha256 differs from the manifest's"))
        lines = data.count(b"\n")
        if lines != entry.get("rows"):
            result.add(Violation(entry["path"], None, "manifest_rows", f"the manifest says {entry.get('rows')} lines, the file has {lines}"))


def _check_counts(manifest: dict, result: Validation) -> None:
    listed = sum(int(entry.get("rows", 0)) for entry in manifest.get("shards", []))
    written = manifest.get("counts", {}).get("rows_written")
    if written is not None and written != listed:
        result.add(Violation(MANIFEST, None, "manifest_rows", f"counts.rows_written is {written} but the listed shards hold {listed} rows"))


def _check_shard(root: RunFolder, name: str, result: Validation, seq2seq: bool, vocab: int | None, schema: list[tuple[str, str]] | None) -> int | None:
    """Stream one file's batches through the row checks; returns its rows, None if unreadable."""
    try:
        parquet = ShardReader(root.open(name), name)
    except (OSError, pa.ArrowException) as err:  # a truncated or foreign file is a finding, not a crash
        result.add(Violation(name, None, "unreadable", f"not a readable {'Arrow' if name.endswith('.arrow') else 'Parquet'} file ({err})"))
        return None
    arrow = parquet.schema
    found = [(f.name, _type_name(str(f.type))) for f in arrow]
    if schema is not None and found != schema:
        result.add(Violation(name, None, "schema", f"columns {found} differ from the manifest's {schema}"))
    problems = [f"no {c} column" for c in REQUIRED if c not in arrow.names]
    problems += [f"{f.name} is {f.type}, not a list of integers" for f in arrow if f.name in TOKEN_COLUMNS and not _integer_list(f.type)]
    if problems:
        result.add(Violation(name, None, "schema", "; ".join(problems)))
        return parquet.num_rows
    columns = [c for c in (*TOKEN_COLUMNS, "example_ids") if c in arrow.names]
    result.packed = result.packed or "seq_lengths" in columns
    rows = 0
    try:
        for batch in parquet.iter_batches(BATCH_ROWS, columns=columns):
            for row, kind, detail in check_batch(batch, seq2seq=seq2seq, vocab=vocab):
                result.add(Violation(name, rows + row, kind, detail))
            rows += batch.num_rows
            result.tokens += len(batch.column("input_ids").flatten())
    except (OSError, pa.ArrowException) as err:
        result.add(Violation(name, rows, "unreadable", f"reading stopped after {rows} rows ({err})"))
        return None
    result.rows += rows
    return rows


def _integer_list(kind: pa.DataType) -> bool:
    return (pa.types.is_list(kind) or pa.types.is_large_list(kind)) and pa.types.is_integer(kind.value_type)


def _lengths(array: pa.Array) -> np.ndarray:
    """Each row's list length (0 for a null row, reported apart)."""
    return pc.fill_null(pc.list_value_length(array), 0).to_numpy().astype(np.int64)


@dataclass(frozen=True)
class _Column:
    """A list column as numpy: flat values, row offsets into them (rows + 1), lengths."""

    values: np.ndarray
    offsets: np.ndarray
    lengths: np.ndarray

    @classmethod
    def of(cls, array: pa.Array) -> _Column:
        """Values keep their Parquet type (int32, int8): no copy, and every comparison below works
        across integer types."""
        lengths = _lengths(array)
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        values = array.flatten()
        return cls((pc.fill_null(values, 0) if values.null_count else values).to_numpy(zero_copy_only=False), offsets, lengths)

    def per_row(self, flags: np.ndarray) -> np.ndarray:
        """How many True flags (one per value) each row holds."""
        sums = np.zeros(len(flags) + 1, dtype=np.int64)
        np.cumsum(flags, out=sums[1:])
        return sums[self.offsets[1:]] - sums[self.offsets[:-1]]

    def first_per_row(self, flags: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The rows holding a True flag, and the flat position of each one's first."""
        positions = np.flatnonzero(flags)
        rows = np.searchsorted(self.offsets, positions, side="right") - 1
        rows, first = np.unique(rows, return_index=True)
        return rows, positions[first]


Found = list[tuple[int, str, str]]


def check_batch(batch: pa.RecordBatch, seq2seq: bool = False, vocab: int | None = None) -> Found:
    """Every violation in one batch as (row in batch, kind, detail), sorted by row.

    A row with lists of unequal length is reported once for that and left out of the token-wise
    rules, whose positions would not line up.
    """
    found = _nulls(batch)
    ids = _lengths(batch.column("input_ids"))
    aligned = [name for name in ("attention_mask", "position_ids") if name in batch.schema.names] + ([] if seq2seq else ["labels"])
    even = np.ones(batch.num_rows, dtype=bool)
    for name in aligned:
        lengths = _lengths(batch.column(name))
        bad = lengths != ids
        even &= ~bad
        found += [(int(r), "length_mismatch", f"{name} has {lengths[r]} tokens, input_ids {ids[r]}") for r in np.flatnonzero(bad)]
    if even.all():
        found += _check_rows(batch, seq2seq, vocab)
    else:
        kept = np.flatnonzero(even)
        found += [(int(kept[r]), kind, detail) for r, kind, detail in _check_rows(batch.filter(pa.array(even)), seq2seq, vocab)]
    return sorted(found, key=lambda item: item[0])


def _nulls(batch: pa.RecordBatch) -> Found:
    """Rows that are null, or hold null tokens (our schema allows neither; foreign files may)."""
    found: Found = []
    for name in batch.schema.names:
        array = batch.column(name)
        nested = pa.types.is_list(array.type) or pa.types.is_large_list(array.type)
        if not array.null_count and not (nested and pc.list_flatten(array).null_count):
            continue
        bad = pc.is_null(array).to_numpy(zero_copy_only=False)
        if nested:
            parents = pc.list_parent_indices(array).to_numpy()
            bad[parents[pc.is_null(pc.list_flatten(array)).to_numpy(zero_copy_only=False)]] = True
        found += [(int(r), "null", f"{name} is null or holds a null (read as 0 below)") for r in np.flatnonzero(bad)]
    return found


def _check_rows(batch: pa.RecordBatch, seq2seq: bool, vocab: int | None) -> Found:
    """The token-wise rules, for rows whose aligned lists are equally long."""
    names = batch.schema.names
    ids, labels = _Column.of(batch.column("input_ids")), _Column.of(batch.column("labels"))
    attention = _Column.of(batch.column("attention_mask")) if "attention_mask" in names else None
    found: Found = []
    supervised = labels.values != IGNORE_INDEX
    found += [(int(r), "no_supervised_token", "every label is -100: the row trains nothing") for r in np.flatnonzero(labels.per_row(supervised) == 0)]
    found += _id_range(ids, labels, supervised, vocab, seq2seq)
    if attention is not None:
        rows, first = attention.first_per_row((attention.values != 0) & (attention.values != 1))
        found += [(int(r), "attention_value", f"attention_mask is {attention.values[p]} at token {p - attention.offsets[r]}, not 0 or 1") for r, p in zip(rows, first)]
    if not seq2seq:
        rows, first = ids.first_per_row(supervised & (labels.values != ids.values))
        found += [(int(r), "label_not_input", f"label {labels.values[p]} at token {p - ids.offsets[r]} is neither -100 nor the input id {ids.values[p]}") for r, p in zip(rows, first)]
        if attention is not None:
            rows, first = ids.first_per_row(supervised & (attention.values == 0))
            found += [(int(r), "label_on_padding", f"token {p - ids.offsets[r]} has attention 0 (padding) but label {labels.values[p]}") for r, p in zip(rows, first)]
    if "seq_lengths" in names:
        positions = _Column.of(batch.column("position_ids")) if "position_ids" in names else None
        found += _check_packing(batch, ids, labels, attention, positions)
    return found


def _id_range(ids: _Column, labels: _Column, supervised: np.ndarray, vocab: int | None, seq2seq: bool) -> Found:
    """Token ids must be ids: at least 0, below the tokenizer's vocabulary when the manifest gives
    it; for seq2seq, whose labels are not input ids, the same for every label but -100."""

    def outside(values: np.ndarray) -> np.ndarray:
        return (values < 0) | (values >= vocab) if vocab else values < 0

    found: Found = []
    rows, first = ids.first_per_row(outside(ids.values))
    found += [(int(r), "token_id_range", f"input id {ids.values[p]} at token {p - ids.offsets[r]} is not a token id" + (f" of a {vocab}-token vocabulary" if vocab else "")) for r, p in zip(rows, first)]
    if seq2seq:
        rows, first = labels.first_per_row(supervised & outside(labels.values))
        found += [(int(r), "token_id_range", f"label {labels.values[p]} at token {p - labels.offsets[r]} is neither -100 nor a token id") for r, p in zip(rows, first)]
    return found


def _check_packing(batch: pa.RecordBatch, ids: _Column, labels: _Column, attention: _Column | None, positions: _Column | None) -> Found:
    """Packed rows: examples laid end to end, then padding.

        seq_lengths [3, 2], 6 tokens:  position_ids 0 1 2 0 1 .   labels -100 x x -100 x -100
                                        attention    1 1 1 1 1 0   (pad: position id not checked)

    Pad tokens' position ids are not checked: whether padding keeps counting or restarts is the
    packer's choice, and attention 0 keeps it out of every example.
    """
    found: Found = []
    lengths = _Column.of(batch.column("seq_lengths"))
    real = attention.per_row(attention.values != 0) if attention is not None else ids.lengths
    packed_tokens = lengths.per_row(lengths.values)
    broken, _ = lengths.first_per_row(lengths.values <= 0)
    broken_rows = np.zeros(batch.num_rows, dtype=bool)
    broken_rows[broken] = True
    for r in np.flatnonzero(broken_rows | (packed_tokens != real) | (lengths.lengths == 0)):
        found.append((int(r), "packing", f"seq_lengths {lengths.values[lengths.offsets[r]:lengths.offsets[r + 1]].tolist()} do not split the row's {real[r]} non-pad tokens into examples"))
        broken_rows[r] = True
    if "example_ids" in batch.schema.names:
        counts = _lengths(batch.column("example_ids"))
        found += [(int(r), "packing", f"{counts[r]} example ids for {lengths.lengths[r]} seq_lengths") for r in np.flatnonzero(counts != lengths.lengths)]
    good = ~broken_rows
    token_row = np.repeat(np.arange(batch.num_rows), ids.lengths)
    local = np.arange(len(ids.values)) - ids.offsets[token_row]
    in_examples = good[token_row] & (local < packed_tokens[token_row])
    if attention is not None:  # the examples come first, the padding after them
        rows, first = ids.first_per_row(good[token_row] & (in_examples != (attention.values != 0)))
        found += [(int(r), "packing", f"token {p - ids.offsets[r]} has attention {attention.values[p]}, but the examples (seq_lengths) end at token {packed_tokens[r]}") for r, p in zip(rows, first)]
    # Each example's first token as a flat position: its row's start plus the lengths before it in the row.
    segment_row = np.repeat(np.arange(batch.num_rows), lengths.lengths)
    ends = np.concatenate(([0], np.cumsum(lengths.values)))
    starts = ids.offsets[:-1][segment_row] + ends[:-1] - ends[lengths.offsets[:-1]][segment_row]
    starts, start_rows = starts[good[segment_row]], segment_row[good[segment_row]]
    bad_start = labels.values[starts] != IGNORE_INDEX
    found += [
        (int(r), "packed_boundary_label", f"a packed example starts at token {p - ids.offsets[r]} with label {labels.values[p]}, not -100 (an example's first token has nothing of its own before it)")
        for r, p in zip(start_rows[bad_start], starts[bad_start])
    ]
    if positions is not None:
        last_start = np.full(len(ids.values), -1, dtype=np.int64)
        last_start[starts] = starts
        np.maximum.accumulate(last_start, out=last_start)
        expected = np.arange(len(ids.values)) - last_start
        rows, first = ids.first_per_row(in_examples & (positions.values != expected))
        found += [(int(r), "position_ids", f"position_ids is {positions.values[p]} at token {p - ids.offsets[r]}, expected {expected[p]} (counting from its example's first token)") for r, p in zip(rows, first)]
    return found


def validation_text(result: Validation) -> str:
    """The summary `masked-shards validate` prints: what was read and checked, then the verdict
    and the first violations with shard and row."""
    rate = result.rows / result.seconds if result.seconds else 0.0
    checked = ["column types", "equal lengths", "a supervised token per row"]
    checked += ["labels -100 or a token id (seq2seq: labels are the target, not aligned with input_ids)"] if result.seq2seq else ["labels -100 or the input id", "padding unsupervised"]
    checked += ["packing (seq_lengths, position_ids, example boundaries unsupervised)"] if result.packed else []
    checked += ["manifest (schema, row counts, sizes, sha256, record files)"] if result.has_manifest else []
    lines = [
        f"validated {result.directory}: {result.shards} shards, {result.rows:,} rows, {result.tokens:,} tokens in {result.seconds:.2f} s ({rate:,.0f} rows/s)",
        "checked: " + "; ".join(checked),
    ]
    if not result.has_manifest and "no_manifest" not in result.counts:
        lines.append("no manifest.json: structural checks only, rows checked as decoder rows; row counts and checksums not checked")
    total = sum(result.counts.values())
    if result.ok:
        lines.append("OK: no violation")
        return "\n".join(lines) + "\n"
    kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(result.counts.items(), key=lambda item: (-item[1], item[0])))
    lines.append(f"FAILED: {total} violation{'s' if total != 1 else ''} ({kinds}); the first {len(result.listed)}:")
    lines += [f"  {v.line()}" for v in result.listed]
    return "\n".join(lines) + "\n"

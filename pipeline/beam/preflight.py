"""The start-up checks that need neither the tokenizer nor the data, run before anything heavy loads.

A typo in a flag must be answered at once: importing Beam takes about a second and transformers
several more, and a user who wrote `--template nosuch` or an input path that does not exist
should not wait for either. So these checks read local paths with the standard library and reach
for Beam's filesystems only for a path in an object store (`gs://...`), where nothing cheaper can
answer. `plan()` (job.py) runs them first, then the checks that need the tokenizer or a record.

    preflight(config) -> [InputFile, ...]     or ConfigError, one sentence
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import socket
import time
from typing import IO

from masked_shards.bundled_templates import template_path
from masked_shards.build.templates import AUTO_TEMPLATE, TOKENIZER_TEMPLATE, TemplateError, resolve_template
from masked_shards.config import ConfigError, PipelineConfig
from masked_shards.read.sources import HF_PREFIX, InputFile, file_kind, parse_hf_spec, split_name
from masked_shards.read.translation import translation_prompt
from masked_shards.write.lock import LOCK, Holder, LocalLock, held_sentence, is_stale


def preflight(config: PipelineConfig) -> list[InputFile]:
    """Every check that needs no tokenizer, no record and no Beam: the inputs exist and are of a
    kind we read, --mix names them, the template is one we know (all but `tokenizer` and `auto`,
    which depend on the tokenizer's own), the translation prompt renders, the language flags come
    in pairs, and a local output is not held by a live run. Returns the input units, for the rest
    of the plan. (The rest of whether the output is free, and the lock on object stores, is the
    plan's to check, outputs.py: it reads the output through Beam's filesystems.)"""
    check_local_lock(config.output)
    files = expand_inputs(config.inputs, config.input_pairs)
    check_mix(files, config.mix)
    if config.template not in (TOKENIZER_TEMPLATE, AUTO_TEMPLATE):
        try:
            resolve_template(config.template, None)
        except TemplateError as err:
            raise ConfigError(str(err)) from None
    if (config.source_lang is None) != (config.target_lang is None):
        raise ConfigError("--source-lang and --target-lang must be given together")
    translation_template(config.translate_template)
    return files


def check_local_lock(output: str) -> None:
    """Refuse a local output that a live run holds, before Beam loads: a second run started
    beside a long one learns it in a fraction of a second, not after the imports. A lock of this
    very process (a job run twice in one process) is left to outputs.py, which knows it."""
    if "://" in output:
        return
    data = LocalLock(os.path.join(output, LOCK)).read()
    holder = None if data is None else Holder.from_json(data)
    if holder is not None and not is_stale(holder, time.time()) and (holder.host, holder.pid) != (socket.gethostname(), os.getpid()):
        raise ConfigError(held_sentence(output, holder))


def translation_template(path: str | None) -> str:
    """The decoder-only translation prompt template: the user's file or the bundled one."""
    try:
        with _open(path or str(template_path("translate"))) as handle:
            source = handle.read().decode("utf-8")
    except Exception as err:  # noqa: BLE001 - OSError here, Beam's BeamIOError for an object store
        raise ConfigError(f"cannot read --translate-template {path} ({err})") from None
    try:  # a template that cannot render would fail every pair: find out now
        translation_prompt(source, "Hello.", "English", "German")
    except ValueError as err:
        raise ConfigError(f"--translate-template {path}: {err}") from None
    return source


def expand_inputs(specs: tuple[str, ...], pairs: tuple[tuple[str, str], ...] = ()) -> list[InputFile]:
    """Every readable unit the inputs name, each with its source name and its id name.

    File names in ids are paths below the common folder of all matched files, so ids stay short
    and stable wherever the data lives. The files of one glob are one source, named after the
    glob (`*.jsonl`) unless NAME= names it: a corpus sharded into 50,000 files is one line of the
    report, not 50,000 (each file's counts go to coverage_by_file.jsonl). Whether the two files
    of an --input-pair have as many lines is the plan's to check (it reads them).
    """
    found: list[tuple[str | None, str, str, str | None]] = []  # (source name, path, kind, split)
    globbed: dict[str, str] = {}  # file path -> the --input glob that matched it
    for spec in specs:
        name, target = split_name(spec)
        if target.startswith(HF_PREFIX):
            found.append((name, target, "hf_hub", None))
            continue
        splits = _saved_dataset_splits(target)
        if splits is not None:
            found += [(name, target, "hf_disk", split) for split in splits]
            continue
        matched = match_files(target)
        if not matched:
            raise ConfigError(f"--input {target} matches no file")
        if any(char in target for char in "*?["):
            globbed.update((path, target) for path in matched)
        for path in matched:
            kind = file_kind(path)
            if kind is None:
                raise ConfigError(f"--input {path} is not a .jsonl, .json, .parquet, .csv or .txt file (the text kinds also compressed, as .jsonl.gz, .json.zst, ...), nor a save_to_disk folder")
            found.append((name, path, kind, None))
    short = _short_names(found)
    units = [_named_unit(name or _glob_name(globbed.get(path), path, short), path, kind, split, short) for name, path, kind, split in found]
    for source_path, target_path in pairs:
        for path in (source_path, target_path):
            if not match_files(path):
                raise ConfigError(f"--input-pair {path} matches no file")
        short_name = posixpath.basename(source_path)
        units.append(InputFile(short_name, short_name, source_path, "line_pair", target_path=target_path))
    ids = [(u.name, u.split) for u in units]
    if len(set(ids)) != len(ids):
        raise ConfigError("two inputs name the same file; list each file once")
    return units


def _glob_name(glob: str | None, path: str, short: dict[str, str]) -> str | None:
    """A glob's source name: the glob below the folder ids are named from ('/d/*.jsonl' -> '*.jsonl')."""
    if glob is None:
        return None
    folder = path[: len(path) - len(short[path])]
    return glob[len(folder) :] if folder and glob.startswith(folder) else glob


def _short_names(found: list[tuple[str | None, str, str, str | None]]) -> dict[str, str]:
    files = sorted({path for _, path, kind, _ in found if kind not in ("hf_hub",)})
    if not files:
        return {}
    common = posixpath.dirname(files[0]) if len(files) == 1 else posixpath.commonpath(files)
    return {path: posixpath.relpath(path, common) if common and path != common else posixpath.basename(path) for path in files}


def _named_unit(name: str | None, path: str, kind: str, split: str | None, short: dict[str, str]) -> InputFile:
    if kind == "hf_hub":
        dataset, config, hf_split = parse_hf_spec(path)
        id_name = "/".join(part for part in (dataset, config, hf_split) if part)
    else:
        id_name = short[path] + (f"/{split}" if split else "")
    return InputFile(name or id_name, id_name, path, kind, split)


def _saved_dataset_splits(path: str) -> list[str | None] | None:
    """The splits of a `save_to_disk` folder ([None] for a single Dataset), or None if it is not one."""
    if _exists(posixpath.join(path, "dataset_dict.json")):
        with _open(posixpath.join(path, "dataset_dict.json")) as handle:
            return list(json.loads(handle.read())["splits"])
    if _exists(posixpath.join(path, "state.json")):
        return [None]
    return None


def check_mix(units: list[InputFile], mix: tuple[tuple[str, float], ...]) -> None:
    """--mix must weigh exactly the named sources, so no source is silently left at weight 0."""
    if not mix:
        return
    sources, weighted = {u.source for u in units}, {name for name, _ in mix}
    if sources != weighted:
        raise ConfigError(f"--mix must give a weight to every source and only to them: sources are {sorted(sources)}, --mix names {sorted(weighted)}")


def match_files(pattern: str) -> list[str]:
    """The files a path or glob names, as Beam matches them: `*` and `?` stay within a folder,
    `**` crosses folders; a path without wildcards names itself if it exists."""
    if _remote(pattern):
        from apache_beam.io.filesystems import FileSystems

        return sorted(m.path for result in FileSystems.match([pattern]) for m in result.metadata_list)
    if not re.search(r"[*?\[]", pattern):
        return [pattern] if os.path.exists(pattern) else []
    wild = re.search(r"[*?\[]", pattern).start()
    base = pattern[:wild].rsplit("/", 1)[0] if "/" in pattern[:wild] else "."
    regex = re.compile(_glob_regex(pattern if base != "." or pattern.startswith("./") else "./" + pattern))
    found = (os.path.join(folder, name) for folder, _, names in os.walk(base) for name in names)
    return sorted(path if base != "." or pattern.startswith("./") else path[2:] for path in found if regex.fullmatch(path))


def _glob_regex(pattern: str) -> str:
    """Beam's wildcards as a regular expression: `**` any characters, `*` any but "/", `?` one
    but "/", `[...]` a character class."""
    out, n = [], 0
    while n < len(pattern):
        if pattern.startswith("**", n):
            out.append(".*")
            n += 2
        elif pattern[n] == "*":
            out.append("[^/]*")
            n += 1
        elif pattern[n] == "?":
            out.append("[^/]")
            n += 1
        elif pattern[n] == "[" and "]" in pattern[n + 1 :]:
            end = pattern.index("]", n + 1)
            out.append("[" + pattern[n + 1 : end].replace("!", "^", 1) + "]")
            n = end + 1
        else:
            out.append(re.escape(pattern[n]))
            n += 1
    return "".join(out)


def _remote(path: str) -> bool:
    return "://" in path


def _exists(path: str) -> bool:
    if not _remote(path):
        return os.path.exists(path)
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.exists(path)


def _open(path: str) -> IO[bytes]:
    if not _remote(path):
        return open(path, "rb")
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.open(path)

"""Names that may live on the Hugging Face hub: tell them from paths, reach the hub once, quietly.

A `--tokenizer` or an `--input hf:NAME` is a local folder or a hub id. Three start-up problems
come from treating every missing folder as a hub id and every hub id as reachable:

* `./missing-folder` went to the hub and came back as "Repo id must use alphanumeric chars";
  `looks_like_path` tells a path (it could never be a hub id) from an id, so the sentence can
  say that the folder does not exist.
* Without a network, `huggingface_hub` retries each file with back-off (1, 2, 4, 8, 8 s) before
  giving up: 23 s per file, and a missing tokenizer printed 45 log lines. `hub_out_of_reach`
  asks once, with one short request and no retry; a tokenizer is then read from the local cache
  only (`local_files_only`), and an `hf:` dataset, which `datasets` reads in the workers, is
  refused with a pointer to HF_HUB_OFFLINE=1. We do not set HF_HUB_OFFLINE ourselves: it is read
  once at import by each library and would change every later call in the process.
* Those libraries log retries and warnings on their own handlers; `quiet()` silences them while
  we load, because the user gets one sentence from us instead.

    looks_like_path("./tok") -> True     looks_like_path("Qwen/Qwen2-0.5B") -> False
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

PROBE_TIMEOUT_S = 5
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(?:/[A-Za-z0-9][A-Za-z0-9._-]*)?")
_LIBRARIES = ("huggingface_hub", "transformers", "datasets")


def looks_like_path(name: str) -> bool:
    """Whether `name` can only be a path: a hub id is `NAME` or `OWNER/NAME` of letters, digits,
    `.`, `_` and `-`, never starting with `.`, so `./x`, `/x`, `~/x`, `a/b/c` and `C:\\x` are paths."""
    return _HUB_ID.fullmatch(name) is None


@lru_cache(maxsize=1)
def hub_out_of_reach() -> str | None:
    """Why the hub cannot be asked (offline mode is set, or one HEAD request to it failed), or
    None when it answered. Asked once per process: every load after it gets the same answer."""
    from huggingface_hub import constants, get_session

    if constants.is_offline_mode():
        return "HF_HUB_OFFLINE is set"
    try:
        get_session().head(constants.ENDPOINT, timeout=PROBE_TIMEOUT_S)
    except Exception as err:  # any transport failure (DNS, refused, timeout, proxy) means out of reach
        return f"{constants.ENDPOINT} cannot be reached: {type(err).__name__}"
    return None


@contextmanager
def quiet() -> Iterator[None]:
    """Silence the logs and warnings of huggingface_hub, transformers and datasets while loading."""
    loggers = [logging.getLogger(name) for name in _LIBRARIES]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.CRITICAL)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


def check_dataset(name: str, config: str | None, split: str) -> None:
    """Raise ValueError, in one sentence, when `datasets.load_dataset(name, config, split=split)`
    cannot work: a folder that does not exist, a hub that cannot be asked, an unknown dataset,
    config or split. `load_dataset_builder` resolves the data files and metadata without reading
    a record, so the job finds out at start instead of in a worker half a minute later.
    With HF_HUB_OFFLINE set, `datasets` itself answers from the local cache."""
    import os

    import datasets
    from huggingface_hub import constants

    if not os.path.isdir(name):
        if looks_like_path(name):
            raise ValueError(f"dataset folder {name} does not exist")
        why = hub_out_of_reach()
        if why and not constants.is_offline_mode():
            raise ValueError(f"dataset {name} is not a local folder and the Hugging Face hub is out of reach ({why}); set HF_HUB_OFFLINE=1 to use a copy in the local cache")
    try:
        with quiet():
            builder = datasets.load_dataset_builder(name, config)
    except Exception as err:  # datasets raises many types for a bad name, config or cache
        raise ValueError(f"dataset {name} cannot be loaded ({type(err).__name__}: {_first_line(err)})") from None
    known = {str(s) for s in (builder.config.data_files or builder.info.splits or {})}
    wanted = split.split("[")[0].split("+")  # datasets' split syntax: "train+test", "train[:10%]"
    missing = [s for s in wanted if known and s not in known]
    if missing:
        raise ValueError(f"dataset {name} has no split {missing[0]!r}; it has {', '.join(sorted(known))}")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else "no message"

"""How a finished run replaces the previous one in an output, so that a kill at any instant loses
neither: a journal written before the first old file goes, and steps that can be redone.

A run writes everything under `_staging/`, its manifest last. Then, in the output:

    1. write `_replacing.json`, naming every staged file      <- the commit point
    2. delete the previous run's manifest.json                   (no manifest names a mix)
    3. delete the previous run's other files                     (data/ never mixes two runs)
    4. move the staged files in, all but the manifest
    5. move the staged manifest.json in                          (the new run is in place)
    6. delete `_replacing.json`, then the empty `_staging/`

On an object store a move is a copy and then a delete, and a batch of them may stop between
any two, so no step is atomic except writing one object. The journal is that one object, and its
existence decides which run a kill leaves:

    no journal (or a torn one, from a kill while writing it): the previous run is untouched,
    byte for byte where it was; the staged files are leftovers, deleted (roll back).

    a journal: the new run is complete, each of its files either still under `_staging/` or
    already moved; redoing steps 2 to 6 from what is found (`remaining_steps`) puts it in
    place (roll forward). A staged file that is still there is the truth: the output's file
    of that name is the previous run's, or a copy whose source was not yet deleted.

The next run into the output (or `validate`) finishes an interrupted replacement before
anything else. From step 2 to step 5 the output has no manifest, so a reader that trusts only a
manifest's folder, and `validate` before it finishes the replacement, never takes a mix for a run.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from masked_shards.write.shards import MANIFEST

JOURNAL = "_replacing.json"


def journal_json(staged: Sequence[str]) -> bytes:
    """The journal: the staged run's files, relative to the staging prefix, in name order."""
    return (json.dumps({"files": sorted(staged)}, indent=1) + "\n").encode("utf-8")


def read_journal(data: bytes) -> list[str] | None:
    """The files a journal names; None for a torn or foreign one (no replacement had begun)."""
    try:
        files = json.loads(data)["files"]
    except (ValueError, KeyError, TypeError):
        return None
    return [str(name) for name in files] if isinstance(files, list) else None


@dataclass(frozen=True)
class Steps:
    """What is left of a replacement: output files to delete (the manifest first), then staged
    files to move into place (the manifest last)."""

    delete: list[str]
    move: list[str]


def remaining_steps(journal: Sequence[str], staged: Collection[str], present: Collection[str]) -> Steps:
    """Steps 2 to 5 still to do, from the journal's files, the files still staged, and the
    previous or new run's files now in the output (leftovers, lock and journal excluded).

    An output file is deleted if the new run has no file of its name (the previous run's), or if
    the staged file of its name is still there (so the one in the output is not yet the new one).

        journal [m, a, b], staged {m, b}, present {m, a, old}  ->  delete [m, old], move [b, m]
    """
    waiting = set(journal) & set(staged)
    delete = [MANIFEST] if MANIFEST in waiting and MANIFEST in present else []
    delete += sorted(name for name in present if name != MANIFEST and (name not in journal or name in waiting))
    return Steps(delete, sorted(waiting - {MANIFEST}) + ([MANIFEST] if MANIFEST in waiting else []))

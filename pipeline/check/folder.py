"""Where a finished run is read from: any filesystem pyarrow reads, or one handed in.

The loader, `validate` and `inspect` read a run's output where it was written: a local folder or
any URI pyarrow reads (gs://, s3://, ...). The command line hands the checks Beam's filesystems
as a pyarrow filesystem for a path with a scheme (beam/filesystem.py), so they also read every
store a Beam plugin registers; this module never imports Beam.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.fs as pafs

SHARD_SUFFIXES = (".parquet", ".arrow")  # --output-format parquet | arrow (write/arrow.py)
LEFTOVERS = ("_runs", "_staging")  # a run's spent sorted runs and unpromoted files: never its shards


def filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem holding `path` and the path on it: a local path (relative or not)
    or any URI pyarrow reads (gs://, s3://, ...), so a run's output is read where it was written."""
    return pafs.FileSystem.from_uri(path if "://" in path else os.path.abspath(path))


@dataclass(frozen=True)
class RunFolder:
    """A run's output folder on any filesystem pyarrow reads, for the checks (validate, inspect):
    `root` is the folder's path on `fs`, and names are relative to it (`data/train-...parquet`).
    An object store has no folders: a folder is there when files lie under it."""

    fs: pafs.FileSystem
    root: str

    @classmethod
    def at(cls, path: str, fs: pafs.FileSystem | None = None) -> RunFolder:
        """The folder at `path`, on `fs` (which takes `path` as it is) or on pyarrow's filesystem for it."""
        if fs is None:
            fs, path = filesystem(path)
        return cls(fs, path.rstrip("/"))

    def path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def is_folder(self) -> bool:
        return self.fs.get_file_info(self.root).type == pafs.FileType.Directory

    def is_file(self, name: str) -> bool:
        return self.fs.get_file_info(self.path(name)).type == pafs.FileType.File

    def size(self, name: str) -> int:
        return self.fs.get_file_info(self.path(name)).size

    def open(self, name: str) -> pa.NativeFile:
        return self.fs.open_input_file(self.path(name))

    def read_bytes(self, name: str) -> bytes:
        with self.open(name) as handle:
            return handle.read()

    def files(self, *suffixes: str) -> list[str]:
        """The names of every file below the folder ending in one of `suffixes`, in name order,
        except the leftovers a killed run leaves under `_runs/` and `_staging/`."""
        found = self.fs.get_file_info(pafs.FileSelector(self.root, recursive=True, allow_not_found=True))
        names = (info.path[len(self.root) + 1 :] for info in found if info.type == pafs.FileType.File and info.path.endswith(suffixes))
        return sorted(name for name in names if not set(LEFTOVERS) & set(name.split("/")))

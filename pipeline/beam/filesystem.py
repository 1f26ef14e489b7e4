"""Beam's filesystems as a pyarrow filesystem, so the checks in check/ read any output the job can write.

`validate` and `inspect` read through pyarrow (check/loader.py `filesystem`), which knows local
paths and the stores it was built with; the job writes through Beam's `FileSystems`, which knows
every scheme a Beam extra or plugin registers (gs://, s3://, hdfs://, the tests' memtest://). For
a path with a scheme the command line hands the checks this adapter instead, so an output is
checked where it was written and by the same filesystem code that wrote it. Paths stay full
URIs (`gs://bucket/out/data/train-00000-of-00001.parquet`); the checks only read.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.fs as pafs
from apache_beam.io.filesystem import BeamIOError, CompressionTypes
from apache_beam.io.filesystems import FileSystems


def beam_filesystem() -> pafs.FileSystem:
    return pafs.PyFileSystem(BeamFileSystemHandler())


class BeamFileSystemHandler(pafs.FileSystemHandler):
    """Reads, lists and stats through `FileSystems`; an object store has no folders, so a path is a
    file when an object has that exact name and a folder when objects lie under it."""

    def get_type_name(self) -> str:
        return "beam"

    def equals(self, other: object) -> bool:
        return isinstance(other, BeamFileSystemHandler)

    def normalize_path(self, path: str) -> str:
        return path

    def get_file_info(self, paths: list[str]) -> list[pafs.FileInfo]:
        return [self._info(path) for path in paths]

    def _info(self, path: str) -> pafs.FileInfo:
        found = _match(path)
        if found:
            return pafs.FileInfo(path, pafs.FileType.File, size=found[0].size_in_bytes)
        kind = pafs.FileType.Directory if _match(FileSystems.join(path, "") + "**") else pafs.FileType.NotFound
        return pafs.FileInfo(path, kind)

    def get_file_info_selector(self, selector: pafs.FileSelector) -> list[pafs.FileInfo]:
        """Every file below the folder (`**` crosses "/" in Beam's patterns, on local disks and
        stores alike), nested ones too whatever `recursive` says: the checks always ask for all."""
        found = _match(FileSystems.join(selector.base_dir, "") + "**")
        if not found and not selector.allow_not_found:
            raise FileNotFoundError(selector.base_dir)
        return [pafs.FileInfo(m.path, pafs.FileType.File, size=m.size_in_bytes) for m in found]

    def open_input_stream(self, path: str) -> pa.NativeFile:
        return self.open_input_file(path)

    def open_input_file(self, path: str) -> pa.NativeFile:
        """Seekable, as Parquet's footer-first reading needs; the bytes as stored (no decompression
        by name)."""
        try:
            return pa.PythonFile(FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED), mode="r")
        except BeamIOError as err:
            raise FileNotFoundError(path) from err

    def _read_only(self, *_: object) -> None:
        raise pa.ArrowNotImplementedError("Beam's filesystems are read here, never written")

    create_dir = delete_dir = delete_dir_contents = delete_root_dir_contents = delete_file = move = copy_file = _read_only
    open_output_stream = open_append_stream = _read_only


def _match(pattern: str) -> list:
    try:
        return FileSystems.match([pattern])[0].metadata_list
    except BeamIOError:
        return []

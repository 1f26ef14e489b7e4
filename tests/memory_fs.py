"""`memtest://`: an in-memory object store for tests, with GCS's shape (objects, no folders).

Defining the class registers the scheme with Beam, so importing this module is enough for any
Beam FileSystems call (and so any job) to read and write `memtest://` paths.
"""

from __future__ import annotations

import hashlib
import io

from apache_beam.io.filesystem import BeamIOError, CompressionTypes, FileMetadata, FileSystem


class MemoryFileSystem(FileSystem):
    """`memtest://` paths in a dict: objects and no folders, listed by prefix, as on GCS.

    Beam finds it by its scheme among FileSystem's subclasses (defining it registers it) and makes
    a new instance for every call, so the objects live on the class. `exists` is true only for
    an object's exact name, never for a "folder" prefix.
    """

    objects: dict[str, bytes] = {}

    @classmethod
    def scheme(cls) -> str:
        return "memtest"

    def join(self, basepath: str, *paths: str) -> str:
        for part in paths:
            basepath = basepath + part if basepath.endswith("/") else f"{basepath}/{part}"
        return basepath

    def split(self, path: str) -> tuple[str, str]:
        head, _, tail = path.rpartition("/")
        return head, tail

    def mkdirs(self, path: str) -> None:
        """Nothing to make: an object store has no folders."""

    def has_dirs(self) -> bool:
        return False

    def _list(self, prefix: str):
        for path in sorted(self.objects):
            if path.startswith(prefix):
                yield FileMetadata(path, len(self.objects[path]), 0.0)

    def create(self, path: str, mime_type: str = "application/octet-stream", compression_type: str = CompressionTypes.AUTO) -> io.BytesIO:
        return _Upload(self.objects, path)

    def open(self, path: str, mime_type: str = "application/octet-stream", compression_type: str = CompressionTypes.AUTO) -> io.BytesIO:
        if path not in self.objects:
            raise BeamIOError("no such object", {path: FileNotFoundError(path)})
        return io.BytesIO(self.objects[path])

    def copy(self, source_file_names: list[str], destination_file_names: list[str]) -> None:
        for source, destination in zip(source_file_names, destination_file_names):
            self.objects[destination] = self.objects[source]

    def rename(self, source_file_names: list[str], destination_file_names: list[str]) -> None:
        self.copy(source_file_names, destination_file_names)
        self.delete(source_file_names)

    def exists(self, path: str) -> bool:
        return path in self.objects

    def size(self, path: str) -> int:
        return len(self.objects[path])

    def last_updated(self, path: str) -> float:
        return 0.0

    def checksum(self, path: str) -> str:
        return hashlib.sha256(self.objects[path]).hexdigest()

    def metadata(self, path: str) -> FileMetadata:
        return FileMetadata(path, self.size(path), 0.0)

    def delete(self, paths: list[str]) -> None:
        missing = {path: FileNotFoundError(path) for path in paths if path not in self.objects}
        if missing:
            raise BeamIOError("no such object", missing)
        for path in paths:
            del self.objects[path]


class _Upload(io.BytesIO):
    """An object appears when its upload is closed, as on GCS."""

    def __init__(self, objects: dict[str, bytes], path: str) -> None:
        super().__init__()
        self._objects, self._path = objects, path

    def close(self) -> None:
        if not self.closed:
            self._objects[self._path] = self.getvalue()
        super().close()

"""Downloads kept in memory rather than written: `KEEP`, `Kept`, `Keeper`, `Held`.

An export with its own staging sets `KEEP` in the task of each post, so that the download
path (`_media`, `_media_files.TempFile`: the same code and checks as any download) leaves
each file's bytes in a `Kept` instead of writing, fsyncing and renaming a file that the
export would read back; a `Keeper` bounds the bytes held at once. No I/O here.
"""

from __future__ import annotations

import contextvars
import threading
import weakref
from pathlib import Path

import attrs

__all__ = ["KEEP", "Held", "Keeper", "Kept"]


class Keeper:
    """A bound on the bytes that downloads keep in memory (`Kept`) at once: an export's.

    Each chunk is reserved as it comes; a file that would take the total past `limit` is
    written to its file after all, as any download's is, and what it held is given back. A
    picture's bytes are given back when the last reference to its `Held` goes, whatever
    path it took (written into a shard, opted out, a failure, a cancellation).
    """

    def __init__(self, limit: int):
        self.limit = limit
        self.held = 0
        self._lock = threading.Lock()  # given back in the export's writer thread

    def reserve(self, size: int) -> bool:
        """Hold `size` bytes more, if that stays within the limit."""
        with self._lock:
            if self.held + size > self.limit:
                return False
            self.held += size
            return True

    def release(self, size: int) -> None:
        """Give back `size` bytes."""
        with self._lock:
            self.held -= size


@attrs.frozen(weakref_slot=True)
class Held:
    """A downloaded file's bytes, kept in memory: its chunks as they came, and its size."""

    chunks: tuple[bytes, ...]
    size: int


class Kept:
    """Where the downloads of a task leave their files' bytes instead of writing the files.

    Set as `KEEP` in a task whose pictures go straight into something else: an export's own
    staging, whose tar or Parquet shard takes the bytes, so that each picture is written
    once, not staged in a file and read back. Everything else about a download is the same
    (the checks, retries, the rate limit, the `MediaFile` given back, its `path` where the
    file would be); only the last step differs: the bytes are put in `files`, under that
    path, rather than written, fsynced and renamed.
    """

    def __init__(self, keeper: Keeper):
        self.keeper = keeper
        self.files: dict[Path, Held] = {}

    def keep(self, path: Path, chunks: list[bytes], size: int) -> None:
        """Keep a file's bytes (reserved already) until its `Held` is dropped."""
        held = Held(tuple(chunks), size)
        weakref.finalize(held, self.keeper.release, size)
        self.files[path] = held


KEEP: contextvars.ContextVar[Kept | None] = contextvars.ContextVar(
    "meigen_async_keep", default=None
)
"""Set in a task whose downloads are kept in memory, not written: see `Kept`."""

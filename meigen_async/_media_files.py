"""Media files on disk: the image's directory, temporary files, records and manifests.

The file side of media downloads; the HTTP side is `_media`, the decisions `_media_rules` and
`_media_records`. Nothing here sees a URL but as a string to record.

**No path out of `out/`.** The image's directory `out/{id}` is opened once, with `O_NOFOLLOW`
and `O_DIRECTORY`, and every later call reaches its files through that descriptor (`dir_fd`):
creating the temporary file, its record (on its own descriptor), the rename, a removal, the
manifest, reading records back. A symbolic link in place of `out/{id}` is refused
(`MediaWriteError`), whether it was there before or swapped in between the check and the
creation, and a link swapped in after the directory was opened is never looked at: nothing
is written outside `out/`. (`out/` itself, the caller's own path, is taken as given.)

A task that sets `_media_kept.KEEP` (an export with its own staging) has its downloads'
bytes kept in memory instead, up to its `Keeper`'s bound: the same `TempFile`, which then
makes no file, unless the bound is reached and it writes one after all.

Every file-system call (mkdir, open, write and hash, fsync, rename, the manifest) runs in a
worker thread of `FILES`, never on the event loop: an fsync takes milliseconds, and on the
loop it would stall every other download (and the rest of the application) while it waits.

Past 450 lines on purpose: writing and reading back share the directory descriptor's
lifetime (`ImageDir`, which neither may close under the other) and must agree on what a
record is and where it lives; apart, each would hold half of one protocol.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import errno
import hashlib
import itertools
import os
import stat
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import attrs

from ._media_formats import Kind
from ._media_kept import KEEP
from ._media_records import (
    MANIFEST_NAME,
    RECORD_ATTRIBUTE,
    ManifestEntry,
    file_record,
    manifest_text,
    read_file_record,
    read_manifest,
    worth_hashing,
)
from ._media_rules import HEAD_BYTES, file_index, kind_of_name, media_file, write_error
from .errors import MediaWriteError
from .media import MediaFile

__all__ = [
    "FILES",
    "UNSYNCED",
    "ImageDir",
    "Received",
    "TempFile",
    "in_thread",
    "read_entries",
    "still_there",
    "write_manifest",
]

_T = TypeVar("_T")
# Bytes gathered before they go to a worker thread in one job: each hand-over costs a thread
# wake-up and two GIL hand-offs, so a file of up to this size costs one job in all (write,
# record, fsync, rename). Per file in flight, this is the memory held beyond aiohttp's buffer,
# so it stays small: 8 downloads in flight hold at most 2 MiB.
_BATCH = 256 * 1024
FILES = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="meigen-media")
"""Threads for the file work of every download. fsyncs issued side by side share the
journal's commits, so several at once cost little more than one; more threads than downloads
in flight would only wait."""

UNSYNCED: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "meigen_async_unsynced", default=False
)
"""Set in a task whose downloads need no fsync: an export's staging, whose shard is fsynced
whole. A crash can then leave a file whose record its bytes do not match: its SHA-256 is
checked before reuse, and it is downloaded again."""


_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_OPEN_DIR = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _NOFOLLOW | _CLOEXEC
# O_EXCL with O_CREAT never follows a link in the name's place either: it fails as "exists".
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC | getattr(os, "O_BINARY", 0)
# Not blocking: a FIFO planted in a file's place would hang an open for reading.
_READ = os.O_RDONLY | _NOFOLLOW | _CLOEXEC | getattr(os, "O_NONBLOCK", 0)


async def in_thread(function: Callable[..., _T], *args: object) -> _T:
    """`function(*args)` in a worker thread of `FILES`."""
    return await asyncio.wrap_future(FILES.submit(function, *args))


class ImageDir:
    """The directory of one image's files, `root/{id}`, held open by a descriptor.

    Opened without following a symbolic link in its place, and made if missing by the first
    file written (so that an image refused before any byte leaves no directory). The
    descriptor is shared by the image's file jobs, each holding it from `acquire` to
    `release`, and closed once the image is done (`finish`) and no job holds it: a job
    cancelled on the loop runs on in its thread, and a descriptor closed under it could be
    reused meanwhile for another file.
    """

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._users = 0
        self._finished = False

    def open_existing(self) -> bool:
        """Open the directory when it exists: True, or False when it does not.

        Called on the event loop: a look-up by name reads no data, and on a first run its
        answer is "no such file" at once; sending it to a worker thread cost more (the
        hand-over, and the worker taking the GIL back from the loop) than it does.

        Raises:
            MediaWriteError: it is a symbolic link, not a directory, or cannot be opened.

        """
        try:
            self._fd = os.open(self.path, _OPEN_DIR)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise self._error(exc) from exc
        return True

    def acquire(self, *, create: bool, url: str | None = None) -> int:
        """The directory's descriptor, held until `release`; in a worker thread.

        With `create`, the directory is made (and `root` with it) when it is not open yet.

        Raises:
            MediaWriteError: it cannot be made or opened, or it is a symbolic link.
            FileNotFoundError: it is not open, and `create` is false.

        """
        with self._lock:
            if self._finished:
                # The image's download is over (cancelled): its last jobs write nothing more.
                raise FileNotFoundError(errno.ENOENT, "the image's download is over")
            if self._fd is None:
                if not create:
                    raise FileNotFoundError(errno.ENOENT, "no such directory", str(self.path))
                try:
                    self._fd = self._make()
                except OSError as exc:
                    raise self._error(exc, url) from exc
            self._users += 1
            return self._fd

    def release(self) -> None:
        """Stop holding the descriptor; closed when the image is done and none holds it."""
        with self._lock:
            self._users -= 1
            self._close_if_unused()

    def finish(self) -> None:
        """The image is done: close the descriptor now, or when its last job releases it."""
        with self._lock:
            self._finished = True
            self._close_if_unused()

    @contextlib.contextmanager
    def held(self) -> Iterator[int]:
        """The descriptor of a directory that exists, held for the block."""
        fd = self.acquire(create=False)
        try:
            yield fd
        finally:
            self.release()

    def _close_if_unused(self) -> None:
        if self._finished and not self._users and self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def _make(self) -> int:
        try:
            os.mkdir(self.path)
        except FileExistsError:
            pass  # made meanwhile (another process), or a link: the open tells which
        except FileNotFoundError:
            os.makedirs(self.path.parent, exist_ok=True)  # `out/` itself: the caller's path
            with contextlib.suppress(FileExistsError):
                os.mkdir(self.path)
        # By name once more, but O_NOFOLLOW: a link put in its place since the mkdir is
        # refused, not followed.
        return os.open(self.path, _OPEN_DIR)

    def _error(self, exc: OSError, url: str | None = None) -> MediaWriteError:
        # Linux says ENOTDIR (ELOOP elsewhere) for a link opened with O_DIRECTORY|O_NOFOLLOW:
        # the message says which it was.
        link = exc.errno in (errno.ENOTDIR, errno.ELOOP) and os.path.islink(self.path)
        return write_error(self.path, exc, url=url, link=link)


# -- Writing a file --------------------------------------------------------------------------------


@attrs.frozen
class Received:
    """A body read whole into a temporary file, its last batch perhaps not yet written."""

    out: TempFile
    url: str
    directory: ImageDir
    name: str
    kind: Kind
    head: bytes
    size: int
    opted_out: bool

    async def commit(self) -> tuple[MediaFile, bool]:
        """Write the rest, record, fsync and rename: the file, and whether it holds its record."""
        sha256 = self.out.sha256()
        path = self.directory.path / self.name
        media = media_file(self.url, path, self.size, sha256, self.kind, self.head, self.opted_out)
        try:
            record = file_record(self.url, self.size, sha256, self.opted_out)
            on_file = await self.out.commit(self.name, record)
        except BaseException:
            await self.out.discard()
            raise
        return media, on_file


class TempFile:
    """A file written under a temporary name in the image's directory, then renamed.

    Its work runs in `FILES`, one job at a time and in order. Chunks are hashed as they come
    and gathered up to `_BATCH` bytes, then handed over together without waiting, so the
    socket is read while the batch before is written; `commit` writes the rest, attaches the
    file's record, fsyncs and renames in one more job. The first job makes the directory and
    opens the file, so that an image refused before any byte is written leaves no directory.
    From its creation to its rename or removal, the file holds the directory's descriptor,
    and reaches its names through it.

    A worker thread takes the GIL back after each system call while the event loop wants it
    too, so the jobs make as few calls as they can: `os.open` and `os.writev` on a descriptor
    (an `open()` file adds fstat, ioctl and lseek calls).
    """

    def __init__(self, directory: ImageDir, index: int, url: str):
        # Unique within this process by the counter and among live processes by the pid;
        # O_EXCL makes sure, and a dead process's leftover of the same name (its pid reused)
        # makes the first job take the next name.
        self.name = _temp_name(index)
        self._directory = directory
        self._index = index
        self._url = url
        self._sync = not UNSYNCED.get()  # read in the downloading task, on the event loop
        self._kept = KEEP.get()  # no file, unless its bytes would go past the keeper's bound
        self._reserved = 0
        self._dir_fd: int | None = None  # held from the creation to the rename or removal
        self._fd: int | None = None
        self._digest = hashlib.sha256()
        self._job: concurrent.futures.Future[Any] | None = None
        self._batch: list[bytes] = []
        self._batched = 0

    @property
    def path(self) -> Path:
        """Where the temporary file is (for messages: it is reached by its directory)."""
        return self._directory.path / self.name

    async def write(self, chunk: bytes) -> None:
        """Hash `chunk` and queue it to be written (in a batch, after the batch before it)."""
        # Hashed here rather than in the worker: each hashlib call there is one more time the
        # worker takes the GIL back from the event loop, and measured, that costs the loop
        # more than hashing 64 KiB (about 30 us with SHA-NI) does.
        self._digest.update(chunk)
        self._batch.append(chunk)
        self._batched += len(chunk)
        if self._kept is not None:
            if self._kept.keeper.reserve(len(chunk)):
                self._reserved += len(chunk)
                return
            self._unkeep()  # past the bound: written to its file after all, from here on
        if self._batched >= _BATCH:
            await self._finish_job()
            self._job = FILES.submit(self._write, self._take())

    def sha256(self) -> str:
        """The SHA-256 of every byte written so far."""
        return self._digest.hexdigest()

    async def commit(self, final: str, record: bytes) -> bool:
        """Write what is queued, attach `record`, fsync, close and rename to `final`.

        Returns whether the file system kept the record. A kept file is put in its `Kept`
        instead: nothing is written, and it needs no record (True).
        """
        if self._kept is not None:
            self._kept.keep(self._directory.path / final, self._take(), self._reserved)
            self._kept = None  # its bytes are the Held's now, and given back with it
            return True
        await self._finish_job()
        job = FILES.submit(self._commit, self._take(), final, record)
        self._job = job
        try:
            on_file: bool = await asyncio.wrap_future(job)
        except OSError as exc:
            raise write_error(self._directory.path / final, exc, url=self._url) from exc
        return on_file

    def _take(self) -> list[bytes]:
        # Handed over as they came: joining 256 KiB on the event loop cost about 100 us a
        # file (a fresh allocation, then page faults); the worker writes them with one writev.
        chunks, self._batch = self._batch, []
        self._batched = 0
        return chunks

    def _unkeep(self) -> None:
        assert self._kept is not None
        self._kept.keeper.release(self._reserved)
        self._kept, self._reserved = None, 0

    async def discard(self) -> None:
        """Close and remove the file, after the job in flight (a write may be running)."""
        if self._kept is not None:
            self._unkeep()
            self._batch = []
            return
        previous = self._job
        self._job = None
        cleanup = FILES.submit(self._remove, previous)
        # Cancelled again while waiting: the cleanup still runs, in its thread.
        await asyncio.shield(asyncio.wrap_future(cleanup))

    async def _finish_job(self) -> None:
        job, self._job = self._job, None
        if job is None:
            return
        try:
            await asyncio.wrap_future(job)
        except OSError as exc:
            raise write_error(self.path, exc, url=self._url) from exc

    # -- In a worker thread --------------------------------------------------------------------

    def _write(self, chunks: list[bytes]) -> None:
        fd = self._fd
        if fd is None:
            fd = self._fd = self._create()
        if _HAS_WRITEV and len(chunks) <= _MOST_BUFFERS:
            left = sum(map(len, chunks))
            while left:
                written = os.writev(fd, chunks)
                left -= written
                if left:  # a short write (rare on a regular file): the rest, from where it stopped
                    chunks = _after(chunks, written)
        else:
            for chunk in chunks:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]

    def _create(self) -> int:
        dir_fd = self._directory.acquire(create=True, url=self._url)
        try:
            for _ in range(_NAMES_TRIED):
                try:
                    fd = os.open(self.name, _CREATE, 0o666, dir_fd=dir_fd)
                    break
                except FileExistsError:
                    self.name = _temp_name(self._index)
            else:
                fd = os.open(self.name, _CREATE, 0o666, dir_fd=dir_fd)  # its error says why
        except BaseException:
            self._directory.release()
            raise
        self._dir_fd = dir_fd
        return fd

    def _commit(self, chunks: list[bytes], final: str, record: bytes) -> bool:
        self._write(chunks)
        fd, dir_fd = self._fd, self._dir_fd
        assert fd is not None
        assert dir_fd is not None
        on_file = _attach(fd, record)
        # The rename must not land before the data (and the record): fsync first.
        if self._sync:
            os.fsync(fd)
        self._fd = None
        os.close(fd)
        # Within the directory held open: a link swapped in for `out/{id}` since is not used,
        # and a link in `final`'s place is replaced, never followed.
        os.replace(self.name, final, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        self._dir_fd = None
        self._directory.release()
        return on_file

    def _remove(self, previous: concurrent.futures.Future[Any] | None) -> None:
        if previous is not None:
            # Queued before this job, so running or done already: waiting cannot deadlock.
            concurrent.futures.wait([previous])
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        if self._dir_fd is not None:
            # Gone already (renamed), or unremovable: a .part name is never read back.
            with contextlib.suppress(OSError):
                os.unlink(self.name, dir_fd=self._dir_fd)
            self._dir_fd = None
            self._directory.release()


_TEMP_NAMES = itertools.count()
_NAMES_TRIED = 10


def _temp_name(index: int) -> str:
    return f".{index}.{os.getpid()}.{next(_TEMP_NAMES)}.part"


_HAS_WRITEV = hasattr(os, "writev")
_MOST_BUFFERS = 1024  # IOV_MAX on Linux and the BSDs: more buffers in one writev is EINVAL


def _after(chunks: list[bytes], written: int) -> list[bytes]:
    """What of `chunks` is left once their first `written` bytes are written."""
    for index, chunk in enumerate(chunks):
        if written < len(chunk):
            return [chunk[written:], *chunks[index + 1 :]]
        written -= len(chunk)
    return []


def _attach(fd: int, record: bytes) -> bool:
    """Set the file's record attribute; False where the file system keeps none."""
    if not _RECORDS_ON_FILES:
        return False
    try:
        os.setxattr(fd, RECORD_ATTRIBUTE, record)
    except OSError:
        # Not supported here (ENOTSUP), or too long for this file system (a very long URL):
        # the image gets a manifest instead. A failing disk shows in the fsync that follows.
        return False
    return True


# os.setxattr is Linux's; elsewhere every image gets a manifest.
_RECORDS_ON_FILES = hasattr(os, "setxattr")


# -- The manifest ----------------------------------------------------------------------------------


def write_manifest(directory: ImageDir, image_id: str, done: list[tuple[int, MediaFile]]) -> None:
    """Write the image's `manifest.json` through a temporary file and a rename.

    Not fsynced: a crash can at worst leave it empty or old, and an unreadable manifest only
    makes a rerun download again (the files it lists are fsynced).
    """
    data = manifest_text(image_id, done).encode()
    temp = f".{MANIFEST_NAME}.{os.getpid()}.{next(_TEMP_NAMES)}.part"
    with directory.held() as dir_fd:
        fd = os.open(temp, _CREATE, 0o666, dir_fd=dir_fd)
        try:
            with open(fd, "wb", closefd=True) as stream:
                stream.write(data)
            os.replace(temp, MANIFEST_NAME, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=dir_fd)
            raise


# -- What is already there -------------------------------------------------------------------------


def read_entries(directory: ImageDir, urls: Sequence[str]) -> dict[int, ManifestEntry]:
    """What the files of an image's directory say of themselves, then what its manifest says.

    A file's own record wins: it was written with the file, before its fsync; a manifest may
    be older than the files it lists.
    """
    try:
        with directory.held() as dir_fd:
            return _entries(dir_fd, urls)
    except OSError:
        return {}  # unreadable, or the image's download is over: writing the file will say


def _entries(dir_fd: int, urls: Sequence[str]) -> dict[int, ManifestEntry]:
    names = os.listdir(dir_fd)
    entries: dict[int, ManifestEntry] = {}
    if _RECORDS_ON_FILES:
        for name in names:
            index = file_index(name)  # temporary files, and names not ours, are never opened
            if index is None or index >= len(urls):
                continue
            record = _record_of(dir_fd, name)
            entry = None if record is None else read_file_record(name, record, urls)
            if entry is not None:
                entries[entry.index] = entry
    if MANIFEST_NAME in names:
        for index, entry in _read_manifest(dir_fd).items():
            entries.setdefault(index, entry)
    return entries


def _record_of(dir_fd: int, name: str) -> bytes | None:
    try:
        # Not through a symbolic link: only a file we renamed into place has a record.
        fd = os.open(name, _READ, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        return os.getxattr(fd, RECORD_ATTRIBUTE)
    except OSError:
        return None
    finally:
        os.close(fd)


def _read_manifest(dir_fd: int) -> dict[int, ManifestEntry]:
    try:
        fd = os.open(MANIFEST_NAME, _READ, dir_fd=dir_fd)
        with open(fd, "rb", closefd=True) as stream:
            return read_manifest(stream.read().decode("utf-8"))
    except (OSError, UnicodeDecodeError):
        # Unreadable (not a file, not UTF-8, not ours to read): everything is downloaded
        # again, and writing the files says what is wrong if anything is.
        return {}


def still_there(directory: ImageDir, entry: ManifestEntry) -> MediaFile | None:
    """The file `entry` names if it has the size and SHA-256 that `entry` says, else None.

    Its size in pixels is read from its header again, as a download reads it.
    """
    kind = kind_of_name(entry.name)
    if kind is None:
        return None
    try:
        with directory.held() as dir_fd:
            # A regular file only, and not through a symbolic link: a link in its place is
            # downloaded over (the rename replaces the link, never what it points to).
            fd = os.open(entry.name, _READ, dir_fd=dir_fd)
        with open(fd, "rb", closefd=True) as stream:
            status = os.fstat(stream.fileno())
            size = status.st_size if stat.S_ISREG(status.st_mode) else None
            if not worth_hashing(entry, entry.url, size):
                return None
            digest = hashlib.sha256()
            head = stream.read(HEAD_BYTES)
            digest.update(head)
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
    except OSError:
        return None
    if digest.hexdigest() != entry.sha256:
        return None
    path = directory.path / entry.name
    found = media_file(entry.url, path, entry.bytes, entry.sha256, kind, head, entry.opted_out)
    return attrs.evolve(found, reused=True)

"""Media downloads: the shell that streams files to disk, asking `_media_rules` at each step.

One GET per hop, redirects followed by hand (each target checked before it is requested), a
slot per host, the session's pacer and retry policy, the body streamed in chunks through a
SHA-256 into a temporary file of the image's directory, then fsync and rename.

Every file-system call (mkdir, open, write and hash, fsync, rename, the manifest) runs in a
worker thread of `_FILES`, never on the event loop: an fsync takes milliseconds, and on the
loop it would stall every other download (and the rest of the application) while it waits.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import itertools
import os
import stat
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    Awaitable,
    Callable,
    Iterable,
    Sequence,
)
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import attrs
from yarl import URL

from ._bulk import async_items
from ._core import after_failure
from ._media_rules import (
    HEAD_BYTES,
    MANIFEST_NAME,
    RECORD_ATTRIBUTE,
    Kind,
    ManifestEntry,
    check_media_url,
    file_name,
    file_record,
    kind_of_name,
    manifest_text,
    media_dir,
    media_file,
    read_file_record,
    read_manifest,
    redirect_target,
    status_error,
    too_large,
    verify,
    worth_hashing,
)
from ._transport import describe
from ._upstream import Pacer
from .errors import MediaError, MediaTransportError, MediaWriteError, MeigenError
from .media import MediaFile, MediaResult
from .models import GalleryImage
from .retry import RetryPolicy

__all__ = ["MediaDownloader", "stream_media"]

_T = TypeVar("_T")
# Bytes gathered before they go to a worker thread in one job: each hand-over costs a thread
# wake-up and two GIL hand-offs, so a file of up to this size costs one job in all (write,
# record, fsync, rename). Per file in flight, this is the memory held beyond aiohttp's buffer,
# so it stays small: 8 downloads in flight hold at most 2 MiB.
_BATCH = 256 * 1024
# Threads for the file work of every download. fsyncs issued side by side share the
# journal's commits, so several at once cost little more than one; more threads than
# downloads in flight would only wait.
_FILES = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="meigen-media")
_SNIFF_AT_LEAST = 32  # bytes wanted before the type is decided: every magic number fits
_ACCEPT = {"Accept": "image/avif,image/webp,image/png,image/jpeg,image/gif;q=0.9,*/*;q=0.1"}


class MediaDownloader:
    """Downloads the media files of images into `root/{id}/{index}{ext}`.

    Args:
        http: Gives the aiohttp session to use (the session's transport opens it).
        hosts: The hosts allowed, as `_media_rules.host_set` makes them.
        max_bytes: The largest file downloaded.
        concurrency: Most requests in flight at once to one host.
        retry: When a failed download is tried again.
        pacer: Paces every request, redirect hops included (None: no pacing).
        timeout: Seconds allowed to connect, and between two reads of a body.
        sleep: Waits before a retry; `asyncio.sleep` but in tests.

    """

    def __init__(
        self,
        *,
        http: Callable[[], aiohttp.ClientSession],
        hosts: frozenset[str],
        max_bytes: int,
        concurrency: int,
        retry: RetryPolicy,
        pacer: Pacer | None = None,
        timeout: float = 10.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ):
        self._http = http
        self.hosts = hosts
        self.max_bytes = max_bytes
        self.concurrency = concurrency
        self.retry = retry
        self._pacer = pacer
        self.timeout = timeout
        # A whole-request deadline would fail a large file on a slow link: what is bounded is
        # the connect, and each wait for more of the body.
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout)
        self._sleep = sleep
        self._slots: dict[str, asyncio.Semaphore] = {}
        # Image directories found missing, while their images download: a file's first job
        # makes the directory before creating the file, rather than failing to create it.
        self._unmade: set[Path] = set()
        self.closed = False

    def close(self) -> None:
        """Send nothing more."""
        self.closed = True

    # -- One image -----------------------------------------------------------------------------

    async def download_image(
        self, image: GalleryImage, root: str | os.PathLike[str]
    ) -> tuple[list[MediaFile], MediaError | None]:
        """Every media file of `image`: the files on disk, and the first error if any.

        The files are downloaded at once (bounded per host); one failing does not stop the
        others, so that a rerun has less to do.

        Raises:
            InvalidImageId: `image.id` is not a gallery id (no path is made of it).

        """
        directory = media_dir(Path(root), image.id)
        urls = image.media_urls
        known: dict[int, ManifestEntry] = {}
        if _exists(directory):
            known = await _in_thread(_read_entries, directory, urls)
        else:
            self._unmade.add(directory)
        outcomes: list[tuple[MediaFile, bool] | BaseException]
        try:
            if len(urls) == 1:  # most images: no task and gather for one file
                try:
                    outcomes = [await self._file(urls[0], directory, 0, known.get(0))]
                except MediaError as failed:
                    outcomes = [failed]
            else:
                outcomes = await asyncio.gather(
                    *(
                        self._file(url, directory, index, known.get(index))
                        for index, url in enumerate(urls)
                    ),
                    return_exceptions=True,
                )
        finally:
            self._unmade.discard(directory)
        done: list[tuple[int, MediaFile]] = []
        all_on_file = True
        first_error: MediaError | None = None
        for index, outcome in enumerate(outcomes):
            if isinstance(outcome, tuple):
                done.append((index, outcome[0]))
                all_on_file = all_on_file and outcome[1]
            elif isinstance(outcome, MediaError):
                outcome.image_id = image.id
                first_error = first_error or outcome
            else:
                raise outcome  # a bug or a cancellation: not a download's outcome
        # Files that carry their own records need no manifest: on ext4 its create and rename
        # cost more CPU than the download's own file work.
        listed = {i: e.sha256 for i, e in known.items() if not e.on_file}
        if done and not all_on_file and {i: f.sha256 for i, f in done} != listed:
            try:
                await _in_thread(_write_manifest, directory, image.id, done)
            except OSError as exc:
                error = MediaWriteError(
                    f"cannot write {directory / MANIFEST_NAME}: {exc.strerror or exc}",
                    image_id=image.id,
                )
                error.__cause__ = exc
                first_error = first_error or error
        return [media for _, media in done], first_error

    async def _file(
        self, url: str, directory: Path, index: int, entry: ManifestEntry | None
    ) -> tuple[MediaFile, bool]:
        """The file, and whether it carries its own record."""
        target = check_media_url(url, self.hosts)  # before anything: a refusal costs nothing
        if entry is not None and entry.url == url:
            media = await _in_thread(_still_there, directory / entry.name, entry)
            if media is not None:
                return media, entry.on_file
        return await self._download(target, url, directory, index)

    async def _download(
        self, target: URL, url: str, directory: Path, index: int
    ) -> tuple[MediaFile, bool]:
        retries = 0
        while True:
            try:
                return await self._attempt(target, url, directory, index)
            except MediaError as error:
                retry = after_failure(error, retries, self.retry)
                if retry is None:
                    if retries:
                        error.message = f"{error.message} (after {retries} retries)"
                        error.args = (error.message,)
                    raise
            retries += 1
            await self._sleep(retry.delay)

    # -- One attempt ---------------------------------------------------------------------------

    async def _attempt(
        self, target: URL, url: str, directory: Path, index: int
    ) -> tuple[MediaFile, bool]:
        current = target
        redirects = 0
        while True:
            outcome = await self._hop(current, redirects, url, directory, index)
            if isinstance(outcome, _Received):
                # Out of the host's slot: the fsync waits on the disk, not on the host, and
                # holding the slot through it would leave the connection idle meanwhile.
                return await outcome.commit()
            current = outcome
            redirects += 1

    async def _hop(
        self, current: URL, redirects: int, url: str, directory: Path, index: int
    ) -> _Received | URL:
        """One request: the body received (not yet committed), or where it redirects."""
        host = current.host or ""
        slot = self._slots.get(host)
        if slot is None:
            slot = self._slots[host] = asyncio.Semaphore(self.concurrency)
        received: _Received | None = None
        try:
            async with slot:
                if self._pacer is not None:
                    await self._pacer.acquire()
                if self.closed:
                    raise MediaTransportError("the session was closed", url=url)
                try:
                    async with self._http().get(
                        current, allow_redirects=False, timeout=self._timeout, headers=_ACCEPT
                    ) as resp:
                        following = redirect_target(
                            resp.status,
                            resp.headers.get("Location"),
                            current,
                            redirects_so_far=redirects,
                            hosts=self.hosts,
                            original=url,
                        )
                        if following is not None:
                            return following
                        error = status_error(resp.status, resp.headers, url)
                        if error is not None:
                            raise error
                        received = await self._receive(resp, url, directory, index)
                        return received
                except TimeoutError as exc:
                    # Before ClientError: aiohttp's timeout errors are both.
                    raise MediaTransportError(
                        f"download of {url} timed out ({self.timeout:g}s without data)", url=url
                    ) from exc
                except aiohttp.ClientError as exc:
                    raise MediaTransportError(
                        f"download of {url} failed: {describe(exc)}", url=url
                    ) from exc
        except BaseException:
            # Received, then the response's release failed or was cancelled.
            if received is not None:
                await received.out.discard()
            raise

    async def _receive(
        self, resp: aiohttp.ClientResponse, url: str, directory: Path, index: int
    ) -> _Received:
        status, limit = resp.status, self.max_bytes
        length = resp.content_length
        if length is not None and length > limit:
            raise too_large(url, limit, f"Content-Length is {length}", status)
        content_type = resp.headers.get("Content-Type")
        head = b""
        pending: list[bytes] = []  # the first chunks, until the type is known
        size = 0
        out: _TempFile | None = None
        try:
            # What aiohttp has buffered, as it comes: its read buffer bounds the size (it stops
            # reading past about 128 KiB), and a 256 KiB file took one pass here instead of the
            # four that 64 KiB chunks took (measured: 6% more throughput).
            async for chunk in resp.content.iter_any():
                size += len(chunk)
                if size > limit:
                    raise too_large(url, limit, "the streamed body exceeded it", status)
                if len(head) < HEAD_BYTES:
                    head += chunk[: HEAD_BYTES - len(head)]
                if out is None:
                    pending.append(chunk)
                    if len(head) < _SNIFF_AT_LEAST:
                        continue
                    kind = verify(head, content_type, url=url, status=status)
                    out = _TempFile(directory, index, url, directory in self._unmade)
                    for early in pending:
                        await out.write(early)
                    pending.clear()
                else:
                    await out.write(chunk)
            if out is None:
                kind = verify(head, content_type, url=url, status=status)
                out = _TempFile(directory, index, url, directory in self._unmade)
                for early in pending:
                    await out.write(early)
        except BaseException:
            if out is not None:
                await out.discard()
            raise
        return _Received(out, url, directory / file_name(index, kind), kind, head, size)


@attrs.frozen
class _Received:
    """A body read whole into a temporary file, its last batch perhaps not yet written."""

    out: _TempFile
    url: str
    path: Path
    kind: Kind
    head: bytes
    size: int

    async def commit(self) -> tuple[MediaFile, bool]:
        """Write the rest, record, fsync and rename: the file, and whether it holds its record."""
        sha256 = self.out.sha256()
        media = media_file(self.url, self.path, self.size, sha256, self.kind, self.head)
        try:
            record = file_record(self.url, self.size, sha256)
            on_file = await self.out.commit(self.path, record)
        except BaseException:
            await self.out.discard()
            raise
        return media, on_file


class _TempFile:
    """A file written under a temporary name in the target's directory, then renamed.

    Its work runs in `_FILES`, one job at a time and in order. Chunks are hashed as they come
    and gathered up to `_BATCH` bytes, then handed over together without waiting, so the
    socket is read while the batch before is written; `commit` writes the rest, attaches the
    file's record, fsyncs and renames in one more job. The first job makes the directory and
    opens the file, so that an image refused before any byte is written leaves no directory.

    A worker thread takes the GIL back after each system call while the event loop wants it
    too, so the jobs make as few calls as they can: `os.open` and `os.writev` on a descriptor
    (an `open()` file adds fstat, ioctl and lseek calls).
    """

    def __init__(self, directory: Path, index: int, url: str, make_directory: bool = False):
        # Unique within this process by the counter and among live processes by the pid;
        # O_EXCL makes sure, and a dead process's leftover of the same name (its pid reused)
        # makes the first job take the next name.
        self.path = _temp_name(directory, index)
        self._index = index
        self._url = url
        self._make_directory = make_directory
        self._fd: int | None = None
        self._digest = hashlib.sha256()
        self._job: concurrent.futures.Future[Any] | None = None
        self._batch: list[bytes] = []
        self._batched = 0

    async def write(self, chunk: bytes) -> None:
        """Hash `chunk` and queue it to be written (in a batch, after the batch before it)."""
        # Hashed here rather than in the worker: each hashlib call there is one more time the
        # worker takes the GIL back from the event loop, and measured, that costs the loop
        # more than hashing 64 KiB (about 30 us with SHA-NI) does.
        self._digest.update(chunk)
        self._batch.append(chunk)
        self._batched += len(chunk)
        if self._batched >= _BATCH:
            await self._finish_job()
            self._job = _FILES.submit(self._write, self._take())

    def sha256(self) -> str:
        """The SHA-256 of every byte written so far."""
        return self._digest.hexdigest()

    async def commit(self, final: Path, record: bytes) -> bool:
        """Write what is queued, attach `record`, fsync, close and rename to `final`.

        Returns whether the file system kept the record.
        """
        await self._finish_job()
        job = _FILES.submit(self._commit, self._take(), final, record)
        self._job = job
        try:
            on_file: bool = await asyncio.wrap_future(job)
        except OSError as exc:
            raise _write_error(final, exc, self._url) from exc
        return on_file

    def _take(self) -> list[bytes]:
        # Handed over as they came: joining 256 KiB on the event loop cost about 100 us a
        # file (a fresh allocation, then page faults); the worker writes them with one writev.
        chunks, self._batch = self._batch, []
        self._batched = 0
        return chunks

    async def discard(self) -> None:
        """Close and remove the file, after the job in flight (a write may be running)."""
        previous = self._job
        self._job = None
        cleanup = _FILES.submit(self._remove, previous)
        # Cancelled again while waiting: the cleanup still runs, in its thread.
        await asyncio.shield(asyncio.wrap_future(cleanup))

    async def _finish_job(self) -> None:
        job, self._job = self._job, None
        if job is None:
            return
        try:
            await asyncio.wrap_future(job)
        except OSError as exc:
            raise _write_error(self.path, exc, self._url) from exc

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
        if self._make_directory:
            # Known missing: made first, sparing a create that fails and its exception.
            with contextlib.suppress(FileExistsError):  # another file of the image made it
                self.path.parent.mkdir(parents=True)
        for _ in range(_NAMES_TRIED):
            try:
                return os.open(self.path, _CREATE, 0o666)
            except FileNotFoundError:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                return os.open(self.path, _CREATE, 0o666)
            except FileExistsError:
                self.path = _temp_name(self.path.parent, self._index)
        return os.open(self.path, _CREATE, 0o666)  # the error it raises says why

    def _commit(self, chunks: list[bytes], final: Path, record: bytes) -> bool:
        self._write(chunks)
        fd = self._fd
        assert fd is not None
        on_file = _attach(fd, record)
        # The rename must not land before the data (and the record): fsync first.
        os.fsync(fd)
        self._fd = None
        os.close(fd)
        os.replace(self.path, final)
        return on_file

    def _remove(self, previous: concurrent.futures.Future[Any] | None) -> None:
        if previous is not None:
            # Queued before this job, so running or done already: waiting cannot deadlock.
            concurrent.futures.wait([previous])
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        # Gone already (renamed, or never opened), or unremovable: a .part name is never
        # read back.
        with contextlib.suppress(OSError):
            self.path.unlink()


_CREATE = (
    os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
)
_TEMP_NAMES = itertools.count()
_NAMES_TRIED = 10


def _temp_name(directory: Path, index: int) -> Path:
    return directory / f".{index}.{os.getpid()}.{next(_TEMP_NAMES)}.part"


_HAS_WRITEV = hasattr(os, "writev")
_MOST_BUFFERS = 1024  # IOV_MAX on Linux and the BSDs: more buffers in one writev is EINVAL


def _after(chunks: list[bytes], written: int) -> list[bytes]:
    """What of `chunks` is left once their first `written` bytes are written."""
    for index, chunk in enumerate(chunks):
        if written < len(chunk):
            return [chunk[written:], *chunks[index + 1 :]]
        written -= len(chunk)
    return []


async def _in_thread(function: Callable[..., _T], *args: object) -> _T:
    return await asyncio.wrap_future(_FILES.submit(function, *args))


def _write_manifest(directory: Path, image_id: str, done: list[tuple[int, MediaFile]]) -> None:
    write_atomically(directory / MANIFEST_NAME, manifest_text(image_id, done).encode())


def _write_error(path: Path, exc: OSError, url: str) -> MediaWriteError:
    error = MediaWriteError(f"cannot write {path}: {exc.strerror or exc}", url=url)
    error.__cause__ = exc
    return error


def write_atomically(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in its directory and a rename.

    Not fsynced: it is for the manifest, which a crash can at worst leave empty or old, and
    an unreadable manifest only makes a rerun download again (the files it lists are fsynced).
    """
    temp = path.with_name(f".{path.name}.{os.getpid()}.{next(_TEMP_NAMES)}.part")
    try:
        with open(temp, "xb") as stream:
            stream.write(data)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _read_manifest(path: Path) -> dict[int, ManifestEntry]:
    try:
        return read_manifest(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        # None, or unreadable (not a file, not UTF-8, not ours to read): everything is
        # downloaded again, and writing the files says what is wrong if anything is.
        return {}


def _exists(directory: Path) -> bool:
    """Whether `directory` exists, asked on the event loop.

    A lookup by name reads no data, and on a first run its answer is "no such file" at once;
    sending it to a worker thread cost more (the hand-over, and the worker taking the GIL back
    from the loop) than it does. What is read from a directory that exists is read in one.
    """
    try:
        os.stat(directory)
    except FileNotFoundError:
        return False
    except OSError:
        return True  # let the worker find out what is wrong, and writing the file say it
    return True


def _still_there(path: Path, entry: ManifestEntry) -> MediaFile | None:
    """The file at `path` if it has the size and SHA-256 that `entry` says, else None.

    Its size in pixels is read from its header again, as a download reads it.
    """
    kind = kind_of_name(entry.name)
    try:
        status = os.lstat(path)
        # A regular file only: a symbolic link in its place is downloaded over (the rename
        # replaces the link, never what it points to).
        size = status.st_size if stat.S_ISREG(status.st_mode) else None
        if kind is None or not worth_hashing(entry, entry.url, size):
            return None
        digest = hashlib.sha256()
        with open(path, "rb") as stream:
            head = stream.read(HEAD_BYTES)
            digest.update(head)
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
    except OSError:
        return None
    if digest.hexdigest() != entry.sha256:
        return None
    found = media_file(entry.url, path, entry.bytes, entry.sha256, kind, head)
    return attrs.evolve(found, reused=True)


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


def _read_entries(directory: Path, urls: Sequence[str]) -> dict[int, ManifestEntry]:
    """What the files of an image's directory say of themselves, then what its manifest says.

    A file's own record wins: it was written with the file, before its fsync; a manifest may
    be older than the files it lists.
    """
    try:
        names = os.listdir(directory)
    except OSError:
        return {}  # gone since, not a directory, or unreadable: writing the file will say so
    entries: dict[int, ManifestEntry] = {}
    if _RECORDS_ON_FILES:
        for name in names:
            if name.startswith("."):
                continue  # temporary files, and hidden ones that are not ours
            try:
                # Not through a symbolic link: only a file we renamed into place has a record.
                record = os.getxattr(directory / name, RECORD_ATTRIBUTE, follow_symlinks=False)
            except OSError:
                continue
            entry = read_file_record(name, record, urls)
            if entry is not None:
                entries[entry.index] = entry
    if MANIFEST_NAME in names:
        for index, entry in _read_manifest(directory / MANIFEST_NAME).items():
            entries.setdefault(index, entry)
    return entries


# os.setxattr is Linux's; elsewhere every image gets a manifest.
_RECORDS_ON_FILES = hasattr(os, "setxattr")


# -- Many images ---------------------------------------------------------------------------------


async def stream_media(
    items: Iterable[str | GalleryImage] | AsyncIterable[str | GalleryImage],
    *,
    get_image: Callable[[str], Awaitable[GalleryImage]],
    download: Callable[[GalleryImage], Awaitable[tuple[list[MediaFile], MediaError | None]]],
    limit: int,
) -> AsyncGenerator[MediaResult, None]:
    """A `MediaResult` per id or image as each completes, at most `limit` images at a time.

    `items` is read only as far as `limit` ahead, so a stream of millions runs in flat memory.
    """
    source = async_items(items)
    running: set[asyncio.Task[MediaResult]] = set()

    async def one(item: str | GalleryImage) -> MediaResult:
        try:
            image = item if isinstance(item, GalleryImage) else await get_image(item)
            files, failure = await download(image)
        except MeigenError as error:  # the image's data, or an id no path can be made of
            name = item.id if isinstance(item, GalleryImage) else str(item)
            given = item if isinstance(item, GalleryImage) else None
            return MediaResult(name, error=error, image=given)
        return MediaResult(image.id, tuple(files), failure, image)

    # Each task reports itself when done: `asyncio.wait` over the running set instead costs a
    # callback added to and removed from every task in it, for every one that finishes.
    finished: asyncio.Queue[asyncio.Task[MediaResult]] = asyncio.Queue()
    exhausted = False
    try:
        while True:
            while not exhausted and len(running) < limit:
                try:
                    item = await source.__anext__()
                except StopAsyncIteration:
                    exhausted = True
                    break
                task = asyncio.ensure_future(one(item))
                task.add_done_callback(finished.put_nowait)
                running.add(task)
            if not running:
                return
            task = await finished.get()
            running.discard(task)
            yield task.result()
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)

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
import os
import secrets
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable, Iterable
from pathlib import Path
from typing import BinaryIO, TypeVar

import aiohttp
from yarl import URL

from ._core import after_failure
from ._media_rules import (
    HEAD_BYTES,
    MANIFEST_NAME,
    Kind,
    ManifestEntry,
    check_media_url,
    dimensions,
    file_name,
    manifest_text,
    media_dir,
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
_CHUNK = 65536
# Bytes gathered before they go to a worker thread in one job: each hand-over costs a thread
# wake-up and two GIL hand-offs, so a file of up to this size costs one job in all (write,
# hash, fsync, rename). Per file in flight, this is the memory held beyond aiohttp's buffer,
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
        try:
            manifest = await _in_thread(_prepare, directory)
        except OSError as exc:
            error = MediaWriteError(
                f"cannot create {directory}: {exc.strerror or exc}", image_id=image.id
            )
            error.__cause__ = exc
            return [], error
        outcomes = await asyncio.gather(
            *(
                self._file(url, directory, index, manifest.get(index))
                for index, url in enumerate(image.media_urls)
            ),
            return_exceptions=True,
        )
        done: list[tuple[int, MediaFile]] = []
        first_error: MediaError | None = None
        for index, outcome in enumerate(outcomes):
            if isinstance(outcome, MediaFile):
                done.append((index, outcome))
            elif isinstance(outcome, MediaError):
                outcome.image_id = image.id
                first_error = first_error or outcome
            else:
                raise outcome  # a bug or a cancellation: not a download's outcome
        if done and {i: f.sha256 for i, f in done} != {i: e.sha256 for i, e in manifest.items()}:
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
    ) -> MediaFile:
        target = check_media_url(url, self.hosts)  # before anything: a refusal costs nothing
        if entry is not None:
            path = directory / entry.name
            if worth_hashing(entry, url, _size(path)):
                digest = await _in_thread(_sha256_of, path)
                if digest == entry.sha256:
                    return entry.to_file(directory)
        return await self._download(target, url, directory, index)

    async def _download(self, target: URL, url: str, directory: Path, index: int) -> MediaFile:
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

    async def _attempt(self, target: URL, url: str, directory: Path, index: int) -> MediaFile:
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
            async for chunk in resp.content.iter_chunked(_CHUNK):
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
                    out = _TempFile(directory, index, url)
                    for early in pending:
                        await out.write(early)
                    pending.clear()
                else:
                    await out.write(chunk)
            if out is None:
                kind = verify(head, content_type, url=url, status=status)
                out = _TempFile(directory, index, url)
                for early in pending:
                    await out.write(early)
        except BaseException:
            if out is not None:
                await out.discard()
            raise
        return _Received(out, url, directory / file_name(index, kind), kind, head, size)


class _Received:
    """A body read whole into a temporary file, its last batch perhaps not yet written."""

    __slots__ = ("head", "kind", "out", "path", "size", "url")

    def __init__(self, out: _TempFile, url: str, path: Path, kind: Kind, head: bytes, size: int):
        self.out = out
        self.url = url
        self.path = path
        self.kind = kind
        self.head = head
        self.size = size

    async def commit(self) -> MediaFile:
        """Write the rest, fsync and rename to the final name: the file as it now is."""
        try:
            sha256 = await self.out.commit(self.path)
        except BaseException:
            await self.out.discard()
            raise
        size_read = dimensions(self.head, self.kind)
        return MediaFile(
            url=self.url,
            path=self.path,
            bytes=self.size,
            sha256=sha256,
            content_type=self.kind.mime,
            width=size_read[0] if size_read else None,
            height=size_read[1] if size_read else None,
        )


class _TempFile:
    """A file written under a temporary name in the target's directory, then renamed.

    Its work runs in `_FILES`, one job at a time and in order. Chunks are gathered up to
    `_BATCH` bytes and handed over together without waiting, so the socket is read while the
    batch before is hashed and written (hashlib and file writes let go of the GIL); `commit`
    writes the rest, fsyncs and renames in one more job. The file is opened by the first job.
    """

    def __init__(self, directory: Path, index: int, url: str):
        self.path = directory / f".{index}.{secrets.token_hex(6)}.part"
        self._url = url
        self._stream: BinaryIO | None = None
        self._digest = hashlib.sha256()
        self._job: concurrent.futures.Future[None] | None = None
        self._batch: list[bytes] = []
        self._batched = 0

    async def write(self, chunk: bytes) -> None:
        """Queue `chunk` to be hashed and written (in a batch, after the batch before it)."""
        self._batch.append(chunk)
        self._batched += len(chunk)
        if self._batched >= _BATCH:
            await self._finish_job()
            self._job = _FILES.submit(self._write, self._take())

    async def commit(self, final: Path) -> str:
        """Write what is queued, fsync, close and rename to `final`; the file's SHA-256."""
        await self._finish_job()
        job = _FILES.submit(self._commit, self._take(), final)
        self._job = job
        try:
            await asyncio.wrap_future(job)
        except OSError as exc:
            raise _write_error(final, exc, self._url) from exc
        return self._digest.hexdigest()

    def _take(self) -> bytes:
        data = b"".join(self._batch)
        self._batch.clear()
        self._batched = 0
        return data

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

    def _write(self, data: bytes) -> None:
        if self._stream is None:
            self._stream = open(self.path, "xb")  # noqa: SIM115 - closed by commit or discard
        self._digest.update(data)
        self._stream.write(data)

    def _commit(self, data: bytes, final: Path) -> None:
        self._write(data)
        assert self._stream is not None
        self._stream.flush()
        # The rename must not land before the data: fsync first.
        os.fsync(self._stream.fileno())
        self._stream.close()
        os.replace(self.path, final)

    def _remove(self, previous: concurrent.futures.Future[None] | None) -> None:
        if previous is not None:
            # Queued before this job, so running or done already: waiting cannot deadlock.
            concurrent.futures.wait([previous])
        if self._stream is not None:
            self._stream.close()
        # Gone already (renamed, or never opened), or unremovable: a .part name is never
        # read back.
        with contextlib.suppress(OSError):
            self.path.unlink()


async def _in_thread(function: Callable[..., _T], *args: object) -> _T:
    return await asyncio.wrap_future(_FILES.submit(function, *args))


def _prepare(directory: Path) -> dict[int, ManifestEntry]:
    directory.mkdir(parents=True, exist_ok=True)
    return _read_manifest(directory / MANIFEST_NAME)


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
    temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.part")
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
    except FileNotFoundError:
        return {}
    except (UnicodeDecodeError, IsADirectoryError):
        return {}  # unreadable as a manifest: everything is downloaded again


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size if path.is_file() else None
    except OSError:
        return None


def _sha256_of(path: Path) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as stream:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


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
    source = _aiter(items)
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

    exhausted = False
    try:
        while True:
            while not exhausted and len(running) < limit:
                try:
                    item = await source.__anext__()
                except StopAsyncIteration:
                    exhausted = True
                    break
                running.add(asyncio.ensure_future(one(item)))
            if not running:
                return
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                running.discard(task)
                yield task.result()
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)


async def _aiter(
    items: Iterable[str | GalleryImage] | AsyncIterable[str | GalleryImage],
) -> AsyncGenerator[str | GalleryImage, None]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


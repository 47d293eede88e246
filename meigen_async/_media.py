"""Media downloads, the HTTP side: the requests of each file, through the session's `Upstream`.

Every request goes through `Upstream` as the gallery's do: its one retry loop (`retried`) and
its streaming GET (`exchange`: a slot per host, the session's pacer, a deadline per request,
counted in `SessionStats`). Here: one GET per hop, redirects followed by hand (each target
checked before it is requested), and the body streamed in chunks through a SHA-256 into a
temporary file of the image's directory (or, for a task that set `_media_kept.KEEP`, an
export's own staging, kept in memory for its consumer: the same checks, no file). What
happens on disk (the directory held open, the temporary file, fsync and rename, records) is
`_media_files`; split from here so that each side stays readable on its own. The tasks the
downloads run in are `_media_tasks`; `iter_media`'s driver is `_bulk.stream_media`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from yarl import URL

from . import _telemetry
from ._core import retries_note
from ._headers import header_lines
from ._media_files import (
    ImageDir,
    Received,
    TempFile,
    in_thread,
    read_entries,
    still_there,
    write_manifest,
)
from ._media_formats import verify
from ._media_records import MANIFEST_NAME, ManifestEntry
from ._media_rules import (
    HEAD_BYTES,
    MediaOrigins,
    check_media_url,
    file_name,
    head_pixels,
    media_dir,
    opts_out,
    redirect_target,
    status_error,
    too_large,
    too_many_files,
    too_many_pixels,
    transport_error,
    write_error,
)
from ._media_tasks import MEDIA_TASK_PREFIX, OwnedTasks, closed_error
from ._transport import Streamed, StreamOptions
from ._upstream import Upstream
from .errors import MediaError, MeigenError, TransportError
from .media import MediaFile
from .models import GalleryImage

__all__ = ["MediaDownloader"]

_SNIFF_AT_LEAST = 32  # bytes wanted before the type is decided: every magic number fits
_ACCEPT = {"Accept": "image/avif,image/webp,image/png,image/jpeg,image/gif;q=0.9,*/*;q=0.1"}


class MediaDownloader:
    """Downloads the media files of images into `root/{id}/{index}{ext}`.

    Args:
        upstream: Where every request goes (redirect hops included): a slot per host, the
            pacer, the retry policy, the counters. Its `timeout` (the transport's) bounds
            connecting and each wait for more of a body.
        origins: The origins allowed, as `_media_rules.origin_set` makes them.
        max_bytes: The largest file downloaded.
        media_timeout: Seconds allowed for one request, from sending it to its last byte.
        max_files: The most files downloaded for one image.
        max_pixels: The most pixels a file's header may claim.

    """

    def __init__(
        self,
        *,
        upstream: Upstream,
        origins: MediaOrigins,
        max_bytes: int,
        media_timeout: float = 300.0,
        max_files: int = 16,
        max_pixels: int = 178_956_970,
    ):
        self._upstream = upstream
        self.origins = origins
        self.max_bytes = max_bytes
        self.media_timeout = media_timeout
        self.max_files = max_files
        self.max_pixels = max_pixels
        # The whole request is bounded by `media_timeout`, so that a host sending a byte now
        # and then cannot hold a file open for hours.
        self._options = StreamOptions(
            headers=_ACCEPT, deadline=media_timeout, deadline_name="media_timeout"
        )
        self.tasks = OwnedTasks()
        """Every download running for `download` and `stream_media`."""

    @property
    def closed(self) -> bool:
        """Whether `close` was called: no download starts."""
        return self.tasks.closed

    async def close(self) -> None:
        """Start no download; cancel the ones running and wait for them.

        Nothing more is sent, nor retried, once the `Upstream` is closed: the session closes
        it first.
        """
        await self.tasks.close()

    # -- One image -----------------------------------------------------------------------------

    async def download(
        self, image: GalleryImage, root: str | os.PathLike[str]
    ) -> tuple[list[MediaFile], MediaError | None]:
        """`download_image`, in a task owned here: `close` ends it.

        Raises:
            MediaTransportError: `close` was called before it or while it ran.
            InvalidImageId: `image.id` is not a gallery id (no path is made of it).

        """
        if self.closed:
            raise closed_error(image.id)
        task = self.tasks.start(self.download_image(image, root), MEDIA_TASK_PREFIX + image.id)
        try:
            return await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            # Cancelled by `close`, not by our caller (whose cancellation stays one).
            if (
                task.cancelled()
                and self.closed
                and current is not None
                and not current.cancelling()
            ):
                raise closed_error(image.id) from None
            raise

    async def download_image(
        self, image: GalleryImage, root: str | os.PathLike[str]
    ) -> tuple[list[MediaFile], MediaError | None]:
        """Every media file of `image`: the files on disk, and the first error if any.

        The files are downloaded at once (bounded per host); one failing does not stop the
        others, so that a rerun has less to do. Files past `max_files` are refused.

        Raises:
            InvalidImageId: `image.id` is not a gallery id (no path is made of it).

        """
        directory = ImageDir(media_dir(Path(root), image.id))
        try:
            return await self._image(image, directory)
        except MediaError as error:
            error.image_id = image.id
            return [], error
        finally:
            directory.finish()

    async def _image(
        self, image: GalleryImage, directory: ImageDir
    ) -> tuple[list[MediaFile], MediaError | None]:
        urls = image.media_urls
        refused = too_many_files(urls, self.max_files)
        if refused is not None:
            urls = urls[: self.max_files]
        known: dict[int, ManifestEntry] = {}
        if directory.open_existing():  # a link or no directory there: refused, no request
            known = await in_thread(read_entries, directory, urls)
        outcomes: list[tuple[MediaFile, bool] | BaseException]
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
        if refused is not None:
            outcomes.append(refused)
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
                await in_thread(write_manifest, directory, image.id, done)
            except OSError as exc:
                error = write_error(directory.path / MANIFEST_NAME, exc)
                error.image_id = image.id
                first_error = first_error or error
        return [media for _, media in done], first_error

    async def _file(
        self, url: str, directory: ImageDir, index: int, entry: ManifestEntry | None
    ) -> tuple[MediaFile, bool]:
        """The file, and whether it carries its own record."""
        target = check_media_url(url, self.origins)  # before anything: a refusal costs nothing
        if entry is not None and entry.url == url:
            media = await in_thread(still_there, directory, entry)
            if media is not None:
                # Kept by a run with a higher max_pixels: not given as a file of this one.
                size = (media.width, media.height) if media.width and media.height else None
                error = too_many_pixels(size, self.max_pixels, url=url)
                if error is not None:
                    raise error
                return media, entry.on_file
        with _telemetry.media(target) as got:
            return got(await self._download(target, url, directory, index))

    def _download(
        self, target: URL, url: str, directory: ImageDir, index: int
    ) -> Coroutine[Any, Any, tuple[MediaFile, bool]]:
        # The session's one retry loop: a closed session sends nothing more, and no retry.
        # Not a coroutine itself: one frame less above every read of the body.
        return self._upstream.retried(
            _after_retries, None, self._attempt, target, url, directory, index, media=True
        )

    # -- One attempt ---------------------------------------------------------------------------

    async def _attempt(
        self, target: URL, url: str, directory: ImageDir, index: int
    ) -> tuple[MediaFile, bool]:
        current = target
        redirects = 0
        while True:
            outcome = await self._hop(current, redirects, url, directory, index)
            if isinstance(outcome, Received):
                # Out of the host's slot: the fsync waits on the disk, not on the host, and
                # holding the slot through it would leave the connection idle meanwhile.
                return await outcome.commit()
            current = outcome
            redirects += 1

    async def _hop(
        self, current: URL, redirects: int, url: str, directory: ImageDir, index: int
    ) -> Received | URL:
        """One request: the body received (not yet committed), or where it redirects."""
        received: Received | None = None

        async def receive(resp: Streamed) -> Received | URL:
            nonlocal received
            following = redirect_target(
                resp.status,
                resp.headers.get("Location"),
                current,
                redirects_so_far=redirects,
                origins=self.origins,
                original=url,
            )
            if following is not None:
                return following
            error = status_error(resp.status, resp.headers, url)
            if error is not None:
                raise error
            received = await self._receive(resp, url, directory, index)
            return received

        try:
            return await self._upstream.exchange(current, receive, self._options)
        except BaseException as exc:
            # Received, then the response's release failed or was cancelled.
            if received is not None:
                await received.out.discard()
            if isinstance(exc, TransportError) and not isinstance(exc, MediaError):
                # The shell's one failure, told as the media family's.
                raise transport_error(url, exc.message) from exc.__cause__
            raise

    async def _receive(self, resp: Streamed, url: str, directory: ImageDir, index: int) -> Received:
        status, limit = resp.status, self.max_bytes
        length = resp.content_length
        if length is not None and length > limit:
            raise too_large(url, limit, f"Content-Length is {length}", status)
        content_type = resp.headers.get("Content-Type")
        opted_out = opts_out(header_lines(resp.headers, "X-Robots-Tag"))
        head = b""
        pending: list[bytes] = []  # the first chunks, until the type is known
        size = 0
        out: TempFile | None = None
        try:
            # What aiohttp has buffered, as it comes: its read buffer bounds the size (it stops
            # reading past about 128 KiB), and a 256 KiB file took one pass here instead of the
            # four that 64 KiB chunks took (measured: 6% more throughput).
            while chunk := await resp.read_chunk():
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
                    # Most headers tell the size in their first bytes: a bomb is refused
                    # before a file is made for it.
                    head_pixels(head, kind, self.max_pixels, url=url, status=status)
                    out = TempFile(directory, index, url)
                    for early in pending:
                        await out.write(early)
                    pending.clear()
                else:
                    await out.write(chunk)
            if out is None:
                kind = verify(head, content_type, url=url, status=status)
                out = TempFile(directory, index, url)
                for early in pending:
                    await out.write(early)
            # Again with the whole head: a JPEG's frame header may come after its EXIF.
            head_pixels(head, kind, self.max_pixels, url=url, status=status)
        except BaseException:
            if out is not None:
                await out.discard()
            raise
        name = file_name(index, kind)
        return Received(out, url, directory, name, kind, head, size, opted_out)


def _after_retries(error: MeigenError, retries: int, about: object) -> MeigenError:
    """A download's last error, its message saying how many retries were made."""
    if retries:
        error.message = f"{error.message}{retries_note(retries)}"
        error.args = (error.message,)
    return error

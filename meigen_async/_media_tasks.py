"""Who runs media downloads: tasks the session owns, and the bounded driver of `iter_media`.

Apart from `_media` (one image's HTTP) because it is the lifecycle: every download runs in a
task of `OwnedTasks`, which `GallerySession.close()` cancels and waits for, as it does its
fetches, so that no download outlives the session or hangs on a connection it closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable, Coroutine, Iterable
from typing import Any, TypeVar

from ._bulk import async_items
from .errors import MediaError, MediaTransportError, MeigenError
from .media import MediaFile, MediaResult
from .models import GalleryImage

__all__ = ["MEDIA_TASK_PREFIX", "OwnedTasks", "closed_error", "stream_media"]

MEDIA_TASK_PREFIX = "meigen-async media "
"""Media downloads run in tasks named this prefix plus the image's id."""

_T = TypeVar("_T")


class OwnedTasks:
    """Tasks that their owner's `close` cancels and waits for: none outlives it."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self.closed = False

    def start(self, coroutine: Coroutine[Any, Any, _T], name: str) -> asyncio.Task[_T]:
        """Run `coroutine` in a task owned here, named `name`."""
        if self.closed:
            coroutine.close()
            raise RuntimeError("this GallerySession is closed")
        task = asyncio.get_running_loop().create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        """Start no more; cancel every task, and wait until each has ended. Idempotent."""
        self.closed = True
        while self._tasks:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            # Until each has ended, even one whose cleanup awaits: none may outlive this.
            await asyncio.wait(tasks)


def closed_error(image_id: str) -> MediaTransportError:
    """What a download cancelled by `close` ends in, for whoever waited on it."""
    return MediaTransportError(
        f"the session was closed while the media of image {image_id} were being downloaded",
        image_id=image_id,
    )


# -- Many images ---------------------------------------------------------------------------------


async def stream_media(
    items: Iterable[str | GalleryImage] | AsyncIterable[str | GalleryImage],
    *,
    get_image: Callable[[str], Awaitable[GalleryImage]],
    download: Callable[[GalleryImage], Awaitable[tuple[list[MediaFile], MediaError | None]]],
    tasks: OwnedTasks,
    limit: int,
) -> AsyncGenerator[MediaResult, None]:
    """A `MediaResult` per id or image as each completes, at most `limit` images at a time.

    `items` is read only as far as `limit` ahead, so a stream of millions runs in flat memory.
    Each image is worked on in a task of `tasks`: once they are closed, the images running
    are given with `closed_error`, and the stream ends without reading more of `items`.
    """
    source = async_items(items)
    running: dict[asyncio.Task[MediaResult], str | GalleryImage] = {}

    async def one(item: str | GalleryImage) -> MediaResult:
        try:
            image = item if isinstance(item, GalleryImage) else await get_image(item)
            files, failure = await download(image)
        except MeigenError as error:  # the image's data, or an id no path can be made of
            return _failed(item, error)
        return MediaResult(image.id, tuple(files), failure, image)

    # Each task reports itself when done: `asyncio.wait` over the running set instead costs a
    # callback added to and removed from every task in it, for every one that finishes.
    finished: asyncio.Queue[asyncio.Task[MediaResult]] = asyncio.Queue()
    exhausted = False
    try:
        while True:
            while not exhausted and len(running) < limit:
                if tasks.closed:
                    exhausted = True
                    break
                try:
                    item = await source.__anext__()
                except StopAsyncIteration:
                    exhausted = True
                    break
                if tasks.closed:  # closed while the input was read: this one is not started
                    exhausted = True
                    yield _failed(item, closed_error(_name(item)))
                    break
                task = tasks.start(one(item), MEDIA_TASK_PREFIX + _name(item))
                task.add_done_callback(finished.put_nowait)
                running[task] = item
            if not running:
                return
            task = await finished.get()
            item = running.pop(task)
            # Only `close` cancels a running task (this generator's own cancellations are in
            # its `finally`, once nobody reads it).
            yield _failed(item, closed_error(_name(item))) if task.cancelled() else task.result()
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)


def _name(item: str | GalleryImage) -> str:
    return item.id if isinstance(item, GalleryImage) else str(item)


def _failed(item: str | GalleryImage, error: MeigenError) -> MediaResult:
    given = item if isinstance(item, GalleryImage) else None
    return MediaResult(_name(item), error=error, image=given)

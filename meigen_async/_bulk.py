"""The bulk drivers: every id at once, a bounded stream of ids, a bounded stream of downloads.

`gather_images` and `stream_images` call the session's `ImagePath` (its look-up and its join),
so that hits, coalescing and counting are the same as for single gets, and ride its fetch tasks
directly, with no task or shield of their own per id: bulk calls are where that overhead would
show. `stream_media` (`iter_media`) runs each image in a task the session owns
(`_media_tasks.OwnedTasks`), which `close()` ends.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
)
from typing import TypeVar, cast

from ._flight import Flight
from ._images import ImagePath
from ._media_tasks import MEDIA_TASK_PREFIX, OwnedTasks, closed_error
from .errors import MediaError, MeigenError, TransportError, UpstreamUnreachable
from .media import MediaFile, MediaResult
from .models import GalleryImage, ImageResult

__all__ = [
    "async_items",
    "gather_images",
    "refuse_single_id",
    "should_stop",
    "stream_images",
    "stream_media",
    "transport_streak",
]

T = TypeVar("T")


def refuse_single_id(ids: object) -> None:
    """Refuse a `str` (or bytes) given where an iterable of ids belongs.

    Raises:
        TypeError: `ids` is a single str or bytes, which would iterate as characters.

    """
    if isinstance(ids, (str, bytes, bytearray)):
        raise TypeError(
            f"expected an iterable of ids, not a single {type(ids).__name__}: "
            "use get_image for one id"
        )


async def gather_images(
    images: ImagePath,
    ids: Iterable[object],
    *,
    return_exceptions: bool,
) -> list[GalleryImage | MeigenError]:
    """Every id's image (or error, with `return_exceptions`), in input order, each fetched once.

    Without `return_exceptions`, the first error is raised and the fetches left are cancelled.
    """
    loop = asyncio.get_running_loop()
    look_up, join, flights = images.look_up, images.join, images.flights
    wanted = list(ids)
    try:
        distinct: dict[object, object] = {image_id: image_id for image_id in wanted}
        key_of: Callable[[object], object] = _same
    except TypeError:
        # An unhashable id (a list): not a gallery id, keyed by identity to be refused in place.
        distinct = {}
        for image_id in wanted:
            distinct.setdefault(_key(image_id), image_id)
        key_of = _key
    outcomes: dict[object, GalleryImage | MeigenError] = {}
    waiting: list[Flight[GalleryImage]] = []
    for key, candidate in distinct.items():
        try:
            image = look_up(candidate)
            if image is not None:
                outcomes[key] = image
            else:
                # look_up validated it: a miss is a gallery id.
                waiting.append(join(cast(str, candidate), loop))
        except MeigenError as error:
            if not return_exceptions:
                await flights.leave_all(waiting)
                raise
            outcomes[key] = error
    for flight, outcome in await flights.wait_many(waiting, fail_fast=not return_exceptions):
        outcomes[flight.key] = _expected(outcome)
    if not return_exceptions:
        first_error = next((o for o in outcomes.values() if isinstance(o, MeigenError)), None)
        if first_error is not None:
            raise first_error
    return [outcomes[key_of(image_id)] for image_id in wanted]


def transport_streak(streak: int, outcome: GalleryImage | MeigenError) -> int:
    """The run of consecutive ids the upstream could not be reached for, after one more fetch.

    A `TransportError` (refused, DNS, every attempt timed out) lengthens it; anything the
    upstream answered, a 404 or a 5xx included, ends it.
    """
    return streak + 1 if isinstance(outcome, TransportError) else 0


def should_stop(streak: int, limit: int | None) -> bool:
    """Whether a bulk run stops now: `limit` consecutive ids failed to reach the upstream."""
    return limit is not None and streak >= limit


async def stream_images(
    images: ImagePath,
    ids: Iterable[str] | AsyncIterable[str],
    *,
    concurrency: int,
    stop_after_transport_failures: int | None = None,
) -> AsyncGenerator[ImageResult, None]:
    """An `ImageResult` per id as each completes, reading ids only `concurrency` ahead.

    With `stop_after_transport_failures=N`, after N consecutive fetches failed with a
    `TransportError` it cancels the fetches running, yields each of their ids with an
    `UpstreamUnreachable`, and ends. When none was running at that moment (every fetch
    finished together), it reads one more id, if there is one, and yields it so: a stop is
    always told by an `UpstreamUnreachable`, never by an early end alone.
    """
    loop = asyncio.get_running_loop()
    look_up, join, flights = images.look_up, images.join, images.flights
    source = async_items(ids)
    streak = 0
    # The fetch tasks waited on, each with the flights (one per id asked, duplicates too) it
    # answers.
    running: dict[asyncio.Task[GalleryImage], list[Flight[GalleryImage]]] = {}
    waiting = 0  # ids awaiting an answer: the read-ahead bound, duplicates counted
    exhausted = False
    try:
        while True:
            while not exhausted and waiting < concurrency:
                try:
                    image_id = await source.__anext__()
                except StopAsyncIteration:
                    exhausted = True
                    break
                try:
                    image = look_up(image_id)
                except MeigenError as error:
                    yield ImageResult(str(image_id), error=error)
                    continue
                if image is not None:
                    yield ImageResult(image_id, image=image)
                    continue
                flight = join(image_id, loop)
                running.setdefault(flight.task, []).append(flight)
                waiting += 1
            if not running:
                return
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            last_failure: MeigenError | None = None
            for task in done:
                for flight in running.pop(task):
                    waiting -= 1
                    flights.leave(flight)
                    outcome = _expected(flights.outcome(flight))
                    streak = transport_streak(streak, outcome)
                    if isinstance(outcome, MeigenError):
                        last_failure = outcome
                        yield ImageResult(flight.key, error=outcome)
                    else:
                        yield ImageResult(flight.key, image=outcome)
            if should_stop(streak, stop_after_transport_failures) and last_failure is not None:
                cut_off = [f for waiting_on in running.values() for f in waiting_on]
                running.clear()
                await flights.leave_all(cut_off)
                not_fetched = [flight.key for flight in cut_off]
                if not not_fetched and not exhausted:
                    # Nothing was running: without one id yielded so, the caller could not
                    # tell this stop from the end of its input.
                    with contextlib.suppress(StopAsyncIteration):
                        not_fetched.append(str(await source.__anext__()))
                for image_id in not_fetched:
                    stopped = UpstreamUnreachable(
                        f"image {image_id} was not fetched: the upstream failed for "
                        f"{streak} ids in a row (last: {last_failure.message})",
                        image_id=image_id,
                    )
                    stopped.__cause__ = last_failure
                    yield ImageResult(image_id, error=stopped)
                return
    finally:
        await flights.leave_all(f for waiting_on in running.values() for f in waiting_on)


def _expected(outcome: GalleryImage | BaseException) -> GalleryImage | MeigenError:
    """A fetch's image or `MeigenError`; anything else is a bug, raised."""
    if isinstance(outcome, BaseException) and not isinstance(outcome, MeigenError):
        raise outcome
    return outcome


def _same(image_id: object) -> object:
    return image_id


def _key(image_id: object) -> object:
    """`image_id` as a dict key: an unhashable one stands for itself, by identity."""
    try:
        hash(image_id)
    except TypeError:
        return ("unhashable", id(image_id))
    return image_id


async def async_items(items: Iterable[T] | AsyncIterable[T]) -> AsyncIterator[T]:
    """The items of a plain or an async iterable, as an async iterator, read as asked."""
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


# -- Media files ----------------------------------------------------------------------------------


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

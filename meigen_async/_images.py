"""`ImagePath`: the one path of an image request, from the in-process cache to the upstream.

It owns what every image request goes through: the in-process cache, the shared tier behind it
(when there is one), the single flights and the `Fetcher` their tasks run, the session's
`Tally`, and the back-off of failed background refreshes. `GallerySession.get_image` and the
bulk drivers of `_bulk` call it; what it decides at each step is asked of `_core`. Only the
fetch tasks write the in-process cache (a user's `invalidate` and `clear` only delete), and
`close` ends every task it started, refreshes included.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from cachetools import LRUCache
from yarl import URL

from . import _telemetry
from ._core import (
    COALESCED,
    HIT,
    KNOWN_MISSING,
    MISS,
    REFRESH,
    REFRESHED,
    RefreshFailed,
    Tally,
    after_failed_refresh,
    may_refresh,
    remembered_404,
)
from ._core import look_up as cached
from ._fetch import Fetcher
from ._flight import Flight, SingleFlight
from ._protocol import validate_image_id
from ._shared_tier import SharedTier
from ._upstream import Upstream
from .cache import CachePolicy, MemoryCache
from .errors import MeigenError, TransportError
from .models import GalleryImage
from .retry import RetryPolicy

__all__ = ["FETCH_TASK_PREFIX", "ImagePath"]

logger = logging.getLogger("meigen_async")

FETCH_TASK_PREFIX = "meigen-async fetch "
"""Upstream fetches run in tasks named this prefix plus the id, to spot them in a debugger."""


class ImagePath:
    """Cache, shared tier, single flight and fetcher for images: what a session's gets go through.

    Args:
        cache: The in-process cache.
        shared: The shared tier behind it, if any.
        upstream: Where requests go.
        policy: How long responses are kept.
        retry: The retry policy, whose backoff spaces failed background refreshes too.
        image_url: The URL of a valid id.
        tally: Where every outcome is counted.

    """

    __slots__ = ("_fetcher", "_refresh_failed", "_retry", "cache", "flights", "shared", "tally")

    def __init__(
        self,
        *,
        cache: MemoryCache,
        shared: SharedTier | None,
        upstream: Upstream,
        policy: CachePolicy,
        retry: RetryPolicy,
        image_url: Callable[[str], URL],
        tally: Tally,
    ):
        self.cache = cache
        """The in-process cache; written by the fetch tasks alone."""
        self.shared = shared
        """The shared tier, if any."""
        self.tally = tally
        """The session's counters."""
        self._retry = retry
        self._fetcher = Fetcher(
            cache=cache,
            shared=shared,
            upstream=upstream,
            policy=policy,
            image_url=image_url,
            tally=tally,
        )
        self.flights: SingleFlight[GalleryImage] = SingleFlight(
            self._fetcher.fetch,
            task_name=FETCH_TASK_PREFIX.__add__,
            closed_error=_closed_error,
            outcomes=(MeigenError,),
        )
        """One fetch task per id, background refreshes included."""
        # Per id, the background refreshes that failed in a row: none again before its time.
        # Bounded like the cache (an id dropped early is only refreshed sooner).
        self._refresh_failed: LRUCache[str, RefreshFailed] = LRUCache(max(cache.maxsize, 1))

    async def get(self, image_id: str) -> GalleryImage:
        """The image for `image_id`, from the cache or its fetch (joined or started).

        Raises:
            InvalidImageId: the id is not a gallery id.
            MeigenError: the fetch failed, as one of its subclasses.

        """
        image = self.look_up(image_id)
        if image is not None:
            return image
        flight = self.join(image_id, asyncio.get_running_loop())
        if flight.waiters > 1 and _telemetry.active():  # joined another caller's fetch
            return await _telemetry.coalesced(image_id, flight.task, self.flights.wait(flight))
        return await self.flights.wait(flight)

    def look_up(self, image_id: object) -> GalleryImage | None:
        """A cached image, or None for a miss, counted; a bad id or a known 404 raised.

        An image in its stale-while-revalidate window is the answer, and its background
        refresh starts here. After None, `image_id` is a valid id.
        """
        lookup, image = cached(self.cache, image_id) if type(image_id) is str else (MISS, None)
        if lookup is not HIT:
            valid_id = validate_image_id(image_id)
            if lookup is KNOWN_MISSING:
                self.tally.record(lookup)
                raise remembered_404(valid_id)
            if lookup is REFRESH:
                self._refresh(valid_id)
        self.tally.record(lookup)
        return image

    def join(self, image_id: str, loop: asyncio.AbstractEventLoop) -> Flight[GalleryImage]:
        """Wait on the fetch of a valid id that missed the cache, starting it if needed.

        Raises:
            RuntimeError: the path is closed.

        """
        flights = self.flights
        if flights.closed:
            raise RuntimeError("this GallerySession is closed")
        flight, joined = flights.join(image_id, loop)
        if joined:
            self.tally.record(COALESCED)
        return flight

    def peek(self, image_id: object) -> GalleryImage | None:
        """The fresh image cached for `image_id`, or None; the hit or miss counted, no I/O.

        Raises:
            InvalidImageId: the id is not a gallery id.

        """
        image = self.cache.get(image_id) if type(image_id) is str else None
        if image is None:
            validate_image_id(image_id)
        self.tally.record(HIT if image is not None else MISS)
        return image

    def _refresh(self, image_id: str) -> None:
        """Start the background refresh of `image_id`, unless a fetch of it is in flight.

        It rides the id's flight like a miss (a miss meanwhile joins it), held by a done
        callback rather than a waiting caller, so that nobody waits for it. After a failed
        one, none starts before its back-off has passed.
        """
        flights = self.flights
        if flights.closed or flights.running(image_id):
            return
        if not may_refresh(self._refresh_failed.get(image_id), self.cache.now()):
            return
        flight, _ = flights.join(image_id, asyncio.get_running_loop(), self._fetcher.refresh)
        flight.task.add_done_callback(lambda task: self._refreshed(flight))

    def _refreshed(self, flight: Flight[GalleryImage]) -> None:
        self.flights.leave(flight)
        task = flight.task
        if task.cancelled():
            return
        error = task.exception()
        if error is None:
            self._refresh_failed.pop(flight.key, None)
            self.tally.record(REFRESHED)
            return
        failed = after_failed_refresh(
            error,
            self._refresh_failed.get(flight.key),
            now=self.cache.now(),
            policy=self._retry,
        )
        self._refresh_failed[flight.key] = failed
        # Counted as an error by the fetch; nobody waits for it, so it is said here, once a
        # back-off: no refresh starts before it ends.
        logger.warning(
            "background refresh of image %s failed (%d in a row), serving the stored image "
            "until its stale-while-revalidate window ends; next try in %.1f s at the "
            "earliest: %s",
            flight.key,
            failed.failures,
            failed.wait,
            error,
            extra={
                "image_id": flight.key,
                "attempt": failed.failures,
                "retry_after": failed.wait,
                "status": getattr(error, "status", None),
            },
        )

    def invalidate(self, image_id: str) -> None:
        """Forget `image_id` in process at once, and in the shared tier in a task."""
        self.cache.invalidate(image_id)
        if self.shared is not None:
            self.shared.invalidate_later(image_id)

    def clear(self) -> None:
        """Forget every image and 404 in process at once, and in the shared tier in a task."""
        self.cache.clear()
        if self.shared is not None:
            self.shared.clear_later()

    async def close(self) -> None:
        """Cancel every fetch and refresh, wait for them, then for the shared tier's writes.

        Idempotent; a caller still waiting gets `TransportError`.
        """
        await self.flights.close()
        if self.shared is not None:
            await self.shared.drain()


def _closed_error(image_id: str) -> TransportError:
    return TransportError(
        f"the session was closed while image {image_id} was being fetched", image_id=image_id
    )

"""`GallerySession`: the public methods, calling the pieces that do the work.

What each step decides lives in `_core` (plain functions), the fetch of one id in `_fetch`,
single flight in `_flight`, the request loop in `_upstream`, HTTP in `_transport`; see
docs/architecture.md for how they fit together.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterable, Iterable
from types import TracebackType
from typing import Literal, overload

import aiohttp

from ._bulk import gather_images, refuse_single_id, stream_images
from ._core import COALESCED, Lookup, Tally, look_up, remembered_404
from ._fetch import Fetcher
from ._flight import Flight, SingleFlight
from ._protocol import validate_image_id
from ._shared_tier import SharedTier
from ._transport import AiohttpTransport, default_user_agent, image_urls
from ._upstream import Pacer, Upstream, pacer_for
from .cache import CachePolicy, MemoryCache
from .errors import MeigenError, TransportError
from .models import GalleryImage, ImageResult, SessionStats
from .retry import RetryPolicy
from .shared import SharedCache

__all__ = ["DEFAULT_BASE_URL", "FETCH_TASK_PREFIX", "GallerySession"]

DEFAULT_BASE_URL = "https://www.meigen.ai"
"""The real service."""

FETCH_TASK_PREFIX = "meigen-async fetch "
"""Upstream fetches run in tasks named this prefix plus the id, to spot them in a debugger."""


class GallerySession:
    """An async client for `GET /api/images/:id` with a TTL cache and request coalescing.

    Use it as an async context manager, or call `close()` when done. One session is meant to
    be shared by every task of a program: its cache, its coalescing and its `concurrency`
    bound all work across calls.

    Args:
        base_url: Where the service lives, an absolute http(s) URL (`ValueError` otherwise);
            only `{base_url}/api/images/{id}` is requested.
        concurrency: Most upstream requests in flight at once, across all calls.
        timeout: Seconds allowed for one request, body included.
        cache_size: Most images kept (and, separately, most 404s remembered); 0 disables
            caching.
        ttl: Seconds to keep every image, overriding the server's `Cache-Control`.
        default_ttl: Seconds to keep an image when the server gives no lifetime.
        max_ttl: The longest the server's `Cache-Control` may make us keep an image.
        negative_ttl: Seconds a 404 is remembered; 0 disables.
        max_body_bytes: A larger response body is refused as `InvalidResponse`.
        session: An `aiohttp.ClientSession` to use; it is never closed by this object.
        user_agent: The `User-Agent` header; a `meigen-async/<version>` one by default.
        retry: How failed requests are retried; `RetryPolicy(max_retries=0)` disables.
        rate_limit: Most upstream requests per second for the whole session (None: no
            limit), or a pacer: any object with an `async acquire()` that returns when the
            next request may go.
        stale_if_error: Seconds past expiry an image may still be served when the upstream
            fails with a retryable error after every retry.
        cache: None for an in-process `MemoryCache(cache_size, stale_window=stale_if_error)`;
            a `MemoryCache` to use as the in-process cache as it is (its own size and stale
            window apply); or a shared cache (a `SharedCache`, such as
            `meigen_async.redis_cache.RedisCache`), put behind an in-process cache built as
            for None. A cache passed in is never closed by this object.

    """

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        concurrency: int = 16,
        timeout: float = 10.0,
        cache_size: int = 4096,
        ttl: float | None = None,
        default_ttl: float = 300.0,
        max_ttl: float = 3600.0,
        negative_ttl: float = 30.0,
        max_body_bytes: int = 2_097_152,
        session: aiohttp.ClientSession | None = None,
        user_agent: str | None = None,
        retry: RetryPolicy | None = None,
        rate_limit: float | Pacer | None = None,
        stale_if_error: float = 0.0,
        cache: MemoryCache | SharedCache | None = None,
    ):
        _require(concurrency >= 1, "concurrency must be at least 1")
        _require(timeout > 0, "timeout must be positive")
        _require(cache_size >= 0, "cache_size must not be negative")
        _require(max_body_bytes > 0, "max_body_bytes must be positive")
        _require(
            not isinstance(rate_limit, (int, float)) or rate_limit > 0,
            "rate_limit must be positive",
        )
        _require(stale_if_error >= 0, "stale_if_error must not be negative")
        self.base_url: str = base_url.rstrip("/")
        """Where the service lives, without a trailing slash."""
        image_url = image_urls(self.base_url)
        self.concurrency: int = concurrency
        """Most upstream requests in flight at once."""
        self.policy: CachePolicy = CachePolicy(
            ttl=ttl, default_ttl=default_ttl, max_ttl=max_ttl, negative_ttl=negative_ttl
        )
        """How long responses are kept."""
        self.retry: RetryPolicy = retry if retry is not None else RetryPolicy()
        """How failed requests are retried."""
        shared: SharedTier | None = None
        if isinstance(cache, MemoryCache):
            self._cache = cache
        else:
            self._cache = MemoryCache(cache_size, stale_window=stale_if_error)
            if cache is not None:
                # A lease lasts one request's timeout: longer than a live holder's attempt.
                shared = SharedTier(self._cache, cache, lease_time=timeout, policy=self.policy)
        self._shared = shared
        self._tally = Tally()
        self._transport = AiohttpTransport(
            timeout=timeout,
            max_body_bytes=max_body_bytes,
            headers={
                "User-Agent": user_agent or default_user_agent(),
                "Accept": "application/json",
            },
            session=session,
            connections=concurrency,
        )
        pacer = pacer_for(rate_limit) if isinstance(rate_limit, (int, float)) else rate_limit
        self._upstream = upstream = Upstream(
            self._transport.send,
            concurrency=concurrency,
            retry=self.retry,
            tally=self._tally,
            pacer=pacer,
        )
        fetcher = Fetcher(
            cache=self._cache,
            shared=shared,
            upstream=upstream,
            policy=self.policy,
            image_url=image_url,
            tally=self._tally,
        )
        self._flights: SingleFlight[GalleryImage] = SingleFlight(
            fetcher.fetch,
            task_name=FETCH_TASK_PREFIX.__add__,
            closed_error=_closed_error,
            outcomes=(MeigenError,),
        )
        self._closed = False

    # -- Lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> GallerySession:
        """Open the HTTP session; the cache starts empty."""
        self._ensure_open()
        self._transport.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the session."""
        await self.close()

    async def close(self) -> None:
        """Cancel fetches in flight, wait for every task started, close the HTTP session.

        Idempotent. A caller still waiting on a cancelled fetch gets `TransportError`. With a
        shared cache, the deletions and lease releases still running are waited for; the
        cache itself is left open, for whoever made it to close.
        """
        if self._closed:
            return
        self._closed = True
        self._upstream.close()
        await self._flights.close()
        if self._shared is not None:
            await self._shared.drain()
        await self._transport.close()

    @property
    def closed(self) -> bool:
        """Whether `close()` has been called."""
        return self._closed

    def _ensure_open(self) -> None:
        if self._closed:
            raise RuntimeError("this GallerySession is closed")

    # -- Single images -------------------------------------------------------------------------

    async def get_image(self, image_id: str) -> GalleryImage:
        """The image with this id, from the cache or the service.

        Concurrent calls for one id share one upstream request.

        Raises:
            InvalidImageId: before any I/O, when the id is not a gallery id.
            ImageNotFound: the gallery has no such image (remembered `negative_ttl` seconds).
            MeigenError: any other failure, as one of its subclasses.

        """
        image = self._look_up(image_id)
        if image is not None:
            return image
        flight = self._join(image_id, asyncio.get_running_loop())
        return await self._flights.wait(flight)

    def _look_up(self, image_id: object) -> GalleryImage | None:
        """A cached image, or None for a miss, counted; a bad id or a known 404 raised."""
        lookup, image = (
            look_up(self._cache, image_id) if type(image_id) is str else (Lookup.MISS, None)
        )
        if lookup is not Lookup.HIT:
            valid_id = validate_image_id(image_id)
            if lookup is Lookup.KNOWN_MISSING:
                self._tally.record(lookup)
                raise remembered_404(valid_id)
        self._tally.record(lookup)
        return image

    def _join(self, image_id: str, loop: asyncio.AbstractEventLoop) -> Flight[GalleryImage]:
        """Wait on the fetch of a valid id that missed the cache, starting it if needed."""
        self._ensure_open()
        flight, joined = self._flights.join(image_id, loop)
        if joined:
            self._tally.record(COALESCED)
        return flight

    # -- Many images ---------------------------------------------------------------------------

    @overload
    async def get_images(
        self, ids: Iterable[str], *, return_exceptions: Literal[False] = False
    ) -> list[GalleryImage]: ...

    @overload
    async def get_images(
        self, ids: Iterable[str], *, return_exceptions: Literal[True]
    ) -> list[GalleryImage | MeigenError]: ...

    async def get_images(
        self, ids: Iterable[str], *, return_exceptions: bool = False
    ) -> list[GalleryImage] | list[GalleryImage | MeigenError]:
        """The images for `ids`, in input order, each distinct id fetched once.

        By default the first error to happen is raised and the fetches still running are
        cancelled (what finished stays cached). With `return_exceptions=True` every id gets
        its image or its `MeigenError` in the list.

        Raises:
            TypeError: `ids` is a single `str` or `bytes` rather than an iterable of ids.

        """
        refuse_single_id(ids)
        self._ensure_open()
        return await gather_images(
            ids,
            look_up=self._look_up,
            join=self._join,
            flights=self._flights,
            return_exceptions=return_exceptions,
        )

    def iter_images(
        self, ids: Iterable[str] | AsyncIterable[str]
    ) -> AsyncGenerator[ImageResult, None]:
        """Yield an `ImageResult` per id, as each completes.

        `ids` is consumed lazily and at most `concurrency` fetches are kept going, so a
        generator of a million ids runs in flat memory. Errors are reported in the results,
        never raised. Leaving the loop early cancels the fetches still running; wrap the
        iterator in `contextlib.aclosing` to make that happen at once.

        Raises:
            TypeError: `ids` is a single `str` or `bytes` rather than an iterable of ids.

        """
        refuse_single_id(ids)
        self._ensure_open()
        return stream_images(
            ids,
            look_up=self._look_up,
            join=self._join,
            flights=self._flights,
            concurrency=self.concurrency,
        )

    # -- Cache control and counters ------------------------------------------------------------

    def invalidate(self, image_id: str) -> None:
        """Forget what is cached for `image_id` (an image or a remembered 404).

        With a shared cache, the in-process entry goes at once and the shared one in a task
        that this session's next miss, and `close()`, wait for.
        """
        self._cache.invalidate(image_id)
        if self._shared is not None:
            self._shared.invalidate_later(image_id)

    def clear_cache(self) -> None:
        """Forget every cached image and remembered 404.

        With a shared cache, it is cleared too, for every process using it: in a task, as for
        `invalidate()`.
        """
        self._cache.clear()
        if self._shared is not None:
            self._shared.clear_later()

    @property
    def stats(self) -> SessionStats:
        """A snapshot of the counters since the session was made."""
        return self._tally.snapshot()


def _closed_error(image_id: str) -> TransportError:
    return TransportError(
        f"the session was closed while image {image_id} was being fetched", image_id=image_id
    )


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)

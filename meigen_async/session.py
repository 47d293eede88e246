"""``GallerySession``: the thin async shell that caches, coalesces and bounds requests.

The decisions live elsewhere: ids and envelopes in :mod:`~meigen_async.protocol`, how long to
keep a response in :mod:`~meigen_async.cache`, the HTTP call in :mod:`~meigen_async.transport`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterable
from types import TracebackType
from typing import Any, Literal, overload

import aiohttp
from aiolimiter import AsyncLimiter

from ._version import __version__
from .cache import CachePolicy, MemoryCache, SharedCache, SharedTier
from .errors import ImageNotFound, InvalidImageId, MeigenError, TransportError
from .models import GalleryImage, ImageResult, SessionStats
from .protocol import decode_response, validate_image_id
from .retry import RetryPolicy, is_retryable
from .transport import Deadlines, fetch, image_urls

__all__ = ["DEFAULT_BASE_URL", "FETCH_TASK_PREFIX", "GallerySession"]

DEFAULT_BASE_URL = "https://www.meigen.ai"
"""The real service."""

FETCH_TASK_PREFIX = "meigen-async fetch "
"""Upstream fetches run in tasks named this prefix plus the id, to spot them in a debugger."""


class _Flight:
    """One upstream fetch and how many callers are waiting on it."""

    __slots__ = ("task", "waiters")

    def __init__(self, task: asyncio.Task[GalleryImage]):
        self.task = task
        self.waiters = 0


class GallerySession:
    """An async client for ``GET /api/images/:id`` with a TTL cache and request coalescing.

    Use it as an async context manager, or call :meth:`close` when done. One session is meant
    to be shared by every task of a program: its cache, its coalescing and its ``concurrency``
    bound all work across calls.

    Args:
        base_url: Where the service lives, an absolute http(s) URL (ValueError otherwise);
            only ``{base_url}/api/images/{id}`` is requested.
        concurrency: Most upstream requests in flight at once, across all calls.
        timeout: Seconds allowed for one request, body included.
        cache_size: Most images kept (and, separately, most 404s remembered); 0 disables caching.
        ttl: Seconds to keep every image, overriding the server's ``Cache-Control``.
        default_ttl: Seconds to keep an image when the server gives no lifetime.
        max_ttl: The longest the server's ``Cache-Control`` may make us keep an image.
        negative_ttl: Seconds a 404 is remembered; 0 disables.
        max_body_bytes: A larger response body is refused as :class:`InvalidResponse`.
        session: An ``aiohttp.ClientSession`` to use; it is never closed by this object.
        user_agent: The ``User-Agent`` header; a ``meigen-async/<version>`` one by default.
        retry: How failed requests are retried; ``RetryPolicy(max_retries=0)`` disables.
        rate_limit: Most upstream requests per second for the whole session (None: no limit).
        stale_if_error: Seconds past expiry an image may still be served when the upstream
            fails with a retryable error after every retry.
        cache: None for an in-process ``MemoryCache(cache_size, stale_window=stale_if_error)``;
            a :class:`~meigen_async.cache.MemoryCache` to use as the in-process cache as it
            is (its own size and stale window apply); or a shared cache such as
            :class:`~meigen_async.cache.RedisCache`, put behind an in-process cache built as
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
        rate_limit: float | None = None,
        stale_if_error: float = 0.0,
        cache: MemoryCache | SharedCache | None = None,
    ):
        _require(concurrency >= 1, "concurrency must be at least 1")
        _require(timeout > 0, "timeout must be positive")
        _require(cache_size >= 0, "cache_size must not be negative")
        _require(max_body_bytes > 0, "max_body_bytes must be positive")
        _require(rate_limit is None or rate_limit > 0, "rate_limit must be positive")
        _require(stale_if_error >= 0, "stale_if_error must not be negative")
        _require(ttl is None or ttl >= 0, "ttl must not be negative")
        _require(min(default_ttl, max_ttl, negative_ttl) >= 0, "TTLs must not be negative")
        self.base_url = base_url.rstrip("/")
        self._image_url = image_urls(self.base_url)
        self.concurrency = concurrency
        self.policy = CachePolicy(
            ttl=ttl, default_ttl=default_ttl, max_ttl=max_ttl, negative_ttl=negative_ttl
        )
        self.retry = retry if retry is not None else RetryPolicy()
        self._shared: SharedTier | None = None
        if isinstance(cache, MemoryCache):
            self._cache = cache
        else:
            self._cache = MemoryCache(cache_size, stale_window=stale_if_error)
            if cache is not None:
                # A lease lasts one request's timeout: longer than a live holder's attempt.
                self._shared = SharedTier(
                    self._cache, cache, lease_time=timeout, policy=self.policy
                )
        self._pace = _pacer(rate_limit) if rate_limit is not None else None
        self._deadlines = Deadlines(timeout)
        self._max_body_bytes = max_body_bytes
        self._defaults: dict[str, Any] = {
            "headers": {
                "User-Agent": user_agent
                or f"meigen-async/{__version__} aiohttp/{aiohttp.__version__}",
                "Accept": "application/json",
            },
            # Deadlines keeps the timeout; aiohttp's own would arm a timer per request.
            "timeout": aiohttp.ClientTimeout(total=None),
        }
        # Given per request only to a caller's session: ours carries them itself, which
        # spares aiohttp merging them on every request (measured: 24 µs a request).
        self._request_options = self._defaults if session is not None else {}
        self._http = session
        self._owns_http = session is None
        self._closed = False
        self._slots = asyncio.Semaphore(concurrency)
        self._flights: dict[str, _Flight] = {}
        # Fetches cancelled when their last waiter left, until they end: out of _flights, but
        # close() must still wait for them. A cancellation can be lost (redis-py's wait_for
        # swallows one that lands as its operation completes), and such a fetch runs on.
        self._orphans: set[asyncio.Task[GalleryImage]] = set()
        self._requests = 0
        self._hits = 0
        self._misses = 0
        self._coalesced = 0
        self._retries = 0
        self._errors = 0
        self._stale_served = 0

    # -- Lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> GallerySession:
        """Open the HTTP session; the cache starts empty."""
        self._client()
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
        """Cancel fetches in flight and close the HTTP session if this object opened it.

        Idempotent. A caller still waiting on a cancelled fetch gets :class:`TransportError`.
        Every fetch the session started has ended when it returns, those nobody waits on any
        more included. With a shared cache, the deletions and lease releases still running are
        waited for; the cache itself is left open, for whoever made it to close.
        """
        if self._closed:
            return
        self._closed = True
        tasks = {flight.task for flight in self._flights.values()} | self._orphans
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
            for task in tasks:
                # Nobody may be left to retrieve it: a fetch that ran on after losing its
                # cancellation ends with "this GallerySession is closed".
                self._retrieve_expected(task)
        if self._shared is not None:
            await self._shared.drain()
        self._deadlines.close()
        if self._owns_http and self._http is not None:
            await self._http.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed

    def _ensure_open(self) -> None:
        if self._closed:
            raise RuntimeError("this GallerySession is closed")

    def _client(self) -> aiohttp.ClientSession:
        self._ensure_open()
        if self._http is None:
            connector = aiohttp.TCPConnector(limit=self.concurrency, ttl_dns_cache=300)
            self._http = aiohttp.ClientSession(connector=connector, **self._defaults)
            if hasattr(self._http, "_retry_connection"):
                # aiohttp quietly resends a GET once when the server drops the connection;
                # our RetryPolicy decides retries, and counts them. (aiohttp's TestClient
                # turns it off the same way: there is no public switch.)
                self._http._retry_connection = False
        return self._http

    # -- Single images -------------------------------------------------------------------------

    async def get_image(self, image_id: str) -> GalleryImage:
        """The image with this id, from the cache or the service.

        Concurrent calls for one id share one upstream request.

        Raises:
            InvalidImageId: before any I/O, when the id is not a gallery id.
            ImageNotFound: the gallery has no such image (remembered ``negative_ttl`` seconds).
            MeigenError: any other failure, as one of its subclasses.

        """
        image = self._cache.get(image_id) if type(image_id) is str else None
        if image is not None:
            self._hits += 1
            return image
        return await self._join_flight(self._miss(image_id))

    def _miss(self, image_id: object) -> str:
        valid_id = validate_image_id(image_id)
        if self._cache.is_missing(valid_id):
            self._hits += 1
            raise _remembered_404(valid_id)
        self._misses += 1
        return valid_id

    def _board(self, image_id: str, loop: asyncio.AbstractEventLoop) -> _Flight:
        """Join the fetch in flight for ``image_id``, starting one in ``loop`` if there is none."""
        flight = self._flights.get(image_id)
        if flight is None:
            # Without a shared tier the task runs the upstream loop itself: one frame less
            # for every resumption of every request.
            job = self._fetch_upstream if self._shared is None else self._fetch_shared
            # The loop's own create_task: asyncio.create_task would look the loop up per id.
            task = loop.create_task(job(image_id), name=f"{FETCH_TASK_PREFIX}{image_id}")
            flight = _Flight(task)
            self._flights[image_id] = flight
        else:
            self._coalesced += 1
        flight.waiters += 1
        return flight

    def _leave(self, image_id: str, flight: _Flight) -> bool:
        """Stop waiting on ``flight``; True when that cancelled it, nobody else waiting.

        The last waiter to leave lands the flight (rather than a done callback, one less per
        fetch), cancelling its task if it has not finished.
        """
        flight.waiters -= 1
        if flight.waiters:
            return False
        self._land(image_id, flight)
        task = flight.task
        if task.done():
            return False
        task.cancel()
        self._orphans.add(task)
        task.add_done_callback(self._orphan_ended)
        return True

    def _orphan_ended(self, task: asyncio.Task[GalleryImage]) -> None:
        self._orphans.discard(task)
        # Nobody waits on it: a fetch's errors are its callers' business, and they have gone.
        self._retrieve_expected(task)

    def _retrieve_expected(self, task: asyncio.Task[GalleryImage]) -> None:
        """Mark a fetch's error as seen when it is an outcome, not a bug.

        A :class:`MeigenError`, or the refusal of a session closed meanwhile, would otherwise
        be logged by asyncio as never retrieved. Anything else is left for asyncio to report.
        """
        if task.cancelled():
            return
        error = task.exception()
        if error is None or isinstance(error, MeigenError):
            return
        if self._closed and isinstance(error, RuntimeError):
            return
        # A bug: asked for here, so reported here, rather than lost with the task.
        task.get_loop().call_exception_handler(
            {"message": "a fetch nobody waited on failed", "exception": error, "task": task}
        )

    async def _join_flight(self, image_id: str) -> GalleryImage:
        flight = self._board(image_id, asyncio.get_running_loop())
        try:
            return await asyncio.shield(flight.task)
        except asyncio.CancelledError:
            if flight.task.cancelled() and self._closed:
                raise self._closed_error(image_id) from None
            raise
        finally:
            self._leave(image_id, flight)

    @staticmethod
    def _closed_error(image_id: str) -> TransportError:
        return TransportError(
            f"the session was closed while image {image_id} was being fetched", image_id=image_id
        )

    def _land(self, image_id: str, flight: _Flight) -> None:
        if self._flights.get(image_id) is flight:
            del self._flights[image_id]

    async def _fetch_shared(self, image_id: str) -> GalleryImage:
        """Ask the shared tier first; fetch upstream under its lease when it has nothing."""
        assert self._shared is not None  # only started when there is a shared tier
        claim = await self._shared.claim(image_id)
        if claim.answered:
            # A hit of the shared tier: counted as a cache hit, and no request was sent.
            self._hits += 1
            if claim.image is not None:
                return claim.image
            raise _remembered_404(image_id)
        try:
            return await self._fetch_upstream(image_id)
        except ImageNotFound:
            await self._shared.store_missing(image_id, self.policy.negative_ttl)
            raise
        finally:
            # After the value is stored (in _attempt, or just above), so that processes waiting
            # on the lease find it there.
            if claim.token is not None:
                self._shared.release_later(image_id, claim.token)

    async def _fetch_upstream(self, image_id: str) -> GalleryImage:
        retries = 0
        while True:
            try:
                return await self._attempt(image_id)
            except MeigenError as error:
                delay = self.retry.delay_before_retry(retries, error)
                if delay is None:
                    return self._give_up(image_id, error)
            retries += 1
            self._retries += 1
            await asyncio.sleep(delay)

    async def _attempt(self, image_id: str) -> GalleryImage:
        http = self._client()
        async with self._slots:
            # Paced inside the slot: tokens taken while queueing would be spent in a burst.
            if self._pace is not None:
                await self._pace.acquire()
            self._requests += 1
            raw = await fetch(
                http,
                self._image_url(image_id),
                image_id=image_id,
                deadlines=self._deadlines,
                max_body_bytes=self._max_body_bytes,
                options=self._request_options,
            )
        image = decode_response(raw.status, raw.headers, raw.body, image_id=image_id)
        ttl = self.policy.ttl_for(raw.headers)
        if ttl is not None:
            self._cache.set(image_id, image, ttl)
        else:
            self._cache.invalidate(image_id)
        if self._shared is not None:
            # A shared cache reads the headers as one (s-maxage first, private refused).
            await self._shared.store(image_id, image, self.policy.ttl_for(raw.headers, shared=True))
        return image

    def _give_up(self, image_id: str, error: MeigenError) -> GalleryImage:
        self._errors += 1
        if isinstance(error, ImageNotFound):
            self._cache.set_missing(image_id, self.policy.negative_ttl)
        elif is_retryable(error):
            stale = self._cache.get_stale(image_id)
            if stale is not None:
                self._stale_served += 1
                return stale
        raise error

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
        """The images for ``ids``, in input order, each distinct id fetched once.

        By default the first error to happen is raised and the fetches still running are
        cancelled (what finished stays cached). With ``return_exceptions=True`` every id gets
        its image or its :class:`MeigenError` in the list. An id that is not a string (a list,
        a dict) is an :class:`InvalidImageId` like any other invalid id.

        Raises:
            TypeError: ``ids`` is a single ``str`` or ``bytes`` rather than an iterable of ids.

        """
        self._ensure_open()
        _refuse_single_id(ids, "get_images")
        loop = asyncio.get_running_loop()
        wanted = list(ids)
        try:
            distinct = dict.fromkeys(wanted)
        except TypeError:
            # An unhashable id: no gallery id, but a raw TypeError unless taken apart here.
            return await self._get_images_of_mixed(wanted, return_exceptions=return_exceptions)
        outcomes: dict[str, GalleryImage | MeigenError] = {}
        flights: dict[str, _Flight] = {}
        for image_id in distinct:
            try:
                image = self._cache.get(image_id) if type(image_id) is str else None
                if image is not None:
                    self._hits += 1
                    outcomes[image_id] = image
                else:
                    flights[image_id] = self._board(self._miss(image_id), loop)
            except MeigenError as error:
                if not return_exceptions:
                    await self._leave_all(flights.items())
                    raise
                outcomes[image_id] = error
        if flights:
            outcomes.update(await self._ride(flights, fail_fast=not return_exceptions))
        first_error = next((o for o in outcomes.values() if isinstance(o, MeigenError)), None)
        if first_error is not None and not return_exceptions:
            raise first_error
        return [outcomes[image_id] for image_id in wanted]

    async def _get_images_of_mixed(
        self, wanted: list[Any], *, return_exceptions: bool
    ) -> list[GalleryImage] | list[GalleryImage | MeigenError]:
        """``get_images`` of ids some of which are not strings: those fail where they stand."""
        refused = {
            position: _invalid_id(image_id)
            for position, image_id in enumerate(wanted)
            if type(image_id) is not str
        }
        if not return_exceptions:
            # Before any fetch is started: nothing is requested.
            raise next(iter(refused.values()))
        found = iter(
            await self.get_images(
                [image_id for image_id in wanted if type(image_id) is str],
                return_exceptions=True,
            )
        )
        return [
            refused[position] if position in refused else next(found)
            for position in range(len(wanted))
        ]

    async def _ride(
        self, flights: dict[str, _Flight], *, fail_fast: bool
    ) -> dict[str, GalleryImage | MeigenError]:
        """Wait on ``flights``; with ``fail_fast`` stop at the first error, leaving the rest."""
        # Waiting on the fetch tasks themselves, with no task or shield per id: bulk calls
        # are where that overhead would show.
        try:
            await asyncio.wait(
                [flight.task for flight in flights.values()],
                return_when=asyncio.FIRST_EXCEPTION if fail_fast else asyncio.ALL_COMPLETED,
            )
        finally:
            await self._leave_all(flights.items())
        return {
            image_id: self._outcome(image_id, flight.task)
            for image_id, flight in flights.items()
            # Left unfinished by fail-fast: cancelled, and nobody's answer.
            if not (flight.task.cancelled() and not self._closed)
        }

    def _outcome(
        self, image_id: str, task: asyncio.Task[GalleryImage]
    ) -> GalleryImage | MeigenError:
        """What a finished fetch gave: its image, or its error; a bug's exception is raised."""
        if task.cancelled():
            return self._closed_error(image_id)
        error = task.exception()
        if error is None:
            return task.result()
        if isinstance(error, MeigenError):
            return error
        raise error

    async def _leave_all(self, flights: Iterable[tuple[str, _Flight]]) -> None:
        """Leave every flight, waiting for the ones that leaving cancelled to wind down."""
        cancelled = [f.task for image_id, f in flights if self._leave(image_id, f)]
        if cancelled:
            await asyncio.wait(cancelled)

    async def iter_images(
        self, ids: Iterable[str] | AsyncIterable[str]
    ) -> AsyncGenerator[ImageResult, None]:
        """Yield an :class:`ImageResult` per id, as each completes.

        ``ids`` is consumed lazily and at most ``concurrency`` fetches are kept going, so a
        generator of a million ids runs in flat memory. Errors are reported in the results,
        never raised. Leaving the loop early cancels the fetches still running; wrap the
        iterator in :func:`contextlib.aclosing` to make that happen at once.

        Raises:
            TypeError: when iterated, if ``ids`` is a single ``str`` or ``bytes`` rather than
                an iterable of ids.

        """
        self._ensure_open()
        _refuse_single_id(ids, "iter_images")
        loop = asyncio.get_running_loop()
        source = _aiter(ids)
        # The fetch tasks this iterator waits on, each with the ids (duplicates too) it answers;
        # like get_images, no task of its own per id.
        running: dict[asyncio.Task[GalleryImage], list[tuple[str, _Flight]]] = {}
        waiting = 0  # ids awaiting an answer: the read-ahead bound, duplicates counted
        exhausted = False
        try:
            while True:
                while not exhausted and waiting < self.concurrency:
                    try:
                        image_id = await source.__anext__()
                    except StopAsyncIteration:
                        exhausted = True
                        break
                    try:
                        image = self._cache.get(image_id) if type(image_id) is str else None
                        valid_id = self._miss(image_id) if image is None else image_id
                    except MeigenError as error:
                        yield ImageResult(str(image_id), error=error)
                        continue
                    if image is not None:
                        self._hits += 1
                        yield ImageResult(image_id, image=image)
                        continue
                    flight = self._board(valid_id, loop)
                    running.setdefault(flight.task, []).append((valid_id, flight))
                    waiting += 1
                if not running:
                    return
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    for image_id, flight in running.pop(task):
                        waiting -= 1
                        self._leave(image_id, flight)
                        outcome = self._outcome(image_id, task)
                        if isinstance(outcome, MeigenError):
                            yield ImageResult(image_id, error=outcome)
                        else:
                            yield ImageResult(image_id, image=outcome)
        finally:
            await self._leave_all(pair for pairs in running.values() for pair in pairs)

    # -- Cache control and counters ------------------------------------------------------------

    def invalidate(self, image_id: str) -> None:
        """Forget what is cached for ``image_id`` (an image or a remembered 404).

        With a shared cache, the in-process entry goes at once and the shared one in a task
        that this session's next miss, and :meth:`close`, wait for.
        """
        self._cache.invalidate(image_id)
        if self._shared is not None:
            self._shared.invalidate_later(image_id)

    def clear_cache(self) -> None:
        """Forget every cached image and remembered 404.

        With a shared cache, it is cleared too, for every process using it: in a task, as
        for :meth:`invalidate`.
        """
        self._cache.clear()
        if self._shared is not None:
            self._shared.clear_later()

    @property
    def stats(self) -> SessionStats:
        """A snapshot of the counters since the session was made."""
        return SessionStats(
            requests=self._requests,
            cache_hits=self._hits,
            cache_misses=self._misses,
            coalesced=self._coalesced,
            retries=self._retries,
            errors=self._errors,
            stale_served=self._stale_served,
        )


def _remembered_404(image_id: str) -> ImageNotFound:
    return ImageNotFound(
        f"image {image_id} was not found (remembered 404)", image_id=image_id, status=404
    )


def _refuse_single_id(ids: object, method: str) -> None:
    # A str is an iterable of one-character strings: without this, "123" is three fetches.
    if isinstance(ids, (str, bytes, bytearray)):
        raise TypeError(
            f"{method} takes an iterable of ids, not a single {type(ids).__name__}; use get_image"
        )


def _invalid_id(image_id: object) -> InvalidImageId:
    """The error ``validate_image_id`` raises for ``image_id``, which is not a gallery id."""
    try:
        validate_image_id(image_id)
    except InvalidImageId as error:
        return error
    raise AssertionError(f"{image_id!r} was expected to be refused")


def _pacer(rate_limit: float) -> AsyncLimiter:
    # aiolimiter counts whole requests per period: below one a second, widen the period.
    if rate_limit >= 1:
        return AsyncLimiter(rate_limit, 1.0)
    return AsyncLimiter(1, 1.0 / rate_limit)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


async def _aiter(ids: Iterable[str] | AsyncIterable[str]) -> AsyncIterator[str]:
    if isinstance(ids, AsyncIterable):
        async for image_id in ids:
            yield image_id
    else:
        for image_id in ids:
            yield image_id

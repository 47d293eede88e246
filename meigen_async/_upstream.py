"""The upstream loop: a concurrency slot, pacing, one attempt, and the sleep before a retry.

Every request goes through here, the gallery's (images, search: `request`) and the media
hosts' (`exchange`, in the one retry loop `retried`), and is counted in the session's `Tally`.
`Upstream` is written against a `send(url, headers) -> RawResponse` callable and a `stream`
one (the aiohttp transport's) and an injectable `sleep`, so that its retry and pacing logic is
tested on a fake clock. What a response means and whether to retry are decided in `_core`.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, Protocol, TypeVar

from yarl import URL

from . import _telemetry
from ._core import MEDIA_RETRIED, MEDIA_SENT, SENT, Retry, Tally, after_failure, for_image
from ._protocol import cool_down_after, is_daily_limit
from ._transport import RawResponse, Streamed, StreamOptions
from .errors import MeigenError, TransportError
from .limits import Pacer, RateLimiter
from .retry import RetryPolicy

# Pacer (now public, in limits) is still named here for the modules that import it from here.
__all__ = ["Pacer", "Upstream"]

T = TypeVar("T")

Send = Callable[[URL, Mapping[str, str] | None], Awaitable[RawResponse]]
"""One HTTP GET with extra request headers (or None): the response, or `TransportError`."""


class Stream(Protocol):
    """One streaming GET: its response given to `receive`, the bytes read told to `received`."""

    def __call__(
        self,
        url: URL,
        options: StreamOptions,
        receive: Callable[[Streamed], Awaitable[T]],
        received: Callable[[int], None],
    ) -> Awaitable[T]:
        """What `receive` makes of the response; `TransportError` when it did not complete."""
        ...


GiveUp = Callable[[MeigenError, int, Any], MeigenError]
"""The error a request that failed for good ends in, told after its retries (and for what the
caller said it was `about`)."""


class Upstream:
    """Every upstream request goes through here: bounded, paced, retried.

    Args:
        send: Sends one GET to the gallery and reads its response.
        concurrency: Most gallery requests in flight at once, across every caller.
        retry: When a failed attempt is tried again.
        tally: Where requests, retries and media bytes are counted.
        pacer: Paces every request (None: as fast as the slots allow); told of each gallery
            response asking for a pause (`cool_down_after`) when it is a `RateLimiter`.
        stream: Sends one streaming GET to a media host (None: `exchange` is not used).
        host_concurrency: Most media requests in flight at once to one host.
        sleep: Waits before a retry; `asyncio.sleep` but in tests.
        wall_clock: Seconds since the epoch, to read dates in headers; `time.time` but in tests.

    """

    def __init__(
        self,
        send: Send,
        *,
        concurrency: int,
        retry: RetryPolicy,
        tally: Tally,
        pacer: Pacer | None = None,
        stream: Stream | None = None,
        host_concurrency: int = 8,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        wall_clock: Callable[[], float] = time.time,
    ):
        self._send = send
        self._slots = asyncio.Semaphore(concurrency)
        self._stream = stream
        self._host_concurrency = host_concurrency
        self._host_slots: dict[str, asyncio.Semaphore] = {}
        self.retry = retry
        self._tally = tally
        self._limiter = pacer if isinstance(pacer, RateLimiter) else None
        self._sleep = sleep
        self._wall_clock = wall_clock
        self.closed = False
        # Whether attempts are traced, decided once (as the fetch span is): an SDK installed
        # after the session is made is not asked about on every attempt.
        self._traced = _telemetry.active()
        # What paces an attempt, chosen once: the pacer, or the pacer with its wait recorded.
        self._acquire: Callable[[], Awaitable[None]] | None = (
            None
            if pacer is None
            else functools.partial(_telemetry.paced, pacer)
            if self._traced
            else pacer.acquire
        )

    def close(self) -> None:
        """Send nothing more: a fetch that outlives its cancellation fails instead."""
        self.closed = True

    def request(
        self,
        url: URL,
        read: Callable[[RawResponse], T],
        *,
        image_id: str | None,
        subject: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Coroutine[Any, Any, T]:
        """GET `url` from the gallery, `headers` on top, until `read` accepts it or retries end.

        `read` turns a response into the result or raises its `MeigenError`; a transport
        failure is one too. The last error is raised when no retry is left, naming `image_id`
        (or `subject`, what a request for no image was for, such as a search page).
        """
        # Not a coroutine itself, and no partial made, arguments by position: the loop's frame
        # is the only one above the attempt's (measured: with two partials, a cold id took 0.8%
        # more instructions than with the loop written here; so, 0.2%).
        return self.retried(_told, (image_id, subject), self._attempt, url, headers, read)

    async def retried(
        self,
        give_up: GiveUp,
        about: Any,
        attempt: Callable[..., Awaitable[T]],
        *args: Any,
        media: bool = False,
    ) -> T:
        """`attempt(*args)` until it succeeds, or fails with an error `RetryPolicy` does not retry.

        The one retry loop: each retry is counted (as a media one with `media`) and waits its
        delay; none is made once closed. What it ends in is `give_up(error, retries, about)`,
        raised with the last error's cause.
        """
        retries = 0
        retry: Retry | None = None
        failed: MeigenError | None = None
        while True:
            try:
                if media or not self._traced:
                    return await attempt(*args)
                # A gallery attempt's span (media downloads have their own, per file): the
                # response passes through it on its way to `read`, for its status.
                url, headers, read = args
                with _telemetry.attempt(
                    url, retries, retry.delay if retry else 0.0, failed
                ) as seen:
                    return await attempt(url, headers, _through(seen, read))
            except MeigenError as error:
                failed = error
                # Nothing more is sent once closed: no retry, and no sleep before one.
                retry = None if self.closed else after_failure(error, retries, self.retry)
                if retry is None:
                    told = give_up(error, retries, about)
                    if told is error:
                        raise
                    raise told from error.__cause__
            retries += 1
            self._tally.record(MEDIA_RETRIED if media else retry)
            await self._sleep(retry.delay)

    async def exchange(
        self, url: URL, receive: Callable[[Streamed], Awaitable[T]], options: StreamOptions
    ) -> T:
        """One streaming GET of a media file, read by `receive` while the connection is held.

        In a slot of `url`'s host (`host_concurrency` a host), paced, counted as a media
        request, the bytes `receive` reads counted too. A media host's 429 does not make the
        pacer cool down: its pause is the gallery's.

        Raises:
            TransportError: the session is closed, or the request did not complete.

        """
        assert self._stream is not None, "an Upstream without a stream sends no media"
        host = url.host or ""
        slot = self._host_slots.get(host)
        if slot is None:
            slot = self._host_slots[host] = asyncio.Semaphore(self._host_concurrency)
        async with slot:
            if self._acquire is not None:
                await self._acquire()
            if self.closed:
                raise TransportError("the session was closed")
            self._tally.record(MEDIA_SENT)
            return await self._stream(url, options, receive, self._tally.received_media)

    async def _attempt(
        self, url: URL, headers: Mapping[str, str] | None, read: Callable[[RawResponse], T]
    ) -> T:
        async with self._slots:
            # Paced inside the slot: tokens taken while queueing would be spent in a burst.
            if self._acquire is not None:
                await self._acquire()
            if self.closed:
                raise TransportError("the session was closed")
            self._tally.record(SENT)
            response = await self._send(url, headers)
        # A spent daily search quota is one key's, for searches: no pause for the rest.
        if self._limiter is not None and not is_daily_limit(response.status, response.body):
            pause = cool_down_after(response.status, response.headers, now=self._wall_clock())
            if pause is not None:
                # Before the response is read: the retry of a 429 already waits for the pause.
                await self._limiter.cool_down(pause)
        return read(response)


def _through(
    seen: Callable[[RawResponse], RawResponse], read: Callable[[RawResponse], T]
) -> Callable[[RawResponse], T]:
    """`read`, after the response has passed through the attempt's span (`seen`)."""
    return lambda raw: read(seen(raw))


def _told(error: MeigenError, retries: int, about: tuple[str | None, str | None]) -> MeigenError:
    """A gallery request's last error, naming its image (or subject) and the retries made."""
    if error.image_id is not None:
        return error
    image_id, subject = about
    return for_image(error, image_id, retries, subject=subject)

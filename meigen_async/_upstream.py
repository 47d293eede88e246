"""The upstream loop: a concurrency slot, pacing, one attempt, and the sleep before a retry.

`Upstream` is written against a `send(url, headers) -> RawResponse` callable (the aiohttp
transport is one) and an injectable `sleep`, so that its retry and pacing logic is tested on a
fake clock.
What a response means and whether to retry are decided in `_core`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from yarl import URL

from . import _telemetry
from ._core import SENT, Retry, Tally, after_failure, for_image
from ._protocol import cool_down_after, is_daily_limit
from ._transport import RawResponse
from .errors import MeigenError, TransportError
from .limits import Pacer, RateLimiter
from .retry import RetryPolicy

# Pacer (now public, in limits) is still named here for the modules that import it from here.
__all__ = ["Pacer", "Upstream"]

T = TypeVar("T")

Send = Callable[[URL, Mapping[str, str] | None], Awaitable[RawResponse]]
"""One HTTP GET with extra request headers (or None): the response, or `TransportError`."""


class Upstream:
    """Every upstream request goes through here: bounded, paced, retried.

    Args:
        send: Sends one GET and reads its response.
        concurrency: Most requests in flight at once, across every caller.
        retry: When a failed attempt is tried again.
        tally: Where requests and retries are counted.
        pacer: Paces requests (None: as fast as the slots allow); told of each response
            asking for a pause (`cool_down_after`) when it is a `RateLimiter`.
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
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        wall_clock: Callable[[], float] = time.time,
    ):
        self._send = send
        self._slots = asyncio.Semaphore(concurrency)
        self.retry = retry
        self._tally = tally
        self._pacer = pacer
        self._limiter = pacer if isinstance(pacer, RateLimiter) else None
        self._sleep = sleep
        self._wall_clock = wall_clock
        self.closed = False

    def close(self) -> None:
        """Send nothing more: a fetch that outlives its cancellation fails instead."""
        self.closed = True

    async def request(
        self,
        url: URL,
        read: Callable[[RawResponse], T],
        *,
        image_id: str | None,
        subject: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> T:
        """GET `url`, with `headers` on top, until `read` accepts a response or retries end.

        `read` turns a response into the result or raises its `MeigenError`; a transport
        failure is one too. The last error is raised when no retry is left, naming `image_id`
        (or `subject`, what a request for no image was for, such as a search page).
        """
        retries = 0
        retry: Retry | None = None
        failed: MeigenError | None = None
        while True:
            try:
                with _telemetry.attempt(
                    url, retries, retry.delay if retry else 0.0, failed
                ) as seen:
                    return read(seen(await self._attempt(url, headers)))
            except MeigenError as error:
                failed = error
                # Nothing more is sent once closed: no retry, and no sleep before one.
                retry = None if self.closed else after_failure(error, retries, self.retry)
                if retry is None:
                    if error.image_id is None:
                        raise for_image(
                            error, image_id, retries, subject=subject
                        ) from error.__cause__
                    raise
            retries += 1
            self._tally.record(retry)
            await self._sleep(retry.delay)

    async def _attempt(self, url: URL, headers: Mapping[str, str] | None) -> RawResponse:
        async with self._slots:
            # Paced inside the slot: tokens taken while queueing would be spent in a burst.
            if self._pacer is not None:
                await self._pacer.acquire()
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
        return response

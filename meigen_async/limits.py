"""Rate limiters: what `GallerySession(rate_limit=...)` accepts, and the local one.

`rate_limit` takes a number (a `LocalRateLimiter` at that many requests a second) or any
object following the `RateLimiter` protocol, such as
`meigen_async.redis_cache.RedisRateLimiter`, which shares one budget among processes.

The session's upstream loop calls `acquire()` before every request it sends (retries
included), and `cool_down(seconds)` when a response says to stop for a while: a 429 or a 503
with `Retry-After`, or `X-RateLimit-Remaining: 0` with `X-RateLimit-Reset` (see
`cool_down_after`). A limiter with `acquire` alone (a `Pacer`) is accepted too; it is told
nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

from aiolimiter import AsyncLimiter

from ._protocol import MAX_COOL_DOWN, cool_down_after

__all__ = ["MAX_COOL_DOWN", "LocalRateLimiter", "Pacer", "RateLimiter", "cool_down_after"]


class Pacer(Protocol):
    """Paces requests: `acquire` returns when the next one may go.

    The older, smaller form of `RateLimiter`, accepted by `GallerySession(rate_limit=...)`
    too: a pacer without `cool_down` is never told of a 429.
    """

    async def acquire(self) -> None:
        """Wait for the next request's turn."""
        ...


@runtime_checkable
class RateLimiter(Protocol):
    """Paces the requests of one or more sessions, and pauses them when the service asks.

    Bring your own by writing these two methods; neither may raise (a limiter that fails
    should let requests through at a safe pace rather than stop them).
    """

    async def acquire(self) -> None:
        """Return when the next request may be sent.

        Called once before each request, inside one of the session's concurrency slots. A
        cool-down in force is waited out here.
        """
        ...

    async def cool_down(self, seconds: float) -> None:
        """Send nothing for the next `seconds` (always positive).

        A duration, not a time of day, so that limiters sharing it across machines need not
        agree on the clock. A shorter cool-down never shortens one already in force.
        """
        ...


def _aiolimiter(rate: float) -> AsyncLimiter:
    # aiolimiter counts whole requests per period: below one a second, widen the period.
    if rate >= 1:
        return AsyncLimiter(rate, 1.0)
    return AsyncLimiter(1, 1.0 / rate)


class LocalRateLimiter:
    """At most `rate` requests a second from this process, and a cool-down of its own.

    What a number given as `rate_limit` becomes. Pacing is aiolimiter's leaky bucket, whose
    capacity is one second of requests (a burst of `rate` after a quiet second); a cool-down
    holds back every `acquire` until it ends.

    Args:
        rate: Requests a second; positive.
        timer: Monotonic seconds; `time.monotonic` but in tests.
        sleep: Waits; `asyncio.sleep` but in tests.

    """

    def __init__(
        self,
        rate: float,
        *,
        timer: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ):
        if not rate > 0:
            raise ValueError("rate must be positive")
        self.rate: float = rate
        """Requests a second."""
        self._bucket = _aiolimiter(rate)
        self._timer = timer
        self._sleep = sleep
        self._paused_until = -float("inf")

    @property
    def paused_until(self) -> float:
        """The `timer` reading the current cool-down ends at (in the past: none)."""
        return self._paused_until

    async def acquire(self) -> None:
        """Wait out a cool-down in force, then the bucket."""
        await self.wait_cool_down()
        await self._bucket.acquire()
        # A cool-down may have begun while the bucket made us wait.
        await self.wait_cool_down()

    async def wait_cool_down(self) -> None:
        """Return once no cool-down is in force, however many begin meanwhile."""
        while (left := self._paused_until - self._timer()) > 0:
            await self._sleep(left)

    async def cool_down(self, seconds: float) -> None:
        """Hold every `acquire` back for `seconds`; a longer cool-down in force stays."""
        self.pause(seconds)

    def pause(self, seconds: float) -> None:
        """`cool_down`, for callers that cannot await."""
        self._paused_until = max(self._paused_until, self._timer() + seconds)

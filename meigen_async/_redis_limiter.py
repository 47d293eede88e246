"""`RedisRateLimiter`: one request budget, and the service's cool-downs, shared through Redis.

Needs the `redis` extra. Imported as `meigen_async.redis_cache.RedisRateLimiter`, where it has
always been named; it lives apart from the cache, which it shares nothing with but a client:

    limiter = RedisRateLimiter(client, rate=10.0, name="meigen")
    async with GallerySession(rate_limit=limiter, cache=RedisCache(client=client)) as gallery:
        ...
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable

import redis.asyncio

from ._backoff import Backoff
from ._redis_client import describe
from .limits import LocalRateLimiter

__all__ = ["RedisRateLimiter", "rate_keys"]

logger = logging.getLogger("meigen_async")
_FIELDS = {"backend": "redis"}  # the `extra` of every record logged here

_RATE_VERSION = "v1"
"""Part of the rate limiter's keys, whose format has not changed."""

_LONGEST_WAIT = 3600.0
"""Seconds: a wait Redis hands back beyond this is not believed (a cool-down is at most
`MAX_COOL_DOWN`, and a queue of booked slots takes minutes at the most)."""

# One script for the rate limiter, so that no process can race another between a read and a
# write. GCRA on Redis's own clock (TIME): the key holds the theoretical arrival time (TAT) of
# the next request; a request may go at TAT - tau (tau: the burst, in seconds). "reserve"
# hands back the seconds to wait for the slot it books, "check" the seconds left of a
# cool-down, and "pause" starts one (never shortening one in force) and makes pacing resume
# from its end, not in a burst. Times are written with microseconds: Lua's default "%.14g"
# would keep only a tenth of a millisecond of an epoch time.
_RATE_SCRIPT = """
local clock = redis.call("TIME")
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local interval = tonumber(ARGV[2])
local tau = tonumber(ARGV[3])
local cool = tonumber(redis.call("GET", KEYS[2]) or "0") or 0
local tat = tonumber(redis.call("GET", KEYS[1]) or "0") or 0
local function keep(key, value)
    redis.call("SET", key, string.format("%.6f", value), "PX",
        math.ceil((value - now) * 1000) + 1000)
end
if ARGV[1] == "pause" then
    local stop = now + tonumber(ARGV[4])
    if stop > cool then
        keep(KEYS[2], stop)
    end
    if stop + tau > tat then
        keep(KEYS[1], stop + tau)
    end
    return "0"
end
if ARGV[1] == "check" then
    return string.format("%.6f", math.max(0, cool - now))
end
tat = math.max(tat, now)
local at = math.max(tat - tau, cool, now)
keep(KEYS[1], math.max(tat, at) + interval)
return string.format("%.6f", at - now)
"""


def rate_keys(name: str) -> tuple[str, str]:
    """The keys of the rate limiter named `name`: its pacing state and its cool-down.

    Both carry the hash tag `{name}`, so that on a Redis Cluster they live in one slot, as
    a script touching both requires.
    """
    return f"{{{name}}}:{_RATE_VERSION}:rate", f"{{{name}}}:{_RATE_VERSION}:cool-down"


class RedisRateLimiter:
    """One request budget for every process sharing `name` on one Redis; a `RateLimiter`.

    Give it to [`GallerySession`][meigen_async.GallerySession] as `rate_limit=`. Together, all the
    sessions using it send at most `rate` requests a second, `burst` of them at once after
    a quiet spell (GCRA, in one Lua script on Redis's clock: the processes' clocks do not
    matter). Each `acquire` books the next slot and sleeps until it, without polling Redis.

    When a response asks for a pause (a 429 or a 503 with `Retry-After`, or
    `X-RateLimit-Remaining: 0` with `X-RateLimit-Reset`), the session calls
    [`cool_down`][meigen_async.redis_cache.RedisRateLimiter.cool_down]: "no requests until now +
    seconds" is written in Redis, and every process
    waits for it before its next request; one that had booked a slot before the pause checks
    again once it has slept, and waits out the rest.

    When Redis fails (refused, timed out, an error reply), one warning is logged on the
    `meigen_async` logger and this process paces itself at `rate` alone (so N processes
    may send N times `rate`), keeping its own cool-downs; Redis is tried again after 0.5 s,
    then longer after each failed try, up to 5 s, and the first success logs once at INFO.
    Nothing is raised to callers.

    The client is used as it is and never closed by this object; each script call is also
    bounded by `timeout`, so a Redis that stops answering holds a request back no longer.

    Args:
        client: A `redis.asyncio.Redis`.
        rate: Requests a second, for all the processes together.
        name: Processes share a budget only under the same name (see
            [`rate_keys`][meigen_async.redis_cache.rate_keys]).
        burst: Requests that may go at once after a quiet spell; 1 spaces every request.
        timeout: Seconds allowed for each call to Redis.
        timer: Monotonic seconds; `time.monotonic` but in tests.
        sleep: Waits; `asyncio.sleep` but in tests.

    """

    def __init__(
        self,
        client: redis.asyncio.Redis,
        *,
        rate: float = 10.0,
        name: str = "meigen",
        burst: int = 1,
        timeout: float = 0.5,
        timer: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ):
        if not rate > 0 or not math.isfinite(rate):
            raise ValueError("rate must be a positive number")
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise ValueError("burst must be a whole number, at least 1")
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        self.client: redis.asyncio.Redis = client
        """The Redis client, used as it is and never closed here."""
        self.rate: float = rate
        """Requests a second, for all the processes together."""
        self.name: str = name
        """The budget's name: processes share a budget only under the same name."""
        self.burst: int = burst
        """Requests that may go at once after a quiet spell."""
        self.timeout: float = timeout
        """Seconds allowed for each call to Redis."""
        self._keys = rate_keys(name)
        self._interval = f"{1.0 / rate:.9f}"
        self._tau = f"{(burst - 1) / rate:.9f}"
        self._script = client.register_script(_RATE_SCRIPT)
        self._local = LocalRateLimiter(rate, timer=timer, sleep=sleep)
        self._sleep = sleep
        self._timer = timer
        self._backoff = Backoff(timer=timer)
        self._where = describe(client)

    @property
    def shared(self) -> bool:
        """Whether Redis is in use just now (False during an outage: pacing is local)."""
        return not self._backoff.down

    async def acquire(self) -> None:
        """Return when the next request may go: a slot booked in Redis, or paced locally."""
        while True:
            await self._local.wait_cool_down()
            wait = await self._run("reserve")
            if wait is None:
                await self._local.acquire()
                return
            if wait <= 0:
                return
            await self._sleep(wait)
            await self._local.wait_cool_down()
            # A cool-down another process began while we slept: the slot is void, wait it out.
            left = await self._run("check")
            if not left:
                return
            await self._sleep(left)

    async def cool_down(self, seconds: float) -> None:
        """Send nothing, from any process sharing this limiter, for the next `seconds`."""
        if not seconds > 0:
            return
        # Kept here too: it holds if Redis fails, and this process needs no round trip for it.
        self._local.pause(seconds)
        await self._run("pause", f"{seconds:.6f}")

    async def _run(self, operation: str, *extra: str) -> float | None:
        """Run the script; its answer in seconds, or None when Redis failed or is skipped."""
        if not self._backoff.ready():
            return None
        started = self._timer()
        try:
            async with asyncio.timeout(self.timeout):
                reply = await self._script(
                    keys=list(self._keys), args=[operation, self._interval, self._tau, *extra]
                )
            answer = float(reply)
        # Any exception, as for RedisCache: TimeoutError is ours, ValueError a reply that is no
        # number (something else's script under our name), AttributeError a server answering
        # HELLO with the wrong reply type, OSError a socket error redis-py does not wrap.
        except Exception as error:
            if self._backoff.failed():
                logger.warning(
                    "shared rate limiter %r on %s is unavailable (%s: %s): pacing this "
                    "process alone at %g requests a second, trying Redis again in %.1f s",
                    self.name,
                    self._where,
                    type(error).__name__,
                    error,
                    self.rate,
                    self._backoff.delay,
                    extra={**_FIELDS, "retry_after": self._backoff.delay},
                )
            else:
                logger.debug(
                    "shared rate limiter %r still unavailable: %s", self.name, error, extra=_FIELDS
                )
            return None
        if self._backoff.succeeded(started):
            failures, seconds = self._backoff.outage
            logger.info(
                "shared rate limiter %r on %s is available again after %.1f s down (failures: %d)",
                self.name,
                self._where,
                seconds,
                failures,
                extra={**_FIELDS, "failures": failures},
            )
        if not 0 <= answer <= _LONGEST_WAIT:  # also false for nan
            # No state this limiter writes asks for that (cool-downs are capped at
            # MAX_COOL_DOWN): a value from elsewhere is not waited for; local pacing instead.
            logger.debug(
                "shared rate limiter %r: Redis asked for %r s, ignored",
                self.name,
                answer,
                extra=_FIELDS,
            )
            return None
        return answer

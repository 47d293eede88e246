"""`RedisCache`: a `SharedCache` in Redis, for many processes.

Needs the `redis` extra (`pip install 'meigen-async[redis]'`, redis-py's asyncio client).
The key layout and the value format are pure functions
([`image_key`][meigen_async.redis_cache.image_key],
[`encode_image`][meigen_async.redis_cache.encode_image],
[`decode_image`][meigen_async.redis_cache.decode_image], ...), and so is
[`Backoff`][meigen_async.redis_cache.Backoff], which decides when a failing Redis is
tried again; [`RedisCache`][meigen_async.redis_cache.RedisCache] is the part that talks to Redis,
and the one place where
redis-py's exceptions are caught.

    async with RedisCache("redis://127.0.0.1:6379/0", prefix="meigen:") as cache:
        async with GallerySession(cache=cache) as gallery:
            image = await gallery.get_image(image_id)

[`RedisRateLimiter`][meigen_async.redis_cache.RedisRateLimiter] shares one request budget, and the
service's cool-downs, among every
process using the same Redis and `name`:

    limiter = RedisRateLimiter(client, rate=10.0, name="meigen")
    async with GallerySession(rate_limit=limiter, cache=RedisCache(client=client)) as gallery:
        ...
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, TypeVar

import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from ._backoff import Backoff
from .errors import InvalidResponse
from .limits import LocalRateLimiter
from .models import GalleryImage, structure_image, unstructure_image
from .shared import SharedEntry, SharedImage, SharedMissing

__all__ = [
    "KEY_VERSION",
    "VALIDATOR_KEEP",
    "Backoff",
    "RedisCache",
    "RedisRateLimiter",
    "decode_image",
    "decode_missing",
    "encode_image",
    "encode_missing",
    "image_key",
    "lease_key",
    "missing_key",
    "rate_keys",
]

logger = logging.getLogger("meigen_async")

KEY_VERSION = "v1"
"""Part of every key: a change of the value format gets a new version, never a misread."""

VALIDATOR_KEEP = 3600.0
"""Seconds an image with validators is kept past its stale window, to be revalidated.

Redis has no LRU of this library's deciding: an expired entry is worth keeping only while a
conditional request may still find it unchanged, and an hour bounds what it costs.
"""

_T = TypeVar("_T")

# Deletes a key only if it still holds the given value: after our lease expired and another
# process took it, a plain DEL would delete theirs; after we read an unreadable value and
# another process overwrote it, a plain DEL would delete the good one.
_DELETE_IF_EQUAL = """
if redis.call("get", KEYS[1]) == ARGV[1] then
    return redis.call("del", KEYS[1])
end
return 0
"""

# One script for the rate limiter, so that no process can race another between a read and a
# write. GCRA on Redis's own clock (TIME): the key holds the theoretical arrival time (TAT) of
# the next request; a request may go at TAT - tau (tau: the burst, in seconds). "reserve"
# hands back the seconds to wait for the slot it books, "check" the seconds left of a
# cool-down, and "pause" starts one (never shortening one in force) and makes pacing resume
# from its end, not in a burst. Times are written with microseconds: Lua's default "%.14g"
# would keep only a tenth of a millisecond of an epoch time.
_LONGEST_WAIT = 3600.0
"""Seconds: a wait Redis hands back beyond this is not believed (a cool-down is at most
`MAX_COOL_DOWN`, and a queue of booked slots takes minutes at the most)."""

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

# -- Keys and values (pure) ----------------------------------------------------------------------


def image_key(prefix: str, image_id: str) -> str:
    """The key of the image stored for `image_id`."""
    return f"{prefix}{KEY_VERSION}:image:{image_id}"


def missing_key(prefix: str, image_id: str) -> str:
    """The key of the 404 remembered for `image_id`."""
    return f"{prefix}{KEY_VERSION}:missing:{image_id}"


def lease_key(prefix: str, image_id: str) -> str:
    """The key of the lease to fetch `image_id`."""
    return f"{prefix}{KEY_VERSION}:lease:{image_id}"


def rate_keys(name: str) -> tuple[str, str]:
    """The keys of the rate limiter named `name`: its pacing state and its cool-down.

    Both carry the hash tag `{name}`, so that on a Redis Cluster they live in one slot, as
    a script touching both requires.
    """
    return f"{{{name}}}:{KEY_VERSION}:rate", f"{{{name}}}:{KEY_VERSION}:cool-down"


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "\\*?[]" else c for c in text)


def stored_pattern(prefix: str) -> str:
    """A `SCAN MATCH` pattern for every key under `prefix` (images, 404s and leases)."""
    return f"{_glob_escape(prefix)}{KEY_VERSION}:*"


def encode_image(
    image: GalleryImage,
    fresh_until: float,
    *,
    etag: str | None = None,
    last_modified: str | None = None,
) -> str:
    """The JSON stored for an image: the endpoint's `data` object, its expiry, its validators.

    The validators are left out when absent; a value written before they existed reads as an
    image without them (the format only gained optional keys, so `KEY_VERSION` stays).
    """
    value: dict[str, Any] = {"fresh_until": fresh_until, "image": unstructure_image(image)}
    if etag is not None:
        value["etag"] = etag
    if last_modified is not None:
        value["last_modified"] = last_modified
    return json.dumps(value)


def decode_image(raw: str | bytes, *, image_id: str) -> SharedImage:
    """Read what [`encode_image`][meigen_async.redis_cache.encode_image] wrote for `image_id`.

    Raises:
        ValueError: the value is not what [`encode_image`][meigen_async.redis_cache.encode_image]
            writes (its expiry is not a
            finite, positive time), or it holds another id's image.

    """
    value = _load(raw)
    if not isinstance(value, dict) or not _is_time(value.get("fresh_until")):
        raise ValueError("not an image entry")
    try:
        # Without image_id: the id is checked just below, in words that fit a stored value.
        image = structure_image(value.get("image"))
    except InvalidResponse as error:
        raise ValueError(str(error)) from error
    if image.id != image_id:
        raise ValueError(f"it holds image {image.id!r}")
    etag, last_modified = value.get("etag"), value.get("last_modified")
    if not (_is_validator(etag) and _is_validator(last_modified)):
        raise ValueError("its validators are not strings")
    return SharedImage(
        image=image,
        fresh_until=float(value["fresh_until"]),
        etag=etag,
        last_modified=last_modified,
    )


def _is_validator(value: object) -> bool:
    # Sent back as a request header: a string of visible ASCII, as validators_from keeps.
    return value is None or (
        isinstance(value, str) and 0 < len(value) <= 512 and value.isascii() and value.isprintable()
    )


def encode_missing(until: float) -> str:
    """The JSON stored for a remembered 404."""
    return json.dumps({"until": until})


def decode_missing(raw: str | bytes) -> SharedMissing:
    """Read what [`encode_missing`][meigen_async.redis_cache.encode_missing] wrote.

    Raises:
        ValueError: the value is not what
            [`encode_missing`][meigen_async.redis_cache.encode_missing] writes (its expiry is not a
            finite, positive time).

    """
    value = _load(raw)
    if not isinstance(value, dict) or not _is_time(value.get("until")):
        raise ValueError("not a 404 entry")
    return SharedMissing(until=float(value["until"]))


def _load(raw: str | bytes) -> Any:
    try:
        return json.loads(raw)
    except RecursionError as error:
        # Nested deeper than the parser goes: garbage like any other, not a crash.
        raise ValueError("nested too deeply") from error


def _is_time(value: object) -> bool:
    # json.loads reads NaN and Infinity; a time since the epoch is neither, nor 0 or less.
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


def _milliseconds(seconds: float) -> int:
    # Redis wants a whole, positive number of milliseconds: round up, never to 0.
    return max(1, math.ceil(seconds * 1000))


# -- The cache -----------------------------------------------------------------------------------


class RedisCache:
    """Images and 404s in Redis, shared by every process using the same Redis and `prefix`.

    Give it to [`GallerySession`][meigen_async.GallerySession] as `cache=`: the session keeps its
    own
    in-process cache in front of it. Build it from a URL, or from a `redis.asyncio.Redis`
    client of yours:

        RedisCache("redis://127.0.0.1:6379/0", prefix="meigen:")
        RedisCache(client=redis.asyncio.Redis(...), prefix="meigen:")

    A cache built from a URL opens its own client, with `timeout` as its connect and read
    timeouts and no retries (a failure is skipped over, not waited out); close it with
    [`close`][meigen_async.redis_cache.RedisCache.close] or `async with`. A client you pass in is
    used as it is and never closed by
    this object: give it timeouts of its own, or a Redis outage will wait for its defaults.
    Sessions never close the cache they are given.

    When Redis fails (refused, timed out, an error reply), one warning is logged on the
    `meigen_async` logger, the operation answers as if the cache were empty, and Redis is
    skipped for 0.5 s, then longer after each failed try, up to 5 s; the first success logs
    once at INFO. A value that cannot be read (not JSON this library wrote, an expiry that is
    not a finite positive time, another id's image) is treated as absent, logged and deleted.

    Args:
        url: A `redis://`, `rediss://` or `unix://` URL.
        client: A `redis.asyncio.Redis` to use instead of a URL.
        prefix: Put in front of every key; sessions share entries only under the same prefix.
        timeout: Seconds for connecting and for each reply, on the client built from `url`.

    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: redis.asyncio.Redis | None = None,
        prefix: str = "meigen:",
        timeout: float = 0.5,
    ):
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if client is None:
            if url is None:
                raise ValueError("give a url or a client")
            client = redis.asyncio.Redis.from_url(
                url,
                socket_connect_timeout=timeout,
                socket_timeout=timeout,
                retry=Retry(NoBackoff(), 0),
            )
        elif url is not None:
            raise ValueError("give a url or a client, not both")
        self.prefix: str = prefix
        """Prepended to every key this cache writes."""
        self.client: redis.asyncio.Redis = client
        """The redis-py asyncio client in use."""
        self._owns_client = url is not None
        self._closed = False
        self._backoff = Backoff()
        self._delete_if_equal = client.register_script(_DELETE_IF_EQUAL)
        self._where = _describe(client)

    # -- Lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> RedisCache:
        """The cache itself; its client connects on first use."""
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the cache."""
        await self.close()

    async def close(self) -> None:
        """Close the client if this object opened it. Idempotent.

        Afterwards every operation answers as if the cache were empty, without a word.
        """
        if self._closed:
            return
        self._closed = True
        if self._owns_client:
            await self.client.aclose()

    @property
    def closed(self) -> bool:
        """Whether [`close`][meigen_async.redis_cache.RedisCache.close] has been called."""
        return self._closed

    # -- SharedCache ---------------------------------------------------------------------------

    async def get(self, image_id: str) -> SharedEntry | None:
        """The image or 404 stored for `image_id`; an image may be past its freshness."""
        keys = (image_key(self.prefix, image_id), missing_key(self.prefix, image_id))
        found = await self._call(lambda: self.client.mget(keys), None)
        if found is None:
            return None
        image_raw, missing_raw = found
        try:
            if image_raw is not None:
                return decode_image(image_raw, image_id=image_id)
            if missing_raw is not None:
                return decode_missing(missing_raw)
        except ValueError as error:
            # Written by something else under our prefix: a miss, and dropped, so that no
            # process reads it again even if the fetch that follows stores nothing.
            logger.warning("unreadable shared cache entry for %s dropped: %s", image_id, error)
            if image_raw is not None:
                await self._drop(keys[0], image_raw)
            elif missing_raw is not None:
                await self._drop(keys[1], missing_raw)
        return None

    async def _drop(self, key: str, raw: bytes | str) -> None:
        """Delete `key` if it still holds `raw`: another process may have just fixed it."""
        await self._call(lambda: self._delete_if_equal(keys=[key], args=[raw]), None)

    async def set(
        self,
        image_id: str,
        image: GalleryImage,
        ttl: float,
        stale_window: float,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
    ) -> None:
        """Store `image` as fresh for `ttl` seconds, kept `stale_window` seconds longer.

        With validators, it is kept `VALIDATOR_KEEP` seconds longer still, to be revalidated.
        """
        if ttl <= 0:
            return
        value = encode_image(image, time.time() + ttl, etag=etag, last_modified=last_modified)
        keep = max(stale_window, 0.0)
        if etag is not None or last_modified is not None:
            keep += VALIDATOR_KEEP
        expiry = _milliseconds(ttl + keep)

        async def write() -> None:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.set(image_key(self.prefix, image_id), value, px=expiry)
                pipe.delete(missing_key(self.prefix, image_id))
                await pipe.execute()

        await self._call(write, None)

    async def set_missing(self, image_id: str, ttl: float) -> None:
        """Remember a 404 for `image_id` for `ttl` seconds."""
        if ttl <= 0:
            return
        value = encode_missing(time.time() + ttl)

        async def write() -> None:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.set(missing_key(self.prefix, image_id), value, px=_milliseconds(ttl))
                pipe.delete(image_key(self.prefix, image_id))
                await pipe.execute()

        await self._call(write, None)

    async def invalidate(self, image_id: str) -> None:
        """Forget the image or 404 stored for `image_id`."""
        keys = (image_key(self.prefix, image_id), missing_key(self.prefix, image_id))
        await self._call(lambda: self.client.delete(*keys), None)

    async def clear(self) -> None:
        """Forget every image and 404 under the prefix, for every process; leases stay."""
        lease_part = f"{self.prefix}{KEY_VERSION}:lease:".encode()

        async def delete_all() -> None:
            batch: list[bytes | str] = []
            async for key in self.client.scan_iter(match=stored_pattern(self.prefix), count=500):
                name = key if isinstance(key, bytes) else str(key).encode()
                if not name.startswith(lease_part):
                    batch.append(key)
                if len(batch) >= 500:
                    await self.client.unlink(*batch)
                    batch.clear()
            if batch:
                await self.client.unlink(*batch)

        await self._call(delete_all, None)

    async def try_lease(self, image_id: str, ms: int) -> str | None:
        """Take the lease to fetch `image_id` for `ms` milliseconds, unless another holds it.

        While Redis is out, a token is returned all the same: there is nobody to wait for.
        """
        token = secrets.token_hex(8)

        async def take() -> bool:
            return bool(
                await self.client.set(lease_key(self.prefix, image_id), token, nx=True, px=ms)
            )

        return token if await self._call(take, True) else None

    async def lease_held(self, image_id: str) -> bool:
        """Whether some process holds the lease to fetch `image_id` (False while Redis is out)."""
        held = await self._call(lambda: self.client.exists(lease_key(self.prefix, image_id)), 0)
        return bool(held)

    async def release(self, image_id: str, token: str) -> None:
        """Give up the lease taken with `token`; another process's lease is left alone."""
        key = lease_key(self.prefix, image_id)
        await self._call(lambda: self._delete_if_equal(keys=[key], args=[token]), None)

    # -- Failures ------------------------------------------------------------------------------

    async def _call(self, operation: Callable[[], Awaitable[_T]], fallback: _T) -> _T:
        """Run one Redis operation; on failure, or while backing off, `fallback`."""
        if self._closed or not self._backoff.ready():
            return fallback
        started = time.monotonic()
        try:
            result = await operation()
        # OSError: redis-py wraps socket errors in its ConnectionError, but not on every path.
        except (RedisError, OSError) as error:
            if self._backoff.failed():
                logger.warning(
                    "shared cache %s is unavailable (%s: %s): using the in-process cache and "
                    "the upstream, trying Redis again in %.1f s",
                    self._where,
                    type(error).__name__,
                    error,
                    self._backoff.delay,
                )
            else:
                logger.debug("shared cache %s still unavailable: %s", self._where, error)
            return fallback
        if self._backoff.succeeded(started):
            logger.info("shared cache %s is available again", self._where)
        return result


# -- The rate limiter ----------------------------------------------------------------------------


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
        self._where = _describe(client)

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
        # TimeoutError: ours; ValueError: a reply that is no number (something else's script
        # under our name); OSError: socket errors redis-py does not wrap on every path.
        except (RedisError, OSError, TimeoutError, ValueError, TypeError) as error:
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
                )
            else:
                logger.debug("shared rate limiter %r still unavailable: %s", self.name, error)
            return None
        if self._backoff.succeeded(started):
            logger.info("shared rate limiter %r on %s is available again", self.name, self._where)
        if not 0 <= answer <= _LONGEST_WAIT:  # also false for nan
            # No state this limiter writes asks for that (cool-downs are capped at
            # MAX_COOL_DOWN): a value from elsewhere is not waited for; local pacing instead.
            logger.debug("shared rate limiter %r: Redis asked for %r s, ignored", self.name, answer)
            return None
        return answer


def _describe(client: redis.asyncio.Redis) -> str:
    """Where the client connects, for log messages: never its password."""
    options: dict[str, Any] = client.connection_pool.connection_kwargs
    if "path" in options:
        return f"unix:{options['path']}"
    return f"{options.get('host', 'localhost')}:{options.get('port', 6379)}/{options.get('db', 0)}"

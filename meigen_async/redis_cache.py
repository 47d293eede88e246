"""`RedisCache`: a `SharedCache` in Redis, for many processes.

Needs the `redis` extra (`pip install '.[redis]'` in a clone; redis-py's asyncio client).
The key layout is pure functions ([`entry_key`][meigen_async.redis_cache.entry_key],
[`lease_key`][meigen_async.redis_cache.lease_key]); the values are opaque text, written and
read by the one codec every shared cache uses, and so is
[`Backoff`][meigen_async.redis_cache.Backoff], which decides when a failing Redis is
tried again; [`RedisCache`][meigen_async.redis_cache.RedisCache] is the part that talks to Redis,
and the one place where
redis-py's exceptions are caught.

    async with RedisCache("redis://127.0.0.1:6379/0", prefix="meigen:") as cache:
        async with GallerySession(cache=cache) as gallery:
            image = await gallery.get_image(image_id)

[`RedisRateLimiter`][meigen_async.redis_cache.RedisRateLimiter], which lives in a module of its
own and is named here too, shares one request budget, and the service's cool-downs, among every
process using the same Redis and `name`:

    limiter = RedisRateLimiter(client, rate=10.0, name="meigen")
    async with GallerySession(rate_limit=limiter, cache=RedisCache(client=client)) as gallery:
        ...
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, TypeGuard, TypeVar

import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from ._backoff import Backoff
from ._redis_client import describe
from ._redis_limiter import RedisRateLimiter, rate_keys
from ._shared_codec import (
    VALIDATOR_KEEP,
    BadEntry,
    Stored,
    decode,
    lease_in_force,
    stored_image,
    stored_missing,
)
from .models import GalleryImage
from .shared import SharedEntry

__all__ = [
    "KEY_VERSION",
    "VALIDATOR_KEEP",
    "Backoff",
    "RedisCache",
    "RedisRateLimiter",
    "entry_key",
    "lease_key",
    "rate_keys",
    "stored_pattern",
]

logger = logging.getLogger("meigen_async")
_FIELDS = {"backend": "redis"}  # the `extra` of every record logged here

KEY_VERSION = "v2"
"""Part of every cache key: a change of the key or value format gets a new version, never a
misread. (v1 keys named the id alone, not its gallery: they are never read.)"""

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

# Replaces a lease only if it still holds the given value: of two processes taking over one
# lease that cannot be right, one wins.
_REPLACE_IF_EQUAL = """
if redis.call("get", KEYS[1]) == ARGV[1] then
    redis.call("set", KEYS[1], ARGV[2], "PX", ARGV[3])
    return 1
end
return 0
"""

# -- Keys (pure) ---------------------------------------------------------------------------------


def entry_key(prefix: str, key: str) -> str:
    """The Redis key of the image or 404 stored under `key` (a gallery's id: see `SharedCache`)."""
    return f"{prefix}{KEY_VERSION}:entry:{key}"


def lease_key(prefix: str, key: str) -> str:
    """The Redis key of the lease to fetch what is stored under `key`."""
    return f"{prefix}{KEY_VERSION}:lease:{key}"


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "\\*?[]" else c for c in text)


def stored_pattern(prefix: str) -> str:
    """A `SCAN MATCH` pattern for every key under `prefix` (entries and leases)."""
    return f"{_glob_escape(prefix)}{KEY_VERSION}:*"


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

    When Redis fails (refused, timed out, an error reply, any exception out of the client, a
    reply of the wrong type), one warning is logged on the `meigen_async` logger, the
    operation answers as if the cache were empty, and Redis is skipped for 0.5 s, then longer
    after each failed try, up to 5 s; the first success logs once at INFO. A value that cannot
    be read (not an entry of this version) is treated as absent, logged and deleted; the
    session checks what can be read as it checks every shared entry.

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
        self._replace_if_equal = client.register_script(_REPLACE_IF_EQUAL)
        self._lease_ms: int | None = None  # the longest lease asked for, once one was
        self._where = describe(client)

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

    async def get(self, key: str) -> SharedEntry | None:
        """The image or 404 stored under `key`; an image may be past its freshness."""
        name = entry_key(self.prefix, key)
        raw = await self._call(lambda: self.client.get(name), None, _is_value)
        if raw is None:
            return None
        try:
            return decode(raw)
        except BadEntry as error:
            # Written by something else under our prefix: a miss, and dropped, so that no
            # process reads it again even if the fetch that follows stores nothing.
            logger.warning(
                "unreadable shared cache entry %s dropped: %s", key, error, extra=_FIELDS
            )
            await self._call(
                lambda: self._delete_if_equal(keys=[name], args=[raw]), None, _is_anything
            )
            return None

    async def set(
        self,
        key: str,
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
        now = time.time()
        stored = stored_image(
            image, ttl, stale_window, now=now, etag=etag, last_modified=last_modified
        )
        await self._put(key, stored, now)

    async def set_missing(self, key: str, ttl: float) -> None:
        """Remember a 404 under `key` for `ttl` seconds."""
        now = time.time()
        await self._put(key, stored_missing(ttl, now=now), now)

    async def _put(self, key: str, stored: Stored | None, now: float) -> None:
        """Write `stored` under `key`, in place of the image or 404 there, until it may go."""
        if stored is None:
            return
        name, expiry = entry_key(self.prefix, key), _milliseconds(stored.until - now)
        await self._call(lambda: self.client.set(name, stored.value, px=expiry), None, _is_anything)

    async def invalidate(self, key: str) -> None:
        """Forget the image or 404 stored under `key`."""
        name = entry_key(self.prefix, key)
        await self._call(lambda: self.client.delete(name), None, _is_anything)

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

        await self._call(delete_all, None, _is_anything)

    async def try_lease(self, key: str, ms: int) -> str | None:
        """Take the lease on `key` for `ms` milliseconds, unless another process holds it.

        A lease key that cannot be a lease (no expiry, or one further ahead than a lease of
        `ms` lasts) holds nothing and is taken over. While Redis is out, a token is returned
        all the same: there is nobody to wait for.
        """
        token = secrets.token_hex(8)
        self._lease_ms = max(ms, self._lease_ms or 0)
        name = lease_key(self.prefix, key)
        taken = await self._call(
            lambda: self.client.set(name, token, nx=True, px=ms), True, _is_set_reply
        )
        if taken:
            return token

        async def look() -> Any:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.get(name)
                pipe.pttl(name)
                return await pipe.execute()

        found = await self._call(look, None, _is_value_and_ttl)
        if found is None:  # Redis failed just now: nobody to wait for
            return token
        held, left = found
        if held is None or lease_in_force(_lease_end(left), now=time.time(), ms=ms):
            return None
        replaced = await self._call(
            lambda: self._replace_if_equal(keys=[name], args=[held, token, ms]), 1, _is_anything
        )
        return token if replaced == 1 else None

    async def lease_held(self, key: str) -> bool:
        """Whether some process holds the lease on `key` (False while Redis is out)."""
        name = lease_key(self.prefix, key)
        left = await self._call(lambda: self.client.pttl(name), -2, _is_int)
        return lease_in_force(_lease_end(left), now=time.time(), ms=self._lease_ms)

    async def release(self, key: str, token: str) -> None:
        """Give up the lease taken with `token`; another process's lease is left alone."""
        name = lease_key(self.prefix, key)
        await self._call(
            lambda: self._delete_if_equal(keys=[name], args=[token]), None, _is_anything
        )

    # -- Failures ------------------------------------------------------------------------------

    async def _call(
        self,
        operation: Callable[[], Awaitable[Any]],
        fallback: _T,
        shape: Callable[[object], TypeGuard[_T]],
    ) -> _T:
        """Run one Redis operation; `fallback` on a failure, a reply not of `shape`, a back-off."""
        if self._closed or not self._backoff.ready():
            return fallback
        started = time.monotonic()
        try:
            reply = await operation()
            if not shape(reply):
                raise _WrongReply(f"a reply of the wrong type ({type(reply).__name__})")
        # Any exception, not only RedisError: redis-py lets socket errors through on some paths,
        # and a server answering with the wrong types of reply (to HELLO, say) makes it raise
        # AttributeError or TypeError. Each is a problem of Redis, never of the caller.
        except Exception as error:
            if self._backoff.failed():
                logger.warning(
                    "shared cache %s is unavailable (%s: %s): using the in-process cache and "
                    "the upstream, trying Redis again in %.1f s",
                    self._where,
                    type(error).__name__,
                    error,
                    self._backoff.delay,
                    extra={**_FIELDS, "retry_after": self._backoff.delay},
                )
            else:
                logger.debug(
                    "shared cache %s still unavailable: %s", self._where, error, extra=_FIELDS
                )
            return fallback
        if self._backoff.succeeded(started):
            failures, seconds = self._backoff.outage
            logger.info(
                "shared cache %s is available again after %.1f s down (failures: %d)",
                self._where,
                seconds,
                failures,
                extra={**_FIELDS, "failures": failures},
            )
        return reply


class _WrongReply(Exception):
    """Redis answered, but not with a reply of the type the command gives."""


def _is_anything(reply: object) -> TypeGuard[object]:
    return True


def _is_value(reply: object) -> TypeGuard[bytes | str | None]:
    return reply is None or isinstance(reply, (bytes, str))


def _is_int(reply: object) -> TypeGuard[int]:
    return isinstance(reply, int) and not isinstance(reply, bool)


def _is_set_reply(reply: object) -> TypeGuard[bool | None]:
    return reply is None or isinstance(reply, bool)


def _is_value_and_ttl(reply: object) -> TypeGuard[list[Any]]:
    return isinstance(reply, list) and len(reply) == 2 and _is_value(reply[0]) and _is_int(reply[1])


def _lease_end(left: int) -> float | None:
    """When a lease key whose `PTTL` is `left` expires (None: it has no expiry, or is gone)."""
    return time.time() + left / 1000 if left >= 0 else None

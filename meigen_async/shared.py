"""The protocol of a cache shared by processes, and the entries it holds.

`SharedCache` is what a session needs from a cache several processes share; `SharedImage` and
`SharedMissing` are what it hands back. This module knows no implementation:
`meigen_async.redis_cache.RedisCache` is one, and a user's own is another.
"""

from __future__ import annotations

from typing import Protocol

import attrs

from .models import GalleryImage

__all__ = ["SharedCache", "SharedEntry", "SharedImage", "SharedMissing"]


@attrs.frozen
class SharedImage:
    """An image as a shared cache holds it, with the wall-clock time until which it is fresh.

    `fresh_until` is in seconds since the epoch (`time.time`): a monotonic clock means
    nothing to another process, so each reader works out what is left of the lifetime itself.
    """

    image: GalleryImage
    """The image stored."""
    fresh_until: float
    """When it stops being fresh, in seconds since the epoch."""
    etag: str | None = None
    """The image's `ETag`, to revalidate it with once expired (None: none)."""
    last_modified: str | None = None
    """The image's `Last-Modified`, likewise."""


@attrs.frozen
class SharedMissing:
    """A 404 as a shared cache remembers it, until `until` (seconds since the epoch)."""

    until: float
    """When the remembered 404 expires, in seconds since the epoch."""


SharedEntry = SharedImage | SharedMissing
"""What [`SharedCache.get`][meigen_async.shared.SharedCache.get] finds for an id."""


class SharedCache(Protocol):
    """A cache several processes share, put behind each session's in-process cache.

    A shared cache never raises for a failure of its backend: it logs, then answers as if it
    were empty ([`get`][meigen_async.shared.SharedCache.get] gives None,
    [`lease_held`][meigen_async.shared.SharedCache.lease_held] False,
    [`try_lease`][meigen_async.shared.SharedCache.try_lease] a token) and
    drops writes, so that the session falls back on its in-process cache and the upstream.

    The session hands it keys, not bare ids: each `key` names the gallery (the origin and path
    of the session's `base_url`) and the image id, as the image's URL does, so that sessions
    on different galleries sharing one cache never see each other's entries. Treat a key as
    an opaque string. Whatever `get` hands back is checked by the session before it is used
    (the id, the expiry, the validators); an entry that cannot be right is a miss and is
    deleted with [`invalidate`][meigen_async.shared.SharedCache.invalidate].
    """

    async def get(self, key: str) -> SharedEntry | None:
        """The image or 404 stored under `key`; an image may be past its freshness."""
        ...

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

        `etag` and `last_modified` are its validators, handed back in the `SharedImage`
        (the session passes them only when the image has some, so an implementation written
        before they existed keeps working with servers that send none). An entry with them
        may be kept longer than its stale window, so that it can be revalidated.
        """
        ...

    async def set_missing(self, key: str, ttl: float) -> None:
        """Remember a 404 under `key` for `ttl` seconds."""
        ...

    async def invalidate(self, key: str) -> None:
        """Forget the image or 404 stored under `key`."""
        ...

    async def clear(self) -> None:
        """Forget every image and 404 stored, of every gallery, for every process sharing it."""
        ...

    async def try_lease(self, key: str, ms: int) -> str | None:
        """Take the lease to fetch what `key` names for `ms` milliseconds, unless another holds it.

        Returns the token to [`release`][meigen_async.shared.SharedCache.release] it with, or None
        while another process holds it.
        """
        ...

    async def lease_held(self, key: str) -> bool:
        """Whether some process holds the lease on `key`."""
        ...

    async def release(self, key: str, token: str) -> None:
        """Give up the lease taken with `token`; another process's lease is left alone."""
        ...

    async def close(self) -> None:
        """Release what the cache holds (connections it opened). Idempotent."""
        ...

"""An in-memory `SharedCache` for the tests, kept as a user's own cache would keep it.

Its values are opaque text, written and read with the shared codec, like `RedisCache`'s and
`SQLiteCache`'s; its lease records are (token, expiry, process id), like `SQLiteCache`'s rows.
Several `MemorySharedCache`s on one `MemoryStore` stand for processes sharing one backend.
"""

from __future__ import annotations

import logging
import os
import secrets
import time

from meigen_async._shared_codec import (
    BadEntry,
    Stored,
    decode,
    lease_in_force,
    lease_pid,
    stored_image,
    stored_missing,
)
from meigen_async.models import GalleryImage
from meigen_async.shared import SharedEntry

logger = logging.getLogger("meigen_async")


class MemoryStore:
    """What every `MemorySharedCache` on it shares, as processes share one Redis."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[object, float]] = {}
        """Per key: the value as stored, and when it may be forgotten."""
        self.leases: dict[str, tuple[object, object, object]] = {}
        """Per key: the lease's token, expiry and process id, as stored."""


class MemorySharedCache:
    """A `SharedCache` on a `MemoryStore`; answers as if empty once closed."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.closed = False
        self._lease_ms: int | None = None

    async def get(self, key: str) -> SharedEntry | None:
        found = None if self.closed else self.store.entries.get(key)
        if found is None or found[1] <= time.time():
            return None
        try:
            return decode(found[0])
        except BadEntry as error:
            logger.warning("memory cache entry %s dropped: %s", key, error)
            del self.store.entries[key]
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
        stored = stored_image(
            image, ttl, stale_window, now=time.time(), etag=etag, last_modified=last_modified
        )
        self._put(key, stored)

    async def set_missing(self, key: str, ttl: float) -> None:
        self._put(key, stored_missing(ttl, now=time.time()))

    def _put(self, key: str, stored: Stored | None) -> None:
        if stored is not None and not self.closed:
            self.store.entries[key] = (stored.value, stored.until)

    async def invalidate(self, key: str) -> None:
        if not self.closed:
            self.store.entries.pop(key, None)

    async def clear(self) -> None:
        if not self.closed:
            self.store.entries.clear()

    async def try_lease(self, key: str, ms: int) -> str | None:
        token = secrets.token_hex(8)
        if self.closed:
            return token
        self._lease_ms = max(ms, self._lease_ms or 0)
        if self._holds(key, ms):
            return None
        self.store.leases[key] = (token, time.time() + ms / 1000, os.getpid())
        return token

    async def lease_held(self, key: str) -> bool:
        return not self.closed and self._holds(key, self._lease_ms)

    def _holds(self, key: str, ms: int | None) -> bool:
        record = self.store.leases.get(key)
        return (
            record is not None
            and lease_pid(record[2]) is not None
            and lease_in_force(record[1], now=time.time(), ms=ms)
        )

    async def release(self, key: str, token: str) -> None:
        record = self.store.leases.get(key)
        if not self.closed and record is not None and record[0] == token:
            del self.store.leases[key]

    async def close(self) -> None:
        self.closed = True

"""The shared tier: a `SharedCache` behind a session's `MemoryCache`, and its lease protocol."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Coroutine
from typing import Any

import attrs

from ._protocol import Validators
from ._shared_codec import BadEntry, check, shared_key
from .cache import CachePolicy, MemoryCache
from .models import GalleryImage
from .shared import SharedCache, SharedEntry, SharedMissing

__all__ = ["POLL_INTERVAL", "Claim", "SharedTier"]

logger = logging.getLogger("meigen_async")


@attrs.frozen
class Claim:
    """What the shared tier said about an id the in-process cache missed.

    Either an answer (`image`, or `missing` for a remembered 404), or permission to fetch
    upstream, with the lease `token` to release afterwards when this process holds one.
    """

    image: GalleryImage | None = None
    missing: bool = False
    token: str | None = None

    @property
    def answered(self) -> bool:
        """Whether the shared tier answered, so that no upstream request is needed."""
        return self.image is not None or self.missing


_DEFAULT_POLICY = CachePolicy()

POLL_INTERVAL = 0.025
"""Seconds between two looks at the shared cache while another process fetches an id."""


class SharedTier:
    """A `SharedCache` behind a session's `MemoryCache`, and the lease protocol.

    [`GallerySession`][meigen_async.GallerySession] builds one when given a shared cache, and only
    its
    miss path uses it: what it finds in the shared cache goes into the in-process tier with the
    lifetime it has left, no longer than the session would keep it itself; an entry that cannot
    be right is a miss, and is deleted from the shared cache. Of concurrent misses for one id
    in several processes, one takes the lease and fetches; the others look again every
    `POLL_INTERVAL` seconds and fetch themselves when the lease is released without a value
    (the holder failed), has expired (the holder died), or after `lease_time` seconds of
    waiting, whichever comes first.

    The shared cache is handed keys, not ids: every entry, lease and remembered 404 is under
    `_shared_codec.shared_key(gallery, id)`, so that sessions on two galleries sharing one
    cache never see each other's images. The in-process tier, the session's own, is keyed
    by id.

    Args:
        memory: The in-process tier.
        shared: The shared tier.
        lease_time: Seconds a lease lasts, and the longest a process waits for another's fetch.
        gallery: The gallery the session asks (`_shared_codec.gallery_of` its `base_url`).
        policy: The session's lifetimes, which cap those read back (see `_shared_codec.check`).
        clock: The wall clock shared entries' expiry times are read with.
        timer: The monotonic clock bounding the wait.

    """

    def __init__(
        self,
        memory: MemoryCache,
        shared: SharedCache,
        *,
        lease_time: float,
        gallery: str,
        policy: CachePolicy = _DEFAULT_POLICY,
        clock: Callable[[], float] = time.time,
        timer: Callable[[], float] = time.monotonic,
    ):
        self.memory = memory
        self.shared = shared
        self.lease_time = lease_time
        self.gallery = gallery
        self.policy = policy
        self._lease_ms = max(1, math.ceil(lease_time * 1000))
        self._clock = clock
        self._timer = timer
        self._forgetting: set[asyncio.Task[None]] = set()
        self._releasing: set[asyncio.Task[None]] = set()

    async def claim(self, image_id: str) -> Claim:
        """Answer `image_id` from the shared tier, or say who fetches it upstream."""
        if self._forgetting:
            # An invalidate() just before this miss must not be undone by reading the old value.
            await asyncio.wait(set(self._forgetting))
        key = self._key(image_id)
        found = await self._look(image_id, key)
        if found is not None:
            return found
        token = await self.shared.try_lease(key, self._lease_ms)
        if token is not None:
            # The previous holder may have stored the value and released its lease between
            # our look and our lease: look again rather than fetch it a second time.
            found = await self._look(image_id, key)
            if found is not None:
                self.release_later(image_id, token)
                return found
            return Claim(token=token)
        deadline = self._timer() + self.lease_time
        while self._timer() < deadline:
            await asyncio.sleep(POLL_INTERVAL)
            # The lease first, then the value: the holder stores before it releases, so a lease
            # seen gone means a value stored by it is already there to be read.
            held = await self.shared.lease_held(key)
            found = await self._look(image_id, key)
            if found is not None:
                return found
            if not held:
                break
        return Claim()

    def _key(self, image_id: str) -> str:
        return shared_key(self.gallery, image_id)

    async def _look(self, image_id: str, key: str) -> Claim | None:
        """Read `key` from the shared tier; a Claim when what is there answers the call."""
        entry = await self.shared.get(key)
        if entry is None:
            return None
        try:
            checked = check(entry, image_id, policy=self.policy, now=self._clock())
        except BadEntry as error:
            logger.warning("shared cache entry for %s dropped: %s", image_id, error)
            # Awaited, not left to a task: the fetch that follows must not have its own value
            # deleted by a deletion that comes in after it.
            await self.shared.invalidate(key)
            return None
        return self._use(image_id, checked.entry, checked.left)

    def _use(self, image_id: str, entry: SharedEntry, left: float) -> Claim | None:
        """Copy a checked shared entry, fresh `left` seconds more, into the in-process tier."""
        if isinstance(entry, SharedMissing):
            if left <= 0:
                return None
            self.memory.set_missing(image_id, left)
            return Claim(missing=True)
        validators = (
            Validators(etag=entry.etag, last_modified=entry.last_modified)
            if entry.etag is not None or entry.last_modified is not None
            else None
        )
        if left > 0:
            self.memory.set(image_id, entry.image, left, validators=validators)
            return Claim(image=entry.image)
        if (left + self.memory.stale_window > 0 or validators is not None) and self.memory.entry(
            image_id
        ) is None:
            # Expired but in its stale window: kept so that stale_if_error can serve it if the
            # upstream fails now; or with validators, so that the fetch revalidates it.
            self.memory.set(image_id, entry.image, left, validators=validators)
        return None

    async def store(
        self,
        image_id: str,
        image: GalleryImage,
        ttl: float | None,
        validators: Validators | None = None,
    ) -> None:
        """Share a fetched image for `ttl` seconds; None (not storable) forgets the old one."""
        key = self._key(image_id)
        if ttl is None:
            await self.shared.invalidate(key)
        elif validators is None:
            await self.shared.set(key, image, ttl, self.memory.stale_window)
        else:
            await self.shared.set(
                key,
                image,
                ttl,
                self.memory.stale_window,
                etag=validators.etag,
                last_modified=validators.last_modified,
            )

    async def store_missing(self, image_id: str, ttl: float) -> None:
        """Share a 404 for `ttl` seconds (0: not remembered, not shared)."""
        if ttl > 0:
            await self.shared.set_missing(self._key(image_id), ttl)

    def release_later(self, image_id: str, token: str) -> None:
        """Release a lease in a task of its own, so that a cancelled fetch still releases it."""
        self._spawn(self._releasing, self.shared.release, self._key(image_id), token)

    def invalidate_later(self, image_id: str) -> None:
        """Forget `image_id` in the shared tier, in a task; the next miss waits for it."""
        self._spawn(self._forgetting, self.shared.invalidate, self._key(image_id))

    def clear_later(self) -> None:
        """Forget everything in the shared tier, in a task; the next miss waits for it."""
        self._spawn(self._forgetting, self.shared.clear)

    def _spawn(
        self,
        tasks: set[asyncio.Task[None]],
        operation: Callable[..., Coroutine[Any, Any, None]],
        *args: str,
    ) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            # The shared cache's connections belong to an event loop: without one it cannot be
            # reached, and a sync caller cannot wait for it anyway.
            logger.warning("no running event loop: the shared cache was left unchanged")
            return
        task = loop.create_task(operation(*args))
        tasks.add(task)
        task.add_done_callback(lambda done: _settled(tasks, done))

    async def drain(self) -> None:
        """Wait for the deletions and releases still running."""
        pending = self._forgetting | self._releasing
        if pending:
            await asyncio.wait(pending)


def _settled(tasks: set[asyncio.Task[None]], task: asyncio.Task[None]) -> None:
    tasks.discard(task)
    # A SharedCache should never raise; one that does is reported here, not lost with its task.
    if not task.cancelled() and task.exception() is not None:
        logger.warning("a shared cache operation failed", exc_info=task.exception())

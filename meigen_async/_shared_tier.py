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
from ._shared_codec import BadEntry, Checked, check, shared_key
from .cache import CachePolicy
from .models import GalleryImage
from .shared import SharedCache, SharedImage, SharedMissing

__all__ = ["POLL_INTERVAL", "Claim", "SharedTier"]

logger = logging.getLogger("meigen_async")


@attrs.frozen
class Claim:
    """What the shared tier said about an id the in-process cache missed.

    `found` is the entry it holds, checked, fresh or not (None: none, or none that could be
    right); it answers the call when it is fresh. Otherwise the caller fetches upstream,
    releasing the lease `token` afterwards when this process holds one.
    """

    found: Checked | None = None
    token: str | None = None

    @property
    def answered(self) -> bool:
        """Whether the shared tier answered, so that no upstream request is needed."""
        return self.found is not None and self.found.fresh

    @property
    def image(self) -> GalleryImage | None:
        """The image that answers the call, when the answer is one."""
        found = self.found
        if found is None or not found.fresh or not isinstance(found.entry, SharedImage):
            return None
        return found.entry.image

    @property
    def missing(self) -> bool:
        """Whether the answer is a remembered 404."""
        found = self.found
        return found is not None and found.fresh and isinstance(found.entry, SharedMissing)


_DEFAULT_POLICY = CachePolicy()

POLL_INTERVAL = 0.025
"""Seconds between two looks at the shared cache while another process fetches an id."""


class SharedTier:
    """A `SharedCache` behind a session's `MemoryCache`, and the lease protocol.

    [`GallerySession`][meigen_async.GallerySession] builds one when given a shared cache, and only
    the fetch of a miss uses it. It writes nothing in process: it hands back what it found,
    checked, with the lifetime it has left (no longer than the session would keep it itself),
    and the fetch keeps it as `_core.from_shared` says; an entry that cannot be right is a
    miss, and is deleted from the shared cache. Of concurrent misses for one id
    in several processes, one takes the lease and fetches; the others look again every
    `POLL_INTERVAL` seconds and fetch themselves when the lease is released without a value
    (the holder failed), has expired (the holder died), or after `lease_time` seconds of
    waiting, whichever comes first.

    The shared cache is handed keys, not ids: every entry, lease and remembered 404 is under
    `_shared_codec.shared_key(gallery, id)`, so that sessions on two galleries sharing one
    cache never see each other's images. The in-process tier, the session's own, is keyed
    by id.

    Args:
        shared: The shared tier.
        stale_window: Seconds an image written is kept past its freshness (the in-process
            cache's `stale_window`).
        lease_time: Seconds a lease lasts, and the longest a process waits for another's fetch.
        gallery: The gallery the session asks (`_shared_codec.gallery_of` its `base_url`).
        policy: The session's lifetimes, which cap those read back (see `_shared_codec.check`).
        clock: The wall clock shared entries' expiry times are read with.
        timer: The monotonic clock bounding the wait.

    """

    def __init__(
        self,
        shared: SharedCache,
        *,
        stale_window: float = 0.0,
        lease_time: float,
        gallery: str,
        policy: CachePolicy = _DEFAULT_POLICY,
        clock: Callable[[], float] = time.time,
        timer: Callable[[], float] = time.monotonic,
    ):
        self.shared = shared
        self.stale_window = stale_window
        self.lease_time = lease_time
        self.gallery = gallery
        self.policy = policy
        self._lease_ms = max(1, math.ceil(lease_time * 1000))
        self._clock = clock
        self._timer = timer
        self._forgetting: set[asyncio.Task[None]] = set()
        self._releasing: set[asyncio.Task[None]] = set()

    async def claim(self, image_id: str) -> Claim:
        """What the shared tier holds for `image_id`, and who fetches it upstream if not fresh."""
        if self._forgetting:
            # An invalidate() just before this miss must not be undone by reading the old value.
            await asyncio.wait(set(self._forgetting))
        key = self._key(image_id)
        found = await self._look(image_id, key)
        if found is not None and found.fresh:
            return Claim(found)
        token = await self.shared.try_lease(key, self._lease_ms)
        if token is not None:
            # The previous holder may have stored the value and released its lease between
            # our look and our lease: look again rather than fetch it a second time.
            again = await self._look(image_id, key)
            if again is not None and again.fresh:
                self.release_later(image_id, token)
                return Claim(again)
            return Claim(again or found, token)
        deadline = self._timer() + self.lease_time
        while self._timer() < deadline:
            await asyncio.sleep(POLL_INTERVAL)
            # The lease first, then the value: the holder stores before it releases, so a lease
            # seen gone means a value stored by it is already there to be read.
            held = await self.shared.lease_held(key)
            again = await self._look(image_id, key)
            if again is not None:
                found = again
                if found.fresh:
                    return Claim(found)
            if not held:
                break
        return Claim(found)

    def _key(self, image_id: str) -> str:
        return shared_key(self.gallery, image_id)

    async def _look(self, image_id: str, key: str) -> Checked | None:
        """Read `key` from the shared tier: the entry checked, or None (none, or a bad one)."""
        entry = await self.shared.get(key)
        if entry is None:
            return None
        try:
            return check(entry, image_id, policy=self.policy, now=self._clock())
        except BadEntry as error:
            logger.warning(
                "shared cache entry for %s dropped: %s",
                image_id,
                error,
                extra={"image_id": image_id, "backend": type(self.shared).__name__},
            )
            # Awaited, not left to a task: the fetch that follows must not have its own value
            # deleted by a deletion that comes in after it.
            await self.shared.invalidate(key)
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
            await self.shared.set(key, image, ttl, self.stale_window)
        else:
            await self.shared.set(
                key,
                image,
                ttl,
                self.stale_window,
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
            logger.warning(
                "no running event loop: the shared cache was left unchanged",
                extra={"backend": type(self.shared).__name__},
            )
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

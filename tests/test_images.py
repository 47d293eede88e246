"""The image path: what comes through the shared tier is kept in process by the fetch alone.

Sessions over loopback against FakeGallery, with an in-memory shared cache standing for Redis
(`shared_helpers`); the in-process cache runs on a fake timer, so that no test waits for an
entry to go stale.
"""

from __future__ import annotations

import asyncio
from typing import Any

import attrs
import pytest
from clocks import FakeTimer
from helpers import FAST
from shared_helpers import MemorySharedCache, MemoryStore
from yarl import URL

from meigen_async import GallerySession, ImageNotFound
from meigen_async._shared_codec import decode, encode, gallery_of, shared_key
from meigen_async.session import FETCH_TASK_PREFIX
from meigen_async.shared import SharedImage
from meigen_async.testing import FakeGallery

MAX_AGE = 3600  # FakeGallery's default Cache-Control: public, max-age=3600


@pytest.fixture
def store() -> MemoryStore:
    """One shared backend, as processes share one Redis."""
    return MemoryStore()


def reader(
    gallery: FakeGallery, store: MemoryStore, timer: FakeTimer, **options: Any
) -> GallerySession:
    """A session on the shared `store`, its in-process cache on `timer`.

    A session given a shared cache builds its own in-process one: its clock is set by hand.
    """
    session = GallerySession(gallery.url, cache=MemorySharedCache(store), retry=FAST, **options)
    session._images.cache._timer = timer
    return session


async def shared_by_another_process(
    gallery: FakeGallery, store: MemoryStore, image_id: str
) -> None:
    async with GallerySession(gallery.url, cache=MemorySharedCache(store), retry=FAST) as writer:
        await writer.get_image(image_id)


async def settled() -> None:
    """Until no fetch (a background refresh among them) is in flight, and its end is seen."""
    for _ in range(500):
        if not [t for t in asyncio.all_tasks() if t.get_name().startswith(FETCH_TASK_PREFIX)]:
            await asyncio.sleep(0)  # the done callback of a refresh that just ended
            return
        await asyncio.sleep(0.01)
    raise AssertionError("a fetch is still running")


async def test_an_image_from_the_shared_cache_is_served_stale_while_revalidate_like_an_upstream_one(
    gallery: FakeGallery, store: MemoryStore, timer: FakeTimer
) -> None:
    image_id = gallery.ids[0]
    await shared_by_another_process(gallery, store, image_id)
    async with reader(gallery, store, timer, stale_while_revalidate=600) as session:
        first = await session.get_image(image_id)
        timer.now += MAX_AGE + 60  # past its freshness, within its revalidate window
        assert await session.get_image(image_id) is first  # at once, from process
        await settled()
        stats = session.stats

    # The second get was a hit (served stale), and one background refresh ran.
    assert (stats.cache_misses, stats.cache_hits, stats.refreshed) == (1, 1, 1)
    assert stats.shared_hits == 2  # the first get, and the refresh (still fresh in the store)
    assert gallery.requests[image_id] == 1  # the other process's request only


async def test_a_404_from_the_shared_cache_is_remembered_in_process(
    gallery: FakeGallery, store: MemoryStore, timer: FakeTimer
) -> None:
    async with GallerySession(gallery.url, cache=MemorySharedCache(store)) as writer:
        with pytest.raises(ImageNotFound):
            await writer.get_image("404404")
    async with reader(gallery, store, timer) as session:
        for _ in range(2):
            with pytest.raises(ImageNotFound):
                await session.get_image("404404")
        stats = session.stats

    assert (stats.shared_hits, stats.cache_hits, stats.requests) == (1, 1, 0)


def age(store: MemoryStore, key: str, seconds: float) -> None:
    """Move the image stored under `key` `seconds` into the past, as time would."""
    value, until = store.entries[key]
    entry = decode(value)
    assert isinstance(entry, SharedImage)
    older = attrs.evolve(entry, fresh_until=entry.fresh_until - seconds)
    store.entries[key] = (encode(older), until)


async def test_an_expired_shared_image_is_kept_by_the_fetch_and_revalidated_with_its_etag(
    gallery: FakeGallery, store: MemoryStore, timer: FakeTimer
) -> None:
    image_id = gallery.ids[0]
    await shared_by_another_process(gallery, store, image_id)
    age(store, shared_key(gallery_of(URL(gallery.url)), image_id), MAX_AGE + 60)
    async with reader(gallery, store, timer) as session:
        await session.get_image(image_id)
        assert session.peek(image_id) is not None  # renewed by the 304
        stats = session.stats

    assert (gallery.conditional[image_id], gallery.not_modified[image_id]) == (1, 1)
    assert (stats.revalidated, stats.shared_hits) == (1, 0)

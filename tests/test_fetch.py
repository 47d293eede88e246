"""What a fetch keeps and serves: retried answers cached, errors not, stale-if-error, 404s.

Over loopback against FakeGallery, counting what the server saw. Expiry runs on a fake timer
(a `MemoryCache` given one, passed as `cache=`), so no test waits for an entry to go stale;
one test keeps the real clock, to show the `stale_if_error` keyword itself at work.
"""

from __future__ import annotations

import asyncio

import pytest
from clocks import FakeTimer
from helpers import FAST

from meigen_async import (
    ApiError,
    GallerySession,
    ImageNotFound,
    InvalidResponse,
    ServerError,
)
from meigen_async.cache import MemoryCache
from meigen_async.testing import Answer, FakeGallery

TTL = 5.0


def stale_cache(timer: FakeTimer, stale_window: float = 60.0) -> MemoryCache:
    """An in-process cache on the fake timer, keeping images `stale_window` past expiry."""
    return MemoryCache(4096, stale_window=stale_window, timer=timer)


# -- What is cached ------------------------------------------------------------------------------


async def test_a_successful_retry_is_cached(client: GallerySession, gallery: FakeGallery) -> None:
    image_id = gallery.ids[0]
    gallery.script(image_id, Answer.error(503))
    first = await client.get_image(image_id)
    assert await client.get_image(image_id) is first
    assert gallery.requests[image_id] == 2


async def test_an_error_after_retries_is_not_cached(
    client: GallerySession, gallery: FakeGallery
) -> None:
    image_id = gallery.ids[0]
    gallery.script(image_id, *[Answer.error(503)] * (FAST.max_retries + 1))
    with pytest.raises(ServerError):
        await client.get_image(image_id)
    assert (await client.get_image(image_id)).id == image_id
    assert gallery.requests[image_id] == FAST.max_retries + 2


# -- stale_if_error ------------------------------------------------------------------------------


async def test_stale_if_error_serves_the_expired_image_when_the_upstream_fails(
    gallery: FakeGallery,
) -> None:
    image_id = gallery.ids[0]
    # The real clock, through the keyword: 50 ms is the shortest expiry the check allows.
    async with GallerySession(gallery.url, retry=FAST, ttl=0.05, stale_if_error=60) as client:
        first = await client.get_image(image_id)
        await asyncio.sleep(0.1)
        gallery.script(image_id, *[Answer.error(503)] * (FAST.max_retries + 1))
        assert await client.get_image(image_id) == first
        assert client.stats.stale_served == 1
        assert client.stats.retries == FAST.max_retries
    assert gallery.requests[image_id] == 1 + FAST.max_retries + 1


async def test_an_expired_image_in_the_stale_window_is_served_when_the_upstream_fails(
    gallery: FakeGallery, timer: FakeTimer
) -> None:
    image_id = gallery.ids[0]
    async with GallerySession(gallery.url, retry=FAST, ttl=TTL, cache=stale_cache(timer)) as client:
        first = await client.get_image(image_id)
        timer.now += TTL + 1
        gallery.script(image_id, *[Answer.error(503)] * (FAST.max_retries + 1))
        assert await client.get_image(image_id) == first
        assert client.stats.stale_served == 1
        assert client.stats.retries == FAST.max_retries
    assert gallery.requests[image_id] == 1 + FAST.max_retries + 1


async def test_stale_if_error_covers_transport_failures(
    gallery: FakeGallery, timer: FakeTimer
) -> None:
    image_id = gallery.ids[0]
    async with GallerySession(gallery.url, retry=FAST, ttl=TTL, cache=stale_cache(timer)) as client:
        first = await client.get_image(image_id)
        timer.now += TTL + 1
        gallery.script(image_id, *[Answer.cut_off()] * (FAST.max_retries + 1))
        assert await client.get_image(image_id) == first
        assert client.stats.stale_served == 1


async def test_a_fresh_answer_replaces_the_stale_one(
    gallery: FakeGallery, timer: FakeTimer
) -> None:
    image_id = gallery.ids[0]
    async with GallerySession(gallery.url, retry=FAST, ttl=TTL, cache=stale_cache(timer)) as client:
        await client.get_image(image_id)
        timer.now += TTL + 1
        gallery.script(image_id, Answer.error(503))
        await client.get_image(image_id)
        assert client.stats.stale_served == 0
    assert gallery.requests[image_id] == 3


async def test_without_stale_if_error_the_expired_image_is_not_served(
    gallery: FakeGallery, timer: FakeTimer
) -> None:
    image_id = gallery.ids[0]
    async with GallerySession(
        gallery.url, retry=FAST, ttl=TTL, cache=stale_cache(timer, stale_window=0)
    ) as client:
        await client.get_image(image_id)
        timer.now += TTL + 1
        gallery.script(image_id, *[Answer.error(503)] * (FAST.max_retries + 1))
        with pytest.raises(ServerError):
            await client.get_image(image_id)
        assert client.stats.stale_served == 0


async def test_without_the_stale_if_error_keyword_the_expired_image_is_not_served(
    gallery: FakeGallery,
) -> None:
    image_id = gallery.ids[0]
    # The session's own cache, on the real clock: its stale window is zero by default.
    async with GallerySession(gallery.url, retry=FAST, ttl=0.05) as client:
        await client.get_image(image_id)
        await asyncio.sleep(0.1)
        gallery.script(image_id, *[Answer.error(503)] * (FAST.max_retries + 1))
        with pytest.raises(ServerError):
            await client.get_image(image_id)
        assert client.stats.stale_served == 0


async def test_stale_data_is_not_served_past_the_stale_window(
    gallery: FakeGallery, timer: FakeTimer
) -> None:
    image_id = gallery.ids[0]
    async with GallerySession(
        gallery.url, retry=FAST, ttl=TTL, cache=stale_cache(timer, stale_window=TTL)
    ) as client:
        await client.get_image(image_id)
        timer.now += TTL + TTL + 1
        gallery.script(image_id, *[Answer.error(503)] * (FAST.max_retries + 1))
        with pytest.raises(ServerError):
            await client.get_image(image_id)
        assert client.stats.stale_served == 0


async def test_stale_data_never_masks_a_404(gallery: FakeGallery, timer: FakeTimer) -> None:
    image_id = gallery.ids[0]
    async with GallerySession(gallery.url, retry=FAST, ttl=TTL, cache=stale_cache(timer)) as client:
        await client.get_image(image_id)
        timer.now += TTL + 1
        gallery.script(image_id, Answer.error(404, "Image not found"))
        with pytest.raises(ImageNotFound):
            await client.get_image(image_id)
        # The 404 is what is remembered now, not the stale image.
        with pytest.raises(ImageNotFound):
            await client.get_image(image_id)
        assert client.stats.stale_served == 0
    assert gallery.requests[image_id] == 2


@pytest.mark.parametrize(
    "answer", [Answer.error(403), Answer.html(), Answer.truncated()], ids=["403", "html", "cut"]
)
async def test_stale_data_never_masks_a_non_retryable_error(
    gallery: FakeGallery, timer: FakeTimer, answer: Answer
) -> None:
    image_id = gallery.ids[0]
    async with GallerySession(gallery.url, retry=FAST, ttl=TTL, cache=stale_cache(timer)) as client:
        await client.get_image(image_id)
        timer.now += TTL + 1
        gallery.script(image_id, answer)
        with pytest.raises((ApiError, InvalidResponse)):
            await client.get_image(image_id)
        assert client.stats.stale_served == 0

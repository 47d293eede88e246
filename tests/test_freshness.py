"""Freshness over loopback: validators, 304s, stale-while-revalidate and peek.

Expiry is driven by a fake clock given to the session's `MemoryCache`; what each request
carried, and what was answered, is counted by the `FakeGallery` serving it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from clocks import FakeTimer

from meigen_async import GalleryImage, GallerySession, RetryPolicy, SessionStats
from meigen_async.cache import MemoryCache
from meigen_async.errors import ImageNotFound, InvalidImageId, ServerError
from meigen_async.session import FETCH_TASK_PREFIX
from meigen_async.testing import Answer, FakeGallery

MAX_AGE = "public, max-age=60"
SWR = "public, max-age=60, stale-while-revalidate=600"


@pytest.fixture
async def fresh_gallery(images: list[dict[str, Any]]) -> AsyncIterator[FakeGallery]:
    """The sample gallery, with a minute of freshness."""
    async with FakeGallery(images, cache_control=MAX_AGE) as fake:
        yield fake


def session_on(gallery: FakeGallery, timer: FakeTimer, **options: Any) -> GallerySession:
    options.setdefault("retry", RetryPolicy(max_retries=0))
    return GallerySession(gallery.url, cache=MemoryCache(100, timer=timer), **options)


async def settled(gallery: GallerySession) -> None:
    """Until no fetch is in flight (the background refreshes among them) and their ends are seen."""
    for _ in range(500):
        if not [t for t in asyncio.all_tasks() if t.get_name().startswith(FETCH_TASK_PREFIX)]:
            # One turn more: the done callbacks of a task that just ended (the session's record
            # of a refresh) run after it.
            await asyncio.sleep(0)
            return
        await asyncio.sleep(0.01)
    raise AssertionError("a fetch is still running")


# -- Revalidation --------------------------------------------------------------------------------


async def test_an_expired_image_is_revalidated_with_its_etag_and_a_304_sends_no_body(
    fresh_gallery: FakeGallery, timer: FakeTimer
) -> None:
    image_id = fresh_gallery.ids[0]
    async with session_on(fresh_gallery, timer) as session:
        first = await session.get_image(image_id)
        timer.now += 61
        second = await session.get_image(image_id)
        stats = session.stats

    assert second == first
    assert fresh_gallery.requests[image_id] == 2
    assert fresh_gallery.conditional[image_id] == 1
    assert fresh_gallery.not_modified[image_id] == 1
    assert stats.revalidated == 1


async def test_a_304_renews_the_stored_images_lifetime(
    fresh_gallery: FakeGallery, timer: FakeTimer
) -> None:
    image_id = fresh_gallery.ids[0]
    async with session_on(fresh_gallery, timer) as session:
        await session.get_image(image_id)
        timer.now += 61
        await session.get_image(image_id)
        timer.now += 59  # within the minute the 304 gave
        await session.get_image(image_id)

    assert fresh_gallery.requests[image_id] == 2


async def read_after_a_change(
    gallery: FakeGallery, timer: FakeTimer, *answers: Answer
) -> tuple[GalleryImage, GalleryImage, SessionStats]:
    """An image changed on the server after its first get (123,456 likes), the conditional
    request answered by `answers` first: its get at expiry, another 30 s later, the stats."""
    image_id = gallery.ids[0]
    async with session_on(gallery, timer) as session:
        await session.get_image(image_id)
        gallery.images[image_id]["likes"] = 123_456
        gallery.script(image_id, *answers)
        timer.now += 61
        changed = await session.get_image(image_id)
        timer.now += 30
        again = await session.get_image(image_id)
        return changed, again, session.stats


async def test_a_changed_image_is_answered_with_a_200_that_replaces_it(
    fresh_gallery: FakeGallery, timer: FakeTimer
) -> None:
    changed, again, stats = await read_after_a_change(fresh_gallery, timer)

    image_id = fresh_gallery.ids[0]
    assert changed.likes == again.likes == 123_456
    assert fresh_gallery.conditional[image_id] == 1
    assert fresh_gallery.not_modified[image_id] == 0
    assert fresh_gallery.requests[image_id] == 2
    assert stats.revalidated == 0


async def test_a_304_naming_another_etag_renews_nothing_and_one_plain_request_follows(
    fresh_gallery: FakeGallery, timer: FakeTimer
) -> None:
    # The conditional request answered "not modified", yet under the new version's tag.
    lying = Answer(status=304, body=b"", headers={"ETag": '"v2"', "Cache-Control": MAX_AGE})
    changed, again, stats = await read_after_a_change(fresh_gallery, timer, lying)

    image_id = fresh_gallery.ids[0]
    assert changed.likes == again.likes == 123_456
    assert fresh_gallery.requests[image_id] == 3
    assert fresh_gallery.conditional[image_id] == 1  # the last one carried no validators
    assert stats.revalidated == 0


async def test_an_image_without_validators_is_fetched_again_plainly(
    images: list[dict[str, Any]], timer: FakeTimer
) -> None:
    async with FakeGallery(images, cache_control=MAX_AGE, validators=False) as gallery:
        image_id = gallery.ids[0]
        async with session_on(gallery, timer) as session:
            await session.get_image(image_id)
            timer.now += 61
            await session.get_image(image_id)
            timer.now += 10_000  # long gone: nothing kept to revalidate with
            await session.get_image(image_id)

    assert gallery.requests[image_id] == 3
    assert gallery.conditional[image_id] == 0


async def test_an_expired_image_is_never_the_answer_without_a_revalidate_window(
    fresh_gallery: FakeGallery, timer: FakeTimer
) -> None:
    image_id = fresh_gallery.ids[0]
    fresh_gallery.script(image_id, Answer(), Answer.error(404, "Image not found"))
    async with session_on(fresh_gallery, timer) as session:
        await session.get_image(image_id)
        timer.now += 61
        with pytest.raises(ImageNotFound):
            await session.get_image(image_id)


async def test_a_no_store_answer_removes_the_image_stored_before(
    fresh_gallery: FakeGallery, timer: FakeTimer
) -> None:
    image_id = fresh_gallery.ids[0]
    cache = MemoryCache(100, stale_window=600, timer=timer)
    session = GallerySession(fresh_gallery.url, cache=cache, retry=RetryPolicy(max_retries=0))
    async with session:
        await session.get_image(image_id)
        fresh_gallery.images[image_id]["likes"] = 123_456
        fresh_gallery.extra_headers[image_id] = {"Cache-Control": "no-store"}
        timer.now += 61
        changed = await session.get_image(image_id)
        fresh_gallery.script(image_id, Answer.error(500))
        # Kept, the old image would be served again here, stale-if-error.
        with pytest.raises(ServerError):
            await session.get_image(image_id)

    assert changed.likes == 123_456
    assert fresh_gallery.requests[image_id] == 3


# -- Stale-while-revalidate ----------------------------------------------------------------------


@pytest.mark.slow
async def test_a_stale_hit_answers_at_once_while_the_server_is_slow(
    images: list[dict[str, Any]], timer: FakeTimer
) -> None:
    async with FakeGallery(images, cache_control=SWR) as gallery:
        image_id = gallery.ids[0]
        async with session_on(gallery, timer) as session:
            first = await session.get_image(image_id)
            gallery.delay = 0.5
            timer.now += 61
            started = time.perf_counter()
            stale = await session.get_image(image_id)
            took = time.perf_counter() - started
            await settled(session)
            stats = session.stats

    assert stale == first
    assert took < 0.1
    assert gallery.requests[image_id] == 2
    assert gallery.not_modified[image_id] == 1
    assert stats.refreshed == 1
    assert stats.revalidated == 1


@pytest.mark.slow
async def test_a_burst_of_stale_gets_makes_one_background_request_and_none_waits(
    images: list[dict[str, Any]], timer: FakeTimer
) -> None:
    async with FakeGallery(images, cache_control=SWR) as gallery:
        image_id = gallery.ids[0]
        async with session_on(gallery, timer) as session:
            await session.get_image(image_id)
            gallery.delay = 0.3
            timer.now += 61
            started = time.perf_counter()
            answers = await asyncio.gather(*(session.get_image(image_id) for _ in range(1000)))
            took = time.perf_counter() - started
            await settled(session)
            stats = session.stats

    assert len(answers) == 1000
    assert took < 0.3
    assert gallery.requests[image_id] == 2
    assert stats.refreshed == 1
    assert stats.cache_hits == 1000


@pytest.mark.slow
async def test_the_sessions_stale_while_revalidate_applies_without_the_directive(
    fresh_gallery: FakeGallery, timer: FakeTimer
) -> None:
    image_id = fresh_gallery.ids[0]
    async with session_on(fresh_gallery, timer, stale_while_revalidate=30) as session:
        await session.get_image(image_id)
        fresh_gallery.delay = 0.5
        timer.now += 70
        started = time.perf_counter()
        await session.get_image(image_id)
        took = time.perf_counter() - started
        await settled(session)

    assert took < 0.1
    assert fresh_gallery.requests[image_id] == 2


async def test_a_failed_refresh_is_logged_once_counted_and_never_raised(
    images: list[dict[str, Any]], timer: FakeTimer, caplog: pytest.LogCaptureFixture
) -> None:
    async with FakeGallery(images, cache_control=SWR) as gallery:
        image_id = gallery.ids[0]
        async with session_on(gallery, timer) as session:
            first = await session.get_image(image_id)
            gallery.script(image_id, Answer.error(500))
            timer.now += 61
            with caplog.at_level(logging.WARNING, logger="meigen_async"):
                answers = await asyncio.gather(*(session.get_image(image_id) for _ in range(50)))
                await settled(session)
            stats = session.stats
            # The entry stays until its window ends: still the answer.
            still = session.peek(image_id) or await session.get_image(image_id)

    assert answers == [first] * 50
    assert still == first
    refresh_logs = [r for r in caplog.records if "background refresh" in r.getMessage()]
    assert len(refresh_logs) == 1
    # Its fields as `extra`, for a JSON log formatter.
    fields = refresh_logs[0].__dict__
    assert (fields["image_id"], fields["attempt"], fields["status"]) == (image_id, 1, 500)
    assert fields["retry_after"] > 0
    assert stats.errors == 1
    assert stats.refreshed == 0
    assert stats.stale_served == 0


def refresh_warnings(caplog: pytest.LogCaptureFixture) -> int:
    return sum("background refresh" in record.getMessage() for record in caplog.records)


async def test_a_failed_refresh_is_not_started_again_before_its_backoff_and_warns_once(
    images: list[dict[str, Any]], timer: FakeTimer, caplog: pytest.LogCaptureFixture
) -> None:
    # A first back-off of exactly one second on the fake clock.
    retry = RetryPolicy(max_retries=0, backoff_base=2.0, random=lambda: 0.5)
    async with FakeGallery(images, cache_control=SWR) as gallery:
        image_id = gallery.ids[0]
        async with session_on(gallery, timer, retry=retry) as session:
            await session.get_image(image_id)
            gallery.script(image_id, *[Answer.error(500)] * 200)
            timer.now += 61
            with caplog.at_level(logging.WARNING, logger="meigen_async"):
                for _ in range(100):  # one after another: none joins a refresh in flight
                    await session.get_image(image_id)
                    await settled(session)
                during = (gallery.requests[image_id], refresh_warnings(caplog))
                timer.now += 1.0
                for _ in range(100):
                    await session.get_image(image_id)
                    await settled(session)
                after = (gallery.requests[image_id], refresh_warnings(caplog))

    assert during == (2, 1)
    assert after == (3, 2)


async def test_a_failed_refresh_waits_out_its_retry_after(
    images: list[dict[str, Any]], timer: FakeTimer
) -> None:
    retry = RetryPolicy(max_retries=0, backoff_base=0.01)
    async with FakeGallery(images, cache_control=SWR) as gallery:
        image_id = gallery.ids[0]
        async with session_on(gallery, timer, retry=retry) as session:
            await session.get_image(image_id)
            gallery.script(image_id, *[Answer.error(503, headers={"Retry-After": "120"})] * 50)
            timer.now += 61
            seen = []
            for _ in range(13):  # a get every 10 s for 120 s, then one more
                await session.get_image(image_id)
                await settled(session)
                seen.append(gallery.requests[image_id])
                timer.now += 10

    assert seen == [2] * 12 + [3]


async def test_a_failed_refresh_is_not_rescued_by_stale_if_error_as_if_it_were_done(
    images: list[dict[str, Any]], timer: FakeTimer
) -> None:
    async with FakeGallery(images, cache_control=SWR) as gallery:
        image_id = gallery.ids[0]
        cache = MemoryCache(100, stale_window=600, timer=timer)
        async with GallerySession(
            gallery.url, cache=cache, retry=RetryPolicy(max_retries=0)
        ) as session:
            await session.get_image(image_id)
            gallery.script(image_id, Answer.error(500))
            timer.now += 61
            await session.get_image(image_id)
            await settled(session)
            stats = session.stats

    assert (stats.errors, stats.stale_served, stats.refreshed) == (1, 0, 0)


async def test_close_during_a_refresh_ends_it_and_leaves_no_task(
    images: list[dict[str, Any]], timer: FakeTimer
) -> None:
    async with FakeGallery(images, cache_control=SWR) as gallery:
        image_id = gallery.ids[0]
        session = session_on(gallery, timer)
        async with session:
            await session.get_image(image_id)
            gallery.delay = 5.0
            timer.now += 61
            await session.get_image(image_id)
            for _ in range(200):  # until the refresh has reached the server
                if gallery.in_flight:
                    break
                await asyncio.sleep(0.01)
            started = time.perf_counter()
        took = time.perf_counter() - started

    assert took < 1.0
    assert gallery.requests[image_id] == 2
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith(FETCH_TASK_PREFIX)]
    assert session.stats.refreshed == 0


@pytest.mark.slow
async def test_a_miss_during_a_refresh_joins_it_rather_than_fetching_again(
    images: list[dict[str, Any]], timer: FakeTimer
) -> None:
    async with FakeGallery(images, cache_control=SWR) as gallery:
        image_id = gallery.ids[0]
        async with session_on(gallery, timer) as session:
            await session.get_image(image_id)
            gallery.delay = 0.2
            timer.now += 61
            await session.get_image(image_id)  # starts the refresh
            results = await session.get_images([image_id, image_id])
            await settled(session)

    assert len(results) == 2
    assert gallery.requests[image_id] == 2


# -- peek ----------------------------------------------------------------------------------------


async def test_peek_gives_a_fresh_image_with_no_request(
    fresh_gallery: FakeGallery, timer: FakeTimer
) -> None:
    image_id = fresh_gallery.ids[0]
    async with session_on(fresh_gallery, timer) as session:
        image = await session.get_image(image_id)
        peeked = session.peek(image_id)
        stats = session.stats

    assert peeked == image
    assert fresh_gallery.requests[image_id] == 1
    assert (stats.cache_hits, stats.cache_misses, stats.requests) == (1, 1, 1)


async def test_peek_of_an_uncached_id_is_none_with_no_request(
    fresh_gallery: FakeGallery, timer: FakeTimer
) -> None:
    async with session_on(fresh_gallery, timer) as session:
        peeked = session.peek(fresh_gallery.ids[0])
        stats = session.stats

    assert peeked is None
    assert fresh_gallery.total_requests == 0
    assert (stats.cache_hits, stats.cache_misses) == (0, 1)


async def test_peek_of_an_image_in_its_revalidate_window_is_none_and_starts_nothing(
    images: list[dict[str, Any]], timer: FakeTimer
) -> None:
    async with FakeGallery(images, cache_control=SWR) as gallery:
        image_id = gallery.ids[0]
        async with session_on(gallery, timer) as session:
            await session.get_image(image_id)
            timer.now += 61
            peeked = session.peek(image_id)
            await asyncio.sleep(0.05)

    assert peeked is None
    assert gallery.requests[image_id] == 1


async def test_peek_refuses_an_invalid_id(fresh_gallery: FakeGallery, timer: FakeTimer) -> None:
    async with session_on(fresh_gallery, timer) as session:
        with pytest.raises(InvalidImageId):
            session.peek("../etc/passwd")

"""GallerySession against the FakeGallery over loopback, counting what the server saw."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing, asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from clocks import FakeTimer
from helpers import in_backoff
from multidict import CIMultiDict

from meigen_async import (
    GalleryImage,
    GallerySession,
    ImageNotFound,
    InvalidImageId,
    InvalidResponse,
    RetryPolicy,
    TransportError,
)
from meigen_async._searcher import SEARCH_TASK_PREFIX
from meigen_async.cache import MemoryCache
from meigen_async.models import structure_image
from meigen_async.session import FETCH_TASK_PREFIX
from meigen_async.testing import Answer, FakeGallery

NO_RETRY = RetryPolicy(max_retries=0)
PREFIXES = (FETCH_TASK_PREFIX, SEARCH_TASK_PREFIX)


def fetch_tasks() -> list[asyncio.Task[Any]]:
    """Upstream fetches still running."""
    return [
        t
        for t in asyncio.all_tasks()
        if t.get_name().startswith(FETCH_TASK_PREFIX) and not t.done()
    ]


# -- Single images -------------------------------------------------------------------------------


async def test_get_image_returns_the_structured_image(
    session: GallerySession, images: list[dict[str, Any]]
) -> None:
    image = await session.get_image(images[0]["id"])
    assert image == structure_image(images[0])


async def test_repeated_gets_are_served_from_the_cache(
    session: GallerySession, gallery: FakeGallery
) -> None:
    image_id = gallery.ids[0]
    first = await session.get_image(image_id)
    second = await session.get_image(image_id)
    assert second is first
    assert gallery.requests[image_id] == 1
    assert session.stats.cache_hits == 1
    assert session.stats.requests == 1


async def test_concurrent_gets_share_one_request(
    slow_session: GallerySession, slow_gallery: FakeGallery
) -> None:
    image_id = slow_gallery.ids[1]
    results = await asyncio.gather(*(slow_session.get_image(image_id) for _ in range(50)))
    assert slow_gallery.requests[image_id] == 1
    assert all(r is results[0] for r in results)
    assert slow_session.stats.coalesced == 49


async def test_cancelling_one_waiter_leaves_the_others_fetch_running(
    slow_session: GallerySession, slow_gallery: FakeGallery
) -> None:
    image_id = slow_gallery.ids[2]
    doomed = asyncio.create_task(slow_session.get_image(image_id))
    survivor = asyncio.create_task(slow_session.get_image(image_id))
    await asyncio.sleep(0.01)
    doomed.cancel()
    image = await survivor
    assert image.id == image_id
    assert doomed.cancelled()
    assert slow_gallery.requests[image_id] == 1


async def test_cancelling_every_waiter_cancels_the_request(
    slow_session: GallerySession, slow_gallery: FakeGallery
) -> None:
    image_id = slow_gallery.ids[3]
    waiters = [asyncio.create_task(slow_session.get_image(image_id)) for _ in range(3)]
    await asyncio.sleep(0.01)
    assert len(fetch_tasks()) == 1
    for waiter in waiters:
        waiter.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    await asyncio.sleep(0)
    assert fetch_tasks() == []
    # A later call starts afresh rather than joining the cancelled fetch.
    assert (await slow_session.get_image(image_id)).id == image_id
    assert slow_gallery.requests[image_id] == 2


async def test_a_cancelled_get_leaves_the_session_usable(
    slow_session: GallerySession, slow_gallery: FakeGallery
) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(slow_session.get_image(slow_gallery.ids[4]), 0.01)
    assert (await slow_session.get_image(slow_gallery.ids[4])).id == slow_gallery.ids[4]


async def test_invalid_id_raises_before_any_request(
    session: GallerySession, gallery: FakeGallery
) -> None:
    for bad in ["", "a/b", "../etc", "x" * 129, "space d"]:
        with pytest.raises(InvalidImageId):
            await session.get_image(bad)
    assert gallery.total_requests == 0


async def test_only_the_image_path_is_requested(
    session: GallerySession, gallery: FakeGallery
) -> None:
    await session.get_images([*gallery.ids[:3], "unknown_id-1"], return_exceptions=True)
    assert sorted(gallery.paths) == sorted(
        f"/api/images/{i}" for i in [*gallery.ids[:3], "unknown_id-1"]
    )


async def test_user_agent_names_the_library_by_default(
    session: GallerySession, gallery: FakeGallery
) -> None:
    await session.get_image(gallery.ids[0])
    (agent,) = gallery.user_agents
    assert agent.startswith("meigen-async/")


async def test_user_agent_can_be_set(gallery: FakeGallery) -> None:
    async with GallerySession(gallery.url, user_agent="my-bot/1.0") as client:
        await client.get_image(gallery.ids[0])
    assert gallery.user_agents == {"my-bot/1.0": 1}


# -- Errors --------------------------------------------------------------------------------------


async def test_a_missing_image_is_remembered_for_negative_ttl(
    session: GallerySession, gallery: FakeGallery
) -> None:
    for _ in range(3):
        with pytest.raises(ImageNotFound) as caught:
            await session.get_image("does-not-exist")
    assert caught.value.status == 404
    assert caught.value.image_id == "does-not-exist"
    assert gallery.requests["does-not-exist"] == 1


async def test_a_zero_negative_ttl_asks_again_after_a_404(gallery: FakeGallery) -> None:
    async with GallerySession(gallery.url, negative_ttl=0) as client:
        for _ in range(2):
            with pytest.raises(ImageNotFound):
                await client.get_image("does-not-exist")
    assert gallery.requests["does-not-exist"] == 2


async def test_an_image_added_after_its_404_is_found_once_invalidated(
    session: GallerySession, gallery: FakeGallery, images: list[dict[str, Any]]
) -> None:
    with pytest.raises(ImageNotFound):
        await session.get_image("late-arrival")
    gallery.images["late-arrival"] = {**images[0], "id": "late-arrival"}
    session.invalidate("late-arrival")
    assert (await session.get_image("late-arrival")).id == "late-arrival"


async def test_a_server_error_is_not_cached(images: list[dict[str, Any]]) -> None:
    async with FakeGallery(images) as fake, GallerySession(fake.url) as client:
        image_id = fake.ids[0]
        original = fake.images.pop(image_id)
        fake.images[image_id] = {"id": 12345}  # the wrong type: an InvalidResponse
        with pytest.raises(InvalidResponse, match="id"):
            await client.get_image(image_id)
        fake.images[image_id] = original
        assert (await client.get_image(image_id)).id == image_id
        assert fake.requests[image_id] == 2


async def test_an_oversized_body_is_an_invalid_response(gallery: FakeGallery) -> None:
    async with GallerySession(gallery.url, max_body_bytes=100) as client:
        with pytest.raises(InvalidResponse, match="max_body_bytes"):
            await client.get_image(gallery.ids[0])


@pytest.mark.slow
async def test_a_slow_server_is_a_transport_error(images: list[dict[str, Any]]) -> None:
    async with (
        FakeGallery(images, delay=0.3) as fake,
        GallerySession(fake.url, timeout=0.05, retry=NO_RETRY) as client,
    ):
        with pytest.raises(TransportError, match="timed out") as caught:
            await client.get_image(fake.ids[0])
    assert caught.value.image_id == fake.ids[0]


async def test_an_unreachable_server_is_a_transport_error() -> None:
    fake = await FakeGallery().start()
    url = fake.url
    await fake.close()
    async with GallerySession(url, retry=NO_RETRY) as client:
        with pytest.raises(TransportError):
            await client.get_image("123")
        assert client.stats.errors == 1


# -- Caching rules -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cache_control", "age", "requests"),
    [
        ("public, max-age=3600", None, 1),
        ("public, s-maxage=3600", None, 1),
        ("public, max-age=3600", "3600", 2),
        ("public, max-age=60", "120", 2),
        ("no-store", None, 2),
        ("no-cache", None, 2),
        # The in-process cache is a private cache: it may keep a private response.
        ("private, max-age=3600", None, 1),
        ("max-age=0, max-age=3600", None, 2),
        ("max-age=1.5", None, 2),
        (None, None, 1),
    ],
)
async def test_cache_control_and_age_decide_whether_a_response_is_reused(
    images: list[dict[str, Any]], cache_control: str | None, age: str | None, requests: int
) -> None:
    async with FakeGallery(images, cache_control=cache_control) as fake:
        image_id = fake.ids[0]
        if age is not None:
            fake.extra_headers[image_id] = {"Age": age}
        async with GallerySession(fake.url) as client:
            await client.get_image(image_id)
            await client.get_image(image_id)
    assert fake.requests[image_id] == requests


@asynccontextmanager
async def serving(
    data: dict[str, Any], headers: list[tuple[str, str]]
) -> AsyncIterator[tuple[str, Counter[str]]]:
    """A one-image server on 127.0.0.1 answering with ``headers`` (repeats kept as lines)."""
    seen: Counter[str] = Counter()
    envelope = json.dumps({"success": True, "data": data})

    async def image(request: web.Request) -> web.Response:
        seen[request.match_info["image_id"]] += 1
        return web.Response(
            text=envelope, content_type="application/json", headers=CIMultiDict(headers)
        )

    app = web.Application()
    app.router.add_get("/api/images/{image_id}", image)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("lines", "requests"),
    [
        ([("Cache-Control", "max-age=60"), ("Cache-Control", "no-store")], 2),
        ([("Cache-Control", "max-age=60"), ("Cache-Control", "max-age=0")], 2),
        ([("Cache-Control", "max-age=60"), ("Vary", "Accept"), ("Vary", "*")], 2),
        ([("Cache-Control", "public"), ("Cache-Control", "max-age=60")], 1),
    ],
    ids=["no-store", "conflicting-max-age", "vary-star", "max-age-second"],
)
async def test_every_line_of_a_repeated_header_is_read(
    images: list[dict[str, Any]], lines: list[tuple[str, str]], requests: int
) -> None:
    image_id = images[0]["id"]
    async with serving(images[0], lines) as (url, seen), GallerySession(url) as client:
        await client.get_image(image_id)
        await client.get_image(image_id)
    assert seen[image_id] == requests


async def test_an_expired_entry_is_fetched_again(gallery: FakeGallery) -> None:
    async with GallerySession(gallery.url, ttl=0.05) as client:
        await client.get_image(gallery.ids[0])
        await asyncio.sleep(0.1)
        await client.get_image(gallery.ids[0])
    assert gallery.requests[gallery.ids[0]] == 2


async def test_max_ttl_caps_the_server_lifetime(gallery: FakeGallery) -> None:
    async with GallerySession(gallery.url, max_ttl=0.05) as client:
        await client.get_image(gallery.ids[0])
        await asyncio.sleep(0.1)
        await client.get_image(gallery.ids[0])
    assert gallery.requests[gallery.ids[0]] == 2


async def test_a_zero_cache_size_disables_caching(gallery: FakeGallery) -> None:
    async with GallerySession(gallery.url, cache_size=0) as client:
        for _ in range(3):
            await client.get_image(gallery.ids[0])
        for _ in range(2):
            with pytest.raises(ImageNotFound):
                await client.get_image("nope")
    assert gallery.requests[gallery.ids[0]] == 3
    assert gallery.requests["nope"] == 2


async def test_invalidate_forgets_one_image(session: GallerySession, gallery: FakeGallery) -> None:
    a, b = gallery.ids[:2]
    await session.get_images([a, b])
    session.invalidate(a)
    await session.get_images([a, b])
    assert (gallery.requests[a], gallery.requests[b]) == (2, 1)


async def test_clear_cache_forgets_everything(
    session: GallerySession, gallery: FakeGallery
) -> None:
    await session.get_images(gallery.ids[:5])
    session.clear_cache()
    await session.get_images(gallery.ids[:5])
    assert all(gallery.requests[i] == 2 for i in gallery.ids[:5])


# -- Bulk ----------------------------------------------------------------------------------------


async def test_get_images_fetches_each_distinct_id_once_in_input_order(
    session: GallerySession, gallery: FakeGallery
) -> None:
    ids = gallery.ids[:10]
    wanted = [*ids, *reversed(ids), ids[3]]
    result = await session.get_images(wanted)
    assert [image.id for image in result] == wanted
    assert all(gallery.requests[i] == 1 for i in ids)
    assert gallery.total_requests == 10


async def test_get_images_raises_the_first_error(
    session: GallerySession, gallery: FakeGallery
) -> None:
    with pytest.raises(ImageNotFound) as caught:
        await session.get_images([*gallery.ids[:5], "missing-one"])
    assert caught.value.image_id == "missing-one"


async def test_get_images_raises_the_first_error_while_other_fetches_are_still_pending(
    session: GallerySession, gallery: FakeGallery
) -> None:
    held = gallery.ids[0]
    gallery.script(held, Answer.slow(60))
    # Waiting for every fetch would take the held one's minute: the bound fails it first.
    async with asyncio.timeout(5):
        with pytest.raises(ImageNotFound):
            await session.get_images([held, "missing-one"])
    assert fetch_tasks() == []  # the held fetch, cancelled


async def test_get_images_with_return_exceptions_puts_errors_in_place(
    session: GallerySession, gallery: FakeGallery
) -> None:
    result = await session.get_images(
        [gallery.ids[0], "missing-one", "bad id", gallery.ids[0]], return_exceptions=True
    )
    assert isinstance(result[0], GalleryImage)
    assert isinstance(result[1], ImageNotFound)
    assert isinstance(result[2], InvalidImageId)
    assert result[3] is result[0]


async def test_get_images_rejects_an_invalid_id_before_any_request(
    session: GallerySession, gallery: FakeGallery
) -> None:
    with pytest.raises(InvalidImageId):
        await session.get_images([*gallery.ids[:5], "bad/id"])
    assert gallery.total_requests == 0


async def test_get_images_reports_unhashable_ids_in_place_as_invalid(
    session: GallerySession, gallery: FakeGallery
) -> None:
    wanted = gallery.ids[0]
    result = await session.get_images(
        [wanted, ["a", "list"], {"a": "dict"}, wanted],  # type: ignore[list-item]
        return_exceptions=True,
    )
    assert [type(r) for r in result] == [GalleryImage, InvalidImageId, InvalidImageId, GalleryImage]
    assert result[3] is result[0]
    assert gallery.total_requests == 1


async def test_get_images_raises_invalid_for_an_unhashable_id_before_any_request(
    session: GallerySession, gallery: FakeGallery
) -> None:
    with pytest.raises(InvalidImageId, match="got list"):
        await session.get_images([*gallery.ids[:5], ["a", "list"]])  # type: ignore[list-item]
    assert gallery.total_requests == 0


@pytest.mark.parametrize("ids", ["123", b"123"])
@pytest.mark.parametrize("return_exceptions", [False, True])
async def test_get_images_refuses_a_single_string_of_ids(
    session: GallerySession, gallery: FakeGallery, ids: Any, return_exceptions: bool
) -> None:
    with pytest.raises(TypeError, match=r"iterable of ids, not a single .*use get_image"):
        await session.get_images(ids, return_exceptions=return_exceptions)
    assert gallery.total_requests == 0


async def test_iter_images_refuses_a_single_string_of_ids(
    session: GallerySession, gallery: FakeGallery
) -> None:
    with pytest.raises(TypeError, match="iterable of ids, not a single str"):
        async for _ in session.iter_images("123"):
            pass
    assert gallery.total_requests == 0


async def test_cancelling_get_images_leaves_no_fetch_behind(
    slow_session: GallerySession, slow_gallery: FakeGallery
) -> None:
    bulk = asyncio.create_task(slow_session.get_images(slow_gallery.ids))
    await asyncio.sleep(0.02)
    bulk.cancel()
    with pytest.raises(asyncio.CancelledError):
        await bulk
    assert fetch_tasks() == []
    assert (await slow_session.get_image(slow_gallery.ids[0])).id == slow_gallery.ids[0]


@pytest.mark.slow
async def test_concurrency_bounds_requests_in_flight_across_calls(
    slow_gallery: FakeGallery,
) -> None:
    ids = slow_gallery.ids
    # A caller's own aiohttp session has no limit of ours on its connector.
    async with (
        aiohttp.ClientSession() as http,
        GallerySession(slow_gallery.url, concurrency=3, session=http) as client,
    ):
        await asyncio.gather(
            client.get_images(ids[:20]),
            client.get_images(ids[20:40]),
            *(client.get_image(i) for i in ids[40:]),
        )
    assert slow_gallery.max_in_flight == 3


async def test_iter_images_yields_a_result_per_id_errors_included(
    session: GallerySession, gallery: FakeGallery
) -> None:
    ids = [*gallery.ids[:5], "missing-one", "bad id"]
    results = [r async for r in session.iter_images(ids)]
    by_id = {r.id: r for r in results}
    assert sorted(by_id) == sorted(ids)
    assert all(by_id[i].ok and isinstance(by_id[i].image, GalleryImage) for i in gallery.ids[:5])
    assert isinstance(by_id["missing-one"].error, ImageNotFound)
    assert isinstance(by_id["bad id"].error, InvalidImageId)
    assert not by_id["bad id"].ok


async def test_iter_images_accepts_an_async_iterable(
    session: GallerySession, gallery: FakeGallery
) -> None:
    async def ids() -> AsyncIterator[str]:
        for image_id in gallery.ids[:8]:
            await asyncio.sleep(0)
            yield image_id

    results = [r async for r in session.iter_images(ids())]
    assert sorted(r.id for r in results) == sorted(gallery.ids[:8])


@pytest.mark.slow
async def test_iter_images_consumes_ids_lazily_and_keeps_concurrency_in_flight(
    slow_gallery: FakeGallery,
) -> None:
    pulled = 0

    def ids() -> Iterator[str]:
        nonlocal pulled
        for image_id in slow_gallery.ids:
            pulled += 1
            yield image_id

    seen = 0
    async with GallerySession(slow_gallery.url, concurrency=4) as client:
        async for _ in client.iter_images(ids()):
            seen += 1
            assert pulled - seen <= 4
    assert seen == len(slow_gallery.ids)
    assert slow_gallery.max_in_flight == 4


async def test_iter_images_counts_duplicates_in_flight_against_its_read_ahead(
    slow_gallery: FakeGallery,
) -> None:
    hot = slow_gallery.ids[0]
    wanted = [hot] * 20 + slow_gallery.ids[1:5]
    pulled = 0

    def ids() -> Iterator[str]:
        nonlocal pulled
        for image_id in wanted:
            pulled += 1
            yield image_id

    seen = 0
    async with GallerySession(slow_gallery.url, concurrency=4) as client:
        async for result in client.iter_images(ids()):
            seen += 1
            assert result.ok
            assert pulled - seen <= 4
    assert seen == len(wanted)
    assert slow_gallery.requests[hot] == 1


async def test_leaving_iter_images_early_cancels_its_fetches(
    slow_session: GallerySession, slow_gallery: FakeGallery
) -> None:
    # The invalid id completes at once, while the slow fetches behind it are still running.
    ids = ["bad id", *slow_gallery.ids]
    async with aclosing(slow_session.iter_images(ids)) as results:
        async for result in results:
            assert isinstance(result.error, InvalidImageId)
            break
    assert fetch_tasks() == []


async def test_iter_images_yields_cached_ids_without_a_request(
    session: GallerySession, gallery: FakeGallery
) -> None:
    await session.get_images(gallery.ids[:5])
    results = [r async for r in session.iter_images(gallery.ids[:5])]
    assert len(results) == 5
    assert gallery.total_requests == 5


# -- Lifecycle -----------------------------------------------------------------------------------


async def test_close_is_idempotent(gallery: FakeGallery) -> None:
    client = GallerySession(gallery.url)
    await client.get_image(gallery.ids[0])
    await client.close()
    await client.close()
    assert client.closed


async def test_a_closed_session_refuses_new_requests(gallery: FakeGallery) -> None:
    client = GallerySession(gallery.url)
    await client.close()
    with pytest.raises(RuntimeError, match="closed"):
        await client.get_image(gallery.ids[0])


async def test_closing_with_a_fetch_in_flight_fails_its_waiters_cleanly(
    slow_gallery: FakeGallery,
) -> None:
    client = GallerySession(slow_gallery.url)
    waiter = asyncio.create_task(client.get_image(slow_gallery.ids[0]))
    await asyncio.sleep(0.01)
    await client.close()
    with pytest.raises(TransportError, match="closed"):
        await waiter
    assert fetch_tasks() == []


async def test_close_ends_a_refresh_and_a_search_page_in_flight_on_a_stalling_server(
    images: list[dict[str, Any]],
) -> None:
    timer = FakeTimer()
    swr = "public, max-age=60, stale-while-revalidate=600"
    async with (
        FakeGallery(images, cache_control=swr) as gallery,
        # The caller's own HTTP session, which close() leaves open: only cancelling ends the
        # requests in flight.
        aiohttp.ClientSession() as http,
    ):
        image_id = gallery.ids[0]
        client = GallerySession(
            gallery.url, session=http, retry=NO_RETRY, cache=MemoryCache(10, timer=timer)
        )
        await client.get_image(image_id)
        gallery.delay = 3600.0  # every request from now on stalls
        timer.now += 61
        await client.get_image(image_id)  # served stale; its refresh starts
        page = asyncio.create_task(client.search("garden"))
        for _ in range(200):  # until both requests have reached the server
            if gallery.in_flight == 2:
                break
            await asyncio.sleep(0.01)
        assert gallery.in_flight == 2
        async with asyncio.timeout(2):
            await client.close()
        running = [t for t in asyncio.all_tasks() if t.get_name().startswith(PREFIXES)]
        async with asyncio.timeout(2):
            with pytest.raises(TransportError, match="closed while search"):
                await page

    assert running == []
    assert client.stats.refreshed == 0


class DeafToCancellation:
    """A SharedCache whose get, like redis-py's own wait_for when the reply lands as the
    cancellation does, loses every cancellation until its reply comes, 50 ms on."""

    def __init__(self) -> None:
        self.asked = asyncio.Event()

    async def get(self, image_id: str) -> None:
        self.asked.set()
        reply = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(0.05, reply.set_result, None)
        while not reply.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(reply)

    async def try_lease(self, image_id: str, ms: int) -> str | None:
        return "token"

    async def lease_held(self, image_id: str) -> bool:
        return False

    async def release(self, image_id: str, token: str) -> None:
        pass

    async def set(
        self, image_id: str, image: GalleryImage, ttl: float, stale_window: float
    ) -> None:
        pass

    async def set_missing(self, image_id: str, ttl: float) -> None:
        pass

    async def invalidate(self, image_id: str) -> None:
        pass

    async def clear(self) -> None:
        pass

    async def close(self) -> None:
        pass


async def test_close_waits_for_a_fetch_whose_waiter_left_and_that_lost_its_cancellation(
    gallery: FakeGallery,
) -> None:
    cache = DeafToCancellation()
    client = GallerySession(gallery.url, cache=cache)
    waiter = asyncio.create_task(client.get_image(gallery.ids[0]))
    await cache.asked.wait()
    waiter.cancel()  # the last waiter leaves: the fetch is cancelled, and runs on
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await client.close()
    # Ran on into "this GallerySession is closed": ended, and its error retrieved by close()
    # (the loop-errors fixture fails this test on a "Task exception was never retrieved").
    assert fetch_tasks() == []
    assert gallery.total_requests == 0


@pytest.mark.slow
async def test_a_fetch_that_lost_its_cancellation_and_fails_reports_nothing_to_the_loop(
    images: list[dict[str, Any]],
) -> None:
    async with FakeGallery(images, delay=0.05) as gallery:
        cache = DeafToCancellation()
        async with GallerySession(gallery.url, cache=cache, retry=NO_RETRY) as client:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(client.get_image("no-such-image"), 0.01)
            # The fetch runs on without a waiter, gets its 404, and ends.
            [orphan] = fetch_tasks()
            # Neither awaited nor asked for its exception here: either would retrieve it.
            await asyncio.wait([orphan], timeout=5)
            assert orphan.done()
            assert not orphan.cancelled()
    assert gallery.requests["no-such-image"] == 1
    # Its 404 reached nobody: the session retrieved it, or the loop-errors fixture fails this.


async def test_a_session_passed_in_is_used_and_never_closed(gallery: FakeGallery) -> None:
    async with aiohttp.ClientSession() as http:
        async with GallerySession(gallery.url, session=http) as client:
            await client.get_image(gallery.ids[0])
        assert not http.closed
        async with http.get(f"{gallery.url}/api/images/{gallery.ids[0]}") as resp:
            assert resp.status == 200
    assert gallery.requests[gallery.ids[0]] == 2


async def test_stats_is_a_snapshot(session: GallerySession, gallery: FakeGallery) -> None:
    before = session.stats
    await session.get_image(gallery.ids[0])
    assert before.requests == 0
    assert session.stats.requests == 1


@pytest.mark.parametrize(
    "option", [("concurrency", 0), ("timeout", 0), ("cache_size", -1), ("max_body_bytes", 0)]
)
def test_nonsense_options_are_refused(option: tuple[str, float]) -> None:
    name, value = option
    with pytest.raises(ValueError, match=name):
        GallerySession(**{name: value})  # type: ignore[arg-type]


def test_a_base_url_that_is_not_an_absolute_http_url_is_refused() -> None:
    with pytest.raises(ValueError, match="base_url"):
        GallerySession("www.meigen.ai")


@pytest.mark.slow
async def test_the_timeout_applies_to_a_callers_own_session(images: list[dict[str, Any]]) -> None:
    async with (
        FakeGallery(images, delay=0.3) as fake,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http,
        GallerySession(fake.url, timeout=0.05, retry=NO_RETRY, session=http) as client,
    ):
        with pytest.raises(TransportError, match="timed out"):
            await client.get_image(fake.ids[0])
        assert not http.closed


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("rate_limit", 0),
        ("rate_limit", math.inf),
        ("rate_limit", math.nan),
        ("stale_if_error", -1),
        ("timeout", math.inf),
        ("timeout", math.nan),
        ("media_timeout", math.inf),
        ("media_timeout", -1),
    ],
)
def test_nonsense_resilience_options_are_refused(option: str, value: float) -> None:
    with pytest.raises(ValueError, match=option):
        GallerySession(**{option: value})


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("max_ttl", -1),  # which used to be taken, and kept nothing at all
        ("ttl", -1),
        ("default_ttl", math.nan),
        ("negative_ttl", -0.5),
        ("ttl", math.inf),
        ("stale_while_revalidate", math.inf),
        ("stale_if_error", math.nan),
        ("search_ttl", math.inf),
    ],
)
def test_a_lifetime_that_is_no_number_of_seconds_is_refused_at_construction(
    option: str, value: float
) -> None:
    with pytest.raises(ValueError, match=f"{option} must be a finite number of seconds"):
        GallerySession(**{option: value})


# -- Cancellation during a backoff ----------------------------------------------------------------


async def test_cancelling_one_waiter_during_a_backoff_leaves_the_others_fetch_running(
    gallery: FakeGallery,
) -> None:
    image_id = gallery.ids[0]
    gallery.script(image_id, Answer.error(503))
    async with GallerySession(gallery.url, retry=in_backoff(0.1)) as client:
        doomed = asyncio.create_task(client.get_image(image_id))
        survivor = asyncio.create_task(client.get_image(image_id))
        await asyncio.sleep(0.05)
        assert gallery.requests[image_id] == 1  # the fetch is sleeping before its retry
        doomed.cancel()
        image = await survivor
        assert doomed.cancelled()
        assert image.id == image_id
        assert client.stats.retries == 1
    assert gallery.requests[image_id] == 2


@pytest.mark.slow
async def test_cancelling_every_waiter_during_a_backoff_stops_the_retries(
    gallery: FakeGallery,
) -> None:
    image_id = gallery.ids[0]
    gallery.script(image_id, Answer.error(503))
    async with GallerySession(gallery.url, retry=in_backoff(0.1)) as client:
        waiters = [asyncio.create_task(client.get_image(image_id)) for _ in range(3)]
        await asyncio.sleep(0.05)
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
        await asyncio.sleep(0)
        assert fetch_tasks() == []
        await asyncio.sleep(0.1)
        assert gallery.requests[image_id] == 1
        assert (await client.get_image(image_id)).id == image_id
    assert gallery.requests[image_id] == 2


@pytest.mark.slow
async def test_closing_the_session_during_a_backoff_fails_the_waiter_cleanly(
    gallery: FakeGallery,
) -> None:
    image_id = gallery.ids[0]
    gallery.script(image_id, Answer.error(503))
    client = GallerySession(gallery.url, retry=in_backoff(0.1))
    waiter = asyncio.create_task(client.get_image(image_id))
    await asyncio.sleep(0.05)
    await client.close()
    with pytest.raises(TransportError, match="closed"):
        await waiter
    assert fetch_tasks() == []
    await asyncio.sleep(0.1)
    assert gallery.requests[image_id] == 1


@pytest.mark.slow
async def test_cancelling_get_images_during_backoffs_leaves_no_fetch_behind(
    gallery: FakeGallery,
) -> None:
    ids = gallery.ids[:8]
    for image_id in ids:
        gallery.script(image_id, Answer.error(503))
    async with GallerySession(gallery.url, retry=in_backoff(0.1)) as client:
        bulk = asyncio.create_task(client.get_images(ids))
        await asyncio.sleep(0.05)
        assert len(fetch_tasks()) == len(ids)
        bulk.cancel()
        with pytest.raises(asyncio.CancelledError):
            await bulk
        assert fetch_tasks() == []
        await asyncio.sleep(0.1)
        assert all(gallery.requests[i] == 1 for i in ids)  # no retry went out
        assert [image.id for image in await client.get_images(ids)] == ids


async def test_cancelling_get_images_spares_another_callers_shared_fetch(
    gallery: FakeGallery,
) -> None:
    ids = gallery.ids[:4]
    for image_id in ids:
        gallery.script(image_id, Answer.error(503))
    async with GallerySession(gallery.url, retry=in_backoff(0.1)) as client:
        bulk = asyncio.create_task(client.get_images(ids))
        bystander = asyncio.create_task(client.get_image(ids[0]))
        await asyncio.sleep(0.05)
        bulk.cancel()
        with pytest.raises(asyncio.CancelledError):
            await bulk
        assert (await bystander).id == ids[0]
        assert [t.get_name() for t in fetch_tasks()] == []
    assert gallery.requests[ids[0]] == 2
    assert all(gallery.requests[i] == 1 for i in ids[1:])


@pytest.mark.slow
async def test_closing_an_iter_images_consumer_early_leaves_no_fetch_behind(
    gallery: FakeGallery,
) -> None:
    slow_ids = gallery.ids[1:9]
    for image_id in slow_ids:
        gallery.script(image_id, Answer.error(503))
    async with GallerySession(gallery.url, retry=in_backoff(0.1)) as client:
        async with aclosing(client.iter_images([gallery.ids[0], *slow_ids])) as results:
            async for result in results:
                assert result.id == gallery.ids[0]
                await asyncio.sleep(0.05)  # the others are now waiting to retry
                break
        assert fetch_tasks() == []
        await asyncio.sleep(0.1)
        assert all(gallery.requests[i] == 1 for i in slow_ids)
        results_after = [r async for r in client.iter_images(slow_ids)]
        assert all(r.ok for r in results_after)


@pytest.mark.slow
async def test_cancelling_the_task_consuming_iter_images_leaves_no_fetch_behind(
    gallery: FakeGallery,
) -> None:
    ids = gallery.ids[:8]
    for image_id in ids:
        gallery.script(image_id, Answer.error(503))
    async with GallerySession(gallery.url, retry=in_backoff(0.1)) as client:

        async def consume() -> None:
            async with aclosing(client.iter_images(ids)) as results:
                async for _ in results:
                    pass

        consumer = asyncio.create_task(consume())
        await asyncio.sleep(0.05)
        consumer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await consumer
        assert fetch_tasks() == []
        await asyncio.sleep(0.1)
        assert all(gallery.requests[i] == 1 for i in ids)
        assert (await client.get_image(ids[0])).id == ids[0]

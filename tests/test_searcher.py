"""`GallerySession.search` and `iter_search` over loopback, against FakeGallery.

What the server saw is counted: each search `FakeGallery.searches` received, as it read it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from meigen_async import (
    ApiError,
    DailyLimitReached,
    GallerySession,
    InvalidQuery,
    InvalidResponse,
    RateLimited,
    RetryPolicy,
    SearchHit,
)
from meigen_async.testing import Answer, FakeGallery

NO_WAIT = RetryPolicy(backoff_base=0, rate_limited_wait=0)


def neon(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {"id": f"{1000 + i}", "text": f"neon city at night, take {i}", "likes": i}
        for i in range(start, start + count)
    ]


@pytest.fixture
async def city() -> AsyncIterator[FakeGallery]:
    """45 neon-city images and 5 others."""
    others = [{"id": f"{9000 + i}", "text": "a quiet forest"} for i in range(5)]
    async with FakeGallery([*neon(45), *others]) as fake:
        yield fake


@pytest.fixture
async def client(city: FakeGallery) -> AsyncIterator[GallerySession]:
    async with GallerySession(city.url, retry=NO_WAIT) as session:
        yield session


@pytest.mark.parametrize(
    "query",
    ["cherry blossom", "rock & roll", "#sunset", "what?", "a+b=c/d", "100% 桜 ネオン", "é\u0301"],
)
async def test_the_server_sees_exactly_the_query_sent(
    gallery: FakeGallery, session: GallerySession, query: str
) -> None:
    await session.search(query)
    assert gallery.searches == [(query, 20, 0)]


async def test_the_query_goes_percent_encoded_with_type_posts(
    gallery: FakeGallery, session: GallerySession
) -> None:
    await session.search("rock & roll #1?", limit=5, offset=10)
    assert gallery.paths == [
        "/api/search?q=rock%20%26%20roll%20%231%3F&type=posts&limit=5&offset=10&media=matched-v1"
    ]


async def test_search_returns_the_matching_hits_of_the_page(
    city: FakeGallery, client: GallerySession
) -> None:
    hits = await client.search("NEON city", limit=5, offset=40)
    assert [hit.id for hit in hits] == ["1040", "1041", "1042", "1043", "1044"]
    assert hits[0] == SearchHit(id="1040", text="neon city at night, take 40", likes=40, rank=1.0)


async def test_bad_queries_and_pages_are_refused_with_zero_requests(
    city: FakeGallery, client: GallerySession
) -> None:
    for call in (
        lambda: client.search("x" * 201),
        lambda: client.search("neon", limit=0),
        lambda: client.search("neon", limit=21),
        lambda: client.search("neon", offset=-20),
    ):
        with pytest.raises(InvalidQuery):
            await call()
    with pytest.raises(ValueError, match="at most 200"):
        client.iter_search("x" * 201)
    with pytest.raises(InvalidQuery):
        client.iter_search("neon", max_results=0)
    assert city.total_requests == 0


async def test_iter_search_pages_by_offset_until_a_short_page(
    city: FakeGallery, client: GallerySession
) -> None:
    ids = [hit.id async for hit in client.iter_search("neon", max_results=None)]
    assert ids == [f"{1000 + i}" for i in range(45)]
    assert city.searches == [("neon", 20, 0), ("neon", 20, 20), ("neon", 20, 40)]


async def test_iter_search_stops_at_max_results(city: FakeGallery, client: GallerySession) -> None:
    hits = [hit async for hit in client.iter_search("neon", max_results=25)]
    assert len(hits) == 25
    assert [offset for _, _, offset in city.searches] == [0, 20]


async def test_iter_search_stops_at_an_empty_page(client: GallerySession) -> None:
    async with FakeGallery(neon(20)) as exact:
        async with GallerySession(exact.url) as session:
            hits = [hit async for hit in session.iter_search("neon", max_results=None)]
        assert len(hits) == 20
        assert [offset for _, _, offset in exact.searches] == [0, 20]


async def test_iter_search_yields_each_id_once_when_the_pages_shift(
    city: FakeGallery, client: GallerySession
) -> None:
    seen = []
    async for hit in client.iter_search("neon", max_results=None, page_size=10):
        seen.append(hit.id)
        if len(seen) == 10:
            # A new image at the top moves everything one place down: offset 10 starts
            # with the tenth hit, already yielded.
            city.images = {"999": neon(1, 99)[0] | {"id": "999"}, **city.images}
    # The new one came before the offsets reached; the shifted-in repeat was dropped.
    assert seen == [f"{1000 + i}" for i in range(45)]


async def test_iter_search_stops_at_a_page_adding_no_new_id(city: FakeGallery) -> None:
    repeated = Answer(body=b'{"success": true, "data": [{"id": "1"}, {"id": "2"}]}')
    city.script_search(repeated, repeated, repeated)
    async with GallerySession(city.url) as session:
        ids = [hit.id async for hit in session.iter_search("neon", max_results=None, page_size=2)]
    assert ids == ["1", "2"]
    assert len(city.searches) == 2


async def test_iter_search_keeps_one_page_in_flight(images: list[dict[str, Any]]) -> None:
    async with FakeGallery(neon(60), delay=0.02) as slow:
        async with GallerySession(slow.url) as session:
            hits = [hit async for hit in session.iter_search("neon", max_results=60)]
        assert len(hits) == 60
        assert slow.max_in_flight == 1


async def test_a_429_during_paging_is_retried_after_its_retry_after(
    city: FakeGallery, client: GallerySession
) -> None:
    pages = client.iter_search("neon", max_results=None)
    first = [await anext(pages) for _ in range(20)]
    city.script_search(Answer.rate_limited(retry_after=0))
    rest = [hit async for hit in pages]
    assert len(first) + len(rest) == 45
    assert [offset for _, _, offset in city.searches] == [0, 20, 20, 40]
    assert client.stats.retries == 1


async def test_a_429_with_no_retry_left_is_rate_limited_naming_the_page(
    city: FakeGallery,
) -> None:
    city.script_search(Answer.rate_limited(retry_after=0), Answer.rate_limited(retry_after=0))
    async with GallerySession(city.url, retry=RetryPolicy(max_retries=1)) as session:
        with pytest.raises(
            RateLimited, match=r"search 'neon' \(limit 20, offset 0\).*after 1 retry"
        ):
            await session.search("neon")
    assert len(city.searches) == 2


async def test_a_page_is_served_from_its_cache_the_second_time(
    city: FakeGallery, client: GallerySession
) -> None:
    first = await client.search("neon", limit=5)
    again = await client.search("  neon ", limit=5)
    assert first == again
    assert len(city.searches) == 1


async def test_iter_search_reuses_pages_search_fetched(
    city: FakeGallery, client: GallerySession
) -> None:
    await client.search("neon")
    hits = [hit async for hit in client.iter_search("neon", max_results=20)]
    assert len(hits) == 20
    assert len(city.searches) == 1


async def test_pages_of_other_limits_or_offsets_are_fetched_apart(
    city: FakeGallery, client: GallerySession
) -> None:
    await client.search("neon", limit=5)
    await client.search("neon", limit=6)
    await client.search("neon", limit=5, offset=5)
    assert len(city.searches) == 3


async def test_search_ttl_zero_keeps_no_page(city: FakeGallery) -> None:
    async with GallerySession(city.url, search_ttl=0) as session:
        await session.search("neon")
        await session.search("neon")
    assert len(city.searches) == 2


async def test_the_servers_no_store_keeps_no_page(
    city: FakeGallery, client: GallerySession
) -> None:
    city.search_cache_control = "no-store"
    await client.search("neon")
    await client.search("neon")
    assert len(city.searches) == 2


async def test_clear_cache_forgets_the_pages(city: FakeGallery, client: GallerySession) -> None:
    await client.search("neon")
    client.clear_cache()
    await client.search("neon")
    assert len(city.searches) == 2


async def test_a_hit_is_never_stored_as_an_image(city: FakeGallery, client: GallerySession) -> None:
    [hit] = await client.search("neon", limit=1)
    image = await client.get_image(hit.id)
    assert city.requests[hit.id] == 1
    assert image.text == hit.text


async def test_identical_pages_asked_at_once_share_one_request(city: FakeGallery) -> None:
    city.delay = 0.05
    async with GallerySession(city.url) as session:
        pages = await asyncio.gather(*(session.search("neon") for _ in range(5)))
    assert all(page == pages[0] for page in pages)
    assert len(city.searches) == 1


async def test_searches_and_images_share_the_concurrency_bound(city: FakeGallery) -> None:
    city.delay = 0.02
    async with GallerySession(city.url, concurrency=1) as session:
        await asyncio.gather(
            session.search("neon"),
            session.search("forest"),
            session.get_image("1000"),
            session.get_image("1001"),
        )
    assert city.max_in_flight == 1
    assert city.total_requests == 4


async def test_searches_share_the_rate_limit(city: FakeGallery) -> None:
    class Pacer:
        acquired = 0

        async def acquire(self) -> None:
            Pacer.acquired += 1

    async with GallerySession(city.url, rate_limit=Pacer()) as session:
        await session.search("neon")
        await session.get_image("1000")
    assert Pacer.acquired == 2


async def test_a_service_error_envelope_is_api_error(city: FakeGallery) -> None:
    city.script_search(Answer(body=b'{"error": "search is disabled"}'))
    async with GallerySession(city.url) as session:
        with pytest.raises(ApiError, match="search is disabled"):
            await session.search("neon")


async def test_a_redirect_is_refused_and_never_followed() -> None:
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.path)
        raise web.HTTPFound("/elsewhere")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        async with GallerySession(f"http://{host}:{port}") as session:
            with pytest.raises(ApiError, match="does not follow redirects") as caught:
                await session.search("neon")
    finally:
        await runner.cleanup()
    assert caught.value.status == 302
    assert seen == ["/api/search"]


async def test_an_unreachable_gallery_is_a_transport_error_naming_the_search() -> None:
    async with FakeGallery() as stopped:
        url = stopped.url
    async with GallerySession(url, retry=RetryPolicy(max_retries=0)) as session:
        with pytest.raises(Exception, match=r"request for search 'neon' .* failed") as caught:
            await session.search("neon")
    assert type(caught.value).__name__ == "TransportError"


async def test_search_on_a_closed_session_is_refused(city: FakeGallery) -> None:
    session = GallerySession(city.url)
    await session.close()
    with pytest.raises(RuntimeError, match="closed"):
        await session.search("neon")
    assert city.total_requests == 0


# -- Hostile pages ---------------------------------------------------------------------------------


def page_of(*items: object) -> Answer:
    data = {"success": True, "data": list(items)}
    return Answer(body=json.dumps(data, separators=(",", ":")).encode())


INJECTED = ["1001\n1002", "../../etc", "\x1b]52;c;b3duZWQ=\x07", "a" * 129, "", 42, None]


async def test_results_whose_id_is_not_a_gallery_id_are_skipped_counted_and_logged_escaped(
    city: FakeGallery, caplog: pytest.LogCaptureFixture
) -> None:
    city.script_search(page_of({"id": "1000"}, *({"id": bad} for bad in INJECTED), {"id": "1003"}))
    async with GallerySession(city.url) as session:
        with caplog.at_level(logging.DEBUG, logger="meigen_async"):
            hits = await session.search("neon")
            again = await session.search("neon")
        assert [hit.id for hit in hits] == ["1000", "1003"] == [hit.id for hit in again]
        assert session.stats.search_hits_skipped == len(INJECTED)
    assert len(city.searches) == 1
    [record] = [r for r in caplog.records if "not a gallery id" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert "'1001\\n1002'" in record.getMessage()
    assert record.getMessage().isprintable()


async def test_skipped_results_are_warned_about_once_a_session_and_all_counted(
    city: FakeGallery, caplog: pytest.LogCaptureFixture
) -> None:
    city.script_search(page_of({"id": "a b"}), page_of({"id": "c\nd"}, {"id": "e f"}))
    async with GallerySession(city.url) as session:
        with caplog.at_level(logging.WARNING, logger="meigen_async"):
            assert await session.search("neon") == []
            assert await session.search("city") == []
        assert session.stats.search_hits_skipped == 3
    assert len([r for r in caplog.records if "not a gallery id" in r.getMessage()]) == 1


async def test_iter_search_ends_at_a_full_page_of_bad_ids(city: FakeGallery) -> None:
    bad = page_of(*({"id": f"bad id {i}"} for i in range(20)))
    city.script_search(bad, bad, bad)
    async with GallerySession(city.url) as session:
        assert [hit async for hit in session.iter_search("neon", max_results=None)] == []
    assert len(city.searches) == 1


@pytest.mark.slow
async def test_a_2_mb_page_gives_limit_hits(city: FakeGallery) -> None:
    huge = page_of(*({"id": str(i)} for i in range(130_000)))
    assert len(huge.body or b"") <= 2_097_152  # the default max_body_bytes
    city.script_search(huge)
    async with GallerySession(city.url) as session:
        hits = await session.search("neon", limit=20)
    assert [hit.id for hit in hits] == [str(i) for i in range(20)]
    assert len(city.searches) == 1


async def test_iter_search_over_huge_pages_yields_page_size_hits_a_page(city: FakeGallery) -> None:
    city.script_search(*(page_of(*({"id": f"{p}-{i}"} for i in range(10_000))) for p in range(3)))
    async with GallerySession(city.url) as session:
        hits = [hit.id async for hit in session.iter_search("neon", max_results=50)]
    assert hits == [f"{p}-{i}" for p in range(3) for i in range(20)][:50]
    assert [offset for _, _, offset in city.searches] == [0, 20, 40]


@pytest.mark.slow
async def test_pages_of_huge_prompts_are_evicted_to_stay_within_the_memory_budget(
    city: FakeGallery,
) -> None:
    # About 1.9 MB a page, where 32 MiB are kept: not all 20 pages fit, as they did by count.
    huge = page_of({"id": "1", "text": "x" * 1_900_000})
    city.script_search(*[huge] * 21)
    async with GallerySession(city.url) as session:
        for offset in range(20):
            await session.search("neon", offset=offset)
        await session.search("neon", offset=19)
        await session.search("neon", offset=0)
    assert [offset for _, _, offset in city.searches] == [*range(20), 0]


async def test_a_result_with_a_gallery_id_and_a_wrong_field_fails_the_page_typed(
    city: FakeGallery,
) -> None:
    city.script_search(page_of({"id": "1"}, {"id": "2", "likes": {"a": 1}}))
    async with GallerySession(city.url, retry=RetryPolicy(max_retries=0)) as session:
        with pytest.raises(InvalidResponse, match=r"search 'neon'.*result 1: .*likes"):
            await session.search("neon")


# -- A server's own page size ----------------------------------------------------------------------


async def test_a_server_capping_pages_at_10_still_gives_every_hit_page_after_page() -> None:
    async with (
        FakeGallery(neon(45), search_page_cap=10) as capped,
        GallerySession(capped.url) as session,
    ):
        ids = [hit.id async for hit in session.iter_search("neon", max_results=None)]
    assert ids == [f"{1000 + i}" for i in range(45)]
    assert capped.searches == [("neon", 20, offset) for offset in (0, 10, 20, 30, 40)]


# -- Browsing --------------------------------------------------------------------------------------


async def test_the_empty_query_browses_the_newest_posts_first(
    gallery: FakeGallery, session: GallerySession
) -> None:
    newest = sorted(gallery.images.values(), key=lambda data: data["created_at"], reverse=True)
    ids = [hit.id async for hit in session.iter_search("", max_results=25)]
    assert ids == [data["id"] for data in newest[:25]]
    assert [hit.id for hit in await session.search("   ", limit=5)] == ids[:5]
    assert gallery.searches == [("", 20, 0), ("", 20, 20), ("", 5, 0)]
    assert gallery.paths[0] == "/api/search?q=&type=posts&limit=20&offset=0&media=matched-v1"


# -- The API key -----------------------------------------------------------------------------------

KEY = "meigen_sk_test_0123456789"


async def test_the_key_goes_on_search_requests_only_never_on_images_or_media(
    tmp_path: Path,
) -> None:
    async with FakeGallery.sample(api_keys=[KEY]) as fake:
        async with GallerySession(fake.url, api_key=KEY, media_hosts=[fake.media_host]) as session:
            [hit] = await session.search("studio", limit=1)
            image = await session.get_image(hit.id)
            files = await session.download_media(image, tmp_path)
        assert len(files) == len(image.media_urls) == sum(fake.media_requests.values())
        assert fake.requests[hit.id] == 1
        assert fake.authorizations == [(fake.paths[0], f"Bearer {KEY}")]
        assert fake.paths[0].startswith("/api/search?")


async def test_a_session_takes_its_key_from_meigen_api_key(
    city: FakeGallery, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEIGEN_API_KEY", KEY)
    async with GallerySession(city.url) as session:
        await session.search("neon")
    async with GallerySession(city.url, api_key="") as session:
        await session.search("forest")
    assert [value for _, value in city.authorizations] == [f"Bearer {KEY}"]


async def test_without_a_key_no_authorization_is_sent(
    city: FakeGallery, client: GallerySession
) -> None:
    await client.search("neon")
    assert city.authorizations == []


async def test_the_key_is_never_in_a_repr_the_stats_an_error_or_the_log(
    city: FakeGallery, logs: pytest.LogCaptureFixture
) -> None:
    echoed = f"bad request: Authorization: Bearer {KEY}"
    city.script_search(Answer.error(400, echoed), page_of({"id": f"{KEY}!"}))
    async with GallerySession(city.url, api_key=KEY) as session:
        with pytest.raises(ApiError) as caught:
            await session.search("neon")
        assert await session.search("city") == []
        shown = [repr(session), str(session.stats), str(caught.value), repr(caught.value)]
    assert "Bearer [API key]" in str(caught.value)
    assert all(KEY not in text for text in [*shown, logs.text])
    assert "[API key]" in logs.text


# -- The two 429s ----------------------------------------------------------------------------------


@pytest.fixture
async def quota() -> AsyncIterator[FakeGallery]:
    """The neon city, where a key may search twice a day and an address once a minute."""
    async with FakeGallery(neon(45), api_keys=[KEY], search_limit=1, daily_search_limit=2) as fake:
        yield fake


async def test_after_a_daily_limit_no_search_is_sent_until_the_reset(quota: FakeGallery) -> None:
    city = quota
    async with GallerySession(city.url, api_key=KEY) as session:
        await session.search("neon")
        await session.search("city")
        with pytest.raises(DailyLimitReached, match="Daily search limit reached") as caught:
            await session.search("forest")
        assert len(city.searches) == 3  # never retried
        for call in (
            lambda: session.search("night"),
            lambda: anext(session.iter_search("")),
        ):
            with pytest.raises(DailyLimitReached, match="not sent") as refused:
                await call()
            assert refused.value.resets_at == caught.value.resets_at
        assert len(city.searches) == 3
        assert await session.search("neon") != []  # a kept page asks nothing
        assert (await session.get_image("1000")).id == "1000"  # images are not affected
        assert session.stats.retries == 0
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    assert caught.value.resets_at == midnight + timedelta(days=1)


async def test_the_per_address_429_stays_rate_limited_and_a_key_is_not_counted_there(
    quota: FakeGallery,
) -> None:
    city = quota
    async with GallerySession(city.url, retry=RetryPolicy(max_retries=0)) as anonymous:
        await anonymous.search("neon")
        with pytest.raises(RateLimited) as caught:
            await anonymous.search("city")
        assert type(caught.value) is RateLimited
    async with GallerySession(city.url, api_key=KEY) as keyed:
        await keyed.search("forest")
    assert len(city.searches) == 3


async def test_a_daily_limit_pauses_no_other_request_where_a_per_address_429_does(
    city: FakeGallery,
) -> None:
    pauses: list[float] = []

    class Limiter:
        async def acquire(self) -> None:
            pass

        async def cool_down(self, seconds: float) -> None:
            pauses.append(seconds)

    city.script_search(
        Answer.rate_limited(retry_after=7), Answer.daily_limit_reached(retry_after=3600)
    )
    retry = RetryPolicy(max_retries=0)
    async with GallerySession(city.url, rate_limit=Limiter(), retry=retry) as session:
        with pytest.raises(RateLimited):
            await session.search("city")
        assert pauses == [7.0]
        with pytest.raises(DailyLimitReached) as caught:
            await session.search("neon")
    assert pauses == [7.0]
    assert caught.value.retry_after == 3600.0

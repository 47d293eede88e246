"""FakeGallery itself, seen through a plain aiohttp client and raw sockets: no GallerySession."""

from __future__ import annotations

import asyncio
import json
import struct
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from meigen_async._fake_search import SEARCH_FIELDS
from meigen_async.testing import DEFAULT_CACHE_CONTROL, Answer, FakeGallery, sample_images

NOT_FOUND = {"success": False, "error": "Image not found"}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain aiohttp client."""
    async with aiohttp.ClientSession() as client:
        yield client


def envelope(data: dict[str, Any]) -> bytes:
    """The body FakeGallery sends for ``data``."""
    return json.dumps({"success": True, "data": data}).encode()


async def get(
    http: aiohttp.ClientSession, gallery: FakeGallery, image_id: str
) -> tuple[int, Mapping[str, str], bytes]:
    async with http.get(f"{gallery.url}/api/images/{image_id}") as resp:
        return resp.status, resp.headers, await resp.read()


async def raw_exchange(gallery: FakeGallery, path: str) -> bytes:
    """Send one GET over a bare socket and return every byte that comes back."""
    url = URL(gallery.url)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {url.host}\r\n\r\n".encode())
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
        await writer.wait_closed()


# -- The contract --------------------------------------------------------------------------------


async def test_a_known_id_gets_the_envelope_with_cache_control(
    http: aiohttp.ClientSession, gallery: FakeGallery, images: list[dict[str, Any]]
) -> None:
    async with http.get(f"{gallery.url}/api/images/{images[0]['id']}") as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        assert resp.headers["Cache-Control"] == DEFAULT_CACHE_CONTROL == "public, max-age=3600"
        assert await resp.json() == {"success": True, "data": images[0]}


async def test_cache_control_can_be_changed_or_left_out(
    http: aiohttp.ClientSession, images: list[dict[str, Any]]
) -> None:
    image_id = images[0]["id"]
    async with FakeGallery(images, cache_control="no-store") as fake:
        _, headers, _ = await get(http, fake, image_id)
        assert headers["Cache-Control"] == "no-store"
        fake.cache_control = None
        _, headers, _ = await get(http, fake, image_id)
        assert "Cache-Control" not in headers


async def test_an_unknown_id_gets_a_404_with_the_services_error(
    http: aiohttp.ClientSession, gallery: FakeGallery
) -> None:
    status, headers, body = await get(http, gallery, "no-such-image")
    assert status == 404
    assert json.loads(body) == NOT_FOUND
    assert "Cache-Control" not in headers
    assert gallery.requests["no-such-image"] == 1


@pytest.mark.parametrize("path", ["/", "/api/images/", "/api/images/1/extra", "/favicon.ico"])
async def test_any_other_path_is_a_404_recorded_in_paths_only(
    http: aiohttp.ClientSession, gallery: FakeGallery, path: str
) -> None:
    async with http.get(f"{gallery.url}{path}") as resp:
        assert resp.status == 404
        assert await resp.json() == {"success": False, "error": "Not found"}
    assert gallery.paths == [path]
    assert gallery.total_requests == 1
    assert sum(gallery.requests.values()) == 0


async def test_requests_are_counted_per_id_and_paths_kept_in_order(
    http: aiohttp.ClientSession, gallery: FakeGallery
) -> None:
    a, b = gallery.ids[:2]
    for image_id in [a, b, a, "missing"]:
        await get(http, gallery, image_id)
    assert gallery.requests == {a: 2, b: 1, "missing": 1}
    assert gallery.paths == [f"/api/images/{i}" for i in [a, b, a, "missing"]]
    assert gallery.total_requests == 4


async def test_user_agents_are_counted(http: aiohttp.ClientSession, gallery: FakeGallery) -> None:
    url = f"{gallery.url}/api/images/{gallery.ids[0]}"
    for agent in ["bot/1", "bot/1", "bot/2"]:
        async with http.get(url, headers={"User-Agent": agent}):
            pass
    assert gallery.user_agents == {"bot/1": 2, "bot/2": 1}


async def test_delay_makes_requests_overlap_and_max_in_flight_counts_them(
    http: aiohttp.ClientSession, images: list[dict[str, Any]]
) -> None:
    async with FakeGallery(images, delay=0.05) as fake:
        started = time.monotonic()
        await asyncio.gather(*(get(http, fake, i) for i in [*fake.ids[:4], "missing"]))
        assert time.monotonic() - started >= 0.05
        assert fake.max_in_flight == 5
        assert fake.in_flight == 0


async def test_reset_counts_forgets_what_was_seen(
    http: aiohttp.ClientSession, gallery: FakeGallery
) -> None:
    await get(http, gallery, gallery.ids[0])
    gallery.reset_counts()
    assert gallery.requests == {}
    assert gallery.paths == []
    assert gallery.user_agents == {}
    assert gallery.max_in_flight == 0


async def test_images_added_while_running_are_served(
    http: aiohttp.ClientSession, gallery: FakeGallery, images: list[dict[str, Any]]
) -> None:
    gallery.images["late"] = {**images[0], "id": "late"}
    status, _, body = await get(http, gallery, "late")
    assert status == 200
    assert json.loads(body)["data"]["id"] == "late"


async def test_extra_headers_apply_to_one_id_and_may_override_cache_control(
    http: aiohttp.ClientSession, gallery: FakeGallery
) -> None:
    a, b = gallery.ids[:2]
    gallery.extra_headers[a] = {"Age": "60", "Cache-Control": "public, max-age=10"}
    _, headers_a, _ = await get(http, gallery, a)
    _, headers_b, _ = await get(http, gallery, b)
    assert headers_a["Age"] == "60"
    assert headers_a["Cache-Control"] == "public, max-age=10"
    assert "Age" not in headers_b
    assert headers_b["Cache-Control"] == DEFAULT_CACHE_CONTROL


# -- Where the images come from ------------------------------------------------------------------


async def test_from_jsonl_serves_a_json_lines_file_skipping_blank_lines(
    http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    rows = [{"id": "a1", "text": "a red fox"}, {"id": "b2", "model": "midjourney"}]
    path = tmp_path / "gallery.jsonl"
    path.write_text(f"{json.dumps(rows[0])}\n\n  \n{json.dumps(rows[1])}\n", encoding="utf-8")
    async with FakeGallery.from_jsonl(path, cache_control=None) as fake:
        assert fake.ids == ["a1", "b2"]
        status, headers, body = await get(http, fake, "b2")
    assert status == 200
    assert json.loads(body) == {"success": True, "data": rows[1]}
    assert "Cache-Control" not in headers


def test_a_mapping_is_served_by_each_objects_id() -> None:
    fake = FakeGallery({"key": {"id": "a1", "text": "x"}})
    assert fake.ids == ["a1"]


def test_the_sample_has_enough_images_with_json_and_plain_prompts() -> None:
    fake = FakeGallery.sample()
    texts = [data["text"] for data in fake.images.values()]

    def is_json_object(text: str) -> bool:
        try:
            return isinstance(json.loads(text), dict)
        except ValueError:
            return False

    assert len(fake.ids) >= 50
    assert len(set(fake.ids)) == len(fake.ids)
    assert fake.images == {data["id"]: data for data in sample_images()}
    assert any(is_json_object(text) for text in texts)
    assert any(not is_json_object(text) for text in texts)


def test_sample_takes_the_constructors_options() -> None:
    fake = FakeGallery.sample(delay=0.25, cache_control="no-cache")
    assert (fake.delay, fake.cache_control) == (0.25, "no-cache")


# -- Scripted answers ----------------------------------------------------------------------------


async def test_scripted_answers_are_given_in_order_then_the_normal_one_resumes(
    http: aiohttp.ClientSession, gallery: FakeGallery, images: list[dict[str, Any]]
) -> None:
    image_id = images[0]["id"]
    gallery.script(image_id, Answer.error(503), Answer.error(500))
    gallery.script(image_id, Answer.error(502))
    statuses = [(await get(http, gallery, image_id))[0] for _ in range(5)]
    assert statuses == [503, 500, 502, 200, 200]
    assert (await get(http, gallery, image_id))[2] == envelope(images[0])


async def test_a_script_affects_only_its_own_id(
    http: aiohttp.ClientSession, gallery: FakeGallery
) -> None:
    a, b = gallery.ids[:2]
    gallery.script(a, Answer.error(503))
    assert (await get(http, gallery, b))[0] == 200
    assert (await get(http, gallery, a))[0] == 503


async def test_an_error_answer_carries_the_services_error_body_and_headers(
    http: aiohttp.ClientSession, gallery: FakeGallery
) -> None:
    image_id = gallery.ids[0]
    gallery.script(image_id, Answer.error(503, "Maintenance", headers={"X-Why": "deploy"}))
    status, headers, body = await get(http, gallery, image_id)
    assert status == 503
    assert json.loads(body) == {"success": False, "error": "Maintenance"}
    assert headers["X-Why"] == "deploy"
    assert "Cache-Control" not in headers


@pytest.mark.parametrize(
    ("retry_after", "header"),
    [(7, "7"), ("Wed, 21 Oct 2015 07:28:00 GMT", "Wed, 21 Oct 2015 07:28:00 GMT")],
)
async def test_rate_limited_is_a_429_with_retry_after(
    http: aiohttp.ClientSession, gallery: FakeGallery, retry_after: str | int, header: str
) -> None:
    image_id = gallery.ids[0]
    gallery.script(image_id, Answer.rate_limited(retry_after=retry_after))
    status, headers, body = await get(http, gallery, image_id)
    assert status == 429
    assert headers["Retry-After"] == header
    assert json.loads(body)["success"] is False


async def test_rate_limited_without_retry_after_sends_no_such_header(
    http: aiohttp.ClientSession, gallery: FakeGallery
) -> None:
    gallery.script(gallery.ids[0], Answer.rate_limited())
    status, headers, _ = await get(http, gallery, gallery.ids[0])
    assert status == 429
    assert "Retry-After" not in headers


async def test_a_dropped_answer_closes_the_connection_without_a_byte(
    gallery: FakeGallery,
) -> None:
    image_id = gallery.ids[0]
    gallery.script(image_id, Answer.dropped())
    assert await raw_exchange(gallery, f"/api/images/{image_id}") == b""
    assert gallery.requests[image_id] == 1


async def test_a_dropped_answer_is_a_connection_error_for_aiohttp(
    http: aiohttp.ClientSession, gallery: FakeGallery
) -> None:
    image_id = gallery.ids[0]
    # aiohttp resends a GET once by itself when the server disconnects: drop both.
    gallery.script(image_id, Answer.dropped(), Answer.dropped())
    with pytest.raises(aiohttp.ClientConnectionError):
        await get(http, gallery, image_id)


async def test_a_cut_off_answer_promises_the_whole_body_and_sends_part(
    http: aiohttp.ClientSession, gallery: FakeGallery, images: list[dict[str, Any]]
) -> None:
    image_id = images[0]["id"]
    gallery.script(image_id, Answer.cut_off(after=20))
    async with http.get(f"{gallery.url}/api/images/{image_id}") as resp:
        assert resp.status == 200
        assert resp.content_length == len(envelope(images[0]))
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()


async def test_a_truncated_answer_is_a_prefix_of_the_normal_body_framed_as_whole(
    http: aiohttp.ClientSession, gallery: FakeGallery, images: list[dict[str, Any]]
) -> None:
    image_id = images[0]["id"]
    gallery.script(image_id, Answer.truncated(keep=40))
    status, headers, body = await get(http, gallery, image_id)
    assert status == 200
    assert body == envelope(images[0])[:40]
    assert headers["Content-Length"] == "40"


@pytest.mark.parametrize("status", [200, 502])
async def test_an_html_answer_is_an_html_page(
    http: aiohttp.ClientSession, gallery: FakeGallery, status: int
) -> None:
    gallery.script(gallery.ids[0], Answer.html(status))
    async with http.get(f"{gallery.url}/api/images/{gallery.ids[0]}") as resp:
        assert resp.status == status
        assert resp.content_type == "text/html"
        assert (await resp.text()).startswith("<!DOCTYPE html>")


async def test_an_oversized_answer_has_a_content_length(
    http: aiohttp.ClientSession, gallery: FakeGallery
) -> None:
    gallery.script(gallery.ids[0], Answer.oversized(100_000))
    async with http.get(f"{gallery.url}/api/images/{gallery.ids[0]}") as resp:
        body = await resp.read()
        assert resp.content_length == len(body) > 100_000
        assert "Transfer-Encoding" not in resp.headers
    assert json.loads(body)["success"] is True


async def test_a_chunked_oversized_answer_has_no_content_length(
    http: aiohttp.ClientSession, gallery: FakeGallery
) -> None:
    gallery.script(gallery.ids[0], Answer.oversized(100_000, chunked=True))
    async with http.get(f"{gallery.url}/api/images/{gallery.ids[0]}") as resp:
        body = await resp.read()
        assert resp.content_length is None
        assert resp.headers["Transfer-Encoding"] == "chunked"
    assert len(body) > 100_000
    assert json.loads(body)["success"] is True


async def test_a_wrong_content_type_answer_keeps_the_normal_body(
    http: aiohttp.ClientSession, gallery: FakeGallery, images: list[dict[str, Any]]
) -> None:
    gallery.script(images[0]["id"], Answer.wrong_content_type())
    async with http.get(f"{gallery.url}/api/images/{images[0]['id']}") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/plain"
        assert await resp.read() == envelope(images[0])


async def test_a_slow_answer_arrives_after_its_delay(
    http: aiohttp.ClientSession, gallery: FakeGallery
) -> None:
    gallery.script(gallery.ids[0], Answer.slow(0.1))
    started = time.monotonic()
    status, _, _ = await get(http, gallery, gallery.ids[0])
    assert time.monotonic() - started >= 0.09
    assert status == 200


async def test_a_scripted_answer_for_an_unknown_id_keeps_the_404(
    http: aiohttp.ClientSession, gallery: FakeGallery
) -> None:
    gallery.script("missing", Answer.truncated(keep=10))
    status, _, body = await get(http, gallery, "missing")
    assert status == 404
    assert body == json.dumps(NOT_FOUND).encode()[:10]


# -- Lifecycle -----------------------------------------------------------------------------------


async def test_the_gallery_binds_to_loopback_only(gallery: FakeGallery) -> None:
    url = URL(gallery.url)
    assert url.scheme == "http"
    assert url.host == "127.0.0.1"
    assert url.port is not None
    assert url.port > 0


def test_url_before_start_raises() -> None:
    with pytest.raises(RuntimeError, match="not started"):
        _ = FakeGallery().url


async def test_close_is_idempotent_and_stops_serving(http: aiohttp.ClientSession) -> None:
    fake = await FakeGallery.sample().start()
    url = f"{fake.url}/api/images/{fake.ids[0]}"
    await fake.close()
    await fake.close()
    with pytest.raises(aiohttp.ClientConnectionError):
        async with http.get(url):
            pass


async def test_close_before_start_does_nothing() -> None:
    await FakeGallery().close()


async def test_the_fake_sends_a_strong_etag_that_changes_with_the_image() -> None:
    async with (
        FakeGallery([{"id": "a", "created_at": "2025-08-07T21:09:16+00:00"}]) as fake,
        aiohttp.ClientSession() as http,
    ):
        url = f"{fake.url}/api/images/a"
        async with http.get(url) as first:
            before = first.headers["ETag"]
            last_modified = first.headers["Last-Modified"]
        fake.images["a"]["likes"] = 5
        async with http.get(url) as second:
            after = second.headers["ETag"]
    assert before.startswith('"')  # strong: not W/
    assert before != after
    assert last_modified == "Thu, 07 Aug 2025 21:09:16 GMT"


async def test_the_fake_answers_if_modified_since_with_a_304() -> None:
    async with (
        FakeGallery([{"id": "a", "created_at": "2025-08-07T21:09:16+00:00"}]) as fake,
        aiohttp.ClientSession() as http,
    ):
        headers = {"If-Modified-Since": "Fri, 08 Aug 2025 00:00:00 GMT"}
        async with http.get(f"{fake.url}/api/images/a", headers=headers) as response:
            status, body = response.status, await response.read()
    assert (status, body) == (304, b"")
    assert fake.not_modified["a"] == 1


async def test_the_fake_without_validators_sends_none_and_ignores_conditions() -> None:
    async with (
        FakeGallery(
            [{"id": "a", "created_at": "2025-08-07T21:09:16+00:00"}], validators=False
        ) as fake,
        aiohttp.ClientSession() as http,
    ):
        headers = {"If-None-Match": "*"}
        async with http.get(f"{fake.url}/api/images/a", headers=headers) as response:
            status = response.status
            sent = set(response.headers)
    assert status == 200
    assert "ETag" not in sent
    assert "Last-Modified" not in sent


# -- The search ----------------------------------------------------------------------------------


async def search(
    http: aiohttp.ClientSession, gallery: FakeGallery, query: str = "", **params: str
) -> tuple[int, Any]:
    params = {"q": query, "type": "posts", "limit": "20", "offset": "0", **params}
    async with http.get(f"{gallery.url}/api/search", params=params) as resp:
        return resp.status, await resp.json()


async def test_a_search_answers_items_in_exactly_the_searchs_shape(
    http: aiohttp.ClientSession, gallery: FakeGallery
) -> None:
    status, answer = await search(http, gallery, "studio portrait", media="matched-v1")
    assert status == 200
    assert answer["data"] == gallery.search_results("studio portrait")[:20]
    assert {frozenset(item) for item in answer["data"]} == {
        frozenset({*SEARCH_FIELDS, "rank", "matched_media_index"})
    }
    _, plain = await search(http, gallery, "studio portrait")
    assert "matched_media_index" not in plain["data"][0]
    assert [item["rank"] for item in answer["data"]] == sorted(
        (item["rank"] for item in answer["data"]), reverse=True
    )


async def test_a_search_of_another_type_than_posts_is_a_400(
    http: aiohttp.ClientSession, gallery: FakeGallery
) -> None:
    assert await search(http, gallery, "studio", type="users") == (
        400,
        {"success": False, "error": "Invalid type"},
    )


async def test_search_page_cap_is_the_most_a_page_holds_whatever_its_limit(
    http: aiohttp.ClientSession,
) -> None:
    async with FakeGallery.sample(search_page_cap=10) as gallery:
        _, answer = await search(http, gallery, limit="20")
        _, small = await search(http, gallery, limit="4", offset="10", media="matched-v1")
    assert len(answer["data"]) == 10
    assert small["data"] == gallery.search_results("")[10:14]


async def test_the_quotas_answer_the_services_two_429s_and_a_401_for_an_unknown_key(
    http: aiohttp.ClientSession,
) -> None:
    good = {"Authorization": "Bearer meigen_sk_good"}
    async with FakeGallery(
        [{"id": "1", "text": "fox"}],
        api_keys=["meigen_sk_good"],
        search_limit=1,
        daily_search_limit=1,
    ) as gallery:
        url = f"{gallery.url}/api/search?q=fox"
        answers = []
        for headers in ({}, {}, good, good, {"Authorization": "Bearer meigen_sk_bad"}):
            async with http.get(url, headers=headers) as resp:
                answers.append((resp.status, await resp.json()))
    assert [status for status, _ in answers] == [200, 429, 200, 429, 401]
    assert answers[1][1] == {"success": False, "error": "Too many requests"}
    assert answers[3][1] == {
        "success": False,
        "error": "Daily search limit reached",
        "code": "DAILY_LIMIT_REACHED",
    }
    assert answers[4][1] == {"success": False, "error": "Invalid API key"}


async def test_a_scripted_search_answer_comes_before_the_quotas(
    http: aiohttp.ClientSession,
) -> None:
    async with FakeGallery([{"id": "1", "text": "fox"}], search_limit=0) as gallery:
        gallery.script_search(Answer.slow(0), Answer.daily_limit_reached(retry_after=60))
        first = await search(http, gallery, "fox")
        async with http.get(f"{gallery.url}/api/search?q=fox") as resp:
            second = (resp.status, resp.headers["Retry-After"], await resp.json())
        third = await search(http, gallery, "fox")
    assert first[0] == 200
    assert second[:2] == (429, "60")
    assert second[2]["code"] == "DAILY_LIMIT_REACHED"
    assert third[0] == 429


# -- The sample's own media ------------------------------------------------------------------------


def urls_in(value: object) -> list[str]:
    """Every string in a JSON value that names an http(s) URL."""
    if isinstance(value, str):
        return [value] if "://" in value else []
    if isinstance(value, list):
        return [url for item in value for url in urls_in(item)]
    if isinstance(value, dict):
        return [url for item in value.values() for url in urls_in(item)]
    return []


@pytest.mark.slow
async def test_the_sample_serves_every_picture_itself_at_its_images_size(
    http: aiohttp.ClientSession,
) -> None:
    async with FakeGallery.sample() as gallery:
        assert gallery.media_host == gallery.url.removeprefix("http://")
        for image_id in gallery.ids:
            _, _, body = await get(http, gallery, image_id)
            data = json.loads(body)["data"]
            for url in data["media_urls"]:
                async with http.get(url) as resp:
                    assert resp.content_type == "image/png"
                    png = await resp.read()
                assert png.startswith(b"\x89PNG\r\n\x1a\n")
                width, height = struct.unpack(">II", png[16:24])
                assert (width, height) == (data["image_width"] or 512, data["image_height"] or 512)
        assert sum(gallery.media_requests.values()) == sum(
            len(data["media_urls"]) for data in sample_images()
        )


async def test_nothing_the_sample_serves_points_beyond_loopback(
    http: aiohttp.ClientSession,
) -> None:
    async with FakeGallery.sample() as gallery:
        served = [json.loads((await get(http, gallery, i))[2]) for i in gallery.ids]
        _, browsed = await search(http, gallery, limit="100")
        urls = urls_in(served) + urls_in(browsed)
        for url in urls[:: max(1, len(urls) // 20)]:  # each kind of URL answers
            async with http.get(url) as resp:
                assert resp.status == 200
    assert len(urls) > 3 * len(gallery.ids)
    assert {URL(url).origin() for url in urls} == {URL(gallery.url)}


async def test_no_test_connects_beyond_the_loopback(http: aiohttp.ClientSession) -> None:
    # conftest's loopback_only: a test that would reach another address fails instead.
    for url in ("http://93.184.216.34/", "http://[2606:2800:220:1::]/"):
        with pytest.raises(aiohttp.ClientError, match="loopback only"):
            await http.get(url)


async def test_media_served_for_an_id_unsafe_in_a_path_is_named_by_its_place(
    http: aiohttp.ClientSession,
) -> None:
    odd = {"id": "a/b?c", "media_urls": ["https://cdn.example/x.jpg"], "image_width": 3}
    async with FakeGallery([odd], serve_media=True) as gallery:
        [url] = gallery.images["a/b?c"]["media_urls"]
        async with http.get(url) as resp:
            assert resp.status == 200
            assert struct.unpack(">II", (await resp.read())[16:24]) == (3, 512)
    assert url == f"{gallery.url}/media/~0-0.png"

"""One GET with aiohttp: the body, its size limit, translated errors.

Mostly mocked with aioresponses; the body limits are also checked end to end against
FakeGallery over loopback, where the bodies really are streamed, chunked or compressed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import inspect
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import attrs
import pytest
from aiohttp import web
from aioresponses import aioresponses
from helpers import FAST, body_size, media_server
from hypothesis import given, settings
from hypothesis import strategies as st
from redis_helpers import free_port
from yarl import URL

from meigen_async import GalleryImage, GallerySession, RetryPolicy
from meigen_async._protocol import image_url
from meigen_async._status import IMAGES, MEDIA, SEARCH
from meigen_async._transport import AiohttpTransport, RawResponse, image_urls
from meigen_async.errors import InvalidResponse, TransportError
from meigen_async.models import structure_image
from meigen_async.testing import Answer, FakeGallery, png_bytes

ID = "2009629483448627597"
URL_ = f"http://127.0.0.1:9/api/images/{ID}"  # mocked; never a real host
BODY = b'{"success": true, "data": {"id": "2009629483448627597"}}'


class _MockResponse(aiohttp.ClientResponse):
    """aioresponses 0.7.9 builds responses without the ``stream_writer`` aiohttp 3.14 requires.

    See https://github.com/pnuckowski/aioresponses/issues/289; on older aiohttp this is a no-op.
    """

    _NEEDS_STREAM_WRITER = "stream_writer" in inspect.signature(aiohttp.ClientResponse).parameters

    def __init__(self, method: str, url: URL, **kwargs: Any) -> None:
        if self._NEEDS_STREAM_WRITER:
            kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(method, url, **kwargs)


@pytest.fixture
def mocked() -> Any:
    with aioresponses() as mock:
        yield mock


async def get(max_body_bytes: int = 1_000_000) -> RawResponse:
    async with aiohttp.ClientSession() as http:
        transport = AiohttpTransport(
            timeout=5.0,
            max_body_bytes=max_body_bytes,
            headers={"Accept": "application/json"},
            session=http,
        )
        return await transport.send(URL(URL_))


async def test_fetch_returns_status_headers_and_body(mocked: aioresponses) -> None:
    mocked.get(
        URL_,
        status=200,
        body=BODY,
        headers={"Cache-Control": "public, max-age=3600", "Age": "12"},
        response_class=_MockResponse,
    )

    response = await get()

    assert response.status == 200
    assert response.body == BODY
    assert response.headers["cache-control"] == "public, max-age=3600"
    assert response.headers["Age"] == "12"


async def test_fetch_returns_an_error_status_with_its_body(mocked: aioresponses) -> None:
    mocked.get(URL_, status=404, body=b'{"success": false}', response_class=_MockResponse)

    response = await get()

    assert response.status == 404
    assert response.body == b'{"success": false}'


async def test_fetch_sends_the_given_headers(mocked: aioresponses) -> None:
    mocked.get(URL_, status=200, body=BODY, response_class=_MockResponse)

    await get()

    (call,) = mocked.requests[("GET", URL(URL_))]
    assert call.kwargs["headers"] == {"Accept": "application/json"}


async def test_a_body_exactly_at_max_body_bytes_is_read(mocked: aioresponses) -> None:
    mocked.get(
        URL_,
        body=BODY,
        headers={"Content-Length": str(len(BODY))},
        response_class=_MockResponse,
    )

    response = await get(max_body_bytes=len(BODY))

    assert response.body == BODY


async def test_a_content_length_over_max_body_bytes_raises_invalid_response(
    mocked: aioresponses,
) -> None:
    mocked.get(
        URL_,
        body=b"x" * 2048,
        headers={"Content-Length": "2048"},
        response_class=_MockResponse,
    )

    with pytest.raises(InvalidResponse, match="max_body_bytes=1024") as caught:
        await get(max_body_bytes=1024)

    assert "Content-Length is 2048" in str(caught.value)


async def test_a_streamed_body_over_max_body_bytes_raises_invalid_response(
    mocked: aioresponses,
) -> None:
    mocked.get(URL_, body=b"x" * 2048, response_class=_MockResponse)

    with pytest.raises(InvalidResponse, match="max_body_bytes=1024"):
        await get(max_body_bytes=1024)


async def test_a_connection_error_becomes_transport_error_with_its_cause(
    mocked: aioresponses,
) -> None:
    cause = aiohttp.ClientConnectionError("connection refused")
    mocked.get(URL_, exception=cause)

    with pytest.raises(TransportError, match="connection refused") as caught:
        await get()

    assert caught.value.__cause__ is cause


async def test_a_timeout_becomes_transport_error_naming_the_timeout(
    mocked: aioresponses,
) -> None:
    mocked.get(URL_, exception=TimeoutError())

    with pytest.raises(TransportError, match="timed out after 5s") as caught:
        await get()

    assert isinstance(caught.value.__cause__, TimeoutError)


async def test_aiohttps_own_timeout_error_becomes_transport_error(mocked: aioresponses) -> None:
    mocked.get(URL_, exception=aiohttp.ServerTimeoutError("read timed out"))

    with pytest.raises(TransportError, match="timed out after"):
        await get()


# -- image_urls ----------------------------------------------------------------------------------

BASES = [
    "http://127.0.0.1:8080",
    "http://127.0.0.1:8080/",
    "http://127.0.0.1:8080/delay/20",
    "https://www.meigen.ai",
    "http://example.test/a%20b/",
]


@settings(max_examples=200)
@given(base=st.sampled_from(BASES), image_id=st.from_regex(r"[A-Za-z0-9_-]{1,128}", fullmatch=True))
@pytest.mark.slow
def test_image_urls_match_the_protocol_url_for_every_valid_id(base: str, image_id: str) -> None:
    url = image_urls(base)(image_id)

    assert isinstance(url, URL)
    assert str(url) == image_url(base, image_id)


@pytest.mark.parametrize(
    "base",
    [
        "www.meigen.ai",
        "",
        "/api",
        "ftp://example.test",
        "http://example.test/?page=2",
        "http://h/#top",
    ],
)
def test_image_urls_refuse_a_base_that_is_not_an_absolute_http_url(base: str) -> None:
    with pytest.raises(ValueError, match="base_url"):
        image_urls(base)


# -- Timeouts, one per attempt -------------------------------------------------------------------


@contextlib.asynccontextmanager
async def stalling_gallery(*, body_first: bool = False) -> AsyncIterator[str]:
    """A loopback gallery that never finishes an answer; yields an image's URL.

    It holds every request before answering, or with `body_first` sends the status, the
    headers and half the body, then holds the rest.
    """
    release = asyncio.Event()

    async def stall(request: web.Request) -> web.StreamResponse:
        if not body_first:
            await release.wait()
            return web.Response(body=BODY)
        response = web.StreamResponse(headers={"Content-Length": str(len(BODY))})
        await response.prepare(request)
        await response.write(BODY[:10])
        await release.wait()
        return response

    async with media_server(stall, release) as origin:
        yield f"{origin}/m.png"


def stalling_transport(
    timeout: float, http: aiohttp.ClientSession | None = None
) -> AiohttpTransport:
    return AiohttpTransport(timeout=timeout, max_body_bytes=1000, headers={}, session=http)


async def test_a_request_past_its_timeout_becomes_transport_error_naming_the_timeout() -> None:
    transport = stalling_transport(0.05)
    async with stalling_gallery() as url:
        with pytest.raises(TransportError, match=r"timed out after 0\.05s"):
            await transport.send(URL(url))
    await transport.close()


async def test_the_timeout_covers_a_body_that_stops_coming() -> None:
    transport = stalling_transport(0.05)
    async with stalling_gallery(body_first=True) as url:
        with pytest.raises(TransportError, match=r"timed out after 0\.05s"):
            await transport.send(URL(url))
    await transport.close()


async def test_a_callers_session_gets_the_timeout_too() -> None:
    async with aiohttp.ClientSession() as http, stalling_gallery() as url:
        with pytest.raises(TransportError, match=r"timed out after 0\.05s"):
            await stalling_transport(0.05, http).send(URL(url))


async def test_each_send_gets_its_own_timeout() -> None:
    transport = stalling_transport(0.05)
    started = asyncio.get_running_loop().time()
    async with stalling_gallery() as url:
        for _ in range(2):
            with pytest.raises(TransportError):
                await transport.send(URL(url))
    await transport.close()

    assert asyncio.get_running_loop().time() - started >= 0.1


async def test_a_timed_out_send_leaves_no_cancellation_pending() -> None:
    transport = stalling_transport(0.05)

    async def attempt(url: str) -> int:
        with pytest.raises(TransportError):
            await transport.send(URL(url))
        task = asyncio.current_task()
        assert task is not None
        return task.cancelling()

    async with stalling_gallery() as url:
        assert await asyncio.create_task(attempt(url)) == 0
    await transport.close()


async def test_a_cancellation_from_elsewhere_is_not_taken_for_a_timeout() -> None:
    transport = stalling_transport(5.0)
    async with stalling_gallery() as url:
        task = asyncio.create_task(transport.send(URL(url)))
        await asyncio.sleep(0.05)
        task.cancel()

        with pytest.raises(asyncio.CancelledError):
            await task
    await transport.close()


async def test_requests_never_follow_redirects_on_a_callers_session(
    mocked: aioresponses,
) -> None:
    mocked.get(URL_, status=200, body=BODY, response_class=_MockResponse)

    await get()

    (call,) = mocked.requests[("GET", URL(URL_))]
    assert call.kwargs["allow_redirects"] is False


async def test_a_closed_port_is_told_in_plain_words_with_aiohttps_error_as_cause() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    transport = AiohttpTransport(timeout=5.0, max_body_bytes=1000, headers={})
    try:
        with pytest.raises(TransportError) as caught:
            await transport.send(URL(f"http://127.0.0.1:{port}/api/images/{ID}"))
    finally:
        await transport.close()

    assert str(caught.value) == f"cannot connect to 127.0.0.1:{port}: connection refused"
    assert isinstance(caught.value.__cause__, aiohttp.ClientConnectorError)


# -- Body limits over loopback -------------------------------------------------------------------


async def test_a_body_over_the_limit_by_content_length_is_refused_before_it_is_read(
    gallery: FakeGallery,
) -> None:
    image_id = gallery.ids[0]
    # The connection drops 100 bytes in: reading the body at all would be a TransportError.
    big = attrs.evolve(Answer.oversized(50_000), hang_up_after=100)
    gallery.script(image_id, big)
    async with GallerySession(gallery.url, retry=FAST, max_body_bytes=10_000) as client:
        with pytest.raises(InvalidResponse, match="Content-Length") as caught:
            await client.get_image(image_id)
    assert "max_body_bytes=10000" in caught.value.message
    assert gallery.requests[image_id] == 1


async def test_a_chunked_body_over_the_limit_is_refused_without_reading_on(
    gallery: FakeGallery,
) -> None:
    image_id = gallery.ids[0]
    # The connection drops 2 MB in: reading that far would be a TransportError.
    big = attrs.evolve(Answer.oversized(5_000_000, chunked=True), hang_up_after=2_000_000)
    gallery.script(image_id, big)
    async with GallerySession(gallery.url, retry=FAST, max_body_bytes=10_000) as client:
        with pytest.raises(InvalidResponse, match="streamed") as caught:
            await client.get_image(image_id)
    assert "max_body_bytes=10000" in caught.value.message
    assert gallery.requests[image_id] == 1


async def test_a_compressed_body_is_held_to_the_limit_once_inflated(gallery: FakeGallery) -> None:
    image_id = gallery.ids[0]
    inflated = json.dumps({"success": True, "data": {"id": image_id, "text": "a" * 5_000_000}})
    bomb = gzip.compress(inflated.encode())
    assert len(bomb) < 10_000
    gallery.script(image_id, Answer(body=bomb, headers={"Content-Encoding": "gzip"}))
    async with GallerySession(gallery.url, retry=FAST, max_body_bytes=10_000) as client:
        with pytest.raises(InvalidResponse, match="max_body_bytes"):
            await client.get_image(image_id)
    assert gallery.requests[image_id] == 1


async def test_a_compressed_body_within_the_limit_is_accepted(
    gallery: FakeGallery, images: list[dict[str, Any]]
) -> None:
    image_id = gallery.ids[0]
    body = gzip.compress(json.dumps({"success": True, "data": images[0]}).encode())
    gallery.script(image_id, Answer(body=body, headers={"Content-Encoding": "gzip"}))
    async with GallerySession(gallery.url, max_body_bytes=body_size(images[0])) as client:
        assert await client.get_image(image_id) == structure_image(images[0])


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_body_exactly_at_the_limit_is_accepted(
    gallery: FakeGallery, images: list[dict[str, Any]], chunked: bool
) -> None:
    image_id = gallery.ids[0]
    gallery.script(image_id, Answer(chunked=chunked))
    limit = body_size(images[0])
    async with GallerySession(gallery.url, max_body_bytes=limit) as client:
        assert await client.get_image(image_id) == structure_image(images[0])


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_body_one_byte_over_the_limit_is_refused(
    gallery: FakeGallery, images: list[dict[str, Any]], chunked: bool
) -> None:
    image_id = gallery.ids[0]
    gallery.script(image_id, Answer(chunked=chunked))
    limit = body_size(images[0]) - 1
    async with GallerySession(gallery.url, max_body_bytes=limit) as client:
        with pytest.raises(InvalidResponse, match="max_body_bytes"):
            await client.get_image(image_id)


async def test_the_headers_given_to_send_reach_the_server_and_a_304_comes_back_bodiless() -> None:
    from meigen_async.testing import FakeGallery

    async with FakeGallery([{"id": ID, "created_at": "2025-08-07T21:09:16+00:00"}]) as gallery:
        transport = AiohttpTransport(timeout=5, max_body_bytes=10_000, headers={})
        try:
            url = image_urls(gallery.url)(ID)
            first = await transport.send(url)
            etag = first.headers["ETag"]
            second = await transport.send(url, {"If-None-Match": etag})
        finally:
            await transport.close()

    assert (second.status, second.body) == (304, b"")
    assert gallery.conditional[ID] == 1
    assert gallery.not_modified[ID] == 1


# -- The one mapping, on every surface -----------------------------------------------------------


async def _get_image(session: GallerySession, gallery_url: str, out: Path) -> object:
    return await session.get_image("1")


async def _search(session: GallerySession, gallery_url: str, out: Path) -> object:
    return await session.search("neon")


async def _download(session: GallerySession, gallery_url: str, out: Path) -> object:
    image = GalleryImage(id="1", media_urls=(f"{gallery_url}/media/a",))
    return await session.download_media(image, out)


SURFACES = {
    "images": (_get_image, IMAGES),
    "search": (_search, SEARCH),
    "media": (_download, MEDIA),
}


def _script(gallery: FakeGallery, surface: str, answer: Answer) -> None:
    if surface == "images":
        gallery.script("1", answer)
    elif surface == "search":
        gallery.script_search(answer)
    else:
        gallery.add_media("a", png_bytes() + bytes(1000), "image/png")
        gallery.script_media("a", answer)


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize(
    ("failure", "cause"),
    [
        ("refused", aiohttp.ClientConnectorError),
        ("timeout", TimeoutError),
        ("reset mid-body", aiohttp.ClientPayloadError),
    ],
)
@pytest.mark.slow
async def test_every_surface_tells_a_failed_request_as_its_familys_transport_error(
    surface: str, failure: str, cause: type[BaseException], tmp_path: Path
) -> None:
    request, family = SURFACES[surface]
    async with FakeGallery() as gallery:
        url = gallery.url
        if failure == "refused":
            url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
        else:
            _script(
                gallery, surface, Answer.slow(5) if failure == "timeout" else Answer.cut_off(20)
            )
        host = url.removeprefix("http://")
        options: dict[str, Any] = {"retry": RetryPolicy(max_retries=0), "timeout": 0.2}
        async with GallerySession(url, media_hosts=[host], **options) as session:
            with pytest.raises(TransportError) as caught:
                await request(session, url, tmp_path)
    assert type(caught.value) is family.transport
    assert isinstance(caught.value.__cause__, cause)

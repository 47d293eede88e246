"""One GET with aiohttp, mocked with aioresponses: the body, its size limit, translated errors."""

from __future__ import annotations

import asyncio
import inspect
import sys
import time
from types import SimpleNamespace
from typing import Any, cast

import aiohttp
import pytest
from aioresponses import aioresponses
from hypothesis import given, settings
from hypothesis import strategies as st
from yarl import URL

from meigen_async.errors import InvalidResponse, TransportError
from meigen_async.protocol import image_url
from meigen_async.transport import Deadlines, RawResponse, fetch, image_urls

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
        return await fetch(
            http,
            URL_,
            image_id=ID,
            deadlines=Deadlines(5.0),
            max_body_bytes=max_body_bytes,
            options={"headers": {"Accept": "application/json"}},
        )


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
    assert caught.value.image_id == ID


async def test_a_streamed_body_over_max_body_bytes_raises_invalid_response(
    mocked: aioresponses,
) -> None:
    mocked.get(URL_, body=b"x" * 2048, response_class=_MockResponse)

    with pytest.raises(InvalidResponse, match="max_body_bytes=1024"):
        await get(max_body_bytes=1024)


async def test_a_connection_error_becomes_transport_error_with_the_image_id(
    mocked: aioresponses,
) -> None:
    cause = aiohttp.ClientConnectionError("connection refused")
    mocked.get(URL_, exception=cause)

    with pytest.raises(TransportError, match="connection refused") as caught:
        await get()

    assert caught.value.image_id == ID
    assert caught.value.__cause__ is cause


async def test_a_timeout_becomes_transport_error_with_the_image_id(
    mocked: aioresponses,
) -> None:
    mocked.get(URL_, exception=asyncio.TimeoutError())

    with pytest.raises(TransportError, match="timed out after 5s") as caught:
        await get()

    assert caught.value.image_id == ID
    assert isinstance(caught.value.__cause__, asyncio.TimeoutError)


async def test_aiohttps_own_timeout_error_becomes_transport_error(mocked: aioresponses) -> None:
    mocked.get(URL_, exception=aiohttp.ServerTimeoutError("read timed out"))

    with pytest.raises(TransportError, match="timed out after") as caught:
        await get()

    assert caught.value.image_id == ID


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


# -- Deadlines -----------------------------------------------------------------------------------


class _Hanging:
    """Stands for an aiohttp session whose requests never answer."""

    def get(self, url: object, **options: object) -> _Hanging:
        return self

    async def __aenter__(self) -> None:
        await asyncio.Event().wait()

    async def __aexit__(self, *exc: object) -> None:
        return None


def hanging() -> aiohttp.ClientSession:
    return cast(aiohttp.ClientSession, _Hanging())


async def fetch_from(http: aiohttp.ClientSession, deadlines: Deadlines) -> RawResponse:
    return await fetch(
        http, URL_, image_id=ID, deadlines=deadlines, max_body_bytes=1000, options={}
    )


async def forever() -> None:
    await asyncio.Event().wait()


async def test_deadlines_cancel_each_task_at_its_own_deadline() -> None:
    deadlines = Deadlines(0.2)
    first, second = asyncio.create_task(forever()), asyncio.create_task(forever())
    deadlines.watch(first)
    await asyncio.sleep(0.1)
    deadlines.watch(second)

    with pytest.raises(asyncio.CancelledError):
        await first
    assert not second.done()
    with pytest.raises(asyncio.CancelledError):
        await second
    assert deadlines.release(first)
    assert deadlines.release(second)


async def test_deadlines_never_cancel_a_released_task() -> None:
    deadlines = Deadlines(0.05)
    task = asyncio.create_task(forever())
    deadlines.watch(task)

    assert not deadlines.release(task)
    await asyncio.sleep(0.15)

    assert not task.done()
    assert not deadlines.release(task)
    task.cancel()


async def test_a_missed_deadline_becomes_transport_error_naming_the_timeout() -> None:
    with pytest.raises(TransportError, match=r"timed out after 0\.05s") as caught:
        await fetch_from(hanging(), Deadlines(0.05))

    assert caught.value.image_id == ID


@pytest.mark.skipif(sys.version_info < (3, 11), reason="Task.cancelling() is new in 3.11")
async def test_a_missed_deadline_leaves_no_cancellation_pending() -> None:
    async def attempt() -> int:
        with pytest.raises(TransportError):
            await fetch_from(hanging(), Deadlines(0.05))
        task = asyncio.current_task()
        assert task is not None
        return task.cancelling()

    assert await asyncio.create_task(attempt()) == 0


@pytest.mark.skipif(sys.version_info < (3, 11), reason="Task.cancelling() is new in 3.11")
async def test_a_cancellation_from_elsewhere_is_not_swallowed_by_a_deadline() -> None:
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(fetch_from(hanging(), Deadlines(0.05)))
    await asyncio.sleep(0)  # the fetch starts and its deadline runs
    loop.call_at(loop.time() + 0.06, task.cancel)
    # Block until both the deadline and the other cancellation are due: they then land in
    # the same loop iteration, the deadline's first, before the task can run.
    time.sleep(0.1)  # noqa: ASYNC251 - blocking the loop is the point

    with pytest.raises(asyncio.CancelledError):
        await task


def test_deadlines_work_in_a_second_event_loop() -> None:
    deadlines = Deadlines(0.05)

    async def watched_forever() -> None:
        task = asyncio.current_task()
        assert task is not None
        deadlines.watch(task)
        await forever()

    async def first_loop() -> None:
        # The loop ends with the deadline's timer still armed in it.
        task = asyncio.create_task(watched_forever())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    async def second_loop() -> bool:
        task = asyncio.create_task(watched_forever())
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=5)
        return deadlines.release(task)

    asyncio.run(first_loop())
    assert asyncio.run(second_loop())

"""The upstream loop: slots, pacing, attempts and retry sleeps.

First on a fake clock with a scripted `send`, no HTTP: the retry and pacing logic, in
microseconds. Then over loopback against FakeGallery, counting what the server saw, for what
is about HTTP: statuses, dropped and cut-off connections, timeouts, `Retry-After` on the wire.
Where a loopback test checks a wait, `Upstream` runs on the aiohttp transport with a fake sleep;
one test per `Retry-After` form still waits for real, through a `GallerySession`.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import pytest
from helpers import FAST, fast, fetch_tasks, most_in_any_window, record_arrivals
from yarl import URL

from meigen_async import GalleryImage, GallerySession, ImageNotFound, InvalidResponse
from meigen_async._core import Tally, read_response
from meigen_async._transport import (
    AiohttpTransport,
    RawResponse,
    Streamed,
    StreamOptions,
    image_urls,
)
from meigen_async._upstream import Upstream
from meigen_async.cache import CachePolicy
from meigen_async.errors import ApiError, MeigenError, RateLimited, ServerError, TransportError
from meigen_async.retry import RetryPolicy
from meigen_async.testing import Answer, FakeGallery

URL_ = URL("http://127.0.0.1:9/api/images/1")
OK = RawResponse(200, {}, b"ok")


class Script:
    """A `send` answering from a script: a response, or an error to raise."""

    def __init__(self, *answers: RawResponse | MeigenError) -> None:
        self.answers = list(answers)
        self.sent = 0
        self.headers: list[Mapping[str, str] | None] = []
        self.in_flight = 0
        self.most_in_flight = 0

    async def __call__(self, url: URL, headers: Mapping[str, str] | None) -> RawResponse:
        self.sent += 1
        self.headers.append(headers)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0)
            answer = self.answers.pop(0) if self.answers else OK
            if isinstance(answer, MeigenError):
                raise answer
            return answer
        finally:
            self.in_flight -= 1


class FakeSleep:
    """Records the waits asked for, and waits for none of them."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def read_body(raw: RawResponse) -> bytes:
    if raw.status >= 500:
        raise ServerError("server failed", status=raw.status)
    if raw.status >= 400:
        raise ApiError("client error", status=raw.status)
    return raw.body


def upstream(
    send: Callable[[URL, Mapping[str, str] | None], object],
    *,
    retry: RetryPolicy | None = None,
    concurrency: int = 4,
    sleep: FakeSleep | None = None,
    tally: Tally | None = None,
    pacer: object = None,
) -> Upstream:
    return Upstream(
        send,  # type: ignore[arg-type]
        concurrency=concurrency,
        retry=retry or RetryPolicy(backoff_base=1.0, backoff_max=8.0, random=lambda: 1.0),
        tally=tally or Tally(),
        pacer=pacer,  # type: ignore[arg-type]
        sleep=sleep or FakeSleep(),
    )


async def test_a_good_response_is_read_once() -> None:
    send = Script(RawResponse(200, {}, b"body"))

    assert await upstream(send).request(URL_, read_body, image_id="1") == b"body"
    assert send.sent == 1


async def test_retries_sleep_the_backoff_between_attempts() -> None:
    send = Script(RawResponse(503, {}, b""), RawResponse(503, {}, b""), OK)
    sleep = FakeSleep()

    assert await upstream(send, sleep=sleep).request(URL_, read_body, image_id="1") == b"ok"
    assert send.sent == 3
    assert sleep.waits == [1.0, 2.0]


async def test_the_last_error_is_raised_when_the_retries_run_out() -> None:
    send = Script(*[RawResponse(503, {}, b"")] * 4)
    sleep = FakeSleep()

    with pytest.raises(ServerError):
        await upstream(send, sleep=sleep).request(URL_, read_body, image_id="1")
    assert send.sent == 4
    assert sleep.waits == [1.0, 2.0, 4.0]


async def test_a_retry_after_is_slept_as_it_is() -> None:
    send = Script(RateLimited("slow down", retry_after=12.0), OK)
    sleep = FakeSleep()

    await upstream(send, sleep=sleep).request(URL_, read_body, image_id="1")

    assert sleep.waits == [12.0]


async def test_a_client_error_is_raised_after_one_attempt_and_no_sleep() -> None:
    send = Script(RawResponse(400, {}, b""))
    sleep = FakeSleep()

    with pytest.raises(ApiError):
        await upstream(send, sleep=sleep).request(URL_, read_body, image_id="1")
    assert send.sent == 1
    assert sleep.waits == []


async def test_a_transport_error_is_raised_naming_the_image_and_the_retries() -> None:
    cause = OSError("refused")
    error = TransportError("cannot connect to 127.0.0.1:9: connection refused")
    error.__cause__ = cause
    send = Script(*[error] * 4)

    with pytest.raises(TransportError) as caught:
        await upstream(send).request(URL_, read_body, image_id="42")

    assert caught.value.image_id == "42"
    assert str(caught.value) == (
        "request for image 42 failed: cannot connect to 127.0.0.1:9: connection refused "
        "(after 3 retries)"
    )
    assert caught.value.__cause__ is cause


async def test_requests_and_retries_are_counted_in_the_tally() -> None:
    tally = Tally()
    send = Script(RawResponse(503, {}, b""), OK)

    await upstream(send, tally=tally).request(URL_, read_body, image_id="1")

    assert (tally.requests, tally.retries) == (2, 1)


async def test_no_more_than_concurrency_requests_are_in_flight() -> None:
    send = Script()
    loop = upstream(send, concurrency=3)

    await asyncio.gather(*(loop.request(URL_, read_body, image_id="1") for _ in range(20)))

    assert send.sent == 20
    assert send.most_in_flight == 3


async def test_the_pacer_is_asked_once_per_attempt_inside_a_slot() -> None:
    class Pacer:
        def __init__(self) -> None:
            self.acquired = 0
            self.in_slot: list[int] = []

        async def acquire(self) -> None:
            self.acquired += 1
            self.in_slot.append(send.in_flight)

    send = Script(RawResponse(503, {}, b""), OK)
    pacer = Pacer()

    await upstream(send, pacer=pacer).request(URL_, read_body, image_id="1")

    assert pacer.acquired == 2  # the retry is paced too
    assert send.sent == 2


class CoolingLimiter:
    """A `RateLimiter` recording the cool-downs it is told of."""

    def __init__(self) -> None:
        self.acquired = 0
        self.pauses: list[float] = []

    async def acquire(self) -> None:
        self.acquired += 1

    async def cool_down(self, seconds: float) -> None:
        self.pauses.append(seconds)


async def test_a_429_with_retry_after_tells_the_limiter_to_cool_down() -> None:
    send = Script(RawResponse(429, {"Retry-After": "2"}, b""), OK)
    limiter = CoolingLimiter()

    await upstream(send, pacer=limiter).request(URL_, read_body, image_id="1")

    assert limiter.pauses == [2.0]


async def test_a_spent_budget_on_a_good_response_tells_the_limiter_to_cool_down() -> None:
    headers = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "3"}
    send = Script(RawResponse(200, headers, b"ok"))
    limiter = CoolingLimiter()

    assert await upstream(send, pacer=limiter).request(URL_, read_body, image_id="1") == b"ok"
    assert limiter.pauses == [3.0]


async def test_an_ordinary_response_tells_the_limiter_nothing() -> None:
    limiter = CoolingLimiter()

    await upstream(Script(OK), pacer=limiter).request(URL_, read_body, image_id="1")

    assert (limiter.acquired, limiter.pauses) == (1, [])


class Pacer:
    """Lets every request through at once, logging each turn it gives."""

    def __init__(self, log: list[str] | None = None) -> None:
        self.acquired = 0
        self.log = log if log is not None else []

    async def acquire(self) -> None:
        self.acquired += 1
        self.log.append("pace")


async def test_a_request_queued_for_a_slot_takes_no_pacing_turn_until_it_has_one() -> None:
    gate = asyncio.Event()
    sent = 0

    async def held(url: URL, headers: object = None) -> RawResponse:
        nonlocal sent
        sent += 1
        await gate.wait()
        return OK

    pacer = Pacer()
    loop = upstream(held, concurrency=2, pacer=pacer)
    requests = [
        asyncio.create_task(loop.request(URL_, read_body, image_id=str(i))) for i in range(7)
    ]
    for _ in range(10):
        await asyncio.sleep(0)
    # Two hold the slots; the five queued behind them have taken no turn, which a burst would
    # spend the moment the slots free up.
    assert (pacer.acquired, sent) == (2, 2)
    gate.set()
    await asyncio.gather(*requests)
    assert (pacer.acquired, sent) == (7, 7)


async def test_every_retry_is_paced_after_its_backoff_like_a_first_attempt() -> None:
    log: list[str] = []
    answers = [RawResponse(503, {}, b"")] * 14

    async def send(url: URL, headers: object = None) -> RawResponse:
        log.append("send")
        return answers.pop(0) if answers else OK

    async def sleep(seconds: float) -> None:
        log.append("sleep")

    retry = RetryPolicy(max_retries=14, backoff_base=0.0, random=lambda: 1.0)
    loop = Upstream(send, concurrency=4, retry=retry, tally=Tally(), pacer=Pacer(log), sleep=sleep)

    assert await loop.request(URL_, read_body, image_id="1") == b"ok"
    assert log == ["pace", "send"] + ["sleep", "pace", "send"] * 14


# -- Over loopback: the aiohttp transport, a fake sleep ------------------------------------------


class SeenSleep:
    """Records each wait asked for with the requests `gallery` had seen by then; waits none."""

    def __init__(self, gallery: FakeGallery) -> None:
        self.gallery = gallery
        self.seen: list[tuple[float, int]] = []

    async def __call__(self, seconds: float) -> None:
        self.seen.append((seconds, sum(self.gallery.requests.values())))


@asynccontextmanager
async def over_loopback(
    gallery: FakeGallery, retry: RetryPolicy, sleep: SeenSleep, tally: Tally
) -> AsyncIterator[Callable[[str], Awaitable[GalleryImage]]]:
    """`Upstream` on the aiohttp transport to `gallery`, waiting through `sleep`: a get."""
    transport = AiohttpTransport(
        timeout=5.0, max_body_bytes=2_097_152, headers={"Accept": "application/json"}
    )
    loop = Upstream(transport.send, concurrency=4, retry=retry, tally=tally, sleep=sleep)
    url_of = image_urls(gallery.url)
    policy = CachePolicy()

    async def get(image_id: str) -> GalleryImage:
        def read(raw: RawResponse) -> Any:
            return read_response(
                raw.status, raw.headers, raw.body, image_id=image_id, policy=policy
            )

        return (await loop.request(url_of(image_id), read, image_id=image_id)).image

    try:
        yield get
    finally:
        await transport.close()


async def test_a_503_retry_after_on_the_wire_is_slept_before_the_server_sees_the_retry(
    gallery: FakeGallery,
) -> None:
    image_id = gallery.ids[0]
    gallery.script(image_id, Answer.error(503, "Maintenance", {"Retry-After": "1"}))
    sleep, tally = SeenSleep(gallery), Tally()
    async with over_loopback(gallery, FAST, sleep, tally) as get:
        assert (await get(image_id)).id == image_id
    assert gallery.requests[image_id] == 2
    # FAST backs off for at most 0.01 s: only the Retry-After asks for a second, and the
    # retry went out after it.
    assert sleep.seen == [(1.0, 1)]
    assert tally.retries == 1


async def test_a_bare_429_on_the_wire_waits_at_least_rate_limited_wait(
    gallery: FakeGallery,
) -> None:
    image_id = gallery.ids[0]
    gallery.script(image_id, Answer.rate_limited())
    policy = fast(rate_limited_wait=0.3, backoff_max=0.01)
    sleep = SeenSleep(gallery)
    async with over_loopback(gallery, policy, sleep, Tally()) as get:
        assert (await get(image_id)).id == image_id
    assert gallery.requests[image_id] == 2
    [(waited, seen_by_then)] = sleep.seen
    assert waited >= 0.3
    assert seen_by_then == 1


class GatePacer:
    """Lets requests through only once opened; counts those waiting for their turn."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()
        self.waiting = 0

    async def acquire(self) -> None:
        self.waiting += 1
        try:
            await self.opened.wait()
        finally:
            self.waiting -= 1


async def test_a_fetch_cancelled_while_waiting_for_its_pacing_turn_sends_nothing(
    gallery: FakeGallery,
) -> None:
    image_id = gallery.ids[0]
    pacer = GatePacer()
    async with GallerySession(gallery.url, rate_limit=pacer, retry=FAST) as client:
        waiting = asyncio.create_task(client.get_image(image_id))
        for _ in range(100):
            if pacer.waiting:
                break
            await asyncio.sleep(0)
        assert pacer.waiting == 1
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert fetch_tasks() == []
        pacer.opened.set()
        for _ in range(10):
            await asyncio.sleep(0)  # a fetch still alive would send now
        assert gallery.requests[image_id] == 0
        assert (await client.get_image(image_id)).id == image_id
    assert gallery.requests[image_id] == 1


# -- Over loopback: retried failures -----------------------------------------------------------


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
async def test_a_retryable_status_is_retried_and_the_retry_succeeds(
    client: GallerySession, gallery: FakeGallery, status: int
) -> None:
    image_id = gallery.ids[0]
    gallery.script(image_id, Answer.error(status))
    image = await client.get_image(image_id)
    assert image.id == image_id
    assert gallery.requests[image_id] == 2
    assert client.stats.retries == 1
    assert client.stats.requests == 2
    assert client.stats.errors == 0


async def test_a_dropped_connection_is_retried_and_counted(
    client: GallerySession, gallery: FakeGallery
) -> None:
    image_id = gallery.ids[0]
    gallery.script(image_id, Answer.dropped())
    assert (await client.get_image(image_id)).id == image_id
    assert gallery.requests[image_id] == 2
    assert client.stats.requests == 2
    assert client.stats.retries == 1


async def test_zero_max_retries_sends_one_request_even_when_the_connection_drops(
    gallery: FakeGallery,
) -> None:
    image_id = gallery.ids[0]
    gallery.script(image_id, Answer.dropped())
    async with GallerySession(gallery.url, retry=fast(max_retries=0)) as client:
        with pytest.raises(TransportError):
            await client.get_image(image_id)
    assert gallery.requests[image_id] == 1


async def test_a_body_cut_off_midway_is_retried(
    client: GallerySession, gallery: FakeGallery
) -> None:
    image_id = gallery.ids[0]
    gallery.script(image_id, Answer.cut_off())
    assert (await client.get_image(image_id)).id == image_id
    assert gallery.requests[image_id] == 2
    assert client.stats.retries == 1


async def test_an_answer_slower_than_the_timeout_is_retried(gallery: FakeGallery) -> None:
    image_id = gallery.ids[0]
    gallery.script(image_id, Answer.slow(0.3))
    async with GallerySession(gallery.url, retry=FAST, timeout=0.1) as client:
        started = time.monotonic()
        assert (await client.get_image(image_id)).id == image_id
        elapsed = time.monotonic() - started
        assert client.stats.retries == 1
    assert gallery.requests[image_id] == 2
    assert elapsed < 0.28  # the slow answer was abandoned, not waited for


@pytest.mark.slow
async def test_the_timeout_applies_to_each_attempt_not_to_the_whole_call(
    gallery: FakeGallery,
) -> None:
    image_id = gallery.ids[0]
    # The second attempt alone fits in the timeout; both attempts together would not.
    gallery.script(image_id, Answer.slow(0.25), Answer.slow(0.05))
    async with GallerySession(gallery.url, retry=FAST, timeout=0.15) as client:
        assert (await client.get_image(image_id)).id == image_id
    assert gallery.requests[image_id] == 2


async def test_concurrent_callers_share_one_retrying_fetch(
    client: GallerySession, gallery: FakeGallery
) -> None:
    image_id = gallery.ids[0]
    gallery.script(image_id, Answer.error(503), Answer.error(502))
    images = await asyncio.gather(*(client.get_image(image_id) for _ in range(10)))
    assert all(image is images[0] for image in images)
    assert gallery.requests[image_id] == 3
    assert client.stats.retries == 2


async def test_an_html_error_page_is_retried_like_its_status(
    client: GallerySession, gallery: FakeGallery
) -> None:
    image_id = gallery.ids[0]
    gallery.script(image_id, Answer.html(502))
    assert (await client.get_image(image_id)).id == image_id
    assert gallery.requests[image_id] == 2


# -- Over loopback: failures that are not retried ---------------------------------------------


@pytest.mark.parametrize(
    ("status", "error"), [(400, ApiError), (403, ApiError), (404, ImageNotFound)]
)
async def test_a_client_error_status_is_not_retried(
    client: GallerySession, gallery: FakeGallery, status: int, error: type[MeigenError]
) -> None:
    image_id = gallery.ids[0]
    gallery.script(image_id, Answer.error(status))
    with pytest.raises(error) as caught:
        await client.get_image(image_id)
    assert caught.value.status == status
    assert gallery.requests[image_id] == 1
    assert client.stats.retries == 0


@pytest.mark.parametrize(
    "answer",
    [Answer.html(), Answer.truncated(), Answer(body=b'{"id": "1"}')],
    ids=["html", "truncated", "no-envelope"],
)
async def test_an_invalid_response_is_not_retried(
    client: GallerySession, gallery: FakeGallery, answer: Answer
) -> None:
    image_id = gallery.ids[0]
    gallery.script(image_id, answer)
    with pytest.raises(InvalidResponse):
        await client.get_image(image_id)
    assert gallery.requests[image_id] == 1
    assert client.stats.retries == 0


async def test_exhausted_retries_raise_the_last_error(gallery: FakeGallery) -> None:
    image_id = gallery.ids[0]
    gallery.script(image_id, Answer.error(500), Answer.error(502), Answer.error(503))
    async with GallerySession(gallery.url, retry=fast(max_retries=2)) as client:
        with pytest.raises(ServerError) as caught:
            await client.get_image(image_id)
        assert client.stats.retries == 2
        assert client.stats.errors == 1
    assert caught.value.status == 503
    assert caught.value.image_id == image_id
    assert gallery.requests[image_id] == 3


async def test_exhausted_transport_retries_raise_a_transport_error(gallery: FakeGallery) -> None:
    image_id = gallery.ids[0]
    gallery.script(image_id, *[Answer.cut_off()] * 3)
    async with GallerySession(gallery.url, retry=fast(max_retries=2)) as client:
        with pytest.raises(TransportError):
            await client.get_image(image_id)
    assert gallery.requests[image_id] == 3


async def test_zero_max_retries_sends_one_request(gallery: FakeGallery) -> None:
    image_id = gallery.ids[0]
    gallery.script(image_id, Answer.error(503))
    async with GallerySession(gallery.url, retry=fast(max_retries=0)) as client:
        with pytest.raises(ServerError):
            await client.get_image(image_id)
    assert gallery.requests[image_id] == 1


# -- Over loopback: Retry-After, waited for in real time ----------------------------------------


async def test_a_retry_after_beyond_max_retry_after_raises_rate_limited_at_once(
    client: GallerySession, gallery: FakeGallery
) -> None:
    image_id = gallery.ids[0]
    gallery.script(image_id, Answer.rate_limited(retry_after=120))
    started = time.monotonic()
    with pytest.raises(RateLimited) as caught:
        await client.get_image(image_id)
    assert time.monotonic() - started < 1.0
    assert caught.value.retry_after == 120.0
    assert caught.value.status == 429
    assert gallery.requests[image_id] == 1


@pytest.mark.slow
async def test_retry_after_in_seconds_is_waited_for(
    client: GallerySession, gallery: FakeGallery
) -> None:
    image_id = gallery.ids[0]
    gallery.script(image_id, Answer.rate_limited(retry_after=1))
    started = time.monotonic()
    assert (await client.get_image(image_id)).id == image_id
    assert time.monotonic() - started >= 0.9
    assert gallery.requests[image_id] == 2
    assert client.stats.retries == 1


@pytest.mark.slow
async def test_retry_after_as_an_http_date_is_waited_for(
    client: GallerySession, gallery: FakeGallery
) -> None:
    image_id = gallery.ids[0]
    # An HTTP-date has whole seconds: take the one 0.2 to 1.2 s ahead (backoffs take 0.01 s).
    now = datetime.now(UTC)
    when = datetime.fromtimestamp(math.floor(now.timestamp() + 1.2), UTC)
    expected = (when - now).total_seconds()
    gallery.script(image_id, Answer.rate_limited(retry_after=format_datetime(when, usegmt=True)))
    started = time.monotonic()
    assert (await client.get_image(image_id)).id == image_id
    assert time.monotonic() - started >= expected - 0.1
    assert gallery.requests[image_id] == 2


async def test_a_503_retry_after_beyond_max_retry_after_raises_server_error_at_once(
    gallery: FakeGallery,
) -> None:
    image_id = gallery.ids[0]
    gallery.script(image_id, Answer.error(503, "Maintenance", {"Retry-After": "120"}))
    async with GallerySession(gallery.url, retry=fast(max_retry_after=60.0)) as client:
        with pytest.raises(ServerError) as caught:
            await client.get_image(image_id)
    assert caught.value.retry_after == 120.0
    assert caught.value.status == 503
    assert gallery.requests[image_id] == 1


# -- Over loopback: rate_limit, in real time -----------------------------------------------------


@pytest.mark.slow
async def test_rate_limit_paces_upstream_requests_across_every_caller(
    images: list[dict[str, Any]],
) -> None:
    many = [{**images[i % len(images)], "id": f"paced-{i}"} for i in range(40)]
    async with FakeGallery(many) as fake:
        arrivals = record_arrivals(fake)
        async with GallerySession(fake.url, rate_limit=20, concurrency=40) as client:
            ids = fake.ids
            results = await asyncio.gather(
                client.get_images(ids[:15]),
                client.get_images(ids[15:30]),
                *(client.get_image(i) for i in ids[30:]),
            )
    assert [image.id for image in [*results[0], *results[1], *results[2:]]] == ids
    assert all(fake.requests[i] == 1 for i in ids)
    # A bucket of 20 lets 20 through at once, then one every 50 ms.
    assert arrivals[19] - arrivals[0] < 0.2
    assert arrivals[-1] - arrivals[0] >= 0.9
    assert most_in_any_window(arrivals, 0.25) <= 20 + 5 + 1


@pytest.mark.slow
async def test_a_fetch_cancelled_while_waiting_for_the_rate_limit_sends_nothing(
    gallery: FakeGallery,
) -> None:
    first, *others = gallery.ids[:6]
    async with GallerySession(gallery.url, rate_limit=5, retry=FAST) as client:
        await client.get_images([first, *others[:4]])  # the bucket of 5 is now empty
        waiting = asyncio.create_task(client.get_image(others[4]))
        await asyncio.sleep(0.05)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await asyncio.sleep(0.3)
        assert gallery.requests[others[4]] == 0
        assert fetch_tasks() == []
        assert (await client.get_image(others[4])).id == others[4]


async def test_the_request_headers_given_go_with_every_attempt_retries_included() -> None:
    script = Script(RawResponse(503, {}, b""))
    headers = {"If-None-Match": '"abc"'}
    await upstream(script).request(URL_, read_body, image_id="1", headers=headers)
    assert script.headers == [headers, headers]


async def test_a_plain_request_sends_no_extra_headers() -> None:
    script = Script()
    await upstream(script).request(URL_, read_body, image_id="1")
    assert script.headers == [None]


async def test_a_closed_upstream_sends_nothing_and_neither_retries_nor_sleeps() -> None:
    send = Script()
    sleep = FakeSleep()
    loop = upstream(send, sleep=sleep)
    loop.close()

    with pytest.raises(TransportError, match="closed"):
        await loop.request(URL_, read_body, image_id="1")

    assert (send.sent, sleep.waits) == (0, [])


# -- Media: exchange, in the same retry loop -----------------------------------------------------

MEDIA_URL = URL("http://127.0.0.1:9/media/a")
MEDIA = StreamOptions(headers={}, deadline=5.0, deadline_name="media_timeout")


class FakeStream:
    """A `stream` answering with the next status and the body `b"abc"`, counting per host."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.sent: list[URL] = []
        self.in_flight: dict[str, int] = {}
        self.most_in_flight: dict[str, int] = {}
        self.most_in_all = 0

    async def __call__(
        self,
        url: URL,
        options: StreamOptions,
        receive: Callable[[Streamed], Awaitable[Any]],
        received: Callable[[int], None],
    ) -> Any:
        self.sent.append(url)
        host = url.host or ""
        self.in_flight[host] = self.in_flight.get(host, 0) + 1
        self.most_in_flight[host] = max(self.most_in_flight.get(host, 0), self.in_flight[host])
        self.most_in_all = max(self.most_in_all, sum(self.in_flight.values()))
        chunks = [b"abc", b""]

        async def read() -> bytes:
            await asyncio.sleep(0)
            return chunks.pop(0)

        status = self.statuses.pop(0) if self.statuses else 200
        response = Streamed(status, {"Retry-After": "2"}, None, read)
        try:
            return await receive(response)
        finally:
            received(response.received)
            self.in_flight[host] -= 1


async def read_media(response: Streamed) -> bytes:
    if response.status == 429:
        raise RateLimited("slow down", retry_after=2.0)
    return await response.read_chunk()


def media_upstream(stream: FakeStream, **options: Any) -> Upstream:
    options.setdefault("tally", Tally())
    options.setdefault("sleep", FakeSleep())
    return Upstream(
        Script(),  # type: ignore[arg-type]
        concurrency=1,
        retry=RetryPolicy(backoff_base=1.0, random=lambda: 1.0),
        stream=stream,
        **options,
    )


def download(loop: Upstream, url: URL = MEDIA_URL) -> Awaitable[bytes]:
    return loop.retried(as_it_is, None, loop.exchange, url, read_media, MEDIA, media=True)


def as_it_is(error: MeigenError, retries: int, about: object) -> MeigenError:
    return error


async def test_a_media_429_is_retried_counted_as_media_and_cools_nothing_down() -> None:
    stream, limiter, tally, sleep = FakeStream(429, 200), CoolingLimiter(), Tally(), FakeSleep()
    loop = media_upstream(stream, pacer=limiter, tally=tally, sleep=sleep)

    assert await download(loop) == b"abc"

    assert (limiter.acquired, limiter.pauses, sleep.waits) == (2, [], [2.0])
    counts = (tally.media_requests, tally.media_retries, tally.media_bytes)
    assert counts == (2, 1, 3)
    assert (tally.requests, tally.retries) == (0, 0)


async def test_a_closed_upstream_sends_no_media_request() -> None:
    stream = FakeStream()
    loop = media_upstream(stream)
    loop.close()

    with pytest.raises(TransportError, match="closed"):
        await download(loop)
    assert stream.sent == []


async def test_media_slots_are_per_host_one_full_host_holding_back_no_other() -> None:
    stream = FakeStream()
    loop = media_upstream(stream, host_concurrency=2)
    urls = [
        URL(f"http://{host}:9/media/{n}") for host in ("127.0.0.1", "127.0.0.2") for n in range(5)
    ]

    await asyncio.gather(*(download(loop, url) for url in urls))

    assert stream.most_in_flight == {"127.0.0.1": 2, "127.0.0.2": 2}
    assert stream.most_in_all == 4

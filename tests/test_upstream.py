"""The upstream loop on a fake clock: slots, pacing, attempts and retry sleeps, no HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import pytest
from yarl import URL

from meigen_async._core import Tally
from meigen_async._transport import RawResponse
from meigen_async._upstream import Upstream
from meigen_async.errors import ApiError, MeigenError, RateLimited, ServerError, TransportError
from meigen_async.retry import RetryPolicy

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


async def test_the_request_headers_given_go_with_every_attempt_retries_included() -> None:
    script = Script(RawResponse(503, {}, b""))
    headers = {"If-None-Match": '"abc"'}
    await upstream(script).request(URL_, read_body, image_id="1", headers=headers)
    assert script.headers == [headers, headers]


async def test_a_plain_request_sends_no_extra_headers() -> None:
    script = Script()
    await upstream(script).request(URL_, read_body, image_id="1")
    assert script.headers == [None]

"""Retries, rate limiting, stale-if-error, body limits and cancellation, against FakeGallery.

Every test asserts what the server saw (``gallery.requests``) as well as what the caller got.
The policies are fast (milliseconds of backoff) so that the suite stays quick; the few tests
that must wait for a ``Retry-After`` wait about a second and only check a lower bound.
"""

from __future__ import annotations

import asyncio
import gc
import gzip
import json
import math
import random
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import aclosing, nullcontext
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meigen_async import (
    ApiError,
    GalleryImage,
    GallerySession,
    ImageNotFound,
    InvalidResponse,
    MeigenError,
    RateLimited,
    ServerError,
    TransportError,
)
from meigen_async.models import structure_image
from meigen_async.retry import RetryPolicy
from meigen_async.session import FETCH_TASK_PREFIX
from meigen_async.testing import Answer, FakeGallery, sample_images

FAST = RetryPolicy(backoff_base=0.001, backoff_max=0.01, rate_limited_wait=0.01)
"""Retries within milliseconds: the behaviour of the default policy, without the waiting."""


def fast(**changes: Any) -> RetryPolicy:
    """FAST with some settings changed."""
    return attrs.evolve(FAST, **changes)


def in_backoff(seconds: float, **changes: Any) -> RetryPolicy:
    """A policy whose every backoff lasts exactly ``seconds``: long enough to act during it."""
    return RetryPolicy(
        backoff_base=seconds,
        backoff_max=seconds,
        random=lambda: 1.0,
        **changes,
    )


def fetch_tasks() -> list[asyncio.Task[Any]]:
    """Upstream fetches still running."""
    return [
        t
        for t in asyncio.all_tasks()
        if t.get_name().startswith(FETCH_TASK_PREFIX) and not t.done()
    ]


def body_size(data: dict[str, Any]) -> int:
    """The size of the envelope FakeGallery sends for ``data``."""
    return len(json.dumps({"success": True, "data": data}).encode())


class _Arrivals(Counter[str]):
    """A request counter that also notes when each request arrived."""

    def __init__(self, times: list[float]):
        super().__init__()
        self.times = times

    def __setitem__(self, key: str, value: int) -> None:
        self.times.append(time.monotonic())
        super().__setitem__(key, value)


def record_arrivals(gallery: FakeGallery) -> list[float]:
    """The monotonic times at which ``gallery`` receives image requests, kept as they come."""
    times: list[float] = []
    gallery.requests = _Arrivals(times)
    return times


def most_in_any_window(times: list[float], seconds: float) -> int:
    """The most of ``times`` falling within any span of ``seconds``."""
    ordered = sorted(times)
    return max(bisect_left(ordered, t + seconds) - i for i, t in enumerate(ordered))


@pytest.fixture
async def client(gallery: FakeGallery) -> AsyncIterator[GallerySession]:
    """A session on the sample gallery that retries without waiting."""
    async with GallerySession(gallery.url, retry=FAST) as session:
        yield session


# -- Retried failures ----------------------------------------------------------------------------


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


async def test_a_successful_retry_is_cached(client: GallerySession, gallery: FakeGallery) -> None:
    image_id = gallery.ids[0]
    gallery.script(image_id, Answer.error(503))
    first = await client.get_image(image_id)
    assert await client.get_image(image_id) is first
    assert gallery.requests[image_id] == 2


# -- Failures that are not retried ---------------------------------------------------------------


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


async def test_an_error_after_retries_is_not_cached(
    client: GallerySession, gallery: FakeGallery
) -> None:
    image_id = gallery.ids[0]
    gallery.script(image_id, *[Answer.error(503)] * (FAST.max_retries + 1))
    with pytest.raises(ServerError):
        await client.get_image(image_id)
    assert (await client.get_image(image_id)).id == image_id
    assert gallery.requests[image_id] == FAST.max_retries + 2


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


# -- Rate limited: Retry-After -------------------------------------------------------------------


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


async def test_a_503_retry_after_is_waited_for_before_the_server_sees_the_retry(
    client: GallerySession, gallery: FakeGallery
) -> None:
    image_id = gallery.ids[0]
    arrivals = record_arrivals(gallery)
    gallery.script(image_id, Answer.error(503, "Maintenance", {"Retry-After": "1"}))
    assert (await client.get_image(image_id)).id == image_id
    assert gallery.requests[image_id] == 2
    # FAST backs off for at most 0.01 s: only the Retry-After explains a second's gap.
    assert arrivals[1] - arrivals[0] >= 0.95
    assert client.stats.retries == 1


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


async def test_a_bare_429_waits_at_least_rate_limited_wait(gallery: FakeGallery) -> None:
    image_id = gallery.ids[0]
    gallery.script(image_id, Answer.rate_limited())
    policy = fast(rate_limited_wait=0.3, backoff_max=0.01)
    async with GallerySession(gallery.url, retry=policy) as client:
        started = time.monotonic()
        assert (await client.get_image(image_id)).id == image_id
        assert time.monotonic() - started >= 0.29
    assert gallery.requests[image_id] == 2


# -- rate_limit ----------------------------------------------------------------------------------


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


async def test_rate_limit_holds_when_requests_queue_for_a_concurrency_slot(
    images: list[dict[str, Any]],
) -> None:
    many = [{**images[i % len(images)], "id": f"queued-{i}"} for i in range(22)]
    async with FakeGallery(many) as fake:
        arrivals = record_arrivals(fake)
        hogs, others = fake.ids[:5], fake.ids[5:]
        for image_id in hogs:
            fake.script(image_id, Answer.slow(1.3))
        async with GallerySession(fake.url, rate_limit=10, concurrency=5) as client:
            # The hogs hold every slot for 1.3 s while the others queue up behind them.
            holding = [asyncio.create_task(client.get_image(i)) for i in hogs]
            await asyncio.sleep(0.01)
            await asyncio.gather(*holding, client.get_images(others))
    assert all(fake.requests[i] == 1 for i in fake.ids)
    # A bucket of 10 lets 10 through at once, then one every 100 ms, queued or not.
    assert most_in_any_window(arrivals, 0.05) <= 10 + 1


async def test_rate_limit_also_paces_retries(gallery: FakeGallery) -> None:
    image_id = gallery.ids[0]
    gallery.script(image_id, *[Answer.error(503)] * 14)
    policy = fast(max_retries=14, backoff_base=0.0)
    async with GallerySession(gallery.url, rate_limit=10, retry=policy) as client:
        started = time.monotonic()
        assert (await client.get_image(image_id)).id == image_id
        elapsed = time.monotonic() - started
    assert gallery.requests[image_id] == 15
    # Ten at once, the other five at ten a second.
    assert elapsed >= 0.45


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


@pytest.mark.parametrize(("option", "value"), [("rate_limit", 0), ("stale_if_error", -1)])
def test_nonsense_resilience_options_are_refused(option: str, value: float) -> None:
    with pytest.raises(ValueError, match=option):
        GallerySession(**{option: value})


# -- stale_if_error ------------------------------------------------------------------------------


async def test_stale_if_error_serves_the_expired_image_when_the_upstream_fails(
    gallery: FakeGallery,
) -> None:
    image_id = gallery.ids[0]
    async with GallerySession(gallery.url, retry=FAST, ttl=0.05, stale_if_error=60) as client:
        first = await client.get_image(image_id)
        await asyncio.sleep(0.1)
        gallery.script(image_id, *[Answer.error(503)] * (FAST.max_retries + 1))
        assert await client.get_image(image_id) == first
        assert client.stats.stale_served == 1
        assert client.stats.retries == FAST.max_retries
    assert gallery.requests[image_id] == 1 + FAST.max_retries + 1


async def test_stale_if_error_covers_transport_failures(gallery: FakeGallery) -> None:
    image_id = gallery.ids[0]
    async with GallerySession(gallery.url, retry=FAST, ttl=0.05, stale_if_error=60) as client:
        first = await client.get_image(image_id)
        await asyncio.sleep(0.1)
        gallery.script(image_id, *[Answer.cut_off()] * (FAST.max_retries + 1))
        assert await client.get_image(image_id) == first
        assert client.stats.stale_served == 1


async def test_a_fresh_answer_replaces_the_stale_one(gallery: FakeGallery) -> None:
    image_id = gallery.ids[0]
    async with GallerySession(gallery.url, retry=FAST, ttl=0.05, stale_if_error=60) as client:
        await client.get_image(image_id)
        await asyncio.sleep(0.1)
        gallery.script(image_id, Answer.error(503))
        await client.get_image(image_id)
        assert client.stats.stale_served == 0
    assert gallery.requests[image_id] == 3


async def test_without_stale_if_error_the_expired_image_is_not_served(
    gallery: FakeGallery,
) -> None:
    image_id = gallery.ids[0]
    async with GallerySession(gallery.url, retry=FAST, ttl=0.05) as client:
        await client.get_image(image_id)
        await asyncio.sleep(0.1)
        gallery.script(image_id, *[Answer.error(503)] * (FAST.max_retries + 1))
        with pytest.raises(ServerError):
            await client.get_image(image_id)
        assert client.stats.stale_served == 0


async def test_stale_data_is_not_served_past_the_stale_window(gallery: FakeGallery) -> None:
    image_id = gallery.ids[0]
    async with GallerySession(gallery.url, retry=FAST, ttl=0.05, stale_if_error=0.05) as client:
        await client.get_image(image_id)
        await asyncio.sleep(0.15)
        gallery.script(image_id, *[Answer.error(503)] * (FAST.max_retries + 1))
        with pytest.raises(ServerError):
            await client.get_image(image_id)
        assert client.stats.stale_served == 0


async def test_stale_data_never_masks_a_404(gallery: FakeGallery) -> None:
    image_id = gallery.ids[0]
    async with GallerySession(gallery.url, retry=FAST, ttl=0.05, stale_if_error=60) as client:
        await client.get_image(image_id)
        await asyncio.sleep(0.1)
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
    gallery: FakeGallery, answer: Answer
) -> None:
    image_id = gallery.ids[0]
    async with GallerySession(gallery.url, retry=FAST, ttl=0.05, stale_if_error=60) as client:
        await client.get_image(image_id)
        await asyncio.sleep(0.1)
        gallery.script(image_id, answer)
        with pytest.raises((ApiError, InvalidResponse)):
            await client.get_image(image_id)
        assert client.stats.stale_served == 0


# -- Body limits and bodies that are not the envelope --------------------------------------------


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


async def test_an_html_page_is_an_invalid_response_quoting_the_page(
    client: GallerySession, gallery: FakeGallery
) -> None:
    image_id = gallery.ids[0]
    gallery.script(image_id, Answer.html())
    with pytest.raises(InvalidResponse) as caught:
        await client.get_image(image_id)
    message = str(caught.value)
    assert "DOCTYPE" in message
    assert len(message) < 300  # a snippet, not the whole page
    assert caught.value.image_id == image_id


async def test_truncated_json_is_an_invalid_response_quoting_the_body(
    client: GallerySession, gallery: FakeGallery
) -> None:
    image_id = gallery.ids[0]
    gallery.script(image_id, Answer.truncated(keep=40))
    with pytest.raises(InvalidResponse, match="not JSON") as caught:
        await client.get_image(image_id)
    assert '{"success": true' in str(caught.value)


async def test_json_without_the_envelope_is_an_invalid_response(
    client: GallerySession, gallery: FakeGallery
) -> None:
    image_id = gallery.ids[0]
    gallery.script(image_id, Answer(body=b'{"id": "1"}'))
    with pytest.raises(InvalidResponse) as caught:
        await client.get_image(image_id)
    assert '"id"' in str(caught.value)


async def test_an_html_error_page_keeps_its_status_and_quotes_the_page(
    gallery: FakeGallery,
) -> None:
    image_id = gallery.ids[0]
    gallery.script(image_id, Answer.html(502))
    async with GallerySession(gallery.url, retry=fast(max_retries=0)) as client:
        with pytest.raises(ServerError, match="Bad Gateway") as caught:
            await client.get_image(image_id)
    assert caught.value.status == 502


async def test_an_html_error_page_is_retried_like_its_status(
    client: GallerySession, gallery: FakeGallery
) -> None:
    image_id = gallery.ids[0]
    gallery.script(image_id, Answer.html(502))
    assert (await client.get_image(image_id)).id == image_id
    assert gallery.requests[image_id] == 2


# -- Cancellation --------------------------------------------------------------------------------


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


# -- Property: whatever the faults, every id ends as an image or a MeigenError -------------------

SAMPLE = sample_images()
KNOWN_IDS = [data["id"] for data in SAMPLE[:6]]
UNKNOWN_IDS = ["unknown-1", "unknown-2"]
PROPERTY_TIMEOUT = 0.1
PROPERTY_BODY_LIMIT = 2048
PROPERTY_POLICY = fast(max_retries=2)


@attrs.frozen
class Fault:
    """A scripted answer, the error an attempt getting it fails with, and whether it is retried."""

    answer: Answer
    error: type[MeigenError]
    retried: bool


FAULTS = [
    *(Fault(Answer.error(status), ApiError, False) for status in (400, 403)),
    Fault(Answer.error(408), ApiError, True),
    Fault(Answer.error(429), RateLimited, True),
    *(Fault(Answer.error(status), ServerError, True) for status in (500, 502, 503, 504)),
    Fault(Answer.rate_limited(retry_after="0"), RateLimited, True),
    Fault(Answer.dropped(), TransportError, True),
    Fault(Answer.cut_off(), TransportError, True),
    Fault(Answer.truncated(), InvalidResponse, False),
    Fault(Answer.html(), InvalidResponse, False),
    Fault(Answer.oversized(PROPERTY_BODY_LIMIT * 2), InvalidResponse, False),
    Fault(Answer.oversized(PROPERTY_BODY_LIMIT * 2, chunked=True), InvalidResponse, False),
    Fault(Answer.slow(PROPERTY_TIMEOUT * 2.5), TransportError, True),
]


def expected_outcome(image_id: str, schedule: list[int]) -> type[GalleryImage | MeigenError]:
    """What the spec says a call ends in, given the faults scripted for its id."""
    queue = [FAULTS[i] for i in schedule]
    last: type[MeigenError] = MeigenError
    for _ in range(PROPERTY_POLICY.max_retries + 1):
        if not queue:
            return GalleryImage if image_id in KNOWN_IDS else ImageNotFound
        fault = queue.pop(0)
        if fault.answer == Answer.truncated() and image_id in UNKNOWN_IDS:
            return ImageNotFound  # a cut 404 body is still a 404
        if not fault.retried:
            return fault.error
        last = fault.error
    return last


async def run_scenario(ids: list[str], schedules: dict[str, list[int]], via: str) -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    async with FakeGallery(SAMPLE) as fake:
        for image_id, schedule in schedules.items():
            fake.script(image_id, *(FAULTS[i].answer for i in schedule))
        async with GallerySession(
            fake.url,
            retry=PROPERTY_POLICY,
            timeout=PROPERTY_TIMEOUT,
            max_body_bytes=PROPERTY_BODY_LIMIT,
        ) as client:
            if via == "get_images":
                got = await client.get_images(ids, return_exceptions=True)
                outcomes = dict(zip(ids, got, strict=True))
            else:
                outcomes = {}
                async for result in client.iter_images(ids):
                    outcomes[result.id] = result.image if result.ok else result.error
            assert sorted(outcomes) == sorted(set(ids))

            for image_id, outcome in outcomes.items():
                assert isinstance(outcome, (GalleryImage, MeigenError)), repr(outcome)
                expected = expected_outcome(image_id, schedules.get(image_id, []))
                assert isinstance(outcome, expected), (image_id, outcome, expected)

            fake.scripts.clear()
            for image_id, outcome in outcomes.items():
                before = fake.requests[image_id]
                if isinstance(outcome, GalleryImage):
                    assert outcome.id == image_id
                    assert await client.get_image(image_id) is outcome
                    assert fake.requests[image_id] == before
                elif isinstance(outcome, ImageNotFound):
                    with pytest.raises(ImageNotFound):
                        await client.get_image(image_id)
                    assert fake.requests[image_id] == before  # the 404 is remembered
                else:
                    # Any other error was not cached: the next call asks again.
                    with pytest.raises(ImageNotFound) if image_id in UNKNOWN_IDS else nullcontext():
                        await client.get_image(image_id)
                    assert fake.requests[image_id] == before + 1
    gc.collect()
    assert not [c.get("message") for c in reported]


@st.composite
def fault_scenarios(draw: st.DrawFn) -> tuple[list[str], dict[str, list[int]], str]:
    ids = draw(st.lists(st.sampled_from(KNOWN_IDS + UNKNOWN_IDS), min_size=1, max_size=6))
    schedules = {
        image_id: draw(st.lists(st.integers(0, len(FAULTS) - 1), max_size=4))
        for image_id in dict.fromkeys(ids)
    }
    via = draw(st.sampled_from(["get_images", "iter_images"]))
    return ids, schedules, via


@settings(
    max_examples=30,
    deadline=None,
)
@given(scenario=fault_scenarios())
def test_any_fault_schedule_ends_in_images_or_meigen_errors_and_caches_only_404s(
    scenario: tuple[list[str], dict[str, list[int]], str],
) -> None:
    asyncio.run(run_scenario(*scenario))


# -- Chaos: hundreds of ids, each failing transiently in its own way -----------------------------

TRANSIENT = [
    Answer.error(503),
    Answer.rate_limited(retry_after="0"),
    Answer.dropped(),
    Answer.cut_off(),
    Answer.html(502),
    Answer.slow(0.4),
]


@pytest.mark.parametrize("via", ["get_images", "iter_images"])
async def test_hundreds_of_ids_failing_transiently_all_succeed(
    images: list[dict[str, Any]], via: str
) -> None:
    chooser = random.Random(20240611)
    many = [{**images[i % len(images)], "id": f"chaos-{i}"} for i in range(300)]
    failures: dict[str, int] = {}
    async with FakeGallery(many) as fake:
        for image_id in fake.ids:
            faults = chooser.choices(TRANSIENT, k=chooser.randint(0, 2))
            fake.script(image_id, *faults)
            failures[image_id] = len(faults)
        policy = fast(max_retries=3)
        # The timeout leaves room for a loaded loop: a spurious one would add a request.
        async with GallerySession(fake.url, retry=policy, timeout=0.25, concurrency=32) as client:
            if via == "get_images":
                got = await client.get_images(fake.ids)
                assert [image.id for image in got] == fake.ids
            else:
                results = [r async for r in client.iter_images(fake.ids)]
                assert [r.error for r in results if not r.ok] == []
                assert sorted(r.id for r in results) == sorted(fake.ids)
            assert client.stats.errors == 0
    assert {i: fake.requests[i] for i in fake.ids} == {i: n + 1 for i, n in failures.items()}

"""The bulk drivers (`_bulk`): `get_images` and `iter_images` over loopback, and their decisions.

The servers are a FakeGallery scripted per id and a closed loopback port (nothing listening:
every connection is refused). Retries are off, so that one failed attempt is one failed fetch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from helpers import fetch_tasks
from redis_helpers import free_port

from meigen_async import (
    GallerySession,
    ImageNotFound,
    RetryPolicy,
    ServerError,
    TransportError,
    UpstreamUnreachable,
)
from meigen_async._bulk import should_stop, transport_streak
from meigen_async.testing import Answer, FakeGallery

NO_RETRY = RetryPolicy(max_retries=0)


def refused_url() -> str:
    """A loopback URL nothing listens on."""
    return f"http://127.0.0.1:{free_port()}"


# -- The decisions -------------------------------------------------------------------------------


def test_a_transport_failure_lengthens_the_streak_and_any_answer_ends_it() -> None:
    refused = TransportError("refused")
    assert transport_streak(transport_streak(0, refused), refused) == 2
    assert transport_streak(5, ImageNotFound("404")) == 0


def test_bulk_stops_only_when_the_streak_reaches_the_limit() -> None:
    assert not should_stop(19, 20)
    assert should_stop(20, 20)
    assert not should_stop(1000, None)


# -- get_images ----------------------------------------------------------------------------------


async def test_get_images_raises_the_first_error_at_once_and_cancels_the_fetches_left(
    gallery: FakeGallery,
) -> None:
    missing, slow = "404404", gallery.ids[0]
    gallery.script(slow, Answer.slow(3600))
    async with GallerySession(gallery.url, retry=NO_RETRY) as session:
        async with asyncio.timeout(2):
            with pytest.raises(ImageNotFound):
                await session.get_images([slow, missing])
        assert fetch_tasks() == []


# -- iter_images: stop_after_transport_failures --------------------------------------------------


async def test_iter_images_stops_after_n_transport_failures_without_reading_the_rest() -> None:
    read: list[str] = []

    def ids() -> Iterator[str]:
        for i in range(1000):
            read.append(str(i))
            yield str(i)

    async with GallerySession(refused_url(), retry=NO_RETRY, concurrency=4) as s:
        results = [r async for r in s.iter_images(ids(), stop_after_transport_failures=10)]
    errors = [type(r.error) for r in results]
    # Fetches that finish together are all reported before the stop: a few past 10.
    assert 10 <= errors.count(TransportError) < 10 + 4
    # Those still running at the stop are cut off (when none is, the next id is read and is).
    assert set(errors) <= {TransportError, UpstreamUnreachable}
    assert {r.id for r in results} == set(read)
    assert len(read) < 20


async def test_a_stop_with_nothing_running_still_says_so_with_the_next_id() -> None:
    # One fetch at a time and a stop after one failure: at the stop nothing is running, and an
    # early end alone would look like the end of the input (bulk then listed none of the rest).
    source = iter(["1", "2", "3", "4"])
    async with GallerySession(refused_url(), retry=NO_RETRY, concurrency=1) as s:
        results = [r async for r in s.iter_images(source, stop_after_transport_failures=1)]
    assert [(r.id, type(r.error)) for r in results] == [
        ("1", TransportError),
        ("2", UpstreamUnreachable),
    ]
    assert list(source) == ["3", "4"]  # not read: the caller still has them


async def test_a_stop_at_the_end_of_the_input_yields_nothing_more() -> None:
    async with GallerySession(refused_url(), retry=NO_RETRY, concurrency=1) as s:
        results = [r async for r in s.iter_images(["1"], stop_after_transport_failures=1)]
    assert [(r.id, type(r.error)) for r in results] == [("1", TransportError)]


async def test_an_answer_of_the_upstream_between_failures_ends_the_run(
    gallery: FakeGallery,
) -> None:
    # Dropped, dropped, a 503 (the upstream answered), dropped, dropped: never three in a row.
    ids = gallery.ids[:5]
    for image_id, answer in zip(ids, "dd5dd", strict=True):
        gallery.script(image_id, Answer.dropped() if answer == "d" else Answer.error(503))
    async with GallerySession(gallery.url, retry=NO_RETRY, concurrency=1) as s:
        results = [r async for r in s.iter_images(ids, stop_after_transport_failures=3)]
    assert [type(r.error) for r in results] == [
        TransportError,
        TransportError,
        ServerError,
        TransportError,
        TransportError,
    ]


async def test_a_run_of_dropped_connections_stops_the_iteration_with_the_ids_cut_off_named(
    gallery: FakeGallery,
) -> None:
    ids = gallery.ids[:6]
    for image_id in ids[:3]:
        gallery.script(image_id, Answer.dropped())
    source = iter(ids)
    async with GallerySession(gallery.url, retry=NO_RETRY, concurrency=1) as s:
        results = [r async for r in s.iter_images(source, stop_after_transport_failures=3)]
    stopped = results[-1].error
    assert [(r.id, type(r.error)) for r in results] == [
        (ids[0], TransportError),
        (ids[1], TransportError),
        (ids[2], TransportError),
        (ids[3], UpstreamUnreachable),
    ]
    assert isinstance(stopped, UpstreamUnreachable)
    assert stopped.image_id == ids[3]
    assert isinstance(stopped.__cause__, TransportError)
    assert "3 ids in a row" in stopped.message
    assert list(source) == ids[4:]
    assert gallery.requests[ids[3]] == 0  # cut off before any request


def test_stop_after_transport_failures_below_one_is_refused() -> None:
    session = GallerySession(refused_url())
    with pytest.raises(ValueError, match="stop_after_transport_failures"):
        session.iter_images(["1"], stop_after_transport_failures=0)

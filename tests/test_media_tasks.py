"""The downloads a session owns: `OwnedTasks`, and `close()` ending every download it started.

The first tests drive `OwnedTasks` alone, with plain coroutines; the last close sessions whose
downloads stall mid-body on a loopback host, and check that none of their tasks is left.
"""

from __future__ import annotations

import asyncio
import inspect
from contextlib import aclosing

import aiohttp
import pytest
from helpers import leftovers, media_server, trickling

from meigen_async import GalleryImage, GallerySession, MediaResult
from meigen_async._media_tasks import MEDIA_TASK_PREFIX, OwnedTasks
from meigen_async.errors import MediaTransportError

# -- OwnedTasks --------------------------------------------------------------------------------


async def test_close_cancels_every_task_and_waits_until_each_cleanup_has_ended() -> None:
    tasks = OwnedTasks()
    cleaned: list[str] = []

    async def download(name: str) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0)  # a cleanup that awaits, as closing a file or connection does
            cleaned.append(name)

    started = [tasks.start(download(name), MEDIA_TASK_PREFIX + name) for name in ("a", "b")]
    await asyncio.sleep(0)  # both waiting
    async with asyncio.timeout(5):
        await tasks.close()
    assert sorted(cleaned) == ["a", "b"]
    assert all(task.cancelled() for task in started)


async def test_a_task_started_after_close_is_refused_and_its_coroutine_closed() -> None:
    tasks = OwnedTasks()
    await tasks.close()
    ran: list[str] = []

    async def download() -> None:
        ran.append("ran")

    coroutine = download()
    with pytest.raises(RuntimeError, match="closed"):
        tasks.start(coroutine, MEDIA_TASK_PREFIX + "a")
    # Closed, not left to warn "never awaited" when it is collected.
    assert inspect.getcoroutinestate(coroutine) == inspect.CORO_CLOSED
    assert ran == []


# -- A session's close ---------------------------------------------------------------------------


async def test_close_ends_a_download_stalled_mid_body_and_sends_nothing_more(tmp_path):
    started, release = asyncio.Event(), asyncio.Event()
    requests: list[str] = []
    async with media_server(trickling(started, release, 3600, requests), release) as base:
        image = GalleryImage(id="img1", media_urls=(f"{base}/m.png",))
        session = GallerySession(base, media_hosts=[base.removeprefix("http://")], timeout=60)
        download = asyncio.ensure_future(session.download_media(image, tmp_path))
        await started.wait()
        async with asyncio.timeout(5):
            await session.close()
            assert _media_tasks() == []  # none outlives close()
            assert download.done()
            with pytest.raises(MediaTransportError, match="session was closed"):
                await download
        assert requests == ["/m.png"]
    assert leftovers(tmp_path / "img1") == []


async def test_close_ends_iter_media_with_the_images_in_flight_reported(tmp_path):
    started, release = asyncio.Event(), asyncio.Event()
    requests: list[str] = []
    async with media_server(trickling(started, release, 3600, requests), release) as base:
        images = [GalleryImage(id=f"i{n}", media_urls=(f"{base}/m.png",)) for n in range(100)]
        # The caller's own aiohttp session, which close() leaves open: only cancelling the
        # downloads ends them.
        http = aiohttp.ClientSession()
        session = GallerySession(
            base, media_hosts=[base.removeprefix("http://")], timeout=60, session=http
        )
        results: list[MediaResult] = []

        async def consume() -> None:
            async with aclosing(session.iter_media(images, tmp_path)) as stream:
                async for result in stream:
                    results.append(result)

        consumer = asyncio.ensure_future(consume())
        await started.wait()
        async with asyncio.timeout(5):
            await session.close()
            assert _media_tasks() == []  # none outlives close()
            await consumer
        await http.close()
    # Twice media_concurrency images in flight, 8 of them requesting (one host): each one
    # reported with the error, and no more of the input read.
    assert len(requests) == 8
    assert len(results) == 16
    assert all(isinstance(r.error, MediaTransportError) for r in results)


def _media_tasks() -> list[asyncio.Task[object]]:
    return [
        task
        for task in asyncio.all_tasks()
        if task.get_name().startswith(MEDIA_TASK_PREFIX) and not task.done()
    ]

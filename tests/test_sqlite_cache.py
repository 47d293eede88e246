"""SQLiteCache, on real SQLite files in tmp dirs; "another process" is one (sqlite_helpers.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from yarl import URL

from meigen_async import GallerySession, RetryPolicy
from meigen_async._shared_codec import gallery_of, shared_key
from meigen_async.models import structure_image
from meigen_async.shared import SharedImage
from meigen_async.sqlite_cache import SQLiteCache
from meigen_async.testing import FakeGallery

WORKER = Path(__file__).with_name("sqlite_helpers.py")


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "meigen_async" and r.levelno >= logging.WARNING
    ]


async def start_workers(*argv: str, count: int) -> list[asyncio.subprocess.Process]:
    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(WORKER),
            *argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(count)
    ]
    for worker in workers:
        assert worker.stdout is not None
        assert await worker.stdout.readline() == b"ready\n"
    return workers


def key_of(gallery: FakeGallery, image_id: str) -> str:
    """The row id of `image_id` of `gallery`, as a session on it writes it."""
    return shared_key(gallery_of(URL(gallery.url)), image_id)


# -- In one process --------------------------------------------------------------------------------


async def test_a_second_session_on_the_same_file_sends_no_request(
    gallery: FakeGallery, tmp_path: Path
) -> None:
    path = tmp_path / "cache.sqlite"
    for _ in range(2):
        async with SQLiteCache(path) as cache, GallerySession(gallery.url, cache=cache) as s:
            await s.get_images([*gallery.ids[:5], "1999999999999999999"], return_exceptions=True)
    assert gallery.requests == dict.fromkeys([*gallery.ids[:5], "1999999999999999999"], 1)


async def test_the_file_is_in_wal_mode(gallery: FakeGallery, tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    async with SQLiteCache(path) as cache, GallerySession(gallery.url, cache=cache) as s:
        await s.get_image(gallery.ids[0])
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_the_file_keeps_at_most_max_entries_those_closest_to_expiry_dropped(
    images: list[dict[str, Any]], tmp_path: Path
) -> None:
    image = structure_image(images[0])
    async with SQLiteCache(tmp_path / "c.sqlite", max_entries=10) as cache:
        for i in range(25):
            await cache.set(f"id{i}", image, 1000 + i, 0)
    with sqlite3.connect(tmp_path / "c.sqlite") as connection:
        kept = {row[0] for row in connection.execute("SELECT id FROM entries")}
    assert kept == {f"id{i}" for i in range(15, 25)}


async def test_an_expired_row_is_purged_by_the_next_write(
    images: list[dict[str, Any]], tmp_path: Path
) -> None:
    image = structure_image(images[0])
    async with SQLiteCache(tmp_path / "c.sqlite") as cache:
        await cache.set("old", image, 0.01, 0)
        await asyncio.sleep(0.02)  # a real file's wall clock: nothing to fake here
        await cache.set("new", image, 100, 0)
        assert await cache.get("old") is None
    with sqlite3.connect(tmp_path / "c.sqlite") as connection:
        assert [row[0] for row in connection.execute("SELECT id FROM entries")] == ["new"]


async def test_a_value_that_does_not_decode_is_a_miss_and_is_dropped(
    gallery: FakeGallery, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, image_id = tmp_path / "c.sqlite", gallery.ids[0]
    async with SQLiteCache(path) as cache, GallerySession(gallery.url, cache=cache) as s:
        await s.get_image(gallery.ids[1])  # makes the file
        with sqlite3.connect(path) as connection:
            connection.execute(
                "INSERT INTO entries VALUES (?, 'image', '{\"garbage\": 1}', 1e12, 0)",
                (key_of(gallery, image_id),),
            )
        assert (await s.get_image(image_id)).id == image_id
    assert gallery.requests[image_id] == 1
    assert any("dropped" in message for message in warnings_of(caplog))


async def test_leases_are_released_only_by_their_holder(tmp_path: Path) -> None:
    async with SQLiteCache(tmp_path / "c.sqlite") as one, SQLiteCache(tmp_path / "c.sqlite") as two:
        token = await one.try_lease("x", 60_000)
        assert token is not None
        assert await two.try_lease("x", 60_000) is None
        await two.release("x", "not-the-token")
        assert await two.lease_held("x")
        await one.release("x", token)
        assert not await two.lease_held("x")


async def test_an_expired_lease_can_be_taken_by_another(tmp_path: Path) -> None:
    async with SQLiteCache(tmp_path / "c.sqlite") as one, SQLiteCache(tmp_path / "c.sqlite") as two:
        assert await one.try_lease("x", 1) is not None
        await asyncio.sleep(0.005)
        assert await two.try_lease("x", 60_000) is not None


async def test_a_lease_left_by_a_dead_process_is_taken_at_once(tmp_path: Path) -> None:
    dead = await asyncio.create_subprocess_exec(sys.executable, "-c", "")
    await dead.wait()
    async with SQLiteCache(tmp_path / "c.sqlite") as cache:
        assert not await cache.lease_held("x")  # makes the file
        with sqlite3.connect(tmp_path / "c.sqlite") as connection:
            connection.execute(
                "INSERT INTO leases VALUES ('x', 'theirs', ?, ?)", (time.time() + 30, dead.pid)
            )
        assert not await cache.lease_held("x")
        assert await cache.try_lease("x", 60_000) is not None


async def test_a_corrupt_file_gives_one_warning_and_the_session_works(
    gallery: FakeGallery, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "c.sqlite"
    path.write_bytes(b"this is not a database, " * 200)
    async with SQLiteCache(path) as cache, GallerySession(gallery.url, cache=cache) as s:
        found = await s.get_images(gallery.ids[:10])
    assert [image.id for image in found] == gallery.ids[:10]
    assert len(warnings_of(caplog)) == 1
    assert "cannot be used" in warnings_of(caplog)[0]
    assert not cache.available


async def test_a_file_in_a_missing_directory_gives_one_warning_and_the_session_works(
    gallery: FakeGallery, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        SQLiteCache(tmp_path / "no" / "such" / "c.sqlite") as cache,
        GallerySession(gallery.url, cache=cache) as s,
    ):
        await s.get_images(gallery.ids[:3])
    assert len(warnings_of(caplog)) == 1


async def test_500_concurrent_gets_never_surface_database_is_locked(
    slow_gallery: FakeGallery, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ids = [slow_gallery.ids[i % 60] for i in range(500)]
    async with (
        SQLiteCache(tmp_path / "c.sqlite") as cache,
        GallerySession(slow_gallery.url, cache=cache, concurrency=64) as s,
    ):
        found = await asyncio.gather(*(s.get_image(i) for i in ids))
    assert [image.id for image in found] == ids
    assert sum(slow_gallery.requests.values()) == 60
    assert warnings_of(caplog) == []


# -- Between processes -----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.xdist_group("processes")
async def test_four_processes_asking_for_the_same_20_ids_make_at_most_22_requests(
    images: list[dict[str, Any]], tmp_path: Path
) -> None:
    path = tmp_path / "c.sqlite"
    async with FakeGallery(images, delay=0.1) as gallery:
        ids = gallery.ids[:20]
        workers = await start_workers("fetch", gallery.url, str(path), *ids, count=4)
        outputs = await asyncio.gather(*(w.communicate(b"go\n") for w in workers))
    results = [json.loads(out) for out, _ in outputs]
    assert all(r["outcomes"] == dict.fromkeys(ids, "ok") for r in results), results
    assert gallery.total_requests <= 22
    assert all(b"locked" not in err for _, err in outputs)


@pytest.mark.slow
@pytest.mark.xdist_group("processes")
async def test_four_processes_writing_at_once_never_surface_database_is_locked(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c.sqlite"
    workers = await start_workers("write", str(path), "200", count=4)
    outputs = await asyncio.gather(*(w.communicate(b"go\n") for w in workers))
    assert all(w.returncode == 0 for w in workers)
    for out, err in outputs:
        assert json.loads(out.splitlines()[-1]) == {"warnings": []}
        assert b"locked" not in err
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT count(*) FROM entries").fetchone() == (200,)


@pytest.mark.slow
@pytest.mark.xdist_group("processes")
async def test_sigkill_mid_write_keeps_committed_rows_and_the_file_usable(
    images: list[dict[str, Any]], tmp_path: Path
) -> None:
    path = tmp_path / "c.sqlite"
    [worker] = await start_workers("write", str(path), "1000000", count=1)
    assert worker.stdin is not None
    assert worker.stdout is not None
    worker.stdin.write(b"go\n")
    committed = 0
    while committed < 500:
        committed = int((await worker.stdout.readline()).split()[1])
    worker.send_signal(signal.SIGKILL)
    await worker.wait()
    image = structure_image(images[0])
    async with SQLiteCache(path) as cache:
        await cache.set(image.id, image, 100, 0)
        assert isinstance(await cache.get(image.id), SharedImage)
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        stored = {row[0] for row in connection.execute("SELECT id FROM entries")}
    assert {f"w{i}" for i in range(committed)} <= stored


async def test_a_session_without_retries_on_a_shared_file_reads_what_another_stored(
    gallery: FakeGallery, tmp_path: Path
) -> None:
    path = tmp_path / "c.sqlite"
    async with SQLiteCache(path) as cache, GallerySession(gallery.url, cache=cache) as s:
        await s.get_image(gallery.ids[0])
    gallery.reset_counts()
    async with (
        SQLiteCache(path) as cache,
        GallerySession(gallery.url, cache=cache, retry=RetryPolicy(max_retries=0)) as s,
    ):
        assert (await s.get_image(gallery.ids[0])).id == gallery.ids[0]
    assert gallery.total_requests == 0


async def test_a_revalidated_image_is_a_304_from_a_new_session_on_the_same_file(
    gallery: FakeGallery, tmp_path: Path
) -> None:
    image_id = gallery.ids[0]
    path, key = tmp_path / "cache.sqlite", key_of(gallery, image_id)
    async with SQLiteCache(path) as cache, GallerySession(gallery.url, cache=cache) as session:
        await session.get_image(image_id)
        stored = await cache.get(key)
        assert isinstance(stored, SharedImage)
        assert stored.etag is not None
        # The same entry, expired at once: the next session must revalidate it.
        await cache.set(key, stored.image, 0.001, 0, etag=stored.etag)
    await asyncio.sleep(0.01)
    async with SQLiteCache(path) as cache, GallerySession(gallery.url, cache=cache) as session:
        assert (await session.get_image(image_id)).id == image_id
        assert session.stats.revalidated == 1

    assert gallery.requests[image_id] == 2
    assert gallery.not_modified[image_id] == 1


async def test_a_row_of_the_format_before_galleries_is_never_read(
    gallery: FakeGallery, tmp_path: Path
) -> None:
    path, image_id = tmp_path / "c.sqlite", gallery.ids[0]
    async with SQLiteCache(path) as cache:
        await cache.lease_held("-")  # makes the file
    # As the previous release wrote it: the id alone names it, whatever gallery it came from.
    other = {**gallery.images[image_id], "text": "an image of another gallery"}
    old = json.dumps({"image": other, "fresh_until": time.time() + 600, "etag": None})
    with sqlite3.connect(path) as connection:
        connection.execute(
            "INSERT INTO entries VALUES (?, 'image', ?, ?, 0)", (image_id, old, time.time() + 600)
        )
    async with SQLiteCache(path) as cache, GallerySession(gallery.url, cache=cache) as session:
        image = await session.get_image(image_id)
    assert image.text == gallery.images[image_id]["text"]
    assert gallery.requests[image_id] == 1

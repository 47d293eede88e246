"""The SQLite cache's file: only one marked as ours is touched, and a held write lock costs little.

Against real files, and a real write lock held by a second sqlite3 connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clocks import FakeTimer

from meigen_async import GallerySession
from meigen_async._sqlite_file import APPLICATION_ID, SCHEMA_VERSION, Marks, Verdict, judge
from meigen_async.models import structure_image
from meigen_async.shared import SharedImage
from meigen_async.sqlite_cache import SQLiteCache
from meigen_async.testing import FakeGallery

OUR_TABLES = frozenset({"entries", "entries_expires", "leases"})

# The layout of release 0.x's cache, which wrote user_version 1 and no application_id.
OLD_LAYOUT = """
CREATE TABLE entries (id TEXT PRIMARY KEY, kind TEXT NOT NULL, value TEXT NOT NULL,
    expires REAL NOT NULL);
CREATE INDEX entries_expires ON entries (expires);
CREATE TABLE leases (id TEXT PRIMARY KEY, token TEXT NOT NULL, expires REAL NOT NULL,
    pid INTEGER NOT NULL);
INSERT INTO entries VALUES ('1', 'missing', '{"until": 1e12}', 1e12);
PRAGMA user_version = 1;
"""

# Files that are not ours, as other programs (or other releases) leave them.
NOT_OURS = {
    "another program's entries table, user_version 7": """
        CREATE TABLE entries (id TEXT PRIMARY KEY, body BLOB);
        INSERT INTO entries VALUES ('a', x'00ff');
        PRAGMA user_version = 7;
    """,
    "a look-alike entries (id, payload, expires), user_version 1": """
        CREATE TABLE entries (id TEXT PRIMARY KEY, payload TEXT, expires REAL);
        INSERT INTO entries VALUES ('a', 'kept', 1.0), ('b', 'kept too', 2.0);
        PRAGMA user_version = 1;
    """,
    "another program's table, user_version 0, rollback journal": """
        CREATE TABLE notes (x TEXT);
        INSERT INTO notes VALUES ('mine');
    """,
    "another program's file in WAL mode": """
        PRAGMA journal_mode = WAL;
        CREATE TABLE notes (x TEXT);
    """,
    "another program's application_id, no tables": "PRAGMA application_id = 1234;",
    "this library's older format (user_version 1, no application_id)": OLD_LAYOUT,
    "a newer release's (schema version 99)": f"""
        {OLD_LAYOUT}
        PRAGMA application_id = {APPLICATION_ID};
        PRAGMA user_version = 99;
    """,
}


def make_file(path: Path, script: str) -> None:
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as connection:
        connection.executescript(script)


def beside(path: Path) -> list[Path]:
    """The journal files SQLite may leave beside `path`."""
    return [p for p in path.parent.iterdir() if p != path and p.name.startswith(path.name)]


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "meigen_async" and r.levelno >= logging.WARNING
    ]


@contextlib.contextmanager
def write_lock(path: Path, how: str = "IMMEDIATE") -> Iterator[None]:
    """The file's write lock, held by a second connection, as another process would."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as connection:
        connection.execute(f"BEGIN {how}")
        connection.execute("DELETE FROM leases WHERE id = 'nothing'")  # a write: the lock is held
        try:
            yield
        finally:
            connection.execute("ROLLBACK")


def marks_of(path: Path) -> tuple[int, int]:
    with contextlib.closing(sqlite3.connect(path)) as connection:
        return (
            connection.execute("PRAGMA application_id").fetchone()[0],
            connection.execute("PRAGMA user_version").fetchone()[0],
        )


# -- Whose file it is (pure) -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("marks", "verdict"),
    [
        (Marks(APPLICATION_ID, SCHEMA_VERSION, OUR_TABLES), Verdict.READY),
        (Marks(0, 0, frozenset()), Verdict.SET_UP),
        (Marks(APPLICATION_ID, SCHEMA_VERSION, frozenset({"entries"})), Verdict.SET_UP),
        (Marks(APPLICATION_ID, SCHEMA_VERSION - 1, OUR_TABLES), Verdict.SET_UP),
        (Marks(APPLICATION_ID, SCHEMA_VERSION + 1, OUR_TABLES), Verdict.NEWER),
        (Marks(0, 1, OUR_TABLES), Verdict.FOREIGN),
        (Marks(0, 0, frozenset({"notes"})), Verdict.FOREIGN),
        (Marks(0, 5, frozenset()), Verdict.FOREIGN),
        (Marks(1234, 0, frozenset()), Verdict.FOREIGN),
    ],
)
def test_only_an_empty_file_or_one_marked_ours_may_be_written(
    marks: Marks, verdict: Verdict
) -> None:
    assert judge(marks) is verdict


# -- A file that is not ours -----------------------------------------------------------------------


@pytest.mark.parametrize("script", NOT_OURS.values(), ids=NOT_OURS.keys())
async def test_a_file_not_ours_is_left_byte_for_byte_as_it_was(
    gallery: FakeGallery, tmp_path: Path, script: str
) -> None:
    path = tmp_path / "theirs.db"
    make_file(path, script)
    before = path.read_bytes()
    no_store = gallery.ids[1]
    gallery.extra_headers[no_store] = {"Cache-Control": "no-store"}
    async with SQLiteCache(path) as cache, GallerySession(gallery.url, cache=cache) as session:
        await session.get_images([gallery.ids[0], no_store, "1"], return_exceptions=True)
        session.invalidate(gallery.ids[0])
        session.clear_cache()
    assert path.read_bytes() == before
    assert beside(path) == []


async def test_a_file_not_ours_gives_one_warning_naming_it_and_the_session_works(
    gallery: FakeGallery, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "theirs.db"
    make_file(path, OLD_LAYOUT)
    async with SQLiteCache(path) as cache, GallerySession(gallery.url, cache=cache) as session:
        found = await session.get_images(gallery.ids[:5])
    assert [image.id for image in found] == gallery.ids[:5]
    [warning] = warnings_of(caplog)
    assert str(path) in warning
    assert "not a meigen_async cache" in warning
    assert not cache.available


# -- A file that is ours, or may become ours -------------------------------------------------------


@pytest.mark.parametrize("exists", [True, False], ids=["an empty file", "no file"])
async def test_an_empty_file_is_made_ours(
    gallery: FakeGallery, tmp_path: Path, exists: bool
) -> None:
    path = tmp_path / "c.sqlite"
    if exists:
        path.touch()
    async with SQLiteCache(path) as cache, GallerySession(gallery.url, cache=cache) as session:
        await session.get_image(gallery.ids[0])
    assert marks_of(path) == (APPLICATION_ID, SCHEMA_VERSION)


async def test_a_file_of_ours_of_an_older_version_is_started_afresh(
    gallery: FakeGallery, tmp_path: Path
) -> None:
    path = tmp_path / "c.sqlite"
    make_file(path, f"{OLD_LAYOUT}; PRAGMA application_id = {APPLICATION_ID};")
    async with SQLiteCache(path) as cache, GallerySession(gallery.url, cache=cache) as session:
        await session.get_image(gallery.ids[0])
    assert marks_of(path) == (APPLICATION_ID, SCHEMA_VERSION)
    with contextlib.closing(sqlite3.connect(path)) as connection:
        # The old version's 404 for id 1 is gone, not misread.
        kinds = [row[0] for row in connection.execute("SELECT kind FROM entries")]
    assert kinds == ["image"]


# -- Another process holding the write lock --------------------------------------------------------


@pytest.mark.parametrize("how", ["IMMEDIATE", "EXCLUSIVE"])
async def test_entries_in_the_file_are_read_within_a_second_while_another_holds_the_lock(
    images: list[dict[str, Any]], tmp_path: Path, how: str
) -> None:
    path, image = tmp_path / "c.sqlite", structure_image(images[0])
    async with SQLiteCache(path) as cache:
        await cache.set(image.id, image, 3600, 0)
    with write_lock(path, how):
        async with SQLiteCache(path) as cache:  # opened while the lock is held
            entry = await asyncio.wait_for(cache.get(image.id), 1.0)
    assert isinstance(entry, SharedImage)
    assert entry.image == image


@pytest.mark.slow
async def test_a_session_on_a_locked_file_serves_what_is_stored_and_fetches_the_rest_at_once(
    gallery: FakeGallery, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, stored, new = tmp_path / "c.sqlite", gallery.ids[:10], gallery.ids[10:20]
    async with SQLiteCache(path) as cache, GallerySession(gallery.url, cache=cache) as session:
        await session.get_images(stored)
    gallery.reset_counts()
    with write_lock(path):
        # The back-off's clock stands still: after the first write found the lock held, no
        # other write tries the file in this test.
        async with (
            SQLiteCache(path, timer=FakeTimer()) as cache,
            GallerySession(gallery.url, cache=cache) as session,
        ):
            started = time.monotonic()
            await asyncio.gather(*map(session.get_image, new + stored))
            for image_id in gallery.ids[20:25]:  # one after another
                await session.get_image(image_id)
            elapsed = time.monotonic() - started
    assert elapsed < 2.0  # a write lock waited out for each would show as many seconds
    assert gallery.total_requests == len(new) + 5
    assert len(warnings_of(caplog)) == 1


@pytest.mark.slow
async def test_writes_that_cannot_have_the_lock_are_skipped_with_one_warning(
    images: list[dict[str, Any]], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, image = tmp_path / "c.sqlite", structure_image(images[0])
    async with SQLiteCache(path) as cache:
        await cache.set("before", image, 3600, 0)
        with write_lock(path):
            started = time.monotonic()
            for i in range(5):
                await cache.set(f"w{i}", image, 3600, 0)
            assert await cache.try_lease("x", 60_000) is not None  # nobody to wait for
            elapsed = time.monotonic() - started
    assert elapsed < 1.0  # only the first write waited for the lock (BUSY_TIMEOUT)
    [warning] = warnings_of(caplog)
    assert str(path) in warning
    assert "locked" in warning
    with contextlib.closing(sqlite3.connect(path)) as connection:
        assert connection.execute("SELECT count(*) FROM entries").fetchone() == (1,)


@pytest.mark.slow
async def test_writes_go_to_the_file_again_once_the_lock_is_free_and_the_back_off_passed(
    images: list[dict[str, Any]],
    tmp_path: Path,
    timer: FakeTimer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="meigen_async")
    path, image = tmp_path / "c.sqlite", structure_image(images[0])
    async with SQLiteCache(path, timer=timer) as cache:
        await cache.set("before", image, 3600, 0)
        with write_lock(path):
            await cache.set("locked", image, 3600, 0)
        await cache.set("backing-off", image, 3600, 0)
        timer.now += 0.5
        await cache.set("after", image, 3600, 0)
    with contextlib.closing(sqlite3.connect(path)) as connection:
        stored = {row[0] for row in connection.execute("SELECT id FROM entries")}
    assert stored == {"before", "after"}
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert [m for m in infos if "available again" in m] == [
        f"the SQLite cache {path} is available again after 0.5 s down (failures: 1)"
    ]


@pytest.mark.slow
async def test_close_is_prompt_while_another_holds_the_lock(
    images: list[dict[str, Any]], tmp_path: Path
) -> None:
    path, image = tmp_path / "c.sqlite", structure_image(images[0])
    cache = SQLiteCache(path)
    await cache.set("before", image, 3600, 0)
    with write_lock(path):
        writes = [asyncio.ensure_future(cache.set(f"w{i}", image, 3600, 0)) for i in range(3)]
        await asyncio.sleep(0)  # the first batch is on the worker thread, waiting for the lock
        await asyncio.wait_for(cache.close(), 1.0)
        await asyncio.gather(*writes)
    assert cache.closed

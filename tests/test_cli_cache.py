"""`meigen-async cache`: where the SQLite cache is, what it holds, and clearing it."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from meigen_async.cli import main
from meigen_async.testing import FakeGallery

MISSING = "1999999999999999999"


async def run(*argv: str) -> int:
    """``main(argv)`` in a worker thread, so that this loop keeps serving the gallery."""
    return await asyncio.to_thread(main, list(argv))


def info_of(out: str) -> dict[str, str]:
    rows = (line.split(maxsplit=1) for line in out.splitlines())
    return {label: value for label, value in rows}


def test_cache_path_prints_the_default_file_or_the_one_given(
    cache_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["cache", "path"]) == 0
    assert main(["cache", "path", "--cache", str(tmp_path / "mine.sqlite")]) == 0
    assert capsys.readouterr().out.splitlines() == [
        str(cache_home / "meigen-async" / "gallery.sqlite"),
        str(tmp_path / "mine.sqlite"),
    ]


async def test_cache_info_counts_the_entries_and_says_when_the_oldest_and_newest_were_stored(
    gallery: FakeGallery, capsys: pytest.CaptureFixture[str]
) -> None:
    before = time.time()
    assert await run("get", gallery.ids[0], "--base-url", gallery.url) == 0
    assert await run("get", gallery.ids[1], MISSING, "--base-url", gallery.url) == 1
    capsys.readouterr()
    assert await run("cache", "info") == 0
    info = info_of(capsys.readouterr().out)
    assert info["entries"] == "3 entries (2 images, 1 not found)"
    assert re.fullmatch(r"\d+(\.\d)? kB", info["size"])
    # To the minute, in UTC: both within this test.
    minute = datetime.fromtimestamp(before, UTC).replace(second=0, microsecond=0)
    for label in ("oldest", "newest"):
        stored = datetime.strptime(info[label], "%Y-%m-%d %H:%M UTC").replace(tzinfo=UTC)
        assert minute <= stored <= datetime.now(UTC)


def test_cache_info_without_a_file_says_so_and_makes_none(
    cache_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["cache", "info"]) == 0
    assert info_of(capsys.readouterr().out)["entries"] == "none: no cache file yet"
    assert not (cache_home / "meigen-async").exists()


async def test_cache_clear_empties_the_cache_so_the_next_get_asks_the_gallery(
    gallery: FakeGallery, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run("get", gallery.ids[0], "--base-url", gallery.url) == 0
    capsys.readouterr()
    assert await run("cache", "clear") == 0
    assert re.fullmatch(
        r"meigen-async: cleared .*gallery\.sqlite: 1 entry, .* freed\n", capsys.readouterr().out
    )
    assert await run("cache", "info") == 0
    assert info_of(capsys.readouterr().out)["entries"] == "0 entries (0 images, 0 not found)"
    assert await run("get", gallery.ids[0], "--base-url", gallery.url) == 0
    assert gallery.requests[gallery.ids[0]] == 2


@pytest.mark.parametrize("action", ["info", "clear"])
def test_cache_leaves_another_programs_database_as_it_was(
    action: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    theirs = tmp_path / "notes.db"
    with contextlib.closing(sqlite3.connect(theirs)) as connection:
        connection.executescript(
            "CREATE TABLE entries (id TEXT); INSERT INTO entries VALUES ('a');"
        )
        connection.commit()
    before = theirs.read_bytes()
    assert main(["cache", action, "--cache", str(theirs)]) == 1
    err = capsys.readouterr().err
    assert "it is not a meigen_async cache" in err
    assert err.count("\n") == 1
    assert theirs.read_bytes() == before


async def test_cache_info_shows_a_stored_time_out_of_range_as_unknown(
    gallery: FakeGallery, cache_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run("get", gallery.ids[0], "--base-url", gallery.url) == 0
    path = cache_home / "meigen-async" / "gallery.sqlite"
    with contextlib.closing(sqlite3.connect(path)) as connection:
        connection.execute("UPDATE entries SET stored = 1e300")
        connection.commit()
    capsys.readouterr()
    assert await run("cache", "info") == 0
    info = info_of(capsys.readouterr().out)
    assert (info["oldest"], info["newest"]) == ("unknown", "unknown")

"""``meigen-async search``, in process and piped into ``bulk -`` in subprocesses, on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest

from meigen_async.cli import hit_line, main
from meigen_async.models import SearchHit
from meigen_async.testing import Answer, FakeGallery


def neon(count: int) -> list[dict[str, Any]]:
    return [
        {
            "id": f"{1000 + i}",
            "text": f"neon city, take {i}\nsecond line",
            "model": "midjourney",
            "author_username": "pixel",
            "likes": 1000 + i,
        }
        for i in range(count)
    ]


@pytest.fixture
async def city() -> AsyncIterator[FakeGallery]:
    async with FakeGallery([*neon(30), {"id": "9", "text": "forest"}]) as fake:
        yield fake


async def run(*argv: str) -> int:
    """``main(argv)`` in a worker thread, so that this loop keeps serving the gallery."""
    return await asyncio.to_thread(main, list(argv))


def test_a_hit_line_shows_id_model_author_likes_and_the_prompts_first_line() -> None:
    hit = SearchHit(
        id="7", text="\n  a cat\nmore", model="nanobanana", author_username="ann", likes=1234
    )
    assert hit_line(hit) == "7  nanobanana  @ann  1,234 likes  a cat"


async def test_search_lists_one_readable_line_a_hit(
    city: FakeGallery, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run("search", "neon", "--base-url", city.url, "--max", "3") == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{1000 + i}  midjourney  @pixel  {1000 + i:,} likes  neon city, take {i}" for i in range(3)
    ]


async def test_search_ids_prints_one_id_a_line_paging_to_max(
    city: FakeGallery, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        await run("search", "neon", "--base-url", city.url, "--ids", "--limit", "10", "--max", "25")
        == 0
    )
    assert capsys.readouterr().out.split() == [f"{1000 + i}" for i in range(25)]
    assert [s[1:] for s in city.searches] == [(10, 0), (10, 10), (10, 20)]


async def test_search_json_prints_json_lines_of_the_hits(
    city: FakeGallery, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run("search", "forest", "--base-url", city.url, "--json") == 0
    [line] = capsys.readouterr().out.splitlines()
    assert json.loads(line)["id"] == "9"


async def test_search_refuses_a_blank_query_with_status_2_before_any_request(
    city: FakeGallery, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run("search", "  ", "--base-url", city.url) == 2
    assert capsys.readouterr().err.startswith("meigen-async: error: a search query cannot be empty")
    assert city.total_requests == 0


def test_search_refuses_a_limit_over_20_with_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["search", "neon", "--base-url", "http://127.0.0.1:9", "--limit", "21"])
    assert caught.value.code == 2
    assert "from 1 to 20" in capsys.readouterr().err


async def test_search_reports_a_failed_search_in_one_line_with_status_1(
    city: FakeGallery, capsys: pytest.CaptureFixture[str]
) -> None:
    city.script_search(Answer.error(400, "bad search"))
    assert await run("search", "neon", "--base-url", city.url) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line == "meigen-async: error: search 'neon' (limit 20, offset 0): HTTP 400: bad search"


@pytest.mark.slow
async def test_search_ids_piped_into_bulk_fetches_every_image(city: FakeGallery) -> None:
    read_end, write_end = os.pipe()
    command = [sys.executable, "-m", "meigen_async"]
    search = await asyncio.create_subprocess_exec(
        *command,
        "search",
        "neon",
        "--ids",
        "--max",
        "25",
        "--base-url",
        city.url,
        stdout=write_end,
    )
    bulk = await asyncio.create_subprocess_exec(
        *command,
        "bulk",
        "-",
        "--base-url",
        city.url,
        stdin=read_end,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    os.close(read_end)
    os.close(write_end)
    out, err = await bulk.communicate()
    assert await search.wait() == 0
    assert bulk.returncode == 0, err
    fetched = {json.loads(line)["id"] for line in out.decode().splitlines()}
    assert fetched == {f"{1000 + i}" for i in range(25)}
    assert len(city.searches) == 2
    assert sum(city.requests.values()) == 25


@pytest.mark.parametrize("form", ["--ids", "--json", "--readable"])
async def test_search_lists_only_hits_with_gallery_ids_and_says_once_how_many_it_skipped(
    form: str, capsysbinary: pytest.CaptureFixture[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    # A newline in an id would put a line of the server's choosing into `search --ids | bulk -`.
    forged = [
        {"id": "1001", "text": "neon"},
        {"id": "1002\n666", "text": "neon"},
        {"id": "1003\x1b[2J", "text": "neon"},
        {"id": "1004", "text": "neon"},
    ]
    async with FakeGallery(forged) as fake:
        options = [] if form == "--readable" else [form]
        assert await run("search", "neon", "--base-url", fake.url, *options) == 0
    written = capsysbinary.readouterr()
    lines = written.out.decode().splitlines()
    if form == "--ids":
        assert written.out == b"1001\n1004\n"
    else:
        shown = [json.loads(line)["id"] if form == "--json" else line.split()[0] for line in lines]
        assert shown == ["1001", "1004"]
    # Said once, by the library's own check (its warning), with the ids escaped.
    (warning,) = [record.getMessage() for record in caplog.records]
    assert "skipped 2 results whose id is not a gallery id" in warning
    assert "'1002\\n666'" in warning

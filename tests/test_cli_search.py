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
from meigen_async.cli._search import _cells, hit_header
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
    assert hit_line(hit).split() == ["7", "nanobanana", "@ann", "1,234", "a", "cat"]


def test_a_hit_line_shows_a_json_prompts_first_text_not_its_brace() -> None:
    text = '{\n  "scene": {"subject": "  \\n a red fox\\nin snow", "light": "dusk"}\n}'
    hit = SearchHit(id="7", text=text)
    assert hit_line(hit).endswith("  a red fox")


def test_hit_lines_align_their_columns_and_fit_80_cells_whatever_the_script() -> None:
    hits = [
        SearchHit(id="2013572250852104677", text="x" * 200, model="nanobanana", likes=12),
        SearchHit(
            id="2013572250852104678",
            text="\u732b\u306e\u5199\u771f" * 40,  # wide characters: two cells each
            model="a-model-with-a-long-name",
            author_display_name="\u5c71\u7530 \u592a\u90ce of the long name",
            likes=123_456,
        ),
    ]
    lines = [hit_header(), *(hit_line(hit, 80) for hit in hits)]
    assert [_cells(line) for line in lines[1:]] == [80, 80]
    starts = [
        [_cells(line[: line.index(word)]) for word in words]
        for line, words in zip(
            lines,
            [
                ["MODEL", "AUTHOR", "PROMPT"],
                ["nanobanana", "-", "x"],
                ["a-model", "\u5c71", "\u732b"],
            ],
            strict=True,
        )
    ]
    assert starts[0] == starts[1] == starts[2]
    assert lines[2].endswith("\u2026")


async def test_search_lists_a_header_and_one_readable_line_a_hit(
    city: FakeGallery, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run("search", "neon", "--base-url", city.url, "--max", "3") == 0
    header, *lines = capsys.readouterr().out.splitlines()
    assert header.split() == ["ID", "MODEL", "AUTHOR", "LIKES", "PROMPT"]
    assert [line.split() for line in lines] == [
        [f"{1000 + i}", "midjourney", "@pixel", f"{1000 + i:,}", "neon", "city,", "take", f"{i}"]
        for i in range(3)
    ]


@pytest.mark.parametrize("form", ["--ids", "--json", "--readable"])
async def test_search_with_no_hits_says_so_on_stderr_and_prints_nothing(
    form: str, city: FakeGallery, capsys: pytest.CaptureFixture[str]
) -> None:
    options = [] if form == "--readable" else [form]
    assert await run("search", "no such words", "--base-url", city.url, *options) == 0
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", "meigen-async: no hits for 'no such words'\n")


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


@pytest.mark.parametrize("query", [[], ["  "]], ids=["no query", "spaces"])
async def test_search_without_words_browses_the_newest_posts(
    query: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    dated = [
        {**image, "created_at": f"2026-01-{10 + i:02d}T00:00:00Z"}
        for i, image in enumerate(neon(5))
    ]
    async with FakeGallery(dated) as fake:
        assert await run("search", *query, "--base-url", fake.url, "--ids") == 0
    assert capsys.readouterr().out.split() == ["1004", "1003", "1002", "1001", "1000"]
    assert [q for q, _, _ in fake.searches] == ["", ""]  # a short first page, then an empty one


KEY = "meigen_sk_cli_0123456789"


async def test_search_sends_the_api_key_given_or_from_meigen_api_key_with_searches_only(
    city: FakeGallery, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert await run("search", "neon", "--base-url", city.url, "--api-key", KEY, "--max", "1") == 0
    monkeypatch.setenv("MEIGEN_API_KEY", "meigen_sk_env")
    assert await run("search", "forest", "--base-url", city.url) == 0
    assert await run("get", "1000", "--base-url", city.url, "--no-cache") == 0
    # 'forest' has one hit: a short first page, then the empty one that ends the paging.
    assert [value for _, value in city.authorizations] == [
        f"Bearer {KEY}",
        "Bearer meigen_sk_env",
        "Bearer meigen_sk_env",
    ]
    assert all(path.startswith("/api/search?") for path, _ in city.authorizations)
    assert city.requests["1000"] == 1


@pytest.mark.parametrize("where", ["--api-key", "MEIGEN_API_KEY"])
async def test_a_key_with_a_space_is_refused_with_status_2_without_being_shown(
    where: str,
    city: FakeGallery,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bad = f"{KEY} oops"
    given = ["--api-key", bad] if where == "--api-key" else []
    if not given:
        monkeypatch.setenv("MEIGEN_API_KEY", bad)
    assert await run("search", "neon", "--base-url", city.url, *given) == 2
    err = capsys.readouterr().err
    assert "whitespace, control characters" in err
    assert KEY not in err
    assert city.total_requests == 0


async def test_search_says_when_the_daily_limit_is_reached_with_status_1(
    city: FakeGallery, capsys: pytest.CaptureFixture[str]
) -> None:
    city.script_search(Answer.daily_limit_reached())
    assert await run("search", "neon", "--base-url", city.url, "--api-key", KEY) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert "HTTP 429: Daily search limit reached" in line
    assert "00:00:00 UTC" in line
    assert len(city.searches) == 1


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
        if form == "--readable":
            lines = lines[1:]  # the header
        shown = [json.loads(line)["id"] if form == "--json" else line.split()[0] for line in lines]
        assert shown == ["1001", "1004"]
    # Said once, by the library's own check (its warning), with the ids escaped.
    (warning,) = [record.getMessage() for record in caplog.records]
    assert "skipped 2 results whose id is not a gallery id" in warning
    assert "'1002\\n666'" in warning

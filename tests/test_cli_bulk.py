"""The CLI's persistent cache and `bulk --resume`, `--failed` and failing fast.

The kill tests run a real `python -m meigen_async bulk` and check OUT line by line afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest
from redis_helpers import free_port

from meigen_async.cli import main, read_done_ids
from meigen_async.testing import FakeGallery


async def run(*argv: str) -> int:
    return await asyncio.to_thread(main, list(argv))


async def start_bulk(*argv: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "meigen_async",
        "bulk",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


def check_output(path: Path, ids: list[str]) -> None:
    """Every line of OUT is a JSON image, each id once, none missing."""
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n")
    written = [json.loads(line)["id"] for line in text.splitlines()]
    assert sorted(written) == sorted(ids)


def has_bytes(path: Path) -> bool:
    return path.exists() and path.stat().st_size > 0


async def wait_for_bytes(path: Path) -> None:
    # Another process writes it: there is no event to wait on, only the file to look at.
    while not await asyncio.to_thread(has_bytes, path):  # noqa: ASYNC110
        await asyncio.sleep(0.01)


# -- Resuming -------------------------------------------------------------------------------------


def test_resuming_drops_a_trailing_partial_line_and_reads_the_done_ids(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text('{"id": "a"}\nnot json\n{"id": "b"}\n{"id": "c", "pro', encoding="utf-8")
    assert read_done_ids(str(out)) == {"a", "b"}
    assert out.read_text(encoding="utf-8") == '{"id": "a"}\nnot json\n{"id": "b"}\n'


# -- The command line -----------------------------------------------------------------------------


async def test_get_twice_makes_one_request(gallery: FakeGallery) -> None:
    for _ in range(2):
        assert await run("get", gallery.ids[0], "--base-url", gallery.url) == 0
    assert gallery.requests[gallery.ids[0]] == 1


async def test_no_cache_makes_a_request_each_run(gallery: FakeGallery) -> None:
    for _ in range(2):
        assert await run("get", gallery.ids[0], "--no-cache", "--base-url", gallery.url) == 0
    assert gallery.requests[gallery.ids[0]] == 2


async def test_cache_puts_the_file_where_it_is_told(gallery: FakeGallery, tmp_path: Path) -> None:
    path = tmp_path / "deep" / "mine.sqlite"
    assert await run("get", gallery.ids[0], "--cache", str(path), "--base-url", gallery.url) == 0
    assert path.exists()


async def test_the_default_cache_is_under_xdg_cache_home(
    gallery: FakeGallery, cache_home: Path
) -> None:
    assert await run("get", gallery.ids[0], "--base-url", gallery.url) == 0
    assert (cache_home / "meigen-async" / "gallery.sqlite").exists()


async def test_an_earlier_versions_default_cache_is_left_alone_without_a_warning(
    gallery: FakeGallery, cache_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = cache_home / "meigen-async" / "cache.sqlite"
    old.parent.mkdir()
    with contextlib.closing(sqlite3.connect(old)) as connection:
        # What earlier versions wrote: user_version 1 and no application_id.
        connection.executescript("CREATE TABLE entries (id TEXT); PRAGMA user_version = 1;")
    before = old.read_bytes()
    assert await run("get", gallery.ids[0], "--base-url", gallery.url) == 0
    assert old.read_bytes() == before
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_resume_skips_the_ids_already_written_and_appends(
    gallery: FakeGallery, tmp_path: Path
) -> None:
    ids, out = gallery.ids[:8], tmp_path / "out.jsonl"
    (tmp_path / "ids.txt").write_text("\n".join(ids) + "\n", encoding="utf-8")
    first = json.dumps({"id": ids[0]}) + "\n"
    out.write_text(first + '{"id": "partial', encoding="utf-8")
    args = [str(tmp_path / "ids.txt"), "-o", str(out), "--resume", "--no-cache"]
    assert await run("bulk", *args, "--base-url", gallery.url) == 0
    check_output(out, ids)
    assert ids[0] not in gallery.requests


async def test_an_unreachable_gallery_stops_bulk_with_one_message_and_lists_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = [str(10**18 + i) for i in range(300)]
    (tmp_path / "ids.txt").write_text("\n".join(ids) + "\n", encoding="utf-8")
    failed = tmp_path / "failed.txt"
    url = f"http://127.0.0.1:{free_port()}"
    args = [str(tmp_path / "ids.txt"), "--failed", str(failed), "--retries", "0"]
    assert await run("bulk", *args, "--base-url", url) == 1
    err = capsys.readouterr().err
    assert err.count(f"the gallery at {url} is unreachable") == 1
    assert "ids were not attempted" in err
    assert sorted(failed.read_text(encoding="utf-8").split()) == sorted(ids)


async def test_bulk_refuses_a_failed_file_that_is_its_input_and_leaves_it_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    failed = tmp_path / "failed.txt"
    failed.write_text("a1\nb2\n", encoding="utf-8")
    url = f"http://127.0.0.1:{free_port()}"
    assert await run("bulk", str(failed), "--failed", str(failed), "--base-url", url) == 2
    assert "FILE and --failed are the same file" in capsys.readouterr().err
    assert failed.read_text(encoding="utf-8") == "a1\nb2\n"


@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT])
@pytest.mark.xdist_group("processes")
async def test_a_killed_bulk_resumed_writes_each_id_once(
    images: list[dict[str, Any]], tmp_path: Path, how: signal.Signals
) -> None:
    out, ids_file = tmp_path / "out.jsonl", tmp_path / "ids.txt"
    # 60 ids, 2 at a time, 50 ms each: the run lasts 1.5 s, time enough for the signal to land
    # mid-run on a loaded machine (at 20 ms it sometimes finished first).
    async with FakeGallery(images, delay=0.05) as gallery:
        ids = gallery.ids
        ids_file.write_text("\n".join(ids) + "\n", encoding="utf-8")
        args = [str(ids_file), "-o", str(out), "--concurrency", "2", "--base-url", gallery.url]
        process = await start_bulk(*args)
        await wait_for_bytes(out)
        process.send_signal(how)
        _, err = await process.communicate()
        assert process.returncode == (-9 if how == signal.SIGKILL else 130)
        if how == signal.SIGINT:
            assert "resume with: meigen-async bulk" in err.decode()
            assert "--resume" in err.decode()
        assert len(out.read_text(encoding="utf-8").splitlines()) < len(ids)
        gallery.delay = 0  # the slow answers were for the signal's sake only
        resumed = await start_bulk(*args, "--resume")
        _, err = await resumed.communicate()
        assert resumed.returncode == 0, err
    check_output(out, ids)


@pytest.mark.slow
@pytest.mark.xdist_group("processes")
async def test_sigterm_stops_bulk_as_ctrl_c_does_with_the_failed_ids_written(
    images: list[dict[str, Any]], tmp_path: Path
) -> None:
    out, ids_file, failed = tmp_path / "out.jsonl", tmp_path / "ids.txt", tmp_path / "failed.txt"
    missing = [str(1999999999999999990 + i) for i in range(5)]
    async with FakeGallery(images, delay=0.05) as gallery:
        # The missing ids first: they have failed by the time OUT gets its first bytes.
        ids_file.write_text("\n".join([*missing, *gallery.ids]) + "\n", encoding="utf-8")
        args = [str(ids_file), "-o", str(out), "--failed", str(failed), "--concurrency", "2"]
        args += ["--base-url", gallery.url]
        process = await start_bulk(*args)
        await wait_for_bytes(out)
        process.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(process.communicate(), timeout=30)
        lines = err.decode().splitlines()
        assert process.returncode == 130, lines
        assert lines[0].startswith("meigen-async: interrupted: ")
        assert lines[1].startswith("meigen-async: 5 of ")
        assert sorted(line.split(":")[0].strip() for line in lines[2:7]) == missing
        assert lines[7:] == [
            f"meigen-async: resume with: meigen-async bulk {' '.join(args)} --resume",
        ]  # said once: no second "interrupted" after the report
        assert sorted(failed.read_text(encoding="utf-8").splitlines()) == missing
        assert failed.read_bytes().endswith(b"\n")
        assert len(out.read_text(encoding="utf-8").splitlines()) < len(gallery.ids)

        gallery.delay = 0  # the slow answers were for the signal's sake only
        resumed = await start_bulk(*args, "--resume")
        _, err = await asyncio.wait_for(resumed.communicate(), timeout=30)
        assert resumed.returncode == 1, err  # the missing ids fail again
    check_output(out, gallery.ids)
    assert sorted(failed.read_text(encoding="utf-8").splitlines()) == missing

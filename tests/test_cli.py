"""The command line, run in-process (in a worker thread, while the test's loop serves a
FakeGallery) or as ``python -m meigen_async`` in a subprocess. Every run is pointed at a
FakeGallery on 127.0.0.1: nothing here reaches the real service.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from meigen_async.cli import base_url_problem, main, read_ids, run_demo, summarize
from meigen_async.models import structure_image, unstructure_image
from meigen_async.prompt import PromptKind, parse_prompt
from meigen_async.testing import Answer, FakeGallery, sample_images

MISSING = "1999999999999999999"
PLAIN_ID = "2013572250852104677"  # nanobanana, 2048x1536, North Frame (@northframe)
JSON_ID = "2018657825334796972"  # a JSON prompt

# What json.loads makes of "\ud800" and "\udfff" in a body: strings no UTF-8 stream can write.
LONE_TEXT = "a prompt \ud800 cut in half"
LONE_NAME = "Caf\u00e9 \udfff"
# What the library makes of them: U+FFFD, which every UTF-8 stream can write.
LONE_TEXT_READ = "a prompt \ufffd cut in half"
LONE_NAME_READ = "Caf\u00e9 \ufffd"


async def run(*argv: str) -> int:
    """``main(argv)`` in a worker thread, so that this loop keeps serving the gallery."""
    return await asyncio.to_thread(main, list(argv))


def one_error_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("meigen-async: error: ")
    assert "Traceback" not in stderr
    return lines[0]


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def endpoint_data(image_id: str) -> dict[str, Any]:
    """What ``--json`` should print for a sample id: its data object, as the client reads it."""
    data = next(d for d in sample_images() if d["id"] == image_id)
    normalized: dict[str, Any] = json.loads(json.dumps(unstructure_image(structure_image(data))))
    return normalized


@pytest.fixture
def ids_file(tmp_path: Path, gallery: FakeGallery) -> Path:
    path = tmp_path / "ids.txt"
    path.write_text("\n".join(gallery.ids[:5]) + "\n", encoding="utf-8")
    return path


async def start_cli(
    *argv: str, env: dict[str, str] | None = None, wrapper: list[str] | None = None
) -> asyncio.subprocess.Process:
    """`python -m meigen_async ARGV`, started through `wrapper` (a command that execs it)."""
    return await asyncio.create_subprocess_exec(
        *(wrapper or []),
        sys.executable,
        "-m",
        "meigen_async",
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=None if env is None else {**os.environ, **env},
    )


@pytest.fixture
def broken_images() -> list[dict[str, Any]]:
    """The first five sample images; the third has lone surrogates in its text and author."""
    images = sample_images()[:5]
    images[2] = {**images[2], "text": LONE_TEXT, "author_display_name": LONE_NAME}
    return images


@pytest.fixture
async def broken_gallery(broken_images: list[dict[str, Any]]) -> AsyncIterator[FakeGallery]:
    async with FakeGallery(broken_images) as fake:
        url = f"{fake.url}/api/images/{broken_images[2]['id']}"
        async with aiohttp.ClientSession() as http, http.get(url) as response:
            body = await response.read()
        assert b"\\ud800" in body  # the escapes json.loads accepts, on the wire
        fake.reset_counts()
        yield fake


# -- get -----------------------------------------------------------------------------------------


async def test_get_prints_a_summary_of_the_image(
    gallery: FakeGallery, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run("get", "--base-url", gallery.url, PLAIN_ID) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == PLAIN_ID
    assert re.search(r"prompt\s+plain text\n", out)
    assert re.search(r"size\s+2048x1536\n", out)
    assert re.search(r"model\s+nanobanana\n", out)
    assert re.search(r"author\s+North Frame \(@northframe\)\n", out)
    assert re.search(rf"media\s+https://images\.meigen\.ai/tweets/{PLAIN_ID}/0\.jpg\n", out)


async def test_get_summary_names_a_json_prompt(
    gallery: FakeGallery, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run("get", "--base-url", gallery.url, JSON_ID) == 0
    assert re.search(r"prompt\s+JSON", capsys.readouterr().out)


@pytest.mark.parametrize("ids", [[PLAIN_ID], [PLAIN_ID, JSON_ID]])
async def test_get_json_prints_json_lines_whatever_the_number_of_ids(
    ids: list[str], gallery: FakeGallery, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run("get", "--json", "--base-url", gallery.url, *ids) == 0
    assert json_lines(capsys.readouterr().out) == [endpoint_data(i) for i in ids]


async def test_get_rejects_an_invalid_id_in_one_line_with_status_2_before_any_request(
    gallery: FakeGallery, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run("get", "--base-url", gallery.url, PLAIN_ID, "not/an id") == 2
    line = one_error_line(capsys.readouterr().err)
    assert "invalid image id 'not/an id'" in line
    assert gallery.total_requests == 0


async def test_get_reports_an_unreachable_host_in_one_line_with_status_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with FakeGallery() as closed:
        url = closed.url
    assert await run("get", "--base-url", url, "--retries", "0", PLAIN_ID) == 1
    line = one_error_line(capsys.readouterr().err)
    assert f"request for image {PLAIN_ID} failed" in line


async def test_get_never_prints_an_image_its_cache_holds_from_another_gallery(
    capsys: pytest.CaptureFixture[str],
) -> None:
    theirs = [{**data, "text": "the other gallery's prompt"} for data in sample_images()]
    async with FakeGallery(sample_images()) as one, FakeGallery(theirs) as two:
        assert await run("get", "--json", "--base-url", one.url, PLAIN_ID) == 0
        capsys.readouterr()
        # The same default cache file: each run above and below reads and writes it.
        assert await run("get", "--json", "--base-url", two.url, PLAIN_ID) == 0
        assert json.loads(capsys.readouterr().out)["text"] == "the other gallery's prompt"
        closed = FakeGallery()
        async with closed:
            url = closed.url
        assert await run("get", "--base-url", url, "--retries", "0", PLAIN_ID) == 1
    assert two.requests[PLAIN_ID] == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"request for image {PLAIN_ID} failed" in one_error_line(captured.err)


async def test_get_without_retries_given_retries_three_times(
    gallery: FakeGallery, capsys: pytest.CaptureFixture[str]
) -> None:
    # Retry-After: 0 makes each retry at once; one 503 more than the default allows for.
    busy = Answer.error(503, "Busy", {"Retry-After": "0"})
    gallery.script(PLAIN_ID, *[busy] * 5)
    assert await run("get", "--base-url", gallery.url, PLAIN_ID) == 1
    assert "HTTP 503" in one_error_line(capsys.readouterr().err)
    assert gallery.requests[PLAIN_ID] == 4


async def test_get_reports_a_missing_image_with_status_1(
    gallery: FakeGallery, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run("get", "--base-url", gallery.url, MISSING) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "HTTP 404" in one_error_line(captured.err)


async def test_get_takes_the_base_url_from_the_environment(
    gallery: FakeGallery, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MEIGEN_BASE_URL", gallery.url)
    assert await run("get", PLAIN_ID) == 0
    assert gallery.requests[PLAIN_ID] == 1


async def test_get_prints_a_summary_with_lone_surrogates_replaced(
    broken_gallery: FakeGallery, capsys: pytest.CaptureFixture[str]
) -> None:
    broken_id = broken_gallery.ids[2]
    assert await run("get", "--base-url", broken_gallery.url, broken_id) == 0
    out = capsys.readouterr().out
    assert re.search("author\\s+Caf\u00e9 \ufffd \\(@", out)


async def test_get_json_writes_lone_surrogates_replaced(
    broken_gallery: FakeGallery, capsys: pytest.CaptureFixture[str]
) -> None:
    broken_id = broken_gallery.ids[2]
    assert await run("get", "--json", "--base-url", broken_gallery.url, broken_id) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["text"], printed["author_display_name"]) == (LONE_TEXT_READ, LONE_NAME_READ)


@pytest.mark.slow
@pytest.mark.parametrize("as_json", [False, True], ids=["summary", "json"])
async def test_get_prints_to_an_ascii_stdout_without_crashing(
    broken_gallery: FakeGallery, as_json: bool
) -> None:
    ids = broken_gallery.ids  # Japanese text, an emoji, an accent and lone surrogates
    argv = ["get", "--base-url", broken_gallery.url, *(["--json"] if as_json else []), *ids]
    process = await start_cli(*argv, env={"PYTHONIOENCODING": "ascii:strict"})
    out, err = await asyncio.wait_for(process.communicate(), timeout=30)
    assert (process.returncode, err) == (0, b"")
    text = out.decode("ascii")
    if as_json:
        printed = json_lines(text)
        assert [image["id"] for image in printed] == ids
        assert printed[2]["author_display_name"] == LONE_NAME_READ
        assert printed[0] == endpoint_data(ids[0])
    else:
        assert re.search(r"author\s+Caf\\xe9 \\ufffd \(@", text)
    assert sum(broken_gallery.requests.values()) == 5


async def test_get_reports_a_server_message_with_a_lone_surrogate_in_one_line(
    gallery: FakeGallery, capsys: pytest.CaptureFixture[str]
) -> None:
    gallery.script(PLAIN_ID, Answer.error(400, "gone \ud800 away"))
    assert await run("get", "--base-url", gallery.url, PLAIN_ID) == 1
    assert "gone \ufffd away" in one_error_line(capsys.readouterr().err)


def test_get_shows_the_time_an_image_was_posted_converted_to_utc() -> None:
    data = {**sample_images()[0], "created_at": "2025-01-02T01:30:00+05:00"}
    assert "  posted 2025-01-01 20:30 UTC" in summarize(structure_image(data)).splitlines()


def test_a_base_url_that_is_not_http_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["get", "--base-url", "ftp://127.0.0.1", PLAIN_ID])
    assert exit_info.value.code == 2
    assert "expected an http:// or https:// URL" in capsys.readouterr().err


def test_a_negative_timeout_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["get", "--timeout", "-1", PLAIN_ID])
    assert exit_info.value.code == 2
    assert "expected a positive number" in capsys.readouterr().err


BAD_BASE_URLS = {
    "port out of range": ("http://127.0.0.1:99999", "expected a port from 0 to 65535"),
    "port not a number": ("http://127.0.0.1:abc", "expected a port from 0 to 65535"),
    "query": ("http://127.0.0.1:8000/?x=1", "a base URL cannot have a query or a fragment"),
    "fragment": ("http://127.0.0.1:8000/#top", "a base URL cannot have a query or a fragment"),
    "not http": ("ftp://127.0.0.1", "expected an http:// or https:// URL"),
    "no host": ("http://:8000", "expected an http:// or https:// URL"),
    "broken IPv6 host": ("http://[::1", "expected an http:// or https:// URL"),
    "a space": ("http://127.0.0.1:8000/a b", "a URL cannot hold spaces"),
}


def usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one error line of a command line that argparse rejects, its status checked."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    return one_error_line(captured.err)


def remote_argv(command: str, *options: str) -> list[str]:
    return [command, *options, PLAIN_ID] if command == "get" else [command, *options, "-"]


@pytest.mark.parametrize("command", ["get", "bulk"])
@pytest.mark.parametrize(("url", "says"), BAD_BASE_URLS.values(), ids=BAD_BASE_URLS.keys())
def test_a_bad_base_url_is_one_error_line_with_status_2(
    command: str, url: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    line = usage_error(remote_argv(command, "--base-url", url), capsys)
    assert f"argument --base-url: {says}" in line
    assert repr(url) in line


@pytest.mark.parametrize("command", ["get", "bulk"])
def test_an_empty_base_url_is_one_error_line_with_status_2(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    line = usage_error(remote_argv(command, "--base-url", ""), capsys)
    assert "expected an http:// or https:// URL, got ''" in line


@pytest.mark.parametrize("command", ["get", "bulk"])
@pytest.mark.parametrize(("url", "says"), BAD_BASE_URLS.values(), ids=BAD_BASE_URLS.keys())
def test_a_bad_base_url_from_the_environment_is_named_in_one_error_line_with_status_2(
    command: str,
    url: str,
    says: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MEIGEN_BASE_URL", url)
    line = usage_error(remote_argv(command), capsys)
    assert f"$MEIGEN_BASE_URL: {says}" in line


async def test_a_base_url_option_overrides_a_bad_one_in_the_environment(
    gallery: FakeGallery, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEIGEN_BASE_URL", "http://127.0.0.1:99999")
    assert await run("get", "--base-url", gallery.url, PLAIN_ID) == 0
    assert gallery.requests[PLAIN_ID] == 1


async def test_a_bad_base_url_in_the_environment_is_no_concern_of_serve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MEIGEN_BASE_URL", "http://127.0.0.1:99999")
    assert await run("serve", "--data", str(tmp_path / "nope.jsonl")) == 2
    assert "cannot read" in one_error_line(capsys.readouterr().err)


BAD_OPTIONS = {
    "timeout not a number": (["get", "--timeout", "abc", PLAIN_ID], "expected a number"),
    "timeout nan": (["get", "--timeout", "nan", PLAIN_ID], "expected a positive number"),
    "timeout infinite": (["get", "--timeout", "inf", PLAIN_ID], "expected a positive number"),
    "retries not a number": (["get", "--retries", "x", PLAIN_ID], "expected a whole number"),
    "retries negative": (["bulk", "--retries", "-1", "-"], "from 0 to 100"),
    "retries past the bound": (["bulk", "--retries", "1" + "0" * 30, "-"], "from 0 to 100"),
    "concurrency 0": (["bulk", "--concurrency", "0", "-"], "expected a whole number >= 1"),
    "concurrency 1.5": (["bulk", "--concurrency", "1.5", "-"], "expected a whole number"),
    "rate limit 0": (["bulk", "--rate-limit", "0", "-"], "expected a positive number"),
    "port out of range": (["serve", "--port", "99999"], "from 0 to 65535"),
    "port not a number": (["serve", "--port", "http"], "expected a whole number"),
    "no command": ([], "the following arguments are required: COMMAND"),
    "unknown command": (["fetch"], "invalid choice: 'fetch'"),
    "no id": (["get"], "the following arguments are required: ID"),
    "unknown option": (["get", "--jsn", PLAIN_ID], "unrecognized arguments: --jsn"),
}


@pytest.mark.parametrize(("argv", "says"), BAD_OPTIONS.values(), ids=BAD_OPTIONS.keys())
def test_a_bad_option_value_is_one_error_line_with_status_2(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    line = usage_error(argv, capsys)
    assert says in line
    assert line.endswith("--help')")


def test_the_error_line_of_a_bad_option_points_at_the_commands_help(
    capsys: pytest.CaptureFixture[str],
) -> None:
    line = usage_error(["bulk", "--concurrency", "0", "-"], capsys)
    assert line.endswith("(see 'meigen-async bulk --help')")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080",
        "https://www.meigen.ai/",
        "http://127.0.0.1:8080/mirror/",
        "http://[::1]:8080",
        "http://127.0.0.1:8080/?",
    ],
)
def test_base_url_problem_accepts_what_a_session_accepts(url: str) -> None:
    assert base_url_problem(url) is None


@pytest.mark.slow
async def test_a_bad_base_url_is_one_error_line_with_status_2_from_the_real_entry_point() -> None:
    process = await start_cli("bulk", "-", env={"MEIGEN_BASE_URL": "http://127.0.0.1:8000/?x=1"})
    out, err = await asyncio.wait_for(process.communicate(PLAIN_ID.encode()), timeout=30)
    assert process.returncode == 2
    assert out == b""
    assert "cannot have a query or a fragment" in one_error_line(err.decode())


@pytest.mark.parametrize("command", ["get", "bulk", "serve", "demo", "export"])
def test_each_command_has_help_with_examples(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert f"meigen-async {command}" in capsys.readouterr().out.split("example")[1]


# -- bulk ----------------------------------------------------------------------------------------


def test_read_ids_strips_whitespace_and_skips_blank_lines() -> None:
    assert list(read_ids(["  a1 \n", "\n", "   \n", "b2\r\n", "c3"])) == ["a1", "b2", "c3"]


def test_read_ids_reads_lazily_from_an_endless_stream() -> None:
    def endless() -> Iterator[str]:
        number = 0
        while True:
            number += 1
            yield f"{number}\n"

    ids = read_ids(endless())
    assert [next(ids) for _ in range(3)] == ["1", "2", "3"]


async def test_bulk_writes_one_json_line_per_image_to_the_output_file(
    gallery: FakeGallery, ids_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "images.jsonl"
    assert await run("bulk", str(ids_file), "-o", str(out), "--base-url", gallery.url) == 0
    lines = json_lines(out.read_text(encoding="utf-8"))
    assert sorted(line["id"] for line in lines) == sorted(gallery.ids[:5])
    assert lines[0] == endpoint_data(lines[0]["id"])
    assert capsys.readouterr().out == ""


async def test_bulk_skips_blank_lines_and_surrounding_whitespace(
    gallery: FakeGallery, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "ids.txt"
    path.write_text(f"\n  {PLAIN_ID}  \n\n\t{JSON_ID}\n   \n", encoding="utf-8")
    assert await run("bulk", str(path), "--base-url", gallery.url) == 0
    captured = capsys.readouterr()
    assert {line["id"] for line in json_lines(captured.out)} == {PLAIN_ID, JSON_ID}
    assert captured.err == ""


@pytest.mark.slow
async def test_bulk_reads_stdin_and_writes_json_lines_to_stdout(gallery: FakeGallery) -> None:
    process = await start_cli("bulk", "-", "--base-url", gallery.url)
    ids = "\n".join(gallery.ids[:10]).encode()
    out, err = await asyncio.wait_for(process.communicate(ids), timeout=30)
    assert process.returncode == 0, err
    assert sorted(line["id"] for line in json_lines(out.decode())) == sorted(gallery.ids[:10])


async def test_bulk_exits_1_listing_each_failed_id_with_its_error(
    gallery: FakeGallery, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "ids.txt"
    path.write_text(f"{PLAIN_ID}\n{MISSING}\nbad!id\n{JSON_ID}\n", encoding="utf-8")
    assert await run("bulk", str(path), "--base-url", gallery.url) == 1
    captured = capsys.readouterr()
    assert {line["id"] for line in json_lines(captured.out)} == {PLAIN_ID, JSON_ID}
    head, *failures = captured.err.splitlines()
    assert head == "meigen-async: 2 of 4 ids failed:"
    assert sorted(failures) == sorted(
        [
            f"  {MISSING}: image {MISSING} not found (HTTP 404, from the gallery)",
            "  bad!id: invalid image id 'bad!id': expected 1 to 128 characters "
            "from A-Z, a-z, 0-9, '_' and '-'",
        ]
    )


async def test_bulk_fetches_and_writes_every_id_around_an_image_with_lone_surrogates(
    broken_gallery: FakeGallery, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "ids.txt"
    path.write_text("\n".join(broken_gallery.ids), encoding="utf-8")
    out = tmp_path / "images.jsonl"
    # One fetch at a time: the broken image comes third, with two more to fetch after it.
    argv = ["bulk", str(path), "-o", str(out), "--concurrency", "1"]
    assert await run(*argv, "--base-url", broken_gallery.url) == 0
    assert broken_gallery.requests == dict.fromkeys(broken_gallery.ids, 1)
    lines = json_lines(out.read_text(encoding="utf-8"))
    assert [line["id"] for line in lines] == broken_gallery.ids
    assert (lines[2]["text"], lines[2]["author_display_name"]) == (LONE_TEXT_READ, LONE_NAME_READ)
    assert lines[4] == endpoint_data(lines[4]["id"])
    assert capsys.readouterr().err == ""


async def test_bulk_writes_lone_surrogates_to_stdout_replaced(
    broken_gallery: FakeGallery, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "ids.txt"
    path.write_text("\n".join(broken_gallery.ids), encoding="utf-8")
    argv = ["bulk", str(path), "--concurrency", "1", "--base-url", broken_gallery.url]
    assert await run(*argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5
    assert json.loads(lines[2])["text"] == LONE_TEXT_READ
    assert "ゆき" in "".join(lines)  # the other lines stay readable UTF-8


@pytest.mark.slow
async def test_bulk_writes_json_lines_to_an_ascii_stdout(broken_gallery: FakeGallery) -> None:
    argv = ["bulk", "-", "--concurrency", "1", "--base-url", broken_gallery.url]
    process = await start_cli(*argv, env={"PYTHONIOENCODING": "ascii:strict"})
    ids = "\n".join(broken_gallery.ids).encode()
    out, err = await asyncio.wait_for(process.communicate(ids), timeout=30)
    assert (process.returncode, err) == (0, b"")
    lines = json_lines(out.decode("ascii"))
    assert [line["id"] for line in lines] == broken_gallery.ids
    assert [line["author_display_name"] for line in lines] == [
        d["author_display_name"] for d in sample_images()[:2]
    ] + [LONE_NAME_READ] + [d["author_display_name"] for d in sample_images()[3:5]]


class RefusingStdout(io.StringIO):
    """A stdout whose encoding cannot carry anything about one image, in any form."""

    def __init__(self, refused: str):
        super().__init__()
        self.refused = refused

    def write(self, text: str) -> int:
        if self.refused in text:
            raise UnicodeEncodeError("mycodec", text, 0, 1, "cannot carry this")
        return super().write(text)


async def test_bulk_reports_an_image_it_cannot_write_and_goes_on(
    gallery: FakeGallery, ids_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    refused = gallery.ids[2]
    out = RefusingStdout(refused)
    err = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    args = ["bulk", str(ids_file), "--concurrency", "1", "--base-url", gallery.url]
    assert await run(*args) == 1
    assert [line["id"] for line in json_lines(out.getvalue())] == [
        i for i in gallery.ids[:5] if i != refused
    ]
    assert gallery.requests == dict.fromkeys(gallery.ids[:5], 1)
    assert err.getvalue().splitlines() == [
        "meigen-async: 1 of 5 ids failed:",
        f"  {refused}: cannot write the image: 'mycodec' codec can't encode character "
        f"'\\x7b' in position 0: cannot carry this",
    ]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
async def test_bulk_reports_a_full_disk_in_one_line_with_status_1(
    gallery: FakeGallery, ids_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run("bulk", str(ids_file), "-o", "/dev/full", "--base-url", gallery.url) == 1
    line = one_error_line(capsys.readouterr().err)
    assert line == "meigen-async: error: cannot write '/dev/full': No space left on device"


@pytest.mark.slow
async def test_bulk_keeps_at_most_concurrency_requests_in_flight(
    slow_gallery: FakeGallery, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "ids.txt"
    path.write_text("\n".join(slow_gallery.ids), encoding="utf-8")
    args = ["bulk", str(path), "--concurrency", "3", "--base-url", slow_gallery.url]
    assert await run(*args) == 0
    assert slow_gallery.max_in_flight == 3


class CountingStdout(io.StringIO):
    """A stdout that counts the lines written to it."""

    lines = 0

    def write(self, text: str) -> int:
        self.lines += text.count("\n")
        return super().write(text)


class WatchedStdin:
    """A stdin of ids that records how far reading ever ran ahead of the output.

    bulk reads the bytes of stdin (`sys.stdin.buffer`), a line at a time.
    """

    def __init__(self, ids: list[str], out: CountingStdout):
        self._ids = iter(ids)
        self._out = out
        self.read = 0
        self.most_ahead = 0

    @property
    def buffer(self) -> WatchedStdin:
        return self

    def readline(self, limit: int = -1) -> bytes:
        line = next(self._ids, None)
        if line is None:
            return b""
        self.read += 1
        self.most_ahead = max(self.most_ahead, self.read - self._out.lines)
        return line.encode() + b"\n"


async def test_bulk_reads_ids_only_as_fast_as_it_fetches_them(
    gallery: FakeGallery, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = CountingStdout()
    stdin = WatchedStdin(gallery.ids * 20, out)
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stdin", stdin)
    assert await run("bulk", "-", "--concurrency", "4", "--base-url", gallery.url) == 0
    assert stdin.read == out.lines == 1200
    assert stdin.most_ahead <= 4 + 1


async def test_bulk_draws_a_progress_bar_with_a_rate_on_a_terminal(
    gallery: FakeGallery,
    ids_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert await run("bulk", str(ids_file), "--base-url", gallery.url) == 0
    captured = capsys.readouterr()
    assert "5/5" in captured.err
    assert "ids/s" in captured.err
    assert len(json_lines(captured.out)) == 5


async def test_bulk_ends_with_a_summary_of_the_counters_on_a_terminal(
    gallery: FakeGallery,
    ids_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert await run("bulk", str(ids_file), "--base-url", gallery.url) == 0
    assert (
        "meigen-async: 5 ids, 5 upstream requests, 0 cache hits, 0 coalesced, "
        "0 revalidated (304), 0 refreshed in the background"
    ) in capsys.readouterr().err


async def test_bulk_draws_no_progress_bar_when_stderr_is_not_a_terminal(
    gallery: FakeGallery, ids_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run("bulk", str(ids_file), "--base-url", gallery.url) == 0
    assert capsys.readouterr().err == ""


async def test_bulk_reports_a_missing_input_file_in_one_line_with_status_2(
    gallery: FakeGallery, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.txt"
    assert await run("bulk", str(missing), "--base-url", gallery.url) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"cannot read '{missing}'" in line
    assert "No such file or directory" in line


async def test_bulk_reports_an_input_file_that_is_not_utf8_in_one_line_with_status_2(
    gallery: FakeGallery, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "ids.txt"
    path.write_bytes(b"\xff\xfe1\x002\x00\n")
    assert await run("bulk", str(path), "--base-url", gallery.url) == 2
    assert f"cannot read '{path}': not UTF-8 text" in one_error_line(capsys.readouterr().err)


async def test_bulk_reports_an_unwritable_output_in_one_line_with_status_2(
    gallery: FakeGallery, ids_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "no-such-dir" / "out.jsonl"
    assert await run("bulk", str(ids_file), "-o", str(out), "--base-url", gallery.url) == 2
    assert f"cannot write '{out}'" in one_error_line(capsys.readouterr().err)


# -- serve ---------------------------------------------------------------------------------------


# Execs the command line with SIGINT ignored, as a background job of a non-interactive shell or
# nohup starts it: Python then installs no KeyboardInterrupt handler of its own.
IGNORING_SIGINT = [
    sys.executable,
    "-c",
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
    "os.execv(sys.executable, sys.argv[1:])",
]


async def serve_then_stop(stop: signal.Signals, wrapper: list[str] | None = None) -> str:
    """Start `serve`, fetch an image from it, send `stop`; its stderr once it has exited 0."""
    process = await start_cli("serve", wrapper=wrapper)
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), timeout=30)
        url = line.decode().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url), line
        timeout = aiohttp.ClientTimeout(total=10)
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.get(f"{url}/api/images/{PLAIN_ID}") as response,
        ):
            assert response.status == 200
            assert (await response.json())["data"]["id"] == PLAIN_ID
        process.send_signal(stop)
        _, err = await asyncio.wait_for(process.communicate(), timeout=10)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, err
    return err.decode()


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_serve_answers_requests_then_exits_0_when_stopped(stop: signal.Signals) -> None:
    err = await serve_then_stop(stop)
    assert len(err.splitlines()) == 3  # what it serves, a few ids, its media: no traceback
    assert err.startswith("meigen-async: serving 60 images from the bundled sample; try ")


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_serve_started_with_sigint_ignored_still_exits_0_when_stopped(
    stop: signal.Signals,
) -> None:
    err = await serve_then_stop(stop, wrapper=IGNORING_SIGINT)
    assert len(err.splitlines()) == 3, err  # what it serves, a few of its ids, its media


@pytest.mark.slow
async def test_serve_then_download_and_bulk_media_work_with_the_media_host_it_prints(
    tmp_path: Path,
) -> None:
    process = await start_cli("serve")
    try:
        assert process.stdout is not None
        assert process.stderr is not None
        url = (await asyncio.wait_for(process.stdout.readline(), timeout=30)).decode().strip()
        lines = [(await process.stderr.readline()).decode() for _ in range(3)]
        said = lines[2].strip()
        match = re.fullmatch(
            r"meigen-async: media files are served here too: meigen-async (download "
            r"--base-url (\S+) --media-host (127\.0\.0\.1:\d+) (\d+))",
            said,
        )
        assert match is not None, lines
        assert match[2] == url
        assert await run(*match[1].split(), "-o", str(tmp_path / "one")) == 0
        ids = tmp_path / "ids.txt"
        ids.write_text(f"{PLAIN_ID}\n{JSON_ID}\n", encoding="utf-8")
        media = ["--media", str(tmp_path / "bulk"), "--media-host", match[3]]
        out = ["-o", str(tmp_path / "images.jsonl")]
        assert await run("bulk", str(ids), "--base-url", url, *media, *out) == 0
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.communicate(), timeout=10)
    assert process.returncode == 0
    downloaded = sorted((tmp_path / "one").rglob("*.png"))
    assert [path.parent.name for path in downloaded] == [match[4]] * len(downloaded) != []
    bulk = sorted(path.relative_to(tmp_path / "bulk") for path in (tmp_path / "bulk").rglob("*"))
    assert {path.parts[0] for path in bulk if path.suffix == ".png"} == {PLAIN_ID, JSON_ID}
    assert len(json_lines((tmp_path / "images.jsonl").read_text(encoding="utf-8"))) == 2


async def test_serve_rejects_a_data_file_that_is_not_json_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "gallery.jsonl"
    data.write_text('{"id": "a1"}\n[1, 2]\n', encoding="utf-8")
    assert await run("serve", "--data", str(data)) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"{data}:2: expected a JSON object with a string 'id'" in line


async def test_serve_reports_a_missing_data_file_in_one_line_with_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run("serve", "--data", str(tmp_path / "nope.jsonl")) == 2
    assert "cannot read" in one_error_line(capsys.readouterr().err)


# -- demo ----------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_demo_fetches_the_sample_with_one_request_per_distinct_id_and_one_304() -> None:
    report = await run_demo()
    assert report.requested == 121
    assert report.fetched == 120
    assert report.requests == 62  # 61 distinct ids, and the popular one revalidated
    assert list(report.errors) == [MISSING]
    assert report.coalesced >= 20
    assert report.cache_hits == 81  # the second pass, and the burst served while stale
    assert (report.revalidated, report.refreshed) == (1, 1)


@pytest.mark.slow
async def test_demo_downloads_the_pictures_of_three_images_from_the_samples_own_address() -> None:
    report = await run_demo()
    assert report.media_images == 3
    assert report.media_files >= 3
    assert 0 < report.media_bytes < 3000 * report.media_files  # flat PNGs of a few hundred bytes


@pytest.mark.slow
async def test_demo_counts_the_prompt_kinds_of_the_distinct_images() -> None:
    prompts = [parse_prompt(data["text"]) for data in sample_images()]
    report = await run_demo()
    assert report.plain_prompts == sum(p.kind is PromptKind.PLAIN for p in prompts)
    assert report.json_prompts == sum(p.kind is PromptKind.JSON for p in prompts)
    assert report.repaired_prompts == sum(p.repaired for p in prompts)
    assert report.plain_prompts + report.json_prompts == 60


@pytest.mark.slow
def test_demo_tells_calls_against_requests_and_the_missing_id_as_expected(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    assert main(["demo"]) == 0
    out = re.sub(r"\s+", " ", capsys.readouterr().out)

    assert "282 get_image calls" in out
    assert "answered with 62 upstream requests" in out
    assert "220 requests saved: the cache answered 81 calls" in out
    assert "1 background refresh asked the gallery" in out
    assert "1 answer was 304 Not Modified" in out
    assert f"The id {MISSING} failed as expected" in out
    assert re.search(r"Prompts of the 60 images: \d+ plain text, \d+ JSON", out)
    assert "error:" not in out


def test_demo_without_rich_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "rich", None)  # as if the cli extra were not installed
    assert main(["demo"]) == 2
    assert "pip install rich" in one_error_line(capsys.readouterr().err)


# -- The package ---------------------------------------------------------------------------------


@pytest.mark.slow
async def test_importing_the_package_imports_neither_the_command_line_nor_rich() -> None:
    check = (
        "import sys, meigen_async, meigen_async.bots, meigen_async.testing; "
        "sys.exit(bool({'rich', 'meigen_async.cli'} & set(sys.modules)))"
    )
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", check)
    assert await asyncio.wait_for(process.wait(), timeout=30) == 0


async def test_get_shows_the_prompt_counts_date_and_every_media_url(
    gallery: FakeGallery, capsys: pytest.CaptureFixture[str]
) -> None:
    data = gallery.images[PLAIN_ID]
    assert await run("get", "--base-url", gallery.url, PLAIN_ID) == 0
    out = capsys.readouterr().out

    assert data["text"].strip().splitlines()[0][:60] in out
    assert re.search(rf"likes\s+{data['likes']:,}", out)
    assert re.search(rf"views\s+{data['views']:,}", out)
    assert f"posted {data['created_at'][:10]}" in out
    for url in data["media_urls"]:
        assert url in out


async def test_get_shows_a_json_prompts_main_fields(
    gallery: FakeGallery, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run("get", "--base-url", gallery.url, JSON_ID) == 0
    out = capsys.readouterr().out
    image = structure_image(gallery.images[JSON_ID])
    assert isinstance(image.prompt.data, dict)
    first_key = next(iter(image.prompt.data))
    assert re.search(rf"^    {re.escape(first_key)}: ", out, re.M)


async def test_get_of_an_unreachable_gallery_says_it_plainly(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert (
        await run("get", "--base-url", f"http://127.0.0.1:{port}", "--retries", "0", PLAIN_ID) == 1
    )
    line = one_error_line(capsys.readouterr().err)
    assert f"cannot connect to 127.0.0.1:{port}: connection refused" in line
    assert "ClientConnectorError" not in line


def test_serve_list_prints_every_id_it_would_serve(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--list"]) == 0
    ids = capsys.readouterr().out.split()
    assert len(ids) == 60
    assert PLAIN_ID in ids


@pytest.mark.slow
async def test_serve_names_a_few_of_its_ids_on_stderr() -> None:
    err = await serve_then_stop(signal.SIGTERM)
    assert re.search(rf"ids: {PLAIN_ID}, \d+, \d+, \d+, \d+ and 55 more", err), err

"""The command line's media downloads: `bulk --media DIR` and `download ID...`."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.filesize import decimal
from terminal import frames

from meigen_async.cli import main
from meigen_async.testing import Answer, FakeGallery, jpeg_bytes, png_bytes


async def run(*argv: str) -> int:
    """``main(argv)`` in a worker thread, so that this loop keeps serving the gallery."""
    return await asyncio.to_thread(main, list(argv))


@pytest.fixture
async def media_gallery() -> FakeGallery:
    gallery = await FakeGallery().start()
    urls = [
        gallery.add_media("p", png_bytes(), "image/png"),
        gallery.add_media("j", jpeg_bytes(), "image/jpeg"),
    ]
    gallery.images["one"] = {"id": "one", "media_urls": urls[:1]}
    gallery.images["two"] = {"id": "two", "media_urls": urls}
    yield gallery
    await gallery.close()


async def test_bulk_with_media_adds_a_media_list_to_each_line(
    media_gallery: FakeGallery, tmp_path: Path
) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_text("one\ntwo\n", encoding="utf-8")
    out, media = tmp_path / "out.jsonl", tmp_path / "media"
    argv = ["bulk", str(ids), "-o", str(out), "--media", str(media)]
    argv += ["--base-url", media_gallery.url, "--media-host", media_gallery.media_host]
    assert await run(*argv) == 0
    lines = {line["id"]: line for line in map(json.loads, out.read_text().splitlines())}
    assert lines["two"]["media"][1] == {
        "path": str(media / "two" / "1.jpg"),
        "bytes": len(jpeg_bytes()),
        "sha256": hashlib.sha256(jpeg_bytes()).hexdigest(),
        "content_type": "image/jpeg",
    }
    assert [m["path"] for m in lines["one"]["media"]] == [str(media / "one" / "0.png")]
    assert media_gallery.media_requests == {"p": 2, "j": 1}


async def test_download_writes_the_files_and_lists_them(
    media_gallery: FakeGallery, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["download", "two", "-o", str(tmp_path), "--base-url", media_gallery.url]
    assert await run(*argv, "--media-host", media_gallery.media_host) == 0
    printed = capsys.readouterr().out.splitlines()
    assert sorted(line.split("\t")[0] for line in printed) == [
        str(tmp_path / "two" / "0.png"),
        str(tmp_path / "two" / "1.jpg"),
    ]
    assert (tmp_path / "two" / "1.jpg").read_bytes() == jpeg_bytes()


def download_from(gallery: FakeGallery, out: Path, *source: str) -> list[str]:
    allowed = ["--media-host", gallery.media_host]
    return ["download", *source, "-o", str(out), "--base-url", gallery.url, *allowed]


async def test_download_reads_ids_from_a_file_and_says_which_files_were_already_there(
    media_gallery: FakeGallery, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_text("one\n\ntwo\n", encoding="utf-8")
    argv = download_from(media_gallery, tmp_path / "media", "-i", str(ids))
    assert await run(*argv) == 0
    first = capsys.readouterr()
    assert sorted(line.split("\t")[3] for line in first.out.splitlines()) == ["downloaded"] * 3
    size = decimal(2 * len(png_bytes()) + len(jpeg_bytes()))  # as rich says it, rich or not
    assert first.err == f"meigen-async: 2 images: 3 files downloaded ({size}), 0 already there\n"

    assert await run(*argv) == 0
    again = capsys.readouterr()
    assert [line.split("\t")[3] for line in again.out.splitlines()] == ["already there"] * 3
    assert again.err == "meigen-async: 2 images: 0 files downloaded (0 bytes), 3 already there\n"
    assert media_gallery.media_requests == {"p": 2, "j": 1}  # none the second time


async def test_download_dash_reads_ids_from_stdin_and_counts_a_bad_one_as_failed(
    media_gallery: FakeGallery,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"one\nbad!id\n")))
    assert await run(*download_from(media_gallery, tmp_path, "-")) == 1
    captured = capsys.readouterr()
    assert [line.split("\t")[0] for line in captured.out.splitlines()] == [
        str(tmp_path / "one" / "0.png")
    ]
    summary, head, failure = captured.err.splitlines()
    assert summary.startswith("meigen-async: 2 images: 1 file downloaded")
    assert head == "meigen-async: 1 of 2 ids failed:"
    assert failure.startswith("  bad!id: invalid image id 'bad!id'")


async def test_download_in_a_terminal_draws_a_bar_of_images_that_ends_on_done(
    media_gallery: FakeGallery,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert await run(*download_from(media_gallery, tmp_path, "one", "two")) == 0
    last = frames(capsys.readouterr().err.encode())[-1]
    assert last.split()[:3] == ["done", "━" * last.split()[1].count("━"), "2/2"]
    assert decimal(2 * len(png_bytes()) + len(jpeg_bytes())) in last  # the media downloaded


async def test_download_without_ids_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert await run("download", "--base-url", "http://127.0.0.1:9") == 2
    assert "no ids" in capsys.readouterr().err


async def test_download_refuses_an_invalid_id_with_status_2_before_any_request(
    media_gallery: FakeGallery, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["download", "two", "not/an id", "-o", str(tmp_path), "--base-url", media_gallery.url]
    assert await run(*argv, "--media-host", media_gallery.media_host) == 2
    assert "invalid image id 'not/an id'" in capsys.readouterr().err
    assert media_gallery.total_requests == 0


async def test_download_off_the_media_hosts_names_the_flag_that_allows_it(
    media_gallery: FakeGallery, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["download", "one", "-o", str(tmp_path), "--base-url", media_gallery.url]
    assert await run(*argv) == 1
    err = capsys.readouterr().err
    assert f"allow it with --media-host {media_gallery.media_host}" in err
    assert "media_hosts" not in err
    assert media_gallery.media_requests == {}


# -- An image whose media failed is a failure ------------------------------------------------------


def refuse_once(gallery: FakeGallery, media: Path) -> tuple[list[str], list[str]]:
    """The media server refuses the file (403) once; the options of both runs."""
    gallery.script_media("p", Answer.error(403, "Forbidden"))
    allowed = ["--media", str(media), "--media-host", gallery.media_host]
    return allowed, allowed


def not_allowed(gallery: FakeGallery, media: Path) -> tuple[list[str], list[str]]:
    """The media host is not allowed (the default hosts), then allowed."""
    return ["--media", str(media)], ["--media", str(media), "--media-host", gallery.media_host]


def dir_is_a_file(gallery: FakeGallery, media: Path) -> tuple[list[str], list[str]]:
    """DIR is a regular file; the resumed run finds it gone."""
    media.write_text("not a directory\n", encoding="utf-8")
    allowed = ["--media", str(media), "--media-host", gallery.media_host]
    return allowed, allowed


@pytest.mark.parametrize(
    ("cause", "said"),
    [
        (refuse_once, "HTTP 403"),
        (not_allowed, "is not in --media-host (images.meigen.ai, pbs.twimg.com); allow it"),
        (dir_is_a_file, "Not a directory"),
    ],
    ids=["a media server that refuses", "a media host not allowed", "DIR is a file"],
)
async def test_bulk_counts_an_image_whose_media_failed_and_resume_retries_its_media(
    media_gallery: FakeGallery,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    cause: Callable[[FakeGallery, Path], tuple[list[str], list[str]]],
    said: str,
) -> None:
    ids, out, failed = tmp_path / "ids.txt", tmp_path / "out.jsonl", tmp_path / "failed.txt"
    media = tmp_path / "media"
    ids.write_text("one\n", encoding="utf-8")
    first, second = cause(media_gallery, media)
    argv = ["bulk", str(ids), "-o", str(out), "--failed", str(failed)]
    argv += ["--base-url", media_gallery.url, "--retries", "0"]

    assert await run(*argv, *first) == 1
    head, line = capsys.readouterr().err.splitlines()
    assert head == "meigen-async: 1 of 1 ids failed:"
    assert line.startswith("  one: ")
    assert said in line
    assert failed.read_bytes() == b"one\n"
    assert out.read_bytes() == b""  # OUT holds what is done: no line with "media": []

    if cause is dir_is_a_file:
        media.unlink()
    assert await run(*argv, *second, "--resume") == 0
    assert capsys.readouterr().err == ""
    (record,) = map(json.loads, out.read_text(encoding="utf-8").splitlines())
    assert [m["path"] for m in record["media"]] == [str(media / "one" / "0.png")]
    assert (media / "one" / "0.png").read_bytes() == png_bytes()
    assert failed.read_bytes() == b""
    assert media_gallery.requests["one"] == 1  # the image itself came from the cache
    # Asked again on resume; a host not allowed, or DIR being a file (the image's directory is
    # opened before any request), was never asked the first time.
    assert media_gallery.media_requests["p"] == (2 if cause is refuse_once else 1)

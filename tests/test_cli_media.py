"""The command line's media downloads: `bulk --media DIR` and `download ID...`."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import pytest

from meigen_async.cli import main
from meigen_async.testing import FakeGallery, jpeg_bytes, png_bytes


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


async def test_download_off_the_media_hosts_exits_1_with_no_media_request(
    media_gallery: FakeGallery, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["download", "one", "-o", str(tmp_path), "--base-url", media_gallery.url]
    assert await run(*argv) == 1
    assert "not in media_hosts" in capsys.readouterr().err
    assert media_gallery.media_requests == {}

"""Media downloads against real loopback servers: what each server saw, and what is on disk."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Awaitable, Callable
from contextlib import aclosing

import pytest
from helpers import keeps_user_attributes, leftovers, media_server, png_claiming, trickling

import meigen_async._media_files
from meigen_async import GalleryImage, GallerySession, RetryPolicy
from meigen_async._media import MediaDownloader
from meigen_async._media_records import RECORD_ATTRIBUTE, read_file_record
from meigen_async._media_rules import origin_set
from meigen_async._upstream import Upstream
from meigen_async.errors import (
    ImageNotFound,
    MediaDecompressionBomb,
    MediaHTTPError,
    MediaNotAllowed,
    MediaNotAnImage,
    MediaTooLarge,
    MediaTooManyFiles,
    MediaTransportError,
    MediaWriteError,
)
from meigen_async.testing import Answer, FakeGallery, jpeg_bytes, png_bytes, webp_bytes

NO_RETRY = RetryPolicy(max_retries=0)


async def _served(gallery: FakeGallery, **files: tuple[bytes, str]) -> dict[str, str]:
    return {name: gallery.add_media(name, body, kind) for name, (body, kind) in files.items()}


def _session(gallery: FakeGallery, **options: object) -> GallerySession:
    options.setdefault("media_hosts", [gallery.media_host])
    return GallerySession(gallery.url, **options)  # type: ignore[arg-type]


async def test_every_media_url_is_written_under_the_id_with_its_verified_type(tmp_path):
    async with FakeGallery() as gallery:
        urls = await _served(
            gallery,
            a=(png_bytes(5, 2), "image/png"),
            b=(jpeg_bytes(17, 9), "image/jpeg"),
            c=(webp_bytes(), "image/webp"),
        )
        image = GalleryImage(id="img1", media_urls=tuple(urls.values()))
        async with _session(gallery) as session:
            files = await session.download_media(image, tmp_path)
        assert gallery.media_requests == {"a": 1, "b": 1, "c": 1}
    assert [f.path for f in files] == [tmp_path / "img1" / n for n in ("0.png", "1.jpg", "2.webp")]
    assert [(f.width, f.height) for f in files] == [(5, 2), (17, 9), (5, 3)]
    assert files[1].path.read_bytes() == jpeg_bytes(17, 9)
    assert files[1].sha256 == hashlib.sha256(jpeg_bytes(17, 9)).hexdigest()
    assert files[1].bytes == len(jpeg_bytes(17, 9))
    assert files[1].content_type == "image/jpeg"
    assert leftovers(tmp_path / "img1")[:3] == ["0.png", "1.jpg", "2.webp"]


async def test_an_x_robots_tag_opt_out_is_told_and_still_told_by_the_record_on_a_rerun(
    tmp_path, media_records
):
    async with FakeGallery() as gallery:
        urls = await _served(gallery, a=(png_bytes(), "image/png"), b=(png_bytes(), "image/png"))
        gallery.script_media("a", Answer(headers={"X-Robots-Tag": "noindex, noai"}))
        image = GalleryImage(id="img1", media_urls=(urls["a"], urls["b"]))
        async with _session(gallery) as session:
            first = await session.download_media(image, tmp_path)
            again = await session.download_media(image, tmp_path)
        assert gallery.media_requests == {"a": 1, "b": 1}
    assert [f.opted_out for f in first] == [True, False]
    assert [f.opted_out for f in again] == [True, False]


async def test_files_carry_their_own_records_and_no_manifest_is_written(tmp_path, media_records):
    async with FakeGallery() as gallery:
        urls = await _served(gallery, a=(png_bytes(), "image/png"), b=(jpeg_bytes(), "image/jpeg"))
        image = GalleryImage(id="img1", media_urls=tuple(urls.values()))
        async with _session(gallery) as session:
            files = await session.download_media(image, tmp_path)
    names = leftovers(tmp_path / "img1")
    if media_records == "on the files":
        assert names == ["0.png", "1.jpg"]
        record = os.getxattr(files[1].path, RECORD_ATTRIBUTE)
        entry = read_file_record("1.jpg", record, [urls["a"], urls["b"]])
        assert entry is not None
        assert (entry.sha256, entry.bytes) == (files[1].sha256, files[1].bytes)
    else:
        assert names == ["0.png", "1.jpg", "manifest.json"]
        manifest = json.loads((tmp_path / "img1" / "manifest.json").read_text())
        assert [entry["sha256"] for entry in manifest["files"]] == [f.sha256 for f in files]


async def test_a_directory_that_cannot_be_made_is_a_media_write_error(tmp_path):
    (tmp_path / "img1").write_bytes(b"a file where the directory goes")
    async with FakeGallery() as gallery:
        urls = await _served(gallery, a=(png_bytes(), "image/png"))
        image = GalleryImage(id="img1", media_urls=(urls["a"],))
        async with _session(gallery, retry=NO_RETRY) as session:
            with pytest.raises(MediaWriteError, match="cannot write") as caught:
                await session.download_media(image, tmp_path)
    assert caught.value.image_id == "img1"
    assert isinstance(caught.value.__cause__, OSError)
    assert (tmp_path / "img1").read_bytes() == b"a file where the directory goes"


async def test_a_url_off_the_media_hosts_is_refused_with_no_request(tmp_path):
    async with FakeGallery() as gallery:
        url = gallery.add_media("a", png_bytes(), "image/png")
        image = GalleryImage(id="img1", media_urls=(url,))
        async with GallerySession(gallery.url) as session:  # default hosts: not loopback
            with pytest.raises(MediaNotAllowed, match="not in media_hosts") as caught:
                await session.download_media(image, tmp_path)
        assert gallery.total_requests == 0
    assert caught.value.url == url
    assert caught.value.image_id == "img1"


async def test_a_redirect_off_the_media_hosts_is_never_requested(tmp_path):
    async with FakeGallery() as gallery, FakeGallery() as elsewhere:
        target = elsewhere.add_media("a", png_bytes(), "image/png").replace(
            "127.0.0.1", "localhost"
        )
        gallery.add_media("a", png_bytes(), "image/png")
        gallery.script_media("a", Answer.redirect(target))
        image = GalleryImage(id="img1", media_urls=(gallery.media_url("a"),))
        async with _session(gallery) as session:
            with pytest.raises(MediaNotAllowed, match="redirected off the allowed hosts"):
                await session.download_media(image, tmp_path)
        assert gallery.media_requests["a"] == 1
        assert elsewhere.total_requests == 0


async def test_a_redirect_on_the_media_hosts_is_followed(tmp_path):
    async with FakeGallery() as gallery:
        await _served(gallery, a=(png_bytes(), "image/png"), b=(png_bytes(3, 3), "image/png"))
        gallery.script_media("a", Answer.redirect("/media/b", status=301))
        image = GalleryImage(id="img1", media_urls=(gallery.media_url("a"),))
        async with _session(gallery) as session:
            [media] = await session.download_media(image, tmp_path)
        assert gallery.media_requests == {"a": 1, "b": 1}
    assert (media.width, media.url) == (3, gallery.media_url("a"))


async def test_more_than_three_redirects_are_an_error(tmp_path):
    async with FakeGallery() as gallery:
        gallery.add_media("a", png_bytes(), "image/png")
        gallery.script_media("a", *[Answer.redirect("/media/a")] * 5)
        image = GalleryImage(id="img1", media_urls=(gallery.media_url("a"),))
        async with _session(gallery) as session:
            with pytest.raises(MediaHTTPError, match="more than 3 redirects"):
                await session.download_media(image, tmp_path)
        assert gallery.media_requests["a"] == 4


async def test_an_html_page_served_with_200_is_an_error_naming_it_and_leaves_no_file(tmp_path):
    async with FakeGallery() as gallery:
        gallery.add_media("a", png_bytes(), "image/png")
        gallery.script_media("a", Answer.html())
        image = GalleryImage(id="img1", media_urls=(gallery.media_url("a"),))
        async with _session(gallery) as session:
            with pytest.raises(MediaNotAnImage, match="an HTML page") as caught:
                await session.download_media(image, tmp_path)
    assert caught.value.status == 200
    assert not (tmp_path / "img1").exists()  # no file, and no empty directory either


async def test_bytes_of_another_type_than_the_content_type_are_refused(tmp_path):
    async with FakeGallery() as gallery:
        gallery.add_media("a", jpeg_bytes(), "image/jpeg")
        gallery.script_media("a", Answer.wrong_content_type("image/png"))
        image = GalleryImage(id="img1", media_urls=(gallery.media_url("a"),))
        async with _session(gallery) as session:
            with pytest.raises(MediaNotAnImage, match="the bytes are JPEG"):
                await session.download_media(image, tmp_path)


@pytest.mark.parametrize("chunked", [False, True])
async def test_a_file_past_max_media_bytes_is_refused(tmp_path, chunked):
    big = png_bytes() + b"\0" * 300_000
    async with FakeGallery() as gallery:
        gallery.add_media("a", png_bytes(), "image/png")
        gallery.script_media("a", Answer(body=big, content_type="image/png", chunked=chunked))
        image = GalleryImage(id="img1", media_urls=(gallery.media_url("a"),))
        async with _session(gallery, max_media_bytes=100_000) as session:
            with pytest.raises(MediaTooLarge, match="max_media_bytes=100000") as caught:
                await session.download_media(image, tmp_path)
    why = "streamed body exceeded it" if chunked else "Content-Length is"
    assert why in caught.value.message
    assert leftovers(tmp_path / "img1") == []


async def test_a_cut_off_body_is_retried_and_only_the_whole_file_lands(tmp_path):
    body = png_bytes(300, 300, rgb=(1, 2, 3)) + bytes(range(256)) * 400
    async with FakeGallery() as gallery:
        gallery.add_media("a", body, "image/png")
        gallery.script_media("a", Answer.cut_off(after=50_000))
        image = GalleryImage(id="img1", media_urls=(gallery.media_url("a"),))
        retry = RetryPolicy(max_retries=1, backoff_base=0)
        async with _session(gallery, retry=retry) as session:
            [media] = await session.download_media(image, tmp_path)
        assert gallery.media_requests["a"] == 2
    assert media.path.read_bytes() == body


async def test_a_cut_off_body_with_no_retry_left_leaves_no_file_under_a_final_name(tmp_path):
    async with FakeGallery() as gallery:
        gallery.add_media("a", png_bytes() + b"\0" * 100_000, "image/png")
        gallery.script_media("a", Answer.cut_off(after=40_000))
        image = GalleryImage(id="img1", media_urls=(gallery.media_url("a"),))
        async with _session(gallery, retry=NO_RETRY) as session:
            with pytest.raises(MediaTransportError, match=r"cut off|closed"):
                await session.download_media(image, tmp_path)
    assert leftovers(tmp_path / "img1") == []


@pytest.mark.slow
async def test_a_server_slower_than_the_timeout_is_a_transport_error(tmp_path):
    async with FakeGallery() as gallery:
        gallery.add_media("a", png_bytes(), "image/png")
        gallery.script_media("a", Answer.slow(2))
        image = GalleryImage(id="img1", media_urls=(gallery.media_url("a"),))
        async with _session(gallery, retry=NO_RETRY, timeout=0.2) as session:
            with pytest.raises(MediaTransportError, match="timed out"):
                await session.download_media(image, tmp_path)


async def test_a_rerun_skips_complete_files_with_no_request(tmp_path, media_records):
    async with FakeGallery() as gallery:
        urls = await _served(gallery, a=(png_bytes(), "image/png"), b=(jpeg_bytes(), "image/jpeg"))
        image = GalleryImage(id="img1", media_urls=tuple(urls.values()))
        async with _session(gallery) as session:
            first = await session.download_media(image, tmp_path)
            gallery.reset_counts()
            again = await session.download_media(image, tmp_path)
        assert gallery.total_requests == 0
    assert again == first


async def test_a_rerun_downloads_again_a_file_changed_on_disk(tmp_path, media_records):
    async with FakeGallery() as gallery:
        urls = await _served(gallery, a=(png_bytes(), "image/png"), b=(jpeg_bytes(), "image/jpeg"))
        image = GalleryImage(id="img1", media_urls=tuple(urls.values()))
        async with _session(gallery) as session:
            first = await session.download_media(image, tmp_path)
            damaged = bytearray(first[0].path.read_bytes())
            damaged[-5] ^= 0xFF  # same size, other bytes: only the SHA-256 tells
            first[0].path.write_bytes(bytes(damaged))
            gallery.reset_counts()
            await session.download_media(image, tmp_path)
        assert gallery.media_requests == {"a": 1}
    assert first[0].path.read_bytes() == png_bytes()


async def test_a_rerun_downloads_again_a_file_whose_url_changed(tmp_path, media_records):
    async with FakeGallery() as gallery:
        urls = await _served(
            gallery, a=(png_bytes(), "image/png"), b=(png_bytes(4, 4), "image/png")
        )
        async with _session(gallery) as session:
            await session.download_media(GalleryImage(id="img1", media_urls=(urls["a"],)), tmp_path)
            gallery.reset_counts()
            [media] = await session.download_media(
                GalleryImage(id="img1", media_urls=(urls["b"],)), tmp_path
            )
        assert gallery.media_requests == {"b": 1}
    assert (media.url, media.width) == (urls["b"], 4)
    assert media.path.read_bytes() == png_bytes(4, 4)


async def test_one_failing_file_leaves_the_others_written_and_recorded(tmp_path, media_records):
    async with FakeGallery() as gallery:
        urls = await _served(gallery, a=(png_bytes(), "image/png"))
        image = GalleryImage(id="img1", media_urls=(urls["a"], gallery.media_url("missing")))
        async with _session(gallery, retry=NO_RETRY) as session:
            for _ in range(2):
                with pytest.raises(MediaHTTPError, match="HTTP 404"):
                    await session.download_media(image, tmp_path)
        assert gallery.media_requests == {"a": 1, "missing": 2}
    assert leftovers(tmp_path / "img1")[0] == "0.png"


async def test_retry_after_of_a_media_429_is_waited_for(tmp_path):
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    async with FakeGallery() as gallery, GallerySession(gallery.url) as session:
        gallery.add_media("a", png_bytes(), "image/png")
        gallery.script_media("a", Answer.rate_limited(retry_after=7))
        downloader = _downloader(gallery, _upstream(session, RetryPolicy(), sleep))
        image = GalleryImage(id="img1", media_urls=(gallery.media_url("a"),))
        files, error = await downloader.download_image(image, tmp_path)
        assert gallery.media_requests["a"] == 2
    assert (slept, error, len(files)) == ([7.0], None, 1)


async def test_media_requests_retries_and_bytes_are_counted_as_the_server_saw_them(tmp_path):
    body = png_bytes(30, 30) + bytes(5000)
    async with FakeGallery() as gallery:
        await _served(gallery, a=(png_bytes(), "image/png"), b=(body, "image/png"))
        gallery.script_media("a", Answer.error(503), Answer.redirect("/media/b"))
        image = GalleryImage(id="img1", media_urls=(gallery.media_url("a"),))
        retry = RetryPolicy(max_retries=1, backoff_base=0)
        async with _session(gallery, retry=retry) as session:
            await session.download_media(image, tmp_path)
            stats = session.stats
        assert gallery.media_requests == {"a": 2, "b": 1}
    # The 503's and the redirect's bodies are never read: only the file's bytes came in.
    assert (stats.media_requests, stats.media_retries, stats.media_bytes) == (3, 1, len(body))
    assert (stats.requests, stats.retries) == (0, 0)  # the gallery's own counters


@pytest.mark.slow
async def test_media_concurrency_bounds_the_requests_to_one_host(tmp_path):
    async with FakeGallery(delay=0.05) as gallery:
        urls = await _served(gallery, **{f"f{n}": (png_bytes(), "image/png") for n in range(6)})
        image = GalleryImage(id="img1", media_urls=tuple(urls.values()))
        async with _session(gallery, media_concurrency=2) as session:
            files = await session.download_media(image, tmp_path)
        assert (gallery.max_in_flight, len(files)) == (2, 6)


async def test_iter_media_fetches_ids_and_reports_each_outcome(tmp_path):
    async with FakeGallery() as gallery:
        url = gallery.add_media("a", png_bytes(), "image/png")
        gallery.images["good"] = {"id": "good", "media_urls": [url]}
        async with _session(gallery) as session:
            results = session.iter_media(["good", "gone"], tmp_path)
            async with aclosing(results):
                by_id = {result.id: result async for result in results}
        assert gallery.requests == {"good": 1, "gone": 1}
        assert gallery.media_requests == {"a": 1}
    assert by_id["good"].ok
    assert by_id["good"].files[0].path == tmp_path / "good" / "0.png"
    assert isinstance(by_id["gone"].error, ImageNotFound)
    assert not by_id["gone"].ok


async def test_iter_media_takes_images_without_fetching_them(tmp_path):
    async with FakeGallery() as gallery:
        url = gallery.add_media("a", png_bytes(), "image/png")
        async with _session(gallery) as session:
            results = [
                r
                async for r in session.iter_media([GalleryImage("x", media_urls=(url,))], tmp_path)
            ]
        assert gallery.requests == {}
    assert [r.ok for r in results] == [True]


async def test_a_directory_written_with_a_manifest_is_resumed_where_files_keep_records(
    tmp_path, monkeypatch
):
    if not keeps_user_attributes(tmp_path):
        pytest.skip("this file system keeps no user extended attributes")
    async with FakeGallery() as gallery:
        urls = await _served(gallery, a=(png_bytes(), "image/png"))
        image = GalleryImage(id="img1", media_urls=(urls["a"],))
        async with _session(gallery) as session:
            with monkeypatch.context() as patched:  # as a run before records on files wrote it
                patched.setattr(meigen_async._media_files, "_RECORDS_ON_FILES", False)
                first = await session.download_media(image, tmp_path)
            gallery.reset_counts()
            again = await session.download_media(image, tmp_path)
        assert gallery.total_requests == 0
    assert again == first


async def test_a_file_whose_record_was_stripped_is_downloaded_again(tmp_path):
    if not keeps_user_attributes(tmp_path):
        pytest.skip("this file system keeps no user extended attributes")
    async with FakeGallery() as gallery:
        urls = await _served(gallery, a=(png_bytes(), "image/png"))
        image = GalleryImage(id="img1", media_urls=(urls["a"],))
        async with _session(gallery) as session:
            [media] = await session.download_media(image, tmp_path)
            os.removexattr(media.path, RECORD_ATTRIBUTE)  # as `cp` without --preserve=xattr
            gallery.reset_counts()
            await session.download_media(image, tmp_path)
        assert gallery.media_requests == {"a": 1}


async def test_a_manifest_that_cannot_be_read_means_downloading_again_not_an_exception(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(meigen_async._media_files, "_RECORDS_ON_FILES", False)
    async with FakeGallery() as gallery:
        urls = await _served(gallery, a=(png_bytes(), "image/png"))
        image = GalleryImage(id="img1", media_urls=(urls["a"],))
        async with _session(gallery) as session:
            await session.download_media(image, tmp_path)
            real = os.open

            def refused(path: str, flags: int, *args: object, **kwargs: object) -> int:
                if path == "manifest.json" and not flags & os.O_CREAT:
                    raise PermissionError(13, "Permission denied", path)
                return real(path, flags, *args, **kwargs)  # type: ignore[arg-type]

            monkeypatch.setattr(meigen_async._media_files.os, "open", refused)
            gallery.reset_counts()
            [media] = await session.download_media(image, tmp_path)
        assert gallery.media_requests == {"a": 1}
    assert media.path.read_bytes() == png_bytes()


# -- Origins and limits ----------------------------------------------------------------------------


async def test_an_allowed_host_on_another_port_is_refused_with_no_request(tmp_path):
    async with FakeGallery() as gallery:
        image = GalleryImage(
            id="img1", media_urls=(gallery.add_media("a", png_bytes(), "image/png"),)
        )
        async with _session(gallery, media_hosts=["127.0.0.1"]) as session:  # ports 80, 443
            with pytest.raises(MediaNotAllowed, match="not in media_hosts"):
                await session.download_media(image, tmp_path)
        assert gallery.total_requests == 0


async def test_files_past_max_media_files_are_refused_and_never_requested(tmp_path):
    async with FakeGallery() as gallery:
        urls = await _served(gallery, **{f"f{n}": (png_bytes(), "image/png") for n in range(3)})
        image = GalleryImage(id="img1", media_urls=tuple(urls.values()))
        async with _session(gallery, max_media_files=2) as session:
            [result] = [r async for r in session.iter_media([image], tmp_path)]
        assert gallery.media_requests == {"f0": 1, "f1": 1}
    assert [f.path.name for f in result.files] == ["0.png", "1.png"]
    assert isinstance(result.error, MediaTooManyFiles)
    assert (result.error.url, result.error.image_id) == (urls["f2"], "img1")


async def test_a_header_claiming_more_than_max_media_pixels_is_a_bomb_and_leaves_nothing(tmp_path):
    async with FakeGallery() as gallery:
        urls = await _served(gallery, a=(png_claiming(20_000, 10_000), "image/png"))
        image = GalleryImage(id="img1", media_urls=(urls["a"],))
        async with _session(gallery, retry=NO_RETRY) as session:
            with pytest.raises(MediaDecompressionBomb, match="20000x10000"):
                await session.download_media(image, tmp_path)
        async with _session(gallery, max_media_pixels=200_000_000) as session:
            [media] = await session.download_media(image, tmp_path / "roomier")
        assert gallery.media_requests == {"a": 2}
    assert not (tmp_path / "img1").exists()
    assert (media.width, media.height) == (20_000, 10_000)


async def test_a_file_kept_by_a_run_with_a_higher_max_media_pixels_is_not_given(tmp_path):
    async with FakeGallery() as gallery:
        urls = await _served(gallery, a=(png_bytes(40, 40), "image/png"))
        image = GalleryImage(id="img1", media_urls=(urls["a"],))
        async with _session(gallery) as session:
            await session.download_media(image, tmp_path)
        gallery.reset_counts()
        async with _session(gallery, max_media_pixels=1000) as session:
            with pytest.raises(MediaDecompressionBomb):
                await session.download_media(image, tmp_path)
        assert gallery.total_requests == 0


@pytest.mark.parametrize(
    "option",
    [
        {"media_timeout": 0},
        {"max_media_files": 0},
        {"max_media_pixels": 0},
        {"media_hosts": ["127.0.0.1:http"]},
        {"media_hosts": ["https://h/path"]},
    ],
)
def test_media_options_are_checked_when_the_session_is_made(option):
    with pytest.raises(ValueError, match=r"media_timeout|max_media|media_hosts"):
        GallerySession("http://127.0.0.1:9", **option)


# -- Deadlines and closing -------------------------------------------------------------------------


@pytest.mark.slow
async def test_a_host_trickling_bytes_is_cut_off_at_media_timeout(tmp_path):
    started, release = asyncio.Event(), asyncio.Event()
    async with media_server(trickling(started, release, every=0.05), release) as base:
        image = GalleryImage(id="img1", media_urls=(f"{base}/m.png",))
        host = base.removeprefix("http://")
        async with GallerySession(
            base, media_hosts=[host], media_timeout=0.3, retry=NO_RETRY, timeout=5
        ) as session:
            async with asyncio.timeout(5):
                with pytest.raises(MediaTransportError, match=r"longer than media_timeout=0\.3s"):
                    await session.download_media(image, tmp_path)
    assert leftovers(tmp_path / "img1") == []


async def test_a_closed_session_neither_retries_nor_waits_to(tmp_path):
    slept: list[float] = []

    async with FakeGallery() as gallery, GallerySession(gallery.url) as session:
        gallery.add_media("a", png_bytes(), "image/png")
        gallery.script_media("a", *[Answer.rate_limited(retry_after=7)] * 4)
        upstream = _upstream(
            session, RetryPolicy(max_retries=3), lambda seconds: _closing(upstream, slept, seconds)
        )
        downloader = _downloader(gallery, upstream)
        image = GalleryImage(id="img1", media_urls=(gallery.media_url("a"),))
        files, error = await downloader.download_image(image, tmp_path)
        assert gallery.media_requests["a"] == 1  # closed during the wait: the retry not sent
    assert slept == [7.0]  # and no wait for another
    assert files == []
    assert isinstance(error, MediaTransportError)
    assert "session was closed" in error.message


async def _closing(upstream: Upstream, slept: list[float], seconds: float) -> None:
    slept.append(seconds)
    upstream.close()  # as the session's close() does first


def _upstream(
    session: GallerySession, retry: RetryPolicy, sleep: Callable[[float], Awaitable[None]]
) -> Upstream:
    """The session's HTTP shell and counters, behind an `Upstream` with a sleep of the test's."""
    transport = session._transport
    return Upstream(
        transport.send,
        concurrency=2,
        retry=retry,
        tally=session._tally,
        stream=transport.stream,
        host_concurrency=2,
        sleep=sleep,
    )


def _downloader(gallery: FakeGallery, upstream: Upstream) -> MediaDownloader:
    return MediaDownloader(
        upstream=upstream, origins=origin_set([gallery.media_host]), max_bytes=1 << 20
    )

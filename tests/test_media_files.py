"""The file side of media downloads: what a cancelled download leaves, what stays in memory."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import itertools
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from helpers import keeps_user_attributes, media_server

import meigen_async._media_files
from meigen_async import GalleryImage, GallerySession
from meigen_async._media_files import ImageDir, _after
from meigen_async._media_kept import KEEP, Keeper, Kept
from meigen_async._media_records import RECORD_ATTRIBUTE
from meigen_async.errors import MediaWriteError
from meigen_async.testing import FakeGallery, png_bytes

_PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452") + (8).to_bytes(4, "big") * 2


async def test_a_download_cancelled_mid_body_leaves_no_temporary_and_no_final_file(
    tmp_path: Path,
) -> None:
    started, release = asyncio.Event(), asyncio.Event()
    requests: list[str] = []

    async def stalls(request: web.Request) -> web.StreamResponse:
        requests.append(request.path)
        resp = web.StreamResponse(headers={"Content-Type": "image/png"})
        resp.content_length = 4 << 20
        await resp.prepare(request)
        # Past one batch (1 MiB): a worker thread has opened and written the temporary file.
        await resp.write(_PNG + b"\0" * (1 << 20) + b"\0" * 70000)
        started.set()
        await release.wait()
        return resp

    async with media_server(stalls, release) as base:
        image = GalleryImage(id="1", media_urls=(f"{base}/m.png",))
        async with GallerySession(base, media_hosts=[base.removeprefix("http://")]) as session:
            task = asyncio.ensure_future(session.download_media(image, tmp_path))
            await started.wait()
            await asyncio.sleep(0.05)  # let the first bytes reach the file
            task.cancel()
            await asyncio.wait([task])
            assert task.cancelled()
        assert requests == ["/m.png"]
        assert sorted(p.name for p in (tmp_path / "1").iterdir()) == []


async def _garbage_after(count: int, root: Path) -> int:
    """Objects only the cycle collector frees, left by downloading `count` images."""
    async with FakeGallery() as gallery:
        images = [
            GalleryImage(
                id=f"i{n}", media_urls=(gallery.add_media(f"m{n}", png_bytes(), "image/png"),)
            )
            for n in range(count)
        ]
        async with GallerySession(gallery.url, media_hosts=[gallery.media_host]) as session:
            gc.collect()
            gc.disable()
            try:
                async for result in session.iter_media(images, root):
                    assert result.ok
                return gc.collect()
            finally:
                gc.enable()


async def test_downloads_leave_no_reference_cycles_behind(
    tmp_path: Path, media_records: str
) -> None:
    # Cycles per file pile up until a full collection: memory that grows with the job.
    few = await _garbage_after(5, tmp_path / "few")
    many = await _garbage_after(45, tmp_path / "many")
    assert many - few < 40  # less than one object for each image more


def test_what_is_left_after_a_short_write_starts_where_it_stopped() -> None:
    chunks = [b"abc", b"de", b"f"]
    assert _after(chunks, 0) == chunks
    assert _after(chunks, 2) == [b"c", b"de", b"f"]
    assert _after(chunks, 3) == [b"de", b"f"]
    assert _after(chunks, 6) == []


@pytest.mark.parametrize("writes", ["short writevs", "no writev"])
async def test_a_file_is_written_whole_however_the_system_takes_the_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writes: str
) -> None:
    if writes == "no writev":
        monkeypatch.setattr(meigen_async._media_files, "_HAS_WRITEV", False)
    else:
        real = os.writev

        def short(fd: int, buffers: list[bytes]) -> int:
            return real(fd, [bytes(buffers[0][:1000])])  # at most 1,000 bytes a call

        monkeypatch.setattr(meigen_async._media_files.os, "writev", short)
    body = png_bytes(40, 40) + bytes(range(256)) * 1200  # past one batch of 256 KiB
    async with FakeGallery() as gallery:
        image = GalleryImage(id="i", media_urls=(gallery.add_media("m", body, "image/png"),))
        async with GallerySession(gallery.url, media_hosts=[gallery.media_host]) as session:
            [media] = await session.download_media(image, tmp_path)
    assert media.path.read_bytes() == body
    assert media.sha256 == hashlib.sha256(body).hexdigest()


async def test_a_download_cancelled_during_its_fsync_leaves_the_whole_file_or_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered, release = threading.Event(), threading.Event()
    commit = meigen_async._media_files.TempFile._commit

    def held(self: Any, *args: Any) -> bool:
        entered.set()
        release.wait(5)
        return commit(self, *args)

    monkeypatch.setattr(meigen_async._media_files.TempFile, "_commit", held)
    async with FakeGallery() as gallery:
        image = GalleryImage(id="i", media_urls=(gallery.add_media("m", png_bytes(), "image/png"),))
        async with GallerySession(gallery.url, media_hosts=[gallery.media_host]) as session:
            task = asyncio.ensure_future(session.download_media(image, tmp_path))
            await asyncio.to_thread(entered.wait, 5)
            task.cancel()
            await asyncio.sleep(0)
            release.set()
            await asyncio.wait([task])
            assert task.cancelled()
    # The commit ran on in its thread: the file is whole under its final name, no .part.
    assert sorted(p.name for p in (tmp_path / "i").iterdir()) == ["0.png"]
    assert (tmp_path / "i" / "0.png").read_bytes() == png_bytes()


async def test_a_symbolic_link_in_place_of_a_file_is_replaced_not_followed(
    tmp_path: Path, media_records: str
) -> None:
    outside = tmp_path / "outside.png"
    async with FakeGallery() as gallery:
        image = GalleryImage(id="i", media_urls=(gallery.add_media("m", png_bytes(), "image/png"),))
        async with GallerySession(gallery.url, media_hosts=[gallery.media_host]) as session:
            await session.download_media(image, tmp_path / "out")
            link = tmp_path / "out" / "i" / "0.png"
            os.replace(link, outside)  # the very file, its record with it, now outside
            link.symlink_to(outside)
            gallery.reset_counts()
            [media] = await session.download_media(image, tmp_path / "out")
        assert gallery.media_requests == {"m": 1}
    assert not media.path.is_symlink()
    assert media.path.read_bytes() == png_bytes()
    assert outside.read_bytes() == png_bytes()  # left as it was


async def test_a_leftover_temporary_file_of_the_same_name_is_stepped_around(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A killed process whose pid this one now has left the very name this one picks next.
    monkeypatch.setattr(meigen_async._media_files, "_TEMP_NAMES", itertools.count(7))
    leftover = tmp_path / "i" / f".0.{os.getpid()}.7.part"
    leftover.parent.mkdir()
    leftover.write_bytes(b"half a file")
    async with FakeGallery() as gallery:
        image = GalleryImage(id="i", media_urls=(gallery.add_media("m", png_bytes(), "image/png"),))
        async with GallerySession(gallery.url, media_hosts=[gallery.media_host]) as session:
            [media] = await session.download_media(image, tmp_path)
    assert media.path.read_bytes() == png_bytes()
    assert leftover.read_bytes() == b"half a file"  # not ours to remove, never read back


async def test_a_slow_fsync_holds_neither_the_event_loop_nor_the_hosts_slot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen_while_held: list[int] = []
    first = threading.Lock()
    real_fsync = os.fsync

    async with FakeGallery() as gallery:

        def slow_fsync(fd: int) -> None:
            if first.acquire(blocking=False):  # the first file: held until another is requested
                deadline = time.monotonic() + 5
                while sum(gallery.media_requests.values()) < 2 and time.monotonic() < deadline:
                    time.sleep(0.005)
                seen_while_held.append(sum(gallery.media_requests.values()))
            real_fsync(fd)

        monkeypatch.setattr(meigen_async._media_files.os, "fsync", slow_fsync)
        images = [
            GalleryImage(
                id=f"i{n}", media_urls=(gallery.add_media(f"m{n}", png_bytes(), "image/png"),)
            )
            for n in range(4)
        ]
        async with GallerySession(
            gallery.url, media_hosts=[gallery.media_host], media_concurrency=1
        ) as session:
            results = [result async for result in session.iter_media(images, tmp_path)]
    assert all(result.ok for result in results)
    # One slot for the host, and yet other files were requested while the first file's fsync
    # waited (the others run through meanwhile). Held through the fsync, the slot allowed 1.
    assert len(seen_while_held) == 1
    assert seen_while_held[0] >= 2


# -- No path out of out/ --------------------------------------------------------------------------


def _everything_under(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory outside `out/`, where a planted link points: nothing may land in it."""
    directory = tmp_path / "outside"
    directory.mkdir()
    return directory


async def _refused_by_a_link(out: Path) -> tuple[MediaWriteError, int]:
    """Download an image `i` into `out`: the error it fails with, and the requests made."""
    async with FakeGallery() as gallery:
        image = GalleryImage(id="i", media_urls=(gallery.add_media("m", png_bytes(), "image/png"),))
        async with GallerySession(gallery.url, media_hosts=[gallery.media_host]) as session:
            with pytest.raises(MediaWriteError, match="symbolic link") as caught:
                await session.download_media(image, out)
    return caught.value, gallery.total_requests


async def test_an_image_directory_that_is_a_symbolic_link_is_refused_with_no_request(
    tmp_path: Path, outside: Path
) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "i").symlink_to(outside)
    error, requests = await _refused_by_a_link(tmp_path / "out")
    assert (error.image_id, requests) == ("i", 0)
    assert _everything_under(outside) == []


async def test_a_link_swapped_in_for_the_image_directory_after_the_check_is_refused(
    tmp_path: Path, outside: Path, monkeypatch: pytest.MonkeyPatch, media_records: str
) -> None:
    # The check finds no directory; before the first file is created, `out/i` becomes a link.
    check = ImageDir.open_existing

    def then_swapped(self: ImageDir) -> bool:
        found = check(self)
        self.path.symlink_to(outside)
        return found

    monkeypatch.setattr(ImageDir, "open_existing", then_swapped)
    (tmp_path / "out").mkdir()
    await _refused_by_a_link(tmp_path / "out")
    assert _everything_under(outside) == []
    assert _everything_under(tmp_path / "out") == ["i"]  # the link, left as it was


async def test_a_link_swapped_in_while_the_files_are_written_is_never_followed(
    tmp_path: Path, outside: Path, monkeypatch: pytest.MonkeyPatch, media_records: str
) -> None:
    # Once a file is written, before its record and rename, `out/i` is moved away and a link
    # put in its place.
    out = tmp_path / "out"
    attach = meigen_async._media_files._attach
    once = threading.Lock()  # the two files commit in two threads: the first swaps

    def swapped_first(fd: int, record: bytes) -> bool:
        with once:
            if not (out / "i").is_symlink():
                (out / "i").rename(out / "moved")
                (out / "i").symlink_to(outside)
        return attach(fd, record)

    monkeypatch.setattr(meigen_async._media_files, "_attach", swapped_first)
    async with FakeGallery() as gallery:
        urls = tuple(gallery.add_media(f"m{n}", png_bytes(), "image/png") for n in range(2))
        async with GallerySession(gallery.url, media_hosts=[gallery.media_host]) as session:
            await session.download_media(GalleryImage(id="i", media_urls=urls), out)
    assert _everything_under(outside) == []
    # Written where the directory held open went, its manifest (if any) too.
    assert {"moved/0.png", "moved/1.png"} <= set(_everything_under(out))


async def test_a_files_record_and_its_fsync_come_before_its_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A crash between them must find either no file or a whole one with its record: the
    # record is set, then everything is fsynced, then the file takes its final name.
    if not keeps_user_attributes(tmp_path):
        pytest.skip("this file system keeps no user extended attributes")
    calls: list[str] = []

    def noting(what: str, real: Callable[..., Any], *, when: Callable[..., bool]) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if when(*args):
                calls.append(what)  # list.append is atomic: the file work runs in threads
            return real(*args, **kwargs)

        return wrapper

    final = tmp_path / "i" / "0.png"
    named = final.name  # the target of a rename may be relative to the directory's descriptor
    for name, what, when in [
        ("setxattr", "record", lambda _, attribute, *rest: attribute == RECORD_ATTRIBUTE),
        ("fsync", "fsync", lambda *args: True),
        ("replace", "rename", lambda _, target, *rest: Path(target).name == named),
        ("rename", "rename", lambda _, target, *rest: Path(target).name == named),
    ]:
        monkeypatch.setattr(os, name, noting(what, getattr(os, name), when=when))
    async with FakeGallery() as gallery:
        image = GalleryImage(id="i", media_urls=(gallery.add_media("m", png_bytes(), "image/png"),))
        async with GallerySession(gallery.url, media_hosts=[gallery.media_host]) as session:
            await session.download_media(image, tmp_path)
    assert final.read_bytes() == png_bytes()
    assert {"record", "fsync", "rename"} <= set(calls), calls
    assert calls.index("record") < calls.index("fsync") < calls.index("rename")


async def test_a_kept_download_writes_no_file_and_one_past_the_bound_is_written_whole(tmp_path):
    body = png_bytes() + bytes(range(256)) * 1200  # about 300 KB: several chunks
    roomy, tight = Keeper(len(body)), Keeper(len(body) - 1)  # the last chunk goes past it
    kept, spilled = Kept(roomy), Kept(tight)
    async with FakeGallery() as gallery:
        image = GalleryImage(id="i", media_urls=(gallery.add_media("m", body, "image/png"),))
        async with GallerySession(gallery.url, media_hosts=[gallery.media_host]) as session:
            KEEP.set(kept)  # in this task: its downloads' tasks copy the context
            [in_memory] = await session.download_media(image, tmp_path / "kept")
            KEEP.set(spilled)
            [on_disk] = await session.download_media(image, tmp_path / "spilled")
    assert not (tmp_path / "kept").exists()  # not even the image's directory
    held = kept.files[tmp_path / "kept" / "i" / "0.png"]
    assert (b"".join(held.chunks), held.size, roomy.held) == (body, len(body), len(body))
    assert in_memory.sha256 == hashlib.sha256(body).hexdigest()
    assert (in_memory.width, in_memory.height) == (on_disk.width, on_disk.height)
    del held, kept
    assert roomy.held == 0  # given back with the bytes
    assert on_disk.path.read_bytes() == body
    assert (spilled.files, tight.held) == ({}, 0)

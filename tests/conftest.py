"""Shared fixtures: the sample gallery over loopback, a media host, and a loop that fails on
leaked tasks."""

from __future__ import annotations

import asyncio
import gc
import io
import logging
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from aiohttp import web
from clocks import FakeTimer
from helpers import FAST, keeps_user_attributes
from hypothesis import HealthCheck, settings

import meigen_async._media
from meigen_async import GallerySession
from meigen_async.testing import FakeGallery, sample_images

# No per-example deadline: on 2 shared cores a first example (cold imports, a cold cache) can
# take longer than hypothesis's 200 ms default, and that is no failure of the code under test.
settings.register_profile("meigen", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("meigen")

_HF_HOME: str | None = None


def pytest_configure(config: pytest.Config) -> None:
    """Hugging Face's libraries offline, their caches in a temporary directory (not home)."""
    global _HF_HOME
    _HF_HOME = tempfile.mkdtemp(prefix="meigen-hf-")
    os.environ.update(
        HF_HOME=_HF_HOME,
        HF_DATASETS_CACHE=os.path.join(_HF_HOME, "datasets"),
        HF_DATASETS_OFFLINE="1",
        HF_HUB_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1",
    )


def pytest_unconfigure(config: pytest.Config) -> None:
    if _HF_HOME is not None:
        shutil.rmtree(_HF_HOME, ignore_errors=True)


CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "gallery-prompts.jsonl"


@pytest.fixture(autouse=True)
async def fail_on_loop_errors() -> AsyncIterator[None]:
    """Fail a test whose loop reports a destroyed pending task or an unretrieved exception."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    yield
    # "Task was destroyed but it is pending" is reported when a task is collected. What survives
    # the collection is frozen, so that the next test's collection scans only what it made
    # (with discord.py and aiogram imported, a full collection after every test cost minutes).
    gc.collect()
    gc.freeze()
    loop.set_exception_handler(previous)
    if reported:
        pytest.fail(f"the event loop reported: {[c.get('message') for c in reported]}")


@pytest.fixture(autouse=True)
def cache_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh `$XDG_CACHE_HOME` a test: the CLI's SQLite cache never outlives a test."""
    home = tmp_path_factory.mktemp("cache-home")
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    return home


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every record of the `meigen_async` logger, DEBUG and up, in `caplog`."""
    caplog.set_level(logging.DEBUG, logger="meigen_async")
    return caplog


@pytest.fixture
def images() -> list[dict[str, Any]]:
    """The bundled sample gallery's data objects."""
    return sample_images()


@pytest.fixture
async def gallery(images: list[dict[str, Any]]) -> AsyncIterator[FakeGallery]:
    """The sample gallery served on 127.0.0.1."""
    async with FakeGallery(images) as fake:
        yield fake


@pytest.fixture
async def slow_gallery(images: list[dict[str, Any]]) -> AsyncIterator[FakeGallery]:
    """The sample gallery, each answer held back 50 ms so that requests overlap."""
    async with FakeGallery(images, delay=0.05) as fake:
        yield fake


@pytest.fixture
async def session(gallery: FakeGallery) -> AsyncIterator[GallerySession]:
    """A session on the sample gallery."""
    async with GallerySession(gallery.url) as client:
        yield client


@pytest.fixture
async def client(gallery: FakeGallery) -> AsyncIterator[GallerySession]:
    """A session on the sample gallery that retries without waiting."""
    async with GallerySession(gallery.url, retry=FAST) as session:
        yield session


@pytest.fixture
async def slow_session(slow_gallery: FakeGallery) -> AsyncIterator[GallerySession]:
    """A session on the slow sample gallery."""
    async with GallerySession(slow_gallery.url) as client:
        yield client


@pytest.fixture
def timer() -> FakeTimer:
    """A clock the test moves by hand."""
    return FakeTimer()


@pytest.fixture(params=["on the files", "in a manifest"])
def media_records(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    """Where media downloads keep their records: each test runs both ways (or skips one)."""
    if request.param == "on the files":
        if not keeps_user_attributes(tmp_path):
            pytest.skip("this file system keeps no user extended attributes")
    else:
        monkeypatch.setattr(meigen_async._media, "_RECORDS_ON_FILES", False)
    return str(request.param)


def picture(
    kind: str = "PNG", size: tuple[int, int] = (8, 6), rgb: tuple[int, ...] = (200, 30, 60)
) -> bytes:
    """A real small picture, encoded by Pillow (`PNG` or `JPEG`)."""
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", size, rgb).save(out, kind)
    return out.getvalue()


@attrs.define
class MediaHost:
    """A media host on 127.0.0.1: files by name, each with its headers, delay and status."""

    url: str = ""
    files: dict[str, tuple[int, bytes, str, dict[str, str], float]] = attrs.field(factory=dict)
    requests: Counter[str] = attrs.field(factory=Counter)

    def add(
        self,
        name: str,
        body: bytes,
        content_type: str = "image/png",
        *,
        headers: dict[str, str] | None = None,
        status: int = 200,
        delay: float = 0.0,
    ) -> str:
        """Serve `body` at `/m/{name}` (status 0: drop the connection instead); its URL."""
        self.files[name] = (status, body, content_type, dict(headers or {}), delay)
        return f"{self.url}/m/{name}"

    async def serve(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self.requests[name] += 1
        status, body, content_type, headers, delay = self.files.get(
            name, (404, b"not found", "text/plain", {}, 0.0)
        )
        if delay:
            await asyncio.sleep(delay)
        if status == 0 and request.transport is not None:
            request.transport.close()
        return web.Response(
            status=status or 500, body=body, content_type=content_type, headers=headers
        )


@pytest.fixture
async def media_host() -> AsyncIterator[MediaHost]:
    """A `MediaHost` serving on a free loopback port."""
    host = MediaHost()
    app = web.Application()
    app.router.add_get("/m/{name}", host.serve)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    host.url = f"http://127.0.0.1:{port}"
    try:
        yield host
    finally:
        await runner.cleanup()

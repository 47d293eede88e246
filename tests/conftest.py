"""Shared fixtures: the sample gallery over loopback, a media host, and a loop that fails on
leaked tasks."""

from __future__ import annotations

import asyncio
import errno
import gc
import io
import ipaddress
import logging
import os
import shutil
import socket
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
from printable_reports import pytest_report_to_serializable  # noqa: F401 - the hook, registered

import meigen_async._media_files
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

REDIS_FIXTURES = frozenset({"redis_server", "redis_url"})
"""The fixtures that start a redis-server: a test using one skips when there is none."""


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip each test that needs redis-server when it is not installed.

    The skip is raised here rather than in the fixtures: pytest reports a skip raised in a
    fixture at the test's own line, one `-ra` line a test, but a skip raised here at this line,
    which `-ra` folds into one line with the count.
    """
    callspec = getattr(item, "callspec", None)
    params = callspec.params.values() if callspec is not None else ()
    needs_redis = bool(REDIS_FIXTURES.intersection(getattr(item, "fixturenames", ())))
    if (needs_redis or "redis" in params) and shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed: .ci/run installs it; see README")


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


_real_connect = socket.socket.connect


def _loopback_connect(sock: socket.socket, address: Any) -> None:
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        host = address[0]
        try:
            loopback = ipaddress.ip_address(host.split("%")[0]).is_loopback
        except ValueError:  # a name: the loop resolves names before it connects
            loopback = False
        if not loopback:
            refused = f"a test may connect to the loopback only, not to {host!r}"
            raise OSError(errno.ENETUNREACH, refused)
    _real_connect(sock, address)


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """No connection a test makes in process leaves the machine: any other address fails.

    asyncio connects every socket it opens through `socket.connect`, aiohttp's and the
    Redis client's alike; a subprocess is not covered.
    """
    monkeypatch.setattr(socket.socket, "connect", _loopback_connect)


@pytest.fixture(autouse=True)
def no_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """No `$MEIGEN_API_KEY` from the environment the tests run in: a session sends none."""
    monkeypatch.delenv("MEIGEN_API_KEY", raising=False)


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
        monkeypatch.setattr(meigen_async._media_files, "_RECORDS_ON_FILES", False)
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

    @property
    def origin(self) -> str:
        """Its `127.0.0.1:{port}`: the `media_hosts` entry (and `--media-host`) that allows it."""
        return self.url.removeprefix("http://")

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


@pytest.fixture(scope="session")
def _otel_sdk() -> tuple[Any, Any]:
    """The OpenTelemetry SDK, installed once a process (the global providers are set once)."""
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(tracer_provider)
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    return exporter, reader


@pytest.fixture
def otel(_otel_sdk: tuple[Any, Any]) -> tuple[Any, Any]:
    """The in-memory span exporter (emptied) and metric reader of the process's SDK."""
    exporter, reader = _otel_sdk
    exporter.clear()
    return exporter, reader

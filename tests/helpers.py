"""Helpers shared by the tests that script faults against FakeGallery.

Fast retry policies, the fetch tasks still running, body sizes, the times at which a
gallery saw its requests, whether a directory's files can carry media records, a PNG
header claiming any size, a media server of one handler and a host trickling bytes to it,
the names left in a directory, the loopback origin of a gallery's media, and the hypothesis
strategies of untrusted JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import struct
import time
import warnings
from bisect import bisect_left
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
import pytest
from aiohttp import web
from hypothesis import strategies as st
from yarl import URL

from meigen_async.retry import RetryPolicy
from meigen_async.session import FETCH_TASK_PREFIX
from meigen_async.testing import FakeGallery, png_bytes

# Text with lone surrogates mixed in: st.text() itself leaves them out.
UNTRUSTED_TEXT = st.lists(
    st.text(max_size=5) | st.integers(0xD800, 0xDFFF).map(chr), max_size=6
).map("".join)
"""Short text, lone surrogates included."""
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | UNTRUSTED_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(UNTRUSTED_TEXT, inner, max_size=3),
    max_leaves=10,
)
"""Any value JSON can hold, small."""

FAST = RetryPolicy(backoff_base=0.001, backoff_max=0.01, rate_limited_wait=0.01)
"""Retries within milliseconds: the behaviour of the default policy, without the waiting."""


def fast(**changes: Any) -> RetryPolicy:
    """FAST with some settings changed."""
    return attrs.evolve(FAST, **changes)


def in_backoff(seconds: float, **changes: Any) -> RetryPolicy:
    """A policy whose every backoff lasts exactly ``seconds``: long enough to act during it."""
    return RetryPolicy(
        backoff_base=seconds,
        backoff_max=seconds,
        random=lambda: 1.0,
        **changes,
    )


def fetch_tasks() -> list[asyncio.Task[Any]]:
    """Upstream fetches still running."""
    return [
        t
        for t in asyncio.all_tasks()
        if t.get_name().startswith(FETCH_TASK_PREFIX) and not t.done()
    ]


def body_size(data: dict[str, Any]) -> int:
    """The size of the envelope FakeGallery sends for ``data``."""
    return len(json.dumps({"success": True, "data": data}).encode())


class _Arrivals(Counter[str]):
    """A request counter that also notes when each request arrived."""

    def __init__(self, times: list[float]):
        super().__init__()
        self.times = times

    def __setitem__(self, key: str, value: int) -> None:
        self.times.append(time.monotonic())
        super().__setitem__(key, value)


def record_arrivals(gallery: FakeGallery) -> list[float]:
    """The monotonic times at which ``gallery`` receives image requests, kept as they come."""
    times: list[float] = []
    gallery.requests = _Arrivals(times)
    return times


def most_in_any_window(times: list[float], seconds: float) -> int:
    """The most of ``times`` falling within any span of ``seconds``."""
    ordered = sorted(times)
    return max(bisect_left(ordered, t + seconds) - i for i, t in enumerate(ordered))


def keeps_user_attributes(directory: Path) -> bool:
    """Whether files in `directory` can carry user extended attributes (media records)."""
    probe = directory / ".xattr-probe"
    probe.write_bytes(b"")
    try:
        os.setxattr(probe, "user.meigen_async.probe", b"1")
    except (AttributeError, OSError):
        return False
    finally:
        probe.unlink()
    return True


def slow_only(request: Any, what: str) -> None:
    """Fail a test that uses `what` (seconds of work) without being marked slow.

    `make quick` leaves out the tests marked slow and must stay quick: an expensive fixture
    calls this, so that a new test using it cannot slip into the quick run unmarked.
    """
    if request.node.get_closest_marker("slow") is None:
        raise AssertionError(f"{request.node.name} uses {what}: mark it @pytest.mark.slow")


def media_origin(gallery: FakeGallery) -> str:
    """The `127.0.0.1:{port}` its images' media are served from: their `media_hosts` entry.

    Exactly one such origin (a test's own media server); media elsewhere are left out.
    """
    (origin,) = {
        f"{url.host}:{url.port}"
        for data in gallery.images.values()
        for url in map(URL, data.get("media_urls") or ())
        if url.host == "127.0.0.1"
    }
    return origin


def png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header claims `width` by `height` pixels: a decompression bomb's shape.

    `png_bytes(w, h)` at that size would build the pixels; the header alone is what is read.
    """
    body = bytearray(png_bytes(2, 2))
    body[16:24] = struct.pack(">II", width, height)  # IHDR's width and height
    return bytes(body)


@contextlib.asynccontextmanager
async def media_server(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    release: asyncio.Event,
) -> AsyncIterator[str]:
    """Serve `handler` at `/m.png` on 127.0.0.1; yields the server's `http://host:port`.

    `release` is set before the server stops: a handler stalling on it then ends.
    """
    app = web.Application()
    app.router.add_get("/m.png", handler)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        release.set()
        await runner.cleanup()


def trickling(
    started: asyncio.Event, release: asyncio.Event, every: float, requests: list[str] | None = None
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A PNG that comes one byte every `every` seconds after its header: a slow-loris host."""

    async def handler(request: web.Request) -> web.StreamResponse:
        if requests is not None:
            requests.append(request.path)
        resp = web.StreamResponse(headers={"Content-Type": "image/png"})
        resp.content_length = 100_000
        await resp.prepare(request)
        await resp.write(png_bytes()[:40])
        started.set()
        with contextlib.suppress(ConnectionError):
            while not release.is_set():
                await resp.write(b"\0")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(release.wait(), every)
        return resp

    return handler


def leftovers(directory: Path) -> list[str]:
    """The names in `directory`, sorted; none when it does not exist."""
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples"


def load_example(name: str, library: str) -> ModuleType:
    """Import docs/examples/<name>.py, skipping when ``library`` is not installed."""
    with warnings.catch_warnings():
        # discord.py imports audioop, deprecated since Python 3.11 (PEP 594): not ours to fix.
        warnings.filterwarnings(
            "ignore", message="'audioop' is deprecated", category=DeprecationWarning
        )
        pytest.importorskip(library)
        spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module

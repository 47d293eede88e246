"""``FakeGallery``: a real aiohttp server on loopback serving the endpoint's contract.

For this library's tests, for users testing their own bots, and for the demo. It serves
``GET /api/images/{id}`` from a dict or a JSON Lines file, and counts what it saw: requests per
id, every path requested, and the most requests in flight at once.

    async with FakeGallery.sample() as gallery:
        async with GallerySession(gallery.url) as session:
            image = await session.get_image(gallery.ids[0])
        assert gallery.requests[gallery.ids[0]] == 1
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web

__all__ = ["DEFAULT_CACHE_CONTROL", "FakeGallery", "load_jsonl", "sample_images"]

DEFAULT_CACHE_CONTROL = "public, max-age=3600"
"""What the fake sends by default: the real service documents an hour of caching."""

_NOT_FOUND = {"success": False, "error": "Image not found"}


def load_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSON Lines file of ``data`` objects, skipping blank lines."""
    with open(path, encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def sample_images() -> list[dict[str, Any]]:
    """The bundled sample gallery: 60 images written for this project."""
    text = resources.files("meigen_async").joinpath("data/sample_gallery.jsonl").read_text("utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


class FakeGallery:
    """A loopback server for ``GET /api/images/{id}``, counting what it serves.

    Args:
        images: ``data`` objects, as a mapping by id or an iterable of objects with an ``id``.
        cache_control: The ``Cache-Control`` header of successful responses (None: no header).
        delay: Seconds each request waits before answering, to make requests overlap.
        port: The port to bind on 127.0.0.1; 0 picks a free one.

    """

    def __init__(
        self,
        images: Mapping[str, Mapping[str, Any]] | Iterable[Mapping[str, Any]] = (),
        *,
        cache_control: str | None = DEFAULT_CACHE_CONTROL,
        delay: float = 0.0,
        port: int = 0,
    ):
        items = images.values() if isinstance(images, Mapping) else images
        self.images: dict[str, dict[str, Any]] = {str(data["id"]): dict(data) for data in items}
        self.cache_control = cache_control
        self.delay = delay
        self.extra_headers: dict[str, dict[str, str]] = {}
        self.requests: Counter[str] = Counter()
        self.user_agents: Counter[str] = Counter()
        self.paths: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._port = port
        self._runner: web.AppRunner | None = None
        self._url: str | None = None

    @classmethod
    def from_jsonl(cls, path: str | Path, **options: Any) -> FakeGallery:
        """A gallery serving the ``data`` objects of a JSON Lines file."""
        return cls(load_jsonl(path), **options)

    @classmethod
    def sample(cls, **options: Any) -> FakeGallery:
        """A gallery serving the bundled sample of 60 images."""
        return cls(sample_images(), **options)

    @property
    def ids(self) -> list[str]:
        """The ids served, in the order they were given."""
        return list(self.images)

    @property
    def url(self) -> str:
        """The base URL to hand to ``GallerySession``, e.g. ``http://127.0.0.1:54321``."""
        if self._url is None:
            raise RuntimeError("the FakeGallery is not started")
        return self._url

    @property
    def total_requests(self) -> int:
        """Every request received, to any path."""
        return len(self.paths)

    def reset_counts(self) -> None:
        """Zero the request counters."""
        self.requests.clear()
        self.user_agents.clear()
        self.paths.clear()
        self.max_in_flight = self.in_flight

    # -- Serving -------------------------------------------------------------------------------

    async def start(self) -> FakeGallery:
        """Bind to 127.0.0.1 and start serving."""
        app = web.Application()
        app.router.add_get("/api/images/{image_id}", self._serve_image)
        app.router.add_route("*", "/{tail:.*}", self._serve_unknown)
        app.on_response_prepare.append(self._count_path)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self._port)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self._url = f"http://{host}:{port}"
        return self

    async def close(self) -> None:
        """Stop serving. Idempotent."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> FakeGallery:
        """Start serving."""
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop serving."""
        await self.close()

    async def _count_path(self, request: web.Request, response: web.StreamResponse) -> None:
        self.paths.append(request.raw_path)

    async def _serve_image(self, request: web.Request) -> web.StreamResponse:
        image_id = request.match_info["image_id"]
        self.requests[image_id] += 1
        self.user_agents[request.headers.get("User-Agent", "")] += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            return self._answer(image_id)
        finally:
            self.in_flight -= 1

    def _answer(self, image_id: str) -> web.Response:
        data = self.images.get(image_id)
        if data is None:
            return web.json_response(_NOT_FOUND, status=404)
        headers = {"Cache-Control": self.cache_control} if self.cache_control else {}
        headers.update(self.extra_headers.get(image_id, {}))
        return web.json_response({"success": True, "data": data}, headers=headers)

    async def _serve_unknown(self, request: web.Request) -> web.Response:
        return web.json_response({"success": False, "error": "Not found"}, status=404)

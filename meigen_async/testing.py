"""`FakeGallery`: a real aiohttp server on loopback serving the endpoint's contract.

For this library's tests, for users testing their own bots, and for the demo. It serves
`GET /api/images/{id}` from a dict or a JSON Lines file, and counts what it saw: requests per
id, every path requested, and the most requests in flight at once.

    async with FakeGallery.sample() as gallery:
        async with GallerySession(gallery.url) as session:
            image = await session.get_image(gallery.ids[0])
        assert gallery.requests[gallery.ids[0]] == 1

It also misbehaves on demand: [`FakeGallery.script`][meigen_async.testing.FakeGallery.script]
queues, per id, the answers to give
before the normal one (an error status with headers, a delay, a dropped connection, a
truncated or oversized body, an HTML page), so a test can prove its code survives them.

    gallery.script(image_id, Answer.error(503), Answer.rate_limited(retry_after=2))
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Any

import attrs
from aiohttp import web

__all__ = ["DEFAULT_CACHE_CONTROL", "Answer", "FakeGallery", "load_jsonl", "sample_images"]

DEFAULT_CACHE_CONTROL = "public, max-age=3600"
"""What the fake sends by default: the real service documents an hour of caching."""

_NOT_FOUND = {"success": False, "error": "Image not found"}
_JSON = "application/json"
_CHUNK = 16384


def _hang_up(
    request: web.Request, response: web.StreamResponse | None = None
) -> web.StreamResponse:
    if request.transport is not None:
        request.transport.close()
    # aiohttp wants a response; the client never sees this one.
    return response if response is not None else web.Response(status=500)


@attrs.frozen
class Answer:
    """One scripted answer of `FakeGallery`; the class methods build the usual faults."""

    status: int = 200
    """The HTTP status."""
    headers: Mapping[str, str] = attrs.field(factory=dict)
    """Extra response headers (`Retry-After`, `Cache-Control`, ...)."""
    delay: float = 0.0
    """Seconds to wait before answering."""
    body: bytes | None = None
    """The body; None for the normal one (the envelope on 2xx, the error JSON otherwise)."""
    content_type: str = "application/json"
    """The `Content-Type` header."""
    keep: int | None = None
    """Send only the first `keep` bytes of the body, framed as if complete."""
    hang_up_after: int | None = None
    """Promise the whole body, send this many bytes, then drop the connection."""
    drop: bool = False
    """Drop the connection without answering."""
    chunked: bool = False
    """Send the body in chunks, without a `Content-Length`."""

    @classmethod
    def error(
        cls, status: int, message: str = "Internal error", headers: Mapping[str, str] | None = None
    ) -> Answer:
        """An error status with the service's `{"success": false, "error": ...}` body."""
        body = json.dumps({"success": False, "error": message}).encode()
        return cls(status=status, body=body, headers=dict(headers or {}))

    @classmethod
    def rate_limited(cls, retry_after: str | float | None = None) -> Answer:
        """A 429, with `Retry-After` (seconds or an HTTP-date) when given."""
        headers = {} if retry_after is None else {"Retry-After": f"{retry_after}"}
        return cls.error(429, "Too many requests", headers)

    @classmethod
    def slow(cls, seconds: float) -> Answer:
        """The normal answer, after `seconds`."""
        return cls(delay=seconds)

    @classmethod
    def dropped(cls) -> Answer:
        """The connection closed without an answer."""
        return cls(drop=True)

    @classmethod
    def cut_off(cls, after: int = 20) -> Answer:
        """The normal answer, the connection dropped `after` bytes into the body."""
        return cls(hang_up_after=after)

    @classmethod
    def truncated(cls, keep: int = 40) -> Answer:
        """The normal JSON cut after `keep` bytes, sent as if it were whole."""
        return cls(keep=keep)

    @classmethod
    def html(cls, status: int = 200) -> Answer:
        """An HTML page, as a CDN or a proxy sends when something is wrong."""
        page = b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body>" + (
            b"<h1>Bad Gateway</h1>" * 5 + b"</body></html>"
        )
        return cls(status=status, body=page, content_type="text/html")

    @classmethod
    def oversized(cls, size: int, *, chunked: bool = False) -> Answer:
        """A JSON body of `size` bytes, with or without a `Content-Length`."""
        filler = b'{"success": true, "data": {"id": "x", "text": "' + b"a" * size + b'"}}'
        return cls(body=filler, chunked=chunked)

    @classmethod
    def wrong_content_type(cls, content_type: str = "text/plain") -> Answer:
        """The normal body under a content type that is not JSON's."""
        return cls(content_type=content_type)


def _image_id(data: Mapping[str, Any]) -> str:
    image_id = data.get("id")
    if not isinstance(image_id, (str, int)) or isinstance(image_id, bool):
        raise ValueError(f"every image needs a string 'id'; got {str(data)[:80]}")
    return str(image_id)


def load_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSON Lines file of `data` objects, skipping blank lines.

    Raises ValueError naming the line that is not a JSON object with a string `id`.
    """
    objects: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except ValueError as exc:
                raise ValueError(f"{path}:{number}: not JSON: {exc}") from exc
            if not isinstance(data, dict) or not isinstance(data.get("id"), str):
                raise ValueError(f"{path}:{number}: expected a JSON object with a string 'id'")
            objects.append(data)
    return objects


def sample_images() -> list[dict[str, Any]]:
    """The bundled sample gallery: 60 images written for this project."""
    text = resources.files("meigen_async").joinpath("data/sample_gallery.jsonl").read_text("utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


class FakeGallery:
    """A loopback server for `GET /api/images/{id}`, counting what it serves.

    Args:
        images: `data` objects, as a mapping by id or an iterable of objects with an `id`.
        cache_control: The `Cache-Control` header of successful responses (None: no header).
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
        self.images: dict[str, dict[str, Any]] = {_image_id(data): dict(data) for data in items}
        """The `data` objects served, by id; change it to change what is served."""
        self.cache_control: str | None = cache_control
        """The `Cache-Control` header of successful responses (None: no header)."""
        self.delay: float = delay
        """Seconds each request waits before answering."""
        self.extra_headers: dict[str, dict[str, str]] = {}
        """Per id, headers added to its successful responses."""
        self.scripts: dict[str, deque[Answer]] = {}
        """Per id, the scripted answers still to give (see `script`)."""
        self.requests: Counter[str] = Counter()
        """Requests received, by id."""
        self.user_agents: Counter[str] = Counter()
        """Requests received, by `User-Agent`."""
        self.paths: list[str] = []
        """The path of every request received, in order."""
        self.in_flight: int = 0
        """Requests being answered now."""
        self.max_in_flight: int = 0
        """The most requests answered at once so far."""
        self._port = port
        self._runner: web.AppRunner | None = None
        self._url: str | None = None

    @classmethod
    def from_jsonl(cls, path: str | Path, **options: Any) -> FakeGallery:
        """A gallery serving the `data` objects of a JSON Lines file."""
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
        """The base URL to hand to `GallerySession`, e.g. `http://127.0.0.1:54321`."""
        if self._url is None:
            raise RuntimeError("the FakeGallery is not started")
        return self._url

    @property
    def total_requests(self) -> int:
        """Every request received, to any path."""
        return len(self.paths)

    def script(self, image_id: str, *answers: Answer) -> None:
        """Queue answers for `image_id`, given in order before the normal one resumes."""
        self.scripts.setdefault(image_id, deque()).extend(answers)

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
            queue = self.scripts.get(image_id)
            if queue:
                return await self._scripted(request, image_id, queue.popleft())
            return self._answer(image_id)
        finally:
            self.in_flight -= 1

    def _normal(self, image_id: str) -> tuple[int, dict[str, str], bytes]:
        data = self.images.get(image_id)
        if data is None:
            return 404, {}, json.dumps(_NOT_FOUND).encode()
        headers = {"Cache-Control": self.cache_control} if self.cache_control else {}
        headers.update(self.extra_headers.get(image_id, {}))
        return 200, headers, json.dumps({"success": True, "data": data}).encode()

    def _answer(self, image_id: str) -> web.Response:
        status, headers, body = self._normal(image_id)
        return web.Response(status=status, headers=headers, body=body, content_type=_JSON)

    async def _scripted(
        self, request: web.Request, image_id: str, answer: Answer
    ) -> web.StreamResponse:
        if answer.delay:
            await asyncio.sleep(answer.delay)
        if answer.drop:
            return _hang_up(request)
        status, headers, body = self._normal(image_id)
        if answer.body is not None:
            status, headers, body = answer.status, {}, answer.body
        headers = {**headers, **answer.headers}
        if answer.keep is not None:
            body = body[: answer.keep]
        if answer.hang_up_after is None and not answer.chunked:
            return web.Response(
                status=status, headers=headers, body=body, content_type=answer.content_type
            )
        response = web.StreamResponse(status=status, headers=headers)
        response.content_type = answer.content_type
        if answer.chunked:
            response.enable_chunked_encoding()
        else:
            response.content_length = len(body)
        await response.prepare(request)
        sent = body if answer.hang_up_after is None else body[: answer.hang_up_after]
        for start in range(0, len(sent), _CHUNK):
            await response.write(sent[start : start + _CHUNK])
        if answer.hang_up_after is not None:
            return _hang_up(request, response)
        await response.write_eof()
        return response

    async def _serve_unknown(self, request: web.Request) -> web.Response:
        return web.json_response({"success": False, "error": "Not found"}, status=404)

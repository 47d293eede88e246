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

It serves the search too, as the service does (docs/search.md): `GET
/api/search?q=...&type=posts&limit=N&offset=K&media=matched-v1` answers items in exactly the
search's shape, ranked by relevance (any word of the query counts; more matching words rank
higher), the empty query listing the newest posts first; `search_page_cap` is its own page
size, and its quotas (`api_keys`, `search_limit`, `daily_search_limit`) answer the service's
two 429s. [`FakeGallery.searches`][meigen_async.testing.FakeGallery.searches] records what each
search asked, as the server read it, and
[`FakeGallery.script_search`][meigen_async.testing.FakeGallery.script_search] queues any answer
for the search as `script` does for ids.

`FakeGallery.sample()` also serves every image's media files (small real PNGs of each image's
size) from its own origin, so that downloading works with no network at all: give the
session `media_hosts=[gallery.media_host]`.

The module is past 450 lines because the server is one class whose handlers share its
counters; what its search answers and its quotas are decided in `_fake_search`, and its
pictures made in `_pictures`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
import zlib
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from email.utils import format_datetime
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Any

import attrs
from aiohttp import web

from ._fake_search import DAILY_LIMIT, SearchQuotas, bearer_key, search_items
from ._pictures import flat_png, jpeg_bytes, png_bytes, webp_bytes
from ._protocol import parse_http_date

__all__ = [
    "DEFAULT_CACHE_CONTROL",
    "Answer",
    "FakeGallery",
    "flat_png",
    "jpeg_bytes",
    "load_jsonl",
    "png_bytes",
    "sample_images",
    "webp_bytes",
]

DEFAULT_CACHE_CONTROL = "public, max-age=3600"
"""What the fake sends by default: the real service documents an hour of caching."""

_SHUTDOWN_TIMEOUT = 0.1
"""Seconds `FakeGallery.close` lets requests in flight finish before cancelling them."""

_NOT_FOUND = {"success": False, "error": "Image not found"}
_JSON = "application/json"
_CHUNK = 16384
_PICTURE_SIDE = 512  # the side of a picture whose image states no usable size
_LARGEST_SIDE = 8192  # a stated side past this is not drawn either
_AVATAR_SIDE = 48
_THUMB_SIDE = 320
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-]+")


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
    content_type: str | None = None
    """The `Content-Type` header; None for the normal one (JSON for an image, the file's own
    type for a media file)."""
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
    def daily_limit_reached(cls, retry_after: str | float | None = None) -> Answer:
        """The search's 429 for a spent daily quota (`"code": "DAILY_LIMIT_REACHED"`)."""
        headers = {} if retry_after is None else {"Retry-After": f"{retry_after}"}
        return cls(status=429, body=json.dumps(DAILY_LIMIT).encode(), headers=headers)

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
    def redirect(cls, location: str, status: int = 302) -> Answer:
        """A redirect to `location` (absolute or relative), with an empty body."""
        return cls(status=status, headers={"Location": location}, body=b"")

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
        validators: Send a strong `ETag` (a hash of the body, so changing an image changes
            it) and a `Last-Modified` (the image's `updated_at`, else `created_at`), and
            answer `If-None-Match` / `If-Modified-Since` with `304 Not Modified`; False
            sends neither and ignores conditional requests.
        search_page_cap: The most items a search page holds, whatever `limit` asks (the
            service's own page size); None: `limit`.
        api_keys: The API keys searches may carry (`Authorization: Bearer <key>`); another
            key is answered `401 {"success": false, "error": "Invalid API key"}`. None takes
            any key.
        search_limit: Searches one address may make without a key in `search_window`
            seconds; past it, `429 {"success": false, "error": "Too many requests"}`. None:
            no limit.
        daily_search_limit: Searches one key may make in a UTC day; past it, `429
            {"success": false, "error": "Daily search limit reached", "code":
            "DAILY_LIMIT_REACHED"}` until 00:00 UTC. None: no limit.
        search_window: The per-address window of `search_limit`, in seconds (about a minute,
            as the service's).
        serve_media: Serve each image's media files itself: when it starts, every image's
            `media_urls`, `thumbnail_url` and `author_avatar_url` are rewritten to
            `{url}/media/{id}-{n}.png` and friends, small one-colour PNGs of the image's
            `image_width` by `image_height` (512 a side when unknown), made on first request.
            `sample()` turns it on.

    """

    def __init__(
        self,
        images: Mapping[str, Mapping[str, Any]] | Iterable[Mapping[str, Any]] = (),
        *,
        cache_control: str | None = DEFAULT_CACHE_CONTROL,
        delay: float = 0.0,
        port: int = 0,
        validators: bool = True,
        search_page_cap: int | None = None,
        api_keys: Iterable[str] | None = None,
        search_limit: int | None = None,
        daily_search_limit: int | None = None,
        search_window: float = 60.0,
        serve_media: bool = False,
    ):
        items = images.values() if isinstance(images, Mapping) else images
        self.images: dict[str, dict[str, Any]] = {_image_id(data): dict(data) for data in items}
        """The `data` objects served, by id; change it to change what is served."""
        self.cache_control: str | None = cache_control
        """The `Cache-Control` header of successful responses (None: no header)."""
        self.delay: float = delay
        """Seconds each request waits before answering."""
        self.validators: bool = validators
        """Whether answers carry an `ETag` and `Last-Modified` and conditional requests get 304."""
        self.conditional: Counter[str] = Counter()
        """Requests per id that carried `If-None-Match` or `If-Modified-Since`."""
        self.not_modified: Counter[str] = Counter()
        """`304 Not Modified` answers sent per id (with no body)."""
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
        self.searches: list[tuple[str, int, int]] = []
        """Each search received: its query (`q`, decoded), limit and offset."""
        self.search_scripts: deque[Answer] = deque()
        """The scripted answers still to give to searches (see `script_search`)."""
        self.search_cache_control: str | None = None
        """The `Cache-Control` of search answers (None: no header)."""
        self.search_page_cap: int | None = search_page_cap
        """The most items a search page holds, whatever its `limit`; None: `limit`."""
        self.quotas: SearchQuotas = SearchQuotas(
            api_keys=api_keys,
            search_limit=search_limit,
            daily_search_limit=daily_search_limit,
            window=search_window,
            clock=time.monotonic,
            wall_clock=time.time,
        )
        """The search limits: per address without a key, per key and UTC day with one."""
        self.authorizations: list[tuple[str, str]] = []
        """The path and `Authorization` header of every request that carried one, any path."""
        self.serve_media: bool = serve_media
        """Whether it serves every image's media files itself (see the constructor)."""
        self._pictures: dict[str, tuple[int, int, tuple[int, int, int]]] = {}
        self.media: dict[str, tuple[bytes, str]] = {}
        """The media files served, by name: their bytes and `Content-Type`."""
        self.media_requests: Counter[str] = Counter()
        """Requests received, by media file name."""
        self.media_scripts: dict[str, deque[Answer]] = {}
        """Per media file, the scripted answers still to give (see `script_media`)."""
        self._port = port
        self._runner: web.AppRunner | None = None
        self._url: str | None = None

    @classmethod
    def from_jsonl(cls, path: str | Path, **options: Any) -> FakeGallery:
        """A gallery serving the `data` objects of a JSON Lines file."""
        return cls(load_jsonl(path), **options)

    @classmethod
    def sample(cls, **options: Any) -> FakeGallery:
        """A gallery serving the bundled sample of 60 images, and their media files itself.

        Its media URLs point at its own origin once started (`serve_media`, on unless
        `serve_media=False` is given): nothing in it reaches beyond 127.0.0.1.
        """
        options.setdefault("serve_media", True)
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
    def media_host(self) -> str:
        """Its `host:port`, e.g. `127.0.0.1:54321`: the `media_hosts` entry for its media files.

        A bare `127.0.0.1` allows only ports 80 and 443, not the free port this one binds.
        """
        return self.url.removeprefix("http://")

    @property
    def total_requests(self) -> int:
        """Every request received, to any path."""
        return len(self.paths)

    def script(self, image_id: str, *answers: Answer) -> None:
        """Queue answers for `image_id`, given in order before the normal one resumes."""
        self.scripts.setdefault(image_id, deque()).extend(answers)

    def script_search(self, *answers: Answer) -> None:
        """Queue answers for the next searches, whatever they ask, before normal ones resume."""
        self.search_scripts.extend(answers)

    def search_results(self, query: str) -> list[dict[str, Any]]:
        """Every item a search for `query` answers, best first, as sent with `media=matched-v1`.

        Ranked by relevance: an image matches when any word of the query is a word of its
        text or its author's names (ignoring case), `rank` is the share of the query's words
        it holds, and more matching words come first (ties in the order the images were
        given). The empty query lists every image, newest `created_at` first.
        """
        return search_items(self.images.values(), query.strip(), matched_media=True)

    def reset_counts(self) -> None:
        """Zero the request counters."""
        self.searches.clear()
        self.requests.clear()
        self.conditional.clear()
        self.not_modified.clear()
        self.user_agents.clear()
        self.paths.clear()
        self.media_requests.clear()
        self.authorizations.clear()
        self.max_in_flight = self.in_flight

    # -- Serving -------------------------------------------------------------------------------

    async def start(self) -> FakeGallery:
        """Bind to 127.0.0.1 and start serving."""
        app = web.Application(middlewares=[self._see])
        app.router.add_get("/api/images/{image_id}", self._serve_image)
        app.router.add_get("/api/search", self._serve_search)
        app.router.add_get("/media/{name}", self._serve_media)
        app.router.add_route("*", "/{tail:.*}", self._serve_unknown)
        app.on_response_prepare.append(self._count_path)
        # A handler still waiting (a scripted delay) is cancelled on close rather than waited
        # for: a fake gallery stops at once, as a test's teardown needs.
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=_SHUTDOWN_TIMEOUT
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self._port)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self._url = f"http://{host}:{port}"
        if self.serve_media:
            self._own_media()
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

    @web.middleware
    async def _see(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        # Before any handler: a request answered by a dropped connection is seen too.
        authorization = request.headers.get("Authorization")
        if authorization is not None:
            self.authorizations.append((request.raw_path, authorization))
        return await handler(request)

    async def _serve_image(self, request: web.Request) -> web.StreamResponse:
        image_id = request.match_info["image_id"]
        self.requests[image_id] += 1
        if "If-None-Match" in request.headers or "If-Modified-Since" in request.headers:
            self.conditional[image_id] += 1
        self.user_agents[request.headers.get("User-Agent", "")] += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            queue = self.scripts.get(image_id)
            if queue:
                return await self._scripted(request, image_id, queue.popleft())
            return self._answer(request, image_id)
        finally:
            self.in_flight -= 1

    def _normal(
        self, image_id: str, request: web.Request | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        data = self.images.get(image_id)
        if data is None:
            return 404, {}, json.dumps(_NOT_FOUND).encode()
        headers = {"Cache-Control": self.cache_control} if self.cache_control else {}
        body = json.dumps({"success": True, "data": data}).encode()
        if self.validators:
            headers["ETag"] = f'"{hashlib.sha256(body).hexdigest()[:20]}"'
            last_modified = _last_modified(data)
            if last_modified is not None:
                headers["Last-Modified"] = last_modified
        headers.update(self.extra_headers.get(image_id, {}))
        if request is not None and self.validators and _not_modified(request, headers):
            self.not_modified[image_id] += 1
            return 304, headers, b""
        return 200, headers, body

    def _answer(self, request: web.Request, image_id: str) -> web.Response:
        status, headers, body = self._normal(image_id, request)
        if status == 304:
            return web.Response(status=304, headers=headers)
        return web.Response(status=status, headers=headers, body=body, content_type=_JSON)

    async def _serve_search(self, request: web.Request) -> web.StreamResponse:
        query = request.query.get("q", "")
        try:
            limit = int(request.query.get("limit", "20"))
            offset = int(request.query.get("offset", "0"))
        except ValueError:
            limit = offset = -1
        self.searches.append((query, limit, offset))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.search_scripts:
                answer = self.search_scripts.popleft()
                normal = self._search_answer(request, query, limit, offset, counted=False)
                return await self._scripted(request, "", answer, normal)
            status, headers, body = self._search_answer(request, query, limit, offset)
            return web.Response(status=status, headers=headers, body=body, content_type=_JSON)
        finally:
            self.in_flight -= 1

    def _search_answer(
        self, request: web.Request, query: str, limit: int, offset: int, *, counted: bool = True
    ) -> tuple[int, dict[str, str], bytes]:
        if request.query.get("type", "posts") != "posts":
            return _error(400, "Invalid type")
        if not 1 <= limit <= 100 or offset < 0:
            return _error(400, "Invalid limit or offset")
        if counted:
            key = bearer_key(request.headers.get("Authorization"))
            refused = self.quotas.admit(request.remote or "", key)
            if refused is not None:
                status, error = refused
                return status, {}, json.dumps(error).encode()
        size = limit if self.search_page_cap is None else min(limit, self.search_page_cap)
        matched = request.query.get("media") == "matched-v1"
        items = search_items(self.images.values(), query.strip(), matched_media=matched)
        page = items[offset : offset + size]
        headers = {"Cache-Control": self.search_cache_control} if self.search_cache_control else {}
        return 200, headers, json.dumps({"success": True, "data": page}).encode()

    async def _scripted(
        self,
        request: web.Request,
        image_id: str,
        answer: Answer,
        normal: tuple[int, dict[str, str], bytes] | None = None,
    ) -> web.StreamResponse:
        if answer.delay:
            await asyncio.sleep(answer.delay)
        if answer.drop:
            return _hang_up(request)
        # A fault (a cut-off body, chunks) is one of the body: it is served as a 200, whatever
        # the request's validators; a plain answer (a delay, extra headers) may be a 304.
        faulty = answer.keep is not None or answer.hang_up_after is not None or answer.chunked
        if normal is not None:
            status, headers, body = normal
        else:
            status, headers, body = self._normal(image_id, None if faulty else request)
        if status == 304 and answer.body is None:
            return web.Response(status=304, headers={**headers, **answer.headers})
        if answer.body is not None:
            status, headers, body = answer.status, {}, answer.body
        headers = {**headers, **answer.headers}
        return await _respond(request, answer, status, headers, body, _JSON)

    # -- Media files ---------------------------------------------------------------------------

    def add_media(self, name: str, body: bytes, content_type: str) -> str:
        """Serve `body` at `/media/{name}` under `content_type`; its URL, once started.

        Image data's `media_urls` can point here (give the session
        `media_hosts=[gallery.media_host]`). Requests are counted in `media_requests`.
        """
        self.media[name] = (body, content_type)
        return self.media_url(name) if self._url is not None else f"/media/{name}"

    def media_url(self, name: str) -> str:
        """The URL of media file `name` (served or not: a missing one answers 404)."""
        return f"{self.url}/media/{name}"

    def script_media(self, name: str, *answers: Answer) -> None:
        """Queue answers for media file `name`, given in order before the normal one.

        A scripted answer with no body sends the file's own bytes: `Answer.slow`,
        `Answer.cut_off`, `Answer.truncated`, `Answer.wrong_content_type` apply to it.
        """
        self.media_scripts.setdefault(name, deque()).extend(answers)

    def _own_media(self) -> None:
        """Point every image's media at this origin, each picture to be drawn when asked."""
        for position, (image_id, data) in enumerate(list(self.images.items())):
            red, green, blue, _ = zlib.crc32(image_id.encode()).to_bytes(4, "big")
            rgb = (red, green, blue)
            width, height = _side(data.get("image_width")), _side(data.get("image_height"))
            urls = data.get("media_urls")
            count = len(urls) if isinstance(urls, list) else 0
            # A gallery id is safe in a path; another is named by its place (no id has a ~).
            stem = image_id if _SAFE_NAME.fullmatch(image_id) else f"~{position}"
            names = [f"{stem}-{index}.png" for index in range(count)]
            for name in names:
                self._pictures[name] = (width, height, rgb)
            thumbnail = data.get("thumbnail_url")
            if isinstance(thumbnail, str) and isinstance(urls, list) and thumbnail in urls:
                thumb = names[urls.index(thumbnail)]
            else:
                thumb = f"{stem}-thumb.png"
                scale = _THUMB_SIDE / max(width, height)
                side = (max(1, round(width * scale)), max(1, round(height * scale)))
                self._pictures[thumb] = (*side, rgb)
            avatar = f"{stem}-avatar.png"
            self._pictures[avatar] = (_AVATAR_SIDE, _AVATAR_SIDE, rgb)
            self.images[image_id] = {
                **data,
                "media_urls": [self.media_url(name) for name in names],
                "thumbnail_url": self.media_url(thumb),
                "author_avatar_url": self.media_url(avatar),
            }

    async def _serve_media(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.media_requests[name] += 1
        picture = self._pictures.get(name)
        if name not in self.media and picture is not None:
            width, height, rgb = picture
            self.media[name] = (flat_png(width, height, rgb), "image/png")
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            body, content_type = self.media.get(name, (b"not found", "text/plain"))
            status = 200 if name in self.media else 404
            queue = self.media_scripts.get(name)
            answer = queue.popleft() if queue else Answer()
            if answer.delay:
                await asyncio.sleep(answer.delay)
            if answer.drop:
                return _hang_up(request)
            headers: dict[str, str] = {}
            if answer.body is not None:
                status, body = answer.status, answer.body
            headers.update(answer.headers)
            return await _respond(request, answer, status, headers, body, content_type)
        finally:
            self.in_flight -= 1

    async def _serve_unknown(self, request: web.Request) -> web.Response:
        return web.json_response({"success": False, "error": "Not found"}, status=404)


def _error(status: int, message: str) -> tuple[int, dict[str, str], bytes]:
    return status, {}, json.dumps({"success": False, "error": message}).encode()


def _side(value: object) -> int:
    """A stated width or height to draw, or the default when it is none or out of reason."""
    if type(value) is int and 0 < value <= _LARGEST_SIDE:
        return value
    return _PICTURE_SIDE


def _last_modified(data: Mapping[str, Any]) -> str | None:
    """The image's `updated_at` (else `created_at`) as an HTTP-date, when it reads as one."""
    for field in ("updated_at", "created_at"):
        value = data.get(field)
        if isinstance(value, str):
            try:
                when = datetime.fromisoformat(value)
            except ValueError:
                continue
            if when.tzinfo is not None:
                return format_datetime(when.astimezone(UTC), usegmt=True)
    return None


def _not_modified(request: web.Request, headers: Mapping[str, str]) -> bool:
    """Whether a conditional request's validators match (RFC 9110 section 13.2.2)."""
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is not None:
        etag = headers.get("ETag")
        if etag is None:
            return False
        # Weak comparison: W/"x" and "x" match.
        tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
        return "*" in tags or etag.removeprefix("W/") in tags
    since = parse_http_date(request.headers.get("If-Modified-Since"))
    modified = parse_http_date(headers.get("Last-Modified"))
    return since is not None and modified is not None and modified <= since


async def _respond(
    request: web.Request,
    answer: Answer,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    normal_type: str,
) -> web.StreamResponse:
    """Send `body` as `answer` says: whole, truncated, chunked or cut off."""
    content_type = answer.content_type or normal_type
    if answer.keep is not None:
        body = body[: answer.keep]
    if answer.hang_up_after is None and not answer.chunked:
        return web.Response(status=status, headers=headers, body=body, content_type=content_type)
    response = web.StreamResponse(status=status, headers=headers)
    response.content_type = content_type
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

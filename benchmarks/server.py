"""A generated gallery on 127.0.0.1 for the benchmarks, meant to run in its own process.

Any numeric id gets an image, built on the fly from one of the bundled sample images (so
bodies look and weigh like real ones, about 1 KiB), so the server keeps nothing per id and a
200k-id run costs it no memory. Routes:

- ``GET /api/images/{id}``: the image at once;
- ``GET /delay/{ms}/api/images/{id}``: the image after ``ms`` milliseconds (use
  ``{url}/delay/20`` as a client's base URL);
- ``GET /fresh/{ms}/{validators}/api/images/{id}``: the image after ``ms`` milliseconds, fresh
  for one second (``max-age=1``); with ``validators`` 1, a strong ``ETag`` and ``304 Not
  Modified`` to a matching ``If-None-Match`` (the freshness scenario);
- ``GET /_stats``: ``{"image_requests": n, "per_id": {...}, "body_bytes": n,
  "not_modified": n}``, where ``per_id`` counts only the delayed route (the burst scenario's
  handful of ids), ``body_bytes`` the image bodies sent and ``not_modified`` the 304s;
- ``POST /_reset``: zero the counters.

Run it with ``python -m benchmarks.server``; it prints one JSON line ``{"port": ..., "pid": ...}``
once it listens, then serves until SIGINT/SIGTERM. :class:`ServerProcess` does that for you.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from types import TracebackType
from typing import Any

import aiohttp
from aiohttp import web

from meigen_async.testing import DEFAULT_CACHE_CONTROL, sample_images

__all__ = ["HOST", "ServerProcess", "fetch_stats", "generated_image", "image_id", "main"]

HOST = "127.0.0.1"
"""The only address the benchmarks ever talk to."""

ID_BASE = 2_100_000_000_000_000_000
"""Generated ids are this plus a small integer: 19 digits, like the gallery's own ids."""

_TEMPLATES = sample_images()
_HEADERS = {"Cache-Control": DEFAULT_CACHE_CONTROL}
_NOT_FOUND = json.dumps({"success": False, "error": "Image not found"}).encode()


def image_id(n: int) -> str:
    """The id of the ``n``-th generated image."""
    return str(ID_BASE + n)


def generated_image(image_id: str) -> dict[str, Any]:
    """The ``data`` object served for a numeric ``image_id``."""
    template = _TEMPLATES[int(image_id) % len(_TEMPLATES)]
    old = str(template["id"])
    data = dict(template)
    data["id"] = image_id
    data["media_urls"] = [url.replace(old, image_id) for url in template["media_urls"]]
    if isinstance(template.get("thumbnail_url"), str):
        data["thumbnail_url"] = template["thumbnail_url"].replace(old, image_id)
    return data


class _Gallery:
    def __init__(self) -> None:
        self.image_requests = 0
        self.per_id: Counter[str] = Counter()
        self.body_bytes = 0
        self.not_modified = 0

    async def fresh_image(self, request: web.Request) -> web.Response:
        self.image_requests += 1
        await asyncio.sleep(int(request.match_info["ms"]) / 1000)
        image_id = request.match_info["image_id"]
        body = json.dumps({"success": True, "data": generated_image(image_id)}).encode()
        headers = {"Cache-Control": "public, max-age=1"}
        if request.match_info["validators"] == "1":
            headers["ETag"] = f'"{hashlib.sha256(body).hexdigest()[:20]}"'
            if request.headers.get("If-None-Match") == headers["ETag"]:
                self.not_modified += 1
                return web.Response(status=304, headers=headers)
        self.body_bytes += len(body)
        return web.Response(body=body, headers=headers, content_type="application/json")

    def answer(self, image_id: str) -> web.Response:
        if not image_id.isascii() or not image_id.isdigit():
            return web.Response(status=404, body=_NOT_FOUND, content_type="application/json")
        body = json.dumps({"success": True, "data": generated_image(image_id)}).encode()
        return web.Response(body=body, headers=_HEADERS, content_type="application/json")

    async def image(self, request: web.Request) -> web.Response:
        self.image_requests += 1
        return self.answer(request.match_info["image_id"])

    async def delayed_image(self, request: web.Request) -> web.Response:
        self.image_requests += 1
        image_id = request.match_info["image_id"]
        self.per_id[image_id] += 1
        await asyncio.sleep(int(request.match_info["ms"]) / 1000)
        return self.answer(image_id)

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "image_requests": self.image_requests,
                "per_id": self.per_id,
                "body_bytes": self.body_bytes,
                "not_modified": self.not_modified,
            }
        )

    async def reset(self, request: web.Request) -> web.Response:
        self.image_requests = 0
        self.per_id.clear()
        self.body_bytes = 0
        self.not_modified = 0
        return web.json_response({"ok": True})


def make_app() -> web.Application:
    """The aiohttp application serving the generated gallery."""
    gallery = _Gallery()
    app = web.Application()
    app.router.add_get("/api/images/{image_id}", gallery.image)
    app.router.add_get(r"/delay/{ms:\d+}/api/images/{image_id}", gallery.delayed_image)
    app.router.add_get(
        r"/fresh/{ms:\d+}/{validators:[01]}/api/images/{image_id}", gallery.fresh_image
    )
    app.router.add_get("/_stats", gallery.stats)
    app.router.add_post("/_reset", gallery.reset)
    return app


async def serve(port: int) -> None:
    """Serve on 127.0.0.1 until SIGINT or SIGTERM, announcing the port on stdout."""
    runner = web.AppRunner(make_app(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, HOST, port, backlog=4096)
    await site.start()
    bound = runner.addresses[0][1]
    print(json.dumps({"port": bound, "pid": os.getpid()}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    """``python -m benchmarks.server [--port N]``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.server", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free)")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.port))


class ServerProcess:
    """Start ``python -m benchmarks.server`` as a child process and stop it on exit."""

    def __init__(self, *, startup_timeout: float = 30.0) -> None:
        self.startup_timeout = startup_timeout
        self._process: subprocess.Popen[str] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """The base URL of the undelayed gallery."""
        return f"http://{HOST}:{self.port}"

    def delayed_url(self, ms: int) -> str:
        """A base URL whose every image is answered after ``ms`` milliseconds."""
        return f"{self.url}/delay/{ms}"

    @property
    def pid(self) -> int:
        """The server's process id."""
        if self._process is None:
            raise RuntimeError("the server is not running")
        return self._process.pid

    def __enter__(self) -> ServerProcess:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.server", "--port", "0"],
            stdout=subprocess.PIPE,
            text=True,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        )
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            self._stop()
            raise RuntimeError("the benchmark server exited before announcing its port")
        self.port = int(json.loads(line)["port"])
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop()

    def _stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()


async def fetch_stats(url: str) -> dict[str, Any]:
    """The server's counters (``url`` is the server's base URL, without a delay prefix)."""
    async with aiohttp.ClientSession() as http, http.get(f"{url}/_stats") as resp:
        resp.raise_for_status()
        stats: dict[str, Any] = await resp.json()
        return stats


if __name__ == "__main__":
    main()

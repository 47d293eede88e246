"""A real redis-server on loopback for the shared-cache tests, and a worker process script.

``RedisServer`` runs ``redis-server`` on a free 127.0.0.1 port with persistence off, and can be
killed and started again on the same port. Run as a script, this file is one worker process:

    python tests/redis_helpers.py GALLERY_URL REDIS_URL PREFIX TIMEOUT ID [ID ...]

It builds a ``GallerySession`` with a ``RedisCache``, prints ``ready``, waits for a line on
stdin (so that a test can start several workers at the same instant), fetches the ids and
prints one JSON line: each id's outcome (``"ok"`` or the error's class name) and the
number of upstream requests the worker sent.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

REDIS_SERVER = "redis-server"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 just now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class RedisServer:
    """``redis-server`` on 127.0.0.1, no persistence, in a subprocess of its own."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port if port is not None else free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start the server and wait until it answers PING."""
        self._process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 5.0
        while not self._answers_ping():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.01)
        return self

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    @contextmanager
    def frozen(self) -> Iterator[None]:
        """Stop the server (SIGSTOP) inside the block: connections stay open, nothing answers."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self._process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """Kill the server at once, as a crash would. Idempotent."""
        if self._process is not None:
            process, self._process = self._process, None
            process.kill()
            process.wait()


class WrongRedis:
    """A Redis-compatible server on 127.0.0.1 that answers with the wrong types of reply.

    Every command gets ``answers[name]`` (raw RESP bytes) if given, else ``default``; the
    commands received are kept in ``commands``. For ``async with``; nothing outlives it.
    """

    def __init__(self, default: bytes, **answers: bytes) -> None:
        self.default = default
        self.answers = {name.upper(): reply for name, reply in answers.items()}
        self.commands: list[str] = []
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}/0"

    async def __aenter__(self) -> WrongRedis:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        if self._handlers:
            await asyncio.wait(self._handlers)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        self._writers.add(writer)
        try:
            while header := await reader.readline():
                if not header.startswith(b"*"):
                    break
                parts = []
                for _ in range(int(header[1:])):
                    size = int((await reader.readline())[1:])
                    parts.append((await reader.readexactly(size + 2))[:-2])
                name = parts[0].decode().upper()
                self.commands.append(name)
                writer.write(self.answers.get(name, self.default))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


# -- The worker process ----------------------------------------------------------------------------


async def _work(
    gallery_url: str, redis_url: str, prefix: str, request_timeout: float, ids: list[str]
) -> None:
    from meigen_async import GallerySession, RetryPolicy
    from meigen_async.redis_cache import RedisCache

    async with (
        RedisCache(redis_url, prefix=prefix) as cache,
        GallerySession(
            gallery_url, cache=cache, timeout=request_timeout, retry=RetryPolicy(max_retries=0)
        ) as session,
    ):
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        results = await session.get_images(ids, return_exceptions=True)
        outcomes = {
            image_id: "ok" if not isinstance(result, Exception) else type(result).__name__
            for image_id, result in zip(ids, results, strict=True)
        }
        print(json.dumps({"outcomes": outcomes, "requests": session.stats.requests}), flush=True)


if __name__ == "__main__":
    gallery, redis_url, key_prefix, seconds, *wanted = sys.argv[1:]
    asyncio.run(_work(gallery, redis_url, key_prefix, float(seconds), wanted))

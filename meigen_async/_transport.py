"""`send` over aiohttp: one GET, its body read within a size limit and a timeout.

The only module that talks to aiohttp on the client side, and `AiohttpTransport.send` is the
one place where aiohttp's exceptions, and a timeout, become `TransportError`.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import attrs
from yarl import URL

from ._version import __version__
from .errors import InvalidResponse, TransportError

__all__ = ["AiohttpTransport", "RawResponse", "image_urls"]

_CHUNK = 65536


@attrs.frozen
class RawResponse:
    """What came back: status, headers and the whole body."""

    status: int
    headers: Mapping[str, str]
    body: bytes


def image_urls(base_url: str) -> Callable[[str], URL]:
    """A function giving the URL of a *validated* image id, ready for aiohttp.

    Its URLs equal `_protocol.image_url`'s, but they are built from the base parsed once, the
    id's path given as already encoded: a valid id holds only unreserved characters, so there
    is nothing to quote. aiohttp then neither parses nor quotes the URL again (measured: about
    5 µs a request for distinct ids, some 2% of a cold fetch). Give it only ids that
    `_protocol.validate_image_id` accepted.

    Raises:
        ValueError: `base_url` is not an absolute http(s) URL, or has a query or fragment.

    """
    base = parse_base_url(base_url)
    prefix = f"{base.raw_path.rstrip('/')}/api/images/"
    with_path = base.with_path
    return lambda image_id: with_path(prefix + image_id, encoded=True)


def parse_base_url(base_url: str) -> URL:
    """`base_url` parsed, when it is an absolute http(s) URL with no query or fragment.

    Raises:
        ValueError: it is not.

    """
    try:
        base = URL(base_url)
        port = base.port  # yarl checks the port's range only when asked
    except (ValueError, TypeError) as exc:
        raise ValueError(f"base_url is not a URL: {base_url!r} ({exc})") from None
    if (
        base.scheme not in ("http", "https")
        or not base.host
        or base.query_string
        or base.fragment
        or port is None
    ):
        raise ValueError(
            f"base_url must be an absolute http:// or https:// URL with no query or fragment, "
            f"got {base_url!r}"
        )
    return base


def default_user_agent() -> str:
    """`meigen-async/<version> aiohttp/<version>`."""
    return f"meigen-async/{__version__} aiohttp/{aiohttp.__version__}"


class AiohttpTransport:
    """GETs over an aiohttp session: the caller's, or one it opens on first use and closes.

    Args:
        timeout: Seconds allowed for one request, body included.
        max_body_bytes: A larger body is refused as `InvalidResponse`.
        headers: Sent with every request.
        session: A caller's `aiohttp.ClientSession`; never closed here.
        connections: The connection limit of a session opened here.

    """

    def __init__(
        self,
        *,
        timeout: float,
        max_body_bytes: int,
        headers: Mapping[str, str],
        session: aiohttp.ClientSession | None = None,
        connections: int = 100,
    ):
        self.timeout = timeout
        self.max_body_bytes = max_body_bytes
        self._headers = dict(headers)
        self._connections = connections
        self._http = session
        self._owns_http = session is None
        # Given per request only to a caller's session: ours carries the headers itself, which
        # spares aiohttp merging them on every request (measured: 24 µs a request). Redirects
        # are never followed, on either: a gallery answer comes from the gallery or not at all.
        self._options: dict[str, Any] = {"allow_redirects": False}
        if session is not None:
            self._options["headers"] = self._headers

    def open(self) -> aiohttp.ClientSession:
        """The aiohttp session, opened on first use when none was given."""
        if self._http is None:
            connector = aiohttp.TCPConnector(limit=self._connections, ttl_dns_cache=300)
            self._http = aiohttp.ClientSession(
                connector=connector,
                headers=self._headers,
                # asyncio.timeout in send keeps the deadline, one per attempt.
                timeout=aiohttp.ClientTimeout(total=None),
            )
            if hasattr(self._http, "_retry_connection"):
                # aiohttp quietly resends a GET once when the server drops the connection;
                # the retry policy decides retries, and counts them. (aiohttp's TestClient
                # turns it off the same way: there is no public switch.)
                self._http._retry_connection = False
        return self._http

    async def close(self) -> None:
        """Close the aiohttp session if it was opened here."""
        if self._owns_http and self._http is not None:
            await self._http.close()

    async def send(self, url: URL, headers: Mapping[str, str] | None = None) -> RawResponse:
        """GET `url` and read the body within `timeout` seconds and `max_body_bytes`.

        `headers` are sent on top of the session's own (a conditional request's validators).

        Raises:
            TransportError: the request did not complete (its `__cause__` says why).
            InvalidResponse: the body is larger than `max_body_bytes`.

        """
        http = self.open()
        options = self._options
        if headers:
            options = {**options, "headers": {**options.get("headers", {}), **headers}}
        try:
            async with (
                asyncio.timeout(self.timeout),
                http.get(url, **options) as resp,
            ):
                body = await _read_limited(resp, self.max_body_bytes)
                return RawResponse(resp.status, resp.headers, body)
        except TimeoutError as exc:
            # Before ClientError: aiohttp's timeout errors are both.
            raise TransportError(f"timed out after {self.timeout:g}s") from exc
        except aiohttp.ClientError as exc:
            raise TransportError(describe(exc)) from exc


def describe(exc: aiohttp.ClientError) -> str:
    """An aiohttp error in plain words: "cannot connect to 127.0.0.1:9: connection refused"."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        where = f"{exc.host}:{exc.port}"
        cause = exc.os_error
        if isinstance(cause, ConnectionRefusedError) or cause.errno == errno.ECONNREFUSED:
            return f"cannot connect to {where}: connection refused"
        reason = cause.strerror or str(cause) or type(cause).__name__
        return f"cannot connect to {where}: {reason[:1].lower()}{reason[1:]}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection before answering"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return f"the response body was cut off ({exc})"
    return f"the request failed: {type(exc).__name__}: {exc}"


async def _read_limited(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    length = resp.content_length
    if length is not None and length > limit:
        raise _too_large(limit, f"Content-Length is {length}")
    if length is not None and "Content-Encoding" not in resp.headers:
        # The length is the body's exact size here; a compressed body may inflate past it.
        return await resp.read()
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise _too_large(limit, "the streamed body exceeded it")
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int, why: str) -> InvalidResponse:
    return InvalidResponse(f"the response body is larger than max_body_bytes={limit} ({why})")

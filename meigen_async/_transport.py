"""The HTTP shell over aiohttp: a JSON GET (`send`) and a streaming GET (`stream`).

`send` reads a gallery answer whole, within a size limit and a timeout; `stream` hands a media
file's body over as it arrives, within a deadline. The only module that talks to aiohttp on
the client side, and `transport_error` is the one place where aiohttp's exceptions, and a
timeout, become `TransportError` (each surface tells it as its family's class: `_status`).
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import aiohttp
import attrs
from yarl import URL

from ._version import __version__
from .errors import InvalidResponse, TransportError

__all__ = [
    "AiohttpTransport",
    "RawResponse",
    "StreamOptions",
    "Streamed",
    "image_urls",
    "transport_error",
]

_CHUNK = 65536
T = TypeVar("T")


@attrs.frozen
class RawResponse:
    """What came back: status, headers and the whole body."""

    status: int
    headers: Mapping[str, str]
    body: bytes


@attrs.frozen
class StreamOptions:
    """How a streaming GET is sent: its headers, and its deadline."""

    headers: Mapping[str, str]
    """Sent on top of the session's own."""
    deadline: float
    """Seconds allowed for the whole request, from sending it to the last byte read."""
    deadline_name: str
    """What a timeout's error calls the deadline: the option it comes from."""


class Streamed:
    """A response whose body is read as it arrives (`read_chunk`), its bytes counted.

    Args:
        status: The HTTP status.
        headers: The response headers.
        content_length: The `Content-Length`, or None.
        read: The next part of the body, as much as has arrived; b"" at its end.

    """

    __slots__ = ("_read", "content_length", "headers", "received", "status")

    def __init__(
        self,
        status: int,
        headers: Mapping[str, str],
        content_length: int | None,
        read: Callable[[], Awaitable[bytes]],
    ):
        self.status = status
        self.headers = headers
        self.content_length = content_length
        self.received = 0
        """Bytes of the body read so far."""
        self._read = read

    async def read_chunk(self) -> bytes:
        """The next part of the body, as much as has arrived; b"" once it has all been read."""
        chunk = await self._read()
        self.received += len(chunk)
        return chunk


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
        # One attempt's deadline is aiohttp's own total timeout, which covers the body's reading
        # too: the raw loop pays for that timer anyway, and an asyncio.timeout around the
        # request cost 9,000 instructions a cold id more (37,000 against 28,000). Ours carries
        # it; a caller's session gets it per request.
        self._deadline = aiohttp.ClientTimeout(total=timeout)
        self._get_options = self._options
        if session is not None:
            self._options["headers"] = self._headers
            self._get_options = {**self._options, "timeout": self._deadline}
        # For streams: aiohttp bounds the connect and each wait for more of the body, the
        # stream's deadline the whole request.
        self._idle = aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout)

    def open(self) -> aiohttp.ClientSession:
        """The aiohttp session, opened on first use when none was given."""
        if self._http is None:
            connector = aiohttp.TCPConnector(limit=self._connections, ttl_dns_cache=300)
            self._http = aiohttp.ClientSession(
                connector=connector,
                headers=self._headers,
                timeout=self._deadline,
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
        options = self._with(headers, self._get_options) if headers else self._get_options
        try:
            async with http.get(url, **options) as resp:
                body = await _read_limited(resp, self.max_body_bytes)
                return RawResponse(resp.status, resp.headers, body)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise transport_error(exc, f"timed out after {self.timeout:g}s") from exc

    async def stream(
        self,
        url: URL,
        options: StreamOptions,
        receive: Callable[[Streamed], Awaitable[T]],
        received: Callable[[int], None],
    ) -> T:
        """GET `url`, and give its response to `receive`, which reads it while it is held.

        The request and `receive`'s reading of the body are bounded by the options'
        deadline, and `timeout` bounds connecting and each wait for more of the body: a host
        sending a byte now and then cannot hold a request open for hours. `received` is told
        the bytes of the body `receive` read, whatever it ends in.

        Raises:
            TransportError: the request, or the reading of its body by `receive`, did not
                complete (its `__cause__` says why).

        """
        http = self.open()
        timer = asyncio.timeout(options.deadline)
        try:
            async with (
                timer,
                http.get(url, timeout=self._idle, **self._with(options.headers)) as resp,
            ):
                # A callback rather than a context manager: no generator, no StopIteration
                # (measured: 1.2% of a 16 KiB download's instructions).
                response = Streamed(
                    resp.status, resp.headers, resp.content_length, resp.content.readany
                )
                try:
                    return await receive(response)
                finally:
                    received(response.received)
        except (TimeoutError, aiohttp.ClientError) as exc:
            why = (
                f"took longer than {options.deadline_name}={options.deadline:g}s"
                if timer.expired()
                else f"timed out ({self.timeout:g}s without data)"
            )
            raise transport_error(exc, why) from exc

    def _with(
        self, headers: Mapping[str, str], options: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """`options` (the streams' by default) sending `headers` on top of the session's own."""
        options = self._options if options is None else options
        return {**options, "headers": {**options.get("headers", {}), **headers}}


def transport_error(exc: TimeoutError | aiohttp.ClientError, timed_out: str) -> TransportError:
    """The one mapping of a request that did not complete to `TransportError`, `exc` its cause.

    `timed_out` is what a timeout says (which timer ran out, after how long); anything else
    aiohttp raises is told in plain words by `describe`.
    """
    # TimeoutError first: aiohttp's timeout errors are ClientErrors too.
    error = TransportError(timed_out if isinstance(exc, TimeoutError) else describe(exc))
    error.__cause__ = exc
    return error


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

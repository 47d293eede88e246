"""What an HTTP status stands for, once for every surface: no asyncio, no aiohttp.

`kind_of` sorts a status into the kind of error it is (not found, rate limited, server error,
redirect, other API error); `Family` names the class each surface (images, search, media)
raises for each kind, and for a request that did not complete. The surfaces write their own
messages (an image's id, a search page, a media URL), and take the class, the status and the
`Retry-After` from here: `IMAGES.error(...)`, `SEARCH.error(...)`, `MEDIA.error(...)`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import attrs

from ._headers import header, parse_retry_after
from .errors import (
    ApiError,
    ImageNotFound,
    MediaHTTPError,
    MediaRateLimited,
    MediaServerError,
    MediaTransportError,
    MeigenError,
    RateLimited,
    ServerError,
    TransportError,
)

__all__ = ["IMAGES", "MEDIA", "SEARCH", "Family", "Kind", "kind_of", "retry_after"]

_Transport = TypeVar("_Transport", bound=TransportError)


class Kind(enum.Enum):
    """The kind of error a status that is not a 2xx stands for."""

    NOT_FOUND = "not found"
    """404."""
    RATE_LIMITED = "rate limited"
    """429: slow down, for `Retry-After` if it says."""
    SERVER_ERROR = "server error"
    """5xx (and anything above): the server failed; retried."""
    REDIRECT = "redirect"
    """3xx: never followed by the gallery's surfaces; media follows some by hand."""
    API_ERROR = "API error"
    """Any other status."""


def kind_of(status: int) -> Kind | None:
    """The kind of error `status` stands for; None for a 2xx, which is none."""
    if 200 <= status < 300:
        return None
    if 300 <= status < 400:
        return Kind.REDIRECT
    if status == 404:
        return Kind.NOT_FOUND
    if status == 429:
        return Kind.RATE_LIMITED
    if status >= 500:
        return Kind.SERVER_ERROR
    return Kind.API_ERROR


def retry_after(
    status: int, headers: Mapping[str, str], *, now: float | None = None
) -> float | None:
    """The seconds a response asks to wait before the next request, or None.

    Read from `Retry-After` (seconds or an HTTP-date) on a 429 and a 503 only: RFC 9110
    section 10.2.3 gives it to 503 (and to 3xx, never retried here); another 5xx carrying one
    is backed off as usual. `now`, seconds since the epoch, is when a date is counted from
    (the clock's time when None).
    """
    if status != 429 and status != 503:
        return None
    value = header(headers, "Retry-After")
    if value is None:
        return None
    return parse_retry_after(value, now=None if now is None else datetime.fromtimestamp(now, UTC))


@attrs.frozen
class Family(Generic[_Transport]):
    """The error classes of one surface: one per `Kind`, and one for a failed request."""

    not_found: type[MeigenError]
    rate_limited: type[RateLimited]
    server_error: type[ServerError]
    redirect: type[MeigenError]
    api_error: type[MeigenError]
    transport: type[_Transport]
    """A request that did not complete (refused, dropped, cut off, timed out): what the HTTP
    shell's `TransportError` is told as on this surface."""

    def class_for(self, kind: Kind) -> type[MeigenError]:
        """The class this surface raises for `kind`."""
        if kind is Kind.NOT_FOUND:
            return self.not_found
        if kind is Kind.RATE_LIMITED:
            return self.rate_limited
        if kind is Kind.SERVER_ERROR:
            return self.server_error
        if kind is Kind.REDIRECT:
            return self.redirect
        return self.api_error

    def error(
        self, status: int, headers: Mapping[str, str], message: str, **where: Any
    ) -> MeigenError:
        """The error a non-2xx `status` stands for on this surface, saying `message`.

        `where` is what the error is about, as the class takes it (`image_id=`, `url=`). A
        429's and a 503's `Retry-After` is its `retry_after`.
        """
        kind = kind_of(status)
        if kind is None:
            raise ValueError(f"HTTP {status} is a success, not an error")
        if kind is Kind.RATE_LIMITED:
            wait = retry_after(status, headers)
            return self.rate_limited(message, status=status, retry_after=wait, **where)
        if kind is Kind.SERVER_ERROR:
            wait = retry_after(status, headers)
            return self.server_error(message, status=status, retry_after=wait, **where)
        return self.class_for(kind)(message, status=status, **where)


IMAGES: Family[TransportError] = Family(
    not_found=ImageNotFound,
    rate_limited=RateLimited,
    server_error=ServerError,
    redirect=ApiError,
    api_error=ApiError,
    transport=TransportError,
)
"""`GET /api/images/:id`."""

SEARCH: Family[TransportError] = Family(
    # A 404 of the search endpoint is no image's absence: the service's error, told as such.
    not_found=ApiError,
    rate_limited=RateLimited,
    server_error=ServerError,
    redirect=ApiError,
    api_error=ApiError,
    transport=TransportError,
)
"""`GET /api/search`."""

MEDIA: Family[MediaTransportError] = Family(
    not_found=MediaHTTPError,
    rate_limited=MediaRateLimited,
    server_error=MediaServerError,
    # Reached only by a 3xx that `_media_rules.redirect_target` does not follow (300, 304).
    redirect=MediaHTTPError,
    api_error=MediaHTTPError,
    transport=MediaTransportError,
)
"""Media files, on the hosts of `media_hosts`."""

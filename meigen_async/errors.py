"""The exception hierarchy: one base to catch, subclasses named for what happened.

Every error carries the data a caller branches on: `image_id` and `status`
(`None` where not known), `retry_after` (seconds the server asked us to wait, from
`Retry-After`) on `RateLimited` and `ServerError`, and `resets_at` on `DailyLimitReached`.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

__all__ = [
    "ApiError",
    "DailyLimitReached",
    "ExportError",
    "ImageNotFound",
    "InvalidImageId",
    "InvalidQuery",
    "InvalidResponse",
    "MediaDecompressionBomb",
    "MediaError",
    "MediaHTTPError",
    "MediaNotAllowed",
    "MediaNotAnImage",
    "MediaRateLimited",
    "MediaServerError",
    "MediaTooLarge",
    "MediaTooManyFiles",
    "MediaTransportError",
    "MediaWriteError",
    "MeigenError",
    "RateLimited",
    "ServerError",
    "TransportError",
    "UpstreamUnreachable",
]


class MeigenError(Exception):
    """Base of every error this library raises."""

    def __init__(self, message: str, *, image_id: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message: str = message
        """The message, in plain words (also `str(error)`)."""
        self.image_id: str | None = image_id
        """The id the error is about, or None when not known."""
        self.status: int | None = status
        """The HTTP status the server answered with, or None when it did not answer."""


# -- Before any request -------------------------------------------------------------------------


class InvalidImageId(MeigenError, ValueError):
    """The id is not a gallery id; raised before any network I/O."""


class InvalidQuery(MeigenError, ValueError):
    """A search query, `limit` or `offset` the search does not take; raised before any I/O."""


# -- The server answered with an error status ----------------------------------------------------


class ImageNotFound(MeigenError):
    """The gallery has no image with this id (HTTP 404)."""


class RateLimited(MeigenError):
    """The service asked us to slow down (HTTP 429); `retry_after` is in seconds, if it said."""

    def __init__(
        self,
        message: str,
        *,
        image_id: str | None = None,
        status: int | None = 429,
        retry_after: float | None = None,
    ):
        super().__init__(message, image_id=image_id, status=status)
        self.retry_after: float | None = retry_after
        """Seconds the server asked us to wait (`Retry-After`), or None if it did not say."""


class DailyLimitReached(RateLimited):
    """The API key's daily search quota is spent (HTTP 429, code `DAILY_LIMIT_REACHED`).

    Not the per-address limit (a plain `RateLimited`, over in about a minute): no search
    succeeds before `resets_at`, so it is never retried, and until then the session refuses
    further searches at once, sending nothing. `retry_after` is the seconds from the error to
    `resets_at`. Images are not affected.
    """

    def __init__(
        self,
        message: str,
        *,
        resets_at: datetime,
        image_id: str | None = None,
        status: int | None = 429,
        retry_after: float | None = None,
    ):
        super().__init__(message, image_id=image_id, status=status, retry_after=retry_after)
        self.resets_at: datetime = resets_at
        """When searches may resume (UTC): the service's `Retry-After` if it sent one, else
        the next 00:00 UTC, when the service resets daily quotas."""

    def __reduce__(self) -> tuple[Any, ...]:
        """Copy and pickle with `resets_at`, which `cls(*args)` alone would lack."""
        return functools.partial(type(self), resets_at=self.resets_at), self.args, self.__dict__


class ServerError(MeigenError):
    """The service failed (HTTP 5xx).

    `retry_after` is the seconds a 503 asked us to wait in its `Retry-After` header, or None
    (any other 5xx, or no readable header).
    """

    def __init__(
        self,
        message: str,
        *,
        image_id: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message, image_id=image_id, status=status)
        self.retry_after: float | None = retry_after
        """Seconds a 503 asked us to wait (`Retry-After`), or None."""


class ApiError(MeigenError):
    """The service answered with a non-2xx status not covered by a more specific error."""


# -- No usable answer --------------------------------------------------------------------------


class TransportError(MeigenError):
    """The request did not complete: connection refused or dropped, or a timeout."""


class InvalidResponse(MeigenError):
    """The body is not the documented envelope: not JSON, wrong shape, or a field of wrong type."""


class UpstreamUnreachable(TransportError):
    """Not attempted, or given up on: the upstream failed for a run of consecutive ids.

    What `iter_images(..., stop_after_transport_failures=N)` reports for the ids still running
    when it stops; the last transport failure of the run is the `__cause__`.
    """


# -- Downloading media files ---------------------------------------------------------------------


class MediaError(MeigenError):
    """A media file of an image could not be downloaded; `url` is the file's URL.

    `status` is the HTTP status that came back, when one did; `retry_after` the seconds a
    429 or a 503 asked us to wait, else None.
    """

    def __init__(
        self,
        message: str,
        *,
        url: str | None = None,
        image_id: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
    ):
        MeigenError.__init__(self, message, image_id=image_id, status=status)
        self.url: str | None = url
        """The media file's URL (the image's, before any redirect), or None when not known."""
        self.retry_after: float | None = retry_after
        """Seconds a 429 or a 503 asked us to wait (`Retry-After`), or None."""


class MediaNotAllowed(MediaError, ValueError):
    """The URL, or a redirect's target, is not http(s) on a host of `media_hosts`.

    Raised before any request to it: a refused URL costs no traffic.
    """

    def __init__(
        self,
        message: str,
        *,
        url: str | None = None,
        image_id: str | None = None,
        status: int | None = None,
        host: str | None = None,
    ):
        super().__init__(message, url=url, image_id=image_id, status=status)
        self.host: str | None = host
        """The host that is not in `media_hosts` (a redirect's target's, for a redirect), as
        `media_hosts` would name it; None when the URL was refused for another reason."""


class MediaTooLarge(MediaError):
    """The file is larger than `max_media_bytes` (by `Content-Length`, or while streaming)."""


class MediaDecompressionBomb(MediaTooLarge):
    """The image's header claims more pixels than `max_media_pixels`: a decompression bomb.

    A few kilobytes can declare a picture that takes gigabytes to decode; such a file is not
    kept, whatever its size in bytes.
    """


class MediaTooManyFiles(MediaError):
    """The image lists more media URLs than `max_media_files`: the ones past it are refused.

    Raised for the first URL past the limit, with no request to it or to any after it; the
    files before it are downloaded.
    """


class MediaNotAnImage(MediaError):
    """What came back is not an image of the type its `Content-Type` names.

    An HTML page served with 200 (a CDN error, a bot challenge) is the usual case; the message
    says what came back.
    """


class MediaHTTPError(MediaError):
    """The media host answered with an error status (`status`)."""


class MediaRateLimited(MediaHTTPError, RateLimited):
    """The media host answered 429; retried after its `Retry-After`, as a gallery 429 is."""


class MediaServerError(MediaHTTPError, ServerError):
    """The media host failed (5xx); retried as a gallery 5xx is."""


class MediaTransportError(MediaError, TransportError):
    """The media request did not complete: refused, dropped, cut off or timed out."""


class MediaWriteError(MediaError):
    """The file could not be written under the output directory (its `OSError` as cause).

    Also raised, before any request, when the image's directory `out/{id}` is a symbolic
    link (or becomes one while its files are written): nothing is written through it.
    """


# -- Exporting datasets ----------------------------------------------------------------------------


class ExportError(MeigenError):
    """An export cannot go on: OUT holds something else, or a shard could not be written.

    A shard's files appear whole or not at all, so what is done stays done; the `OSError`
    of a failed write is kept as `__cause__`.
    """

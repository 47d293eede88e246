"""The exception hierarchy: one base to catch, subclasses named for what happened.

Every error carries the data a caller branches on: `image_id` and `status`
(`None` where not known), and `retry_after` (seconds the server asked us to wait, from
`Retry-After`) on `RateLimited` and `ServerError`.
"""

from __future__ import annotations

__all__ = [
    "ApiError",
    "ImageNotFound",
    "InvalidImageId",
    "InvalidResponse",
    "MeigenError",
    "RateLimited",
    "ServerError",
    "TransportError",
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

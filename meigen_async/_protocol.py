"""The endpoint's contract as plain functions: no network, no aiohttp.

Validating an id, building the one URL this library requests, and turning a status, headers
and body into a [`GalleryImage`][meigen_async.GalleryImage] or the matching error. The session
calls these; tests exercise them with sample bodies and headers alone.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import attrs

from ._headers import header, header_list, parse_http_date, parse_retry_after
from ._status import IMAGES, Kind, kind_of, retry_after
from ._text import printable, replace_surrogates, terminal_safe
from .errors import (
    ApiError,
    InvalidImageId,
    InvalidResponse,
    MeigenError,
)
from .models import GalleryImage, structure_image

__all__ = [
    "DAILY_LIMIT_CODE",
    "MAX_COOL_DOWN",
    "MAX_ID_LENGTH",
    "Validators",
    "conditional_headers",
    "cool_down_after",
    "decode_response",
    "error_for_status",
    "header",
    "header_list",
    "image_url",
    "is_daily_limit",
    "not_followed",
    "parse_http_date",
    "parse_retry_after",
    "reported_error",
    "service_message",
    "snippet",
    "usable_validators",
    "validate_image_id",
    "validators_from",
]

MAX_ID_LENGTH = 128
"""The longest id accepted."""

DAILY_LIMIT_CODE = "DAILY_LIMIT_REACHED"
"""The `code` of the 429 that says an API key's daily search quota is spent."""

MAX_COOL_DOWN = 300.0
"""The longest pause a response can impose on every request (seconds): more is cut to this."""

# An X-RateLimit-Reset this large is a time since the epoch (this one is 2001-09-09), smaller
# is seconds from now: GitHub-style services send the one, the IETF RateLimit draft the other.
_EPOCH_RESET = 1_000_000_000

_ID = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_ID_LENGTH}}}")
_SNIPPET = 80
_LOCATION_SHOWN = 200  # characters of a Location quoted: enough for a host and a path


def validate_image_id(image_id: object) -> str:
    """Return `image_id` if it is a gallery id, else raise `InvalidImageId`.

    A gallery id is a non-empty string of at most 128 characters from `[A-Za-z0-9_-]`.
    """
    if type(image_id) is str and _ID.fullmatch(image_id):
        return image_id
    if not isinstance(image_id, str):
        raise InvalidImageId(f"image id must be a string, got {type(image_id).__name__}")
    shown = image_id if len(image_id) <= _SNIPPET else image_id[:_SNIPPET] + "..."
    raise InvalidImageId(
        f"invalid image id {shown!r}: expected 1 to {MAX_ID_LENGTH} characters "
        "from A-Z, a-z, 0-9, '_' and '-'",
        image_id=image_id,
    )


def image_url(base_url: str, image_id: str) -> str:
    """The URL of one gallery image: `{base_url}/api/images/{id}`, the id percent-quoted."""
    return f"{base_url.rstrip('/')}/api/images/{quote(image_id, safe='')}"


def cool_down_after(status: int, headers: Mapping[str, str], *, now: float) -> float | None:
    """Seconds during which no request should be sent, after this response; None: no pause.

    - A 429 or a 503 with a readable `Retry-After` (seconds or an HTTP-date): that long.
    - Any response with `X-RateLimit-Remaining: 0` and an `X-RateLimit-Reset`: until the
      reset, the budget being spent before a 429 says so. The reset is read as seconds from
      now, or as a time since the epoch when it is 1,000,000,000 or more.

    `now` is the time since the epoch, for HTTP-dates and epoch resets. The pause is cut to
    `MAX_COOL_DOWN`; one of 0, in the past, or unreadable is None.
    """
    pause = retry_after(status, headers, now=now)
    if pause is None:
        pause = _until_reset(headers, now)
    if pause is None or not pause > 0:
        return None
    return min(pause, MAX_COOL_DOWN)


def is_daily_limit(status: int, body: bytes) -> bool:
    """Whether a response is the daily search quota's 429, not the per-address one.

    `429 {"success": false, "error": "Daily search limit reached", "code":
    "DAILY_LIMIT_REACHED"}`: the quota of one API key, spent until 00:00 UTC. It asks no pause
    of other requests (images are not counted against it), and is not retried.
    """
    if status != 429 or DAILY_LIMIT_CODE.encode() not in body:
        return False
    try:
        envelope = json.loads(body)
    except (ValueError, RecursionError):
        return False
    return isinstance(envelope, dict) and envelope.get("code") == DAILY_LIMIT_CODE


def _until_reset(headers: Mapping[str, str], now: float) -> float | None:
    remaining = header(headers, "X-RateLimit-Remaining")
    if remaining is None or remaining.strip() != "0":
        return None
    reset = _number(header(headers, "X-RateLimit-Reset"))
    if reset is None:
        return None
    return reset - now if reset >= _EPOCH_RESET else reset


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    # float() also reads "nan", "inf" and "1_0": none is a reset.
    return number if math.isfinite(number) and "_" not in value else None


def decode_response(
    status: int, headers: Mapping[str, str], body: bytes, *, image_id: str
) -> GalleryImage:
    """Turn one response into an image, or raise the error it stands for.

    A 2xx must carry `{"success": true, "data": {...}}` whose `data.id` is `image_id`;
    any other status becomes the matching [`MeigenError`][meigen_async.MeigenError] subclass, with
    the service's
    `{"error": "..."}` message. Whatever the body holds, only an image or a `MeigenError`
    comes out: JSON nested too deep to decode is `InvalidResponse` like any other non-JSON.
    """
    if 200 <= status < 300:
        return structure_image(_success_data(status, body, image_id), image_id=image_id)
    raise error_for_status(status, headers, body, image_id=image_id)


def not_found_message(image_id: str, *, remembered: bool) -> str:
    """The one message of a 404, saying whether the gallery answered it now or the cache did."""
    source = "remembered in the cache, not asked again" if remembered else "from the gallery"
    return f"image {image_id} not found (HTTP 404, {source})"


def error_for_status(
    status: int, headers: Mapping[str, str], body: bytes, *, image_id: str
) -> MeigenError:
    """The error a non-2xx response stands for, carrying its status and the service's message.

    Its class is the images' one for the status's kind (`_status.IMAGES`). A 3xx is an
    `ApiError` naming its `Location`: redirects are never followed, and the body of one,
    written by whoever redirected, is not quoted.
    """
    kind = kind_of(status)
    if kind is Kind.REDIRECT:
        message = f"HTTP {status} for image {image_id}: {not_followed(headers)}"
    elif kind is Kind.NOT_FOUND:
        # The service's own words ("Image not found") add nothing to the one 404 message.
        message = not_found_message(image_id, remembered=False)
    else:
        message = f"HTTP {status} for image {image_id}: {service_message(body)}"
    return IMAGES.error(status, headers, message, image_id=image_id)


def not_followed(headers: Mapping[str, str]) -> str:
    """What a gallery redirect's error says: where it pointed, and that it is not followed."""
    # Following it would send the request, and cache the answer under this id, wherever
    # the Location points: another host (SSRF), or another path of this one.
    location = header(headers, "Location")
    where = (
        f"the gallery redirected to {printable(location, _LOCATION_SHOWN)}"
        if location
        else "the gallery answered with a redirect status and no Location"
    )
    return (
        f"{where}; this library does not follow redirects: if the service moved, set base_url to it"
    )


def _success_data(status: int, body: bytes, image_id: str) -> Any:
    envelope = _load_json(body, image_id)
    if not isinstance(envelope, dict):
        raise InvalidResponse(
            f"expected a JSON object envelope, got {type(envelope).__name__}: {snippet(body)}",
            image_id=image_id,
        )
    if envelope.get("success") is not True:
        reported = reported_error(envelope)
        if reported is not None:
            raise ApiError(
                f"the service reported an error for image {image_id}: {reported}",
                image_id=image_id,
                status=status,
            )
        raise InvalidResponse(
            f"envelope field 'success' is not true: {snippet(body)}", image_id=image_id
        )
    if "data" not in envelope:
        raise InvalidResponse(f"envelope has no 'data' field: {snippet(body)}", image_id=image_id)
    return envelope["data"]


def _load_json(body: bytes, image_id: str) -> Any:
    try:
        if body[:1] == b"{" and body[1:2] != b"\x00":
            # What json.loads would find sniffing the bytes (UTF-8: no NUL after a "{"),
            # decoded directly: the sniffing costs about 1% of a cold fetch.
            return json.loads(body.decode("utf-8", "surrogatepass"))
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        # RecursionError: json's decoder gives up on deep nesting (a few thousand "[") so.
        raise InvalidResponse(
            f"response body is not JSON ({_json_problem(exc)}): {snippet(body)}",
            image_id=image_id,
        ) from exc


def _json_problem(exc: ValueError | RecursionError) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deep to decode"
    return str(exc)


def service_message(body: bytes) -> str:
    """The service's own `{"error": "..."}` message in an error body, else a short excerpt."""
    try:
        envelope = json.loads(body)
    except (ValueError, RecursionError):
        return snippet(body) if body else "(empty body)"
    reported = reported_error(envelope)
    return reported if reported is not None else snippet(body)


def reported_error(envelope: object) -> str | None:
    """The service's own `{"error": "..."}` words in a decoded body, or None when it has none.

    Quoted as an error message quotes them: nothing a terminal obeys.
    """
    if isinstance(envelope, dict):
        message = envelope.get("error")
        if isinstance(message, str):
            return terminal_safe(replace_surrogates(message))
    return None


def snippet(body: bytes) -> str:
    """A short, printable excerpt of a body for error messages."""
    text = body[: _SNIPPET * 4].decode("utf-8", "replace")
    text = " ".join(text.split())
    return repr(text if len(text) <= _SNIPPET else text[:_SNIPPET] + "...")


# -- Validators (RFC 9110 section 8.8) -----------------------------------------------------------

# A validator is sent back as a request header: only visible ASCII and spaces, and not too long,
# so that a hostile or broken server cannot make the next request invalid (aiohttp refuses a
# header with a CR or LF in it, with a raw ValueError).
_MAX_VALIDATOR = 512
_VALIDATOR = re.compile(r"[\x20-\x7e]+")


@attrs.frozen
class Validators:
    """What a stored image is revalidated with: its `ETag` and its `Last-Modified`.

    What `MemoryCache` keeps beside an image, to send back in a conditional request.
    """

    etag: str | None = None
    """The response's `ETag`, sent back as `If-None-Match` (None: it had none)."""
    last_modified: str | None = None
    """The response's `Last-Modified`, sent back as `If-Modified-Since` (None: it had none)."""

    def updated_by(self, newer: Validators | None) -> Validators:
        """These validators, with those a 304 carried taking their place (RFC 9111 4.3.4)."""
        if newer is None:
            return self
        return Validators(
            etag=newer.etag or self.etag, last_modified=newer.last_modified or self.last_modified
        )


def _validator(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    value = value.strip()
    if not value or len(value) > _MAX_VALIDATOR or not _VALIDATOR.fullmatch(value):
        return None
    return value


def validators_from(headers: Mapping[str, str]) -> Validators | None:
    """The `ETag` and `Last-Modified` of a response, or None when it has neither usable.

    A value that could not be sent back as a header (control characters, not ASCII, longer
    than 512 characters) counts as absent, and so does a `Last-Modified` that is no date.
    """
    return usable_validators(header(headers, "ETag"), header(headers, "Last-Modified"))


def usable_validators(etag: object, last_modified: object) -> Validators | None:
    """The validators among `etag` and `last_modified` that may be sent back as headers.

    The rule for every validator this library keeps, from a response or read back from a
    shared cache: a string of visible ASCII, at most 512 characters, and a `Last-Modified`
    that is a date; anything else counts as absent. None when neither is usable.
    """
    etag = _validator(etag)
    last_modified = _validator(last_modified)
    if last_modified is not None and parse_http_date(last_modified) is None:
        last_modified = None
    if etag is None and last_modified is None:
        return None
    return Validators(etag=etag, last_modified=last_modified)


def conditional_headers(validators: Validators | None) -> dict[str, str] | None:
    """The request headers revalidating an image stored with `validators` (None: none).

    `If-None-Match` carries the `ETag`, `If-Modified-Since` the `Last-Modified`; a server
    holding both evaluates the first (RFC 9110 section 13.2.2).
    """
    if validators is None:
        return None
    headers: dict[str, str] = {}
    if validators.etag is not None:
        headers["If-None-Match"] = validators.etag
    if validators.last_modified is not None:
        headers["If-Modified-Since"] = validators.last_modified
    return headers or None

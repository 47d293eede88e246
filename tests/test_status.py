"""The one table from a status to the kind of error, and each surface's class for it: pure."""

from __future__ import annotations

import pytest

from meigen_async._status import IMAGES, MEDIA, SEARCH, Family, Kind, kind_of, retry_after
from meigen_async.errors import (
    ApiError,
    ImageNotFound,
    MediaHTTPError,
    MediaRateLimited,
    MediaServerError,
    MediaTransportError,
    RateLimited,
    ServerError,
    TransportError,
)

# 2026-01-01 00:00:00 UTC, and an HTTP-date 90 seconds after it.
NOW = 1_767_225_600.0
LATER = "Thu, 01 Jan 2026 00:01:30 GMT"


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (200, None),
        (204, None),
        (299, None),
        (100, Kind.API_ERROR),
        (300, Kind.REDIRECT),
        (301, Kind.REDIRECT),
        (304, Kind.REDIRECT),
        (399, Kind.REDIRECT),
        (400, Kind.API_ERROR),
        (403, Kind.API_ERROR),
        (404, Kind.NOT_FOUND),
        (410, Kind.API_ERROR),
        (429, Kind.RATE_LIMITED),
        (499, Kind.API_ERROR),
        (500, Kind.SERVER_ERROR),
        (503, Kind.SERVER_ERROR),
        (599, Kind.SERVER_ERROR),
        (600, Kind.SERVER_ERROR),
    ],
)
def test_each_status_is_one_kind_of_error_and_a_2xx_none(status: int, kind: Kind | None) -> None:
    assert kind_of(status) is kind


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_read_on_a_429_and_a_503_in_seconds_or_as_a_date(status: int) -> None:
    assert retry_after(status, {"Retry-After": "12"}) == 12.0
    assert retry_after(status, {"retry-after": LATER}, now=NOW) == 90.0
    assert retry_after(status, {}) is None
    assert retry_after(status, {"Retry-After": "soon"}) is None


@pytest.mark.parametrize("status", [200, 301, 404, 500, 502])
def test_retry_after_is_not_read_on_other_statuses(status: int) -> None:
    assert retry_after(status, {"Retry-After": "12"}) is None


@pytest.mark.parametrize(
    ("family", "classes"),
    [
        (IMAGES, (ImageNotFound, RateLimited, ServerError, ApiError, ApiError, TransportError)),
        (SEARCH, (ApiError, RateLimited, ServerError, ApiError, ApiError, TransportError)),
        (
            MEDIA,
            (
                MediaHTTPError,
                MediaRateLimited,
                MediaServerError,
                MediaHTTPError,
                MediaHTTPError,
                MediaTransportError,
            ),
        ),
    ],
)
def test_each_family_names_its_class_for_each_kind(
    family: Family[TransportError], classes: tuple[type, ...]
) -> None:
    kinds = (Kind.NOT_FOUND, Kind.RATE_LIMITED, Kind.SERVER_ERROR, Kind.REDIRECT, Kind.API_ERROR)
    assert (*(family.class_for(kind) for kind in kinds), family.transport) == classes


def test_an_error_carries_its_status_message_retry_after_and_what_it_is_about() -> None:
    error = MEDIA.error(503, {"Retry-After": "7"}, "HTTP 503 for u", url="u")

    assert type(error) is MediaServerError
    assert (error.message, error.status, error.retry_after, error.url) == (
        "HTTP 503 for u",
        503,
        7.0,
        "u",
    )


def test_an_error_of_a_kind_without_retry_after_is_made_without_it() -> None:
    error = IMAGES.error(404, {"Retry-After": "7"}, "gone", image_id="1")

    assert type(error) is ImageNotFound
    assert (error.status, error.image_id) == (404, "1")


def test_a_2xx_is_no_error_to_make() -> None:
    with pytest.raises(ValueError, match="success"):
        SEARCH.error(200, {}, "fine")

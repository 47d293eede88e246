"""The exception hierarchy and the data each error carries."""

from __future__ import annotations

import copy as copies
import pickle
from datetime import UTC, datetime

import pytest

from meigen_async import errors
from meigen_async.errors import (
    ApiError,
    DailyLimitReached,
    ExportError,
    ImageNotFound,
    InvalidImageId,
    InvalidQuery,
    InvalidResponse,
    MediaDecompressionBomb,
    MediaError,
    MediaHTTPError,
    MediaNotAllowed,
    MediaNotAnImage,
    MediaRateLimited,
    MediaServerError,
    MediaTooLarge,
    MediaTooManyFiles,
    MediaTransportError,
    MediaWriteError,
    MeigenError,
    RateLimited,
    ServerError,
    TransportError,
    UpstreamUnreachable,
)

SUBCLASSES = [
    ApiError,
    ImageNotFound,
    InvalidImageId,
    InvalidQuery,
    InvalidResponse,
    RateLimited,
    DailyLimitReached,
    ServerError,
    TransportError,
    UpstreamUnreachable,
    MediaError,
    MediaHTTPError,
    MediaNotAllowed,
    MediaNotAnImage,
    MediaRateLimited,
    MediaServerError,
    MediaTooLarge,
    MediaDecompressionBomb,
    MediaTooManyFiles,
    MediaTransportError,
    MediaWriteError,
    ExportError,
]


@pytest.mark.parametrize("cls", SUBCLASSES)
def test_every_error_subclasses_meigen_error(cls: type[MeigenError]) -> None:
    assert issubclass(cls, MeigenError)
    assert issubclass(cls, Exception)


def test_every_exported_error_is_covered() -> None:
    exported = {getattr(errors, name) for name in errors.__all__}

    assert exported == {MeigenError, *SUBCLASSES}


def test_invalid_query_is_also_a_value_error() -> None:
    assert issubclass(InvalidQuery, ValueError)


def test_invalid_image_id_is_also_a_value_error() -> None:
    with pytest.raises(ValueError, match="bad id"):
        raise InvalidImageId("bad id", image_id="a/b")


def test_an_error_carries_its_message_image_id_and_status() -> None:
    error = ServerError("HTTP 503", image_id="abc", status=503)

    assert str(error) == "HTTP 503"
    assert error.message == "HTTP 503"
    assert error.image_id == "abc"
    assert error.status == 503


def test_image_id_and_status_default_to_none() -> None:
    error = TransportError("connection refused")

    assert error.image_id is None
    assert error.status is None


def test_rate_limited_carries_retry_after() -> None:
    error = RateLimited("slow down", image_id="abc", retry_after=12.0)

    assert error.retry_after == 12.0
    assert error.status == 429
    assert error.image_id == "abc"


def test_rate_limited_retry_after_defaults_to_none() -> None:
    assert RateLimited("slow down").retry_after is None


@pytest.mark.parametrize(
    "error",
    [
        MeigenError("base", image_id="a1", status=None),
        InvalidImageId("bad id", image_id="../x"),
        ImageNotFound("HTTP 404: Image not found", image_id="a1", status=404),
        RateLimited("HTTP 429", image_id="a1", status=429, retry_after=12.5),
        ServerError("HTTP 502", image_id="a1", status=502),
        ApiError("HTTP 418", image_id="a1", status=418),
        TransportError("timed out", image_id="a1"),
        InvalidResponse("not JSON", image_id="a1", status=200),
    ],
    ids=lambda error: type(error).__name__,
)
def test_an_error_survives_a_pickle_round_trip_with_its_attributes(error: MeigenError) -> None:
    copy = pickle.loads(pickle.dumps(error))

    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert copy.args == error.args
    assert copy.message == error.message
    assert copy.image_id == error.image_id
    assert copy.status == error.status
    assert getattr(copy, "retry_after", None) == getattr(error, "retry_after", None)


def test_a_pickled_rate_limited_keeps_retry_after() -> None:
    copy = pickle.loads(pickle.dumps(RateLimited("slow", image_id="a1", retry_after=3.0)))

    assert isinstance(copy, RateLimited)
    assert copy.retry_after == 3.0


def test_a_daily_limit_is_rate_limited_and_keeps_resets_at_through_a_copy_or_a_pickle() -> None:
    resets_at = datetime(2026, 3, 2, tzinfo=UTC)
    error = DailyLimitReached("spent", resets_at=resets_at, retry_after=60.0)
    assert isinstance(error, RateLimited)
    for again in (copies.copy(error), pickle.loads(pickle.dumps(error))):
        assert type(again) is DailyLimitReached
        assert (again.resets_at, again.retry_after, again.status, str(again)) == (
            resets_at,
            60.0,
            429,
            "spent",
        )


def test_a_pickled_invalid_image_id_is_still_a_value_error() -> None:
    copy = pickle.loads(pickle.dumps(InvalidImageId("bad", image_id="a b")))

    assert isinstance(copy, InvalidImageId)
    assert isinstance(copy, ValueError)
    assert copy.image_id == "a b"

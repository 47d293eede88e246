"""Headers read as plain values: by name in any mapping, list-valued, HTTP-dates, Retry-After."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from meigen_async._headers import (
    header,
    header_lines,
    header_list,
    parse_http_date,
    parse_retry_after,
)

NOW = datetime(2026, 1, 9, 14, 0, 0, tzinfo=UTC)


@pytest.fixture
def local_time_east_of_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's local time nine hours east of UTC: a date read as local time shows."""
    monkeypatch.setenv("TZ", "UTC-9")  # POSIX: the offset to add to local time to get UTC
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


# -- parse_retry_after --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("12", 12.0), ("0", 0.0), (" 7 ", 7.0), ("3600", 3600.0)],
)
def test_retry_after_delta_seconds_is_read_as_seconds(value: str, seconds: float) -> None:
    assert parse_retry_after(value, now=NOW) == seconds


def test_retry_after_http_date_is_seconds_from_now() -> None:
    value = format_datetime(NOW + timedelta(seconds=90), usegmt=True)

    assert parse_retry_after(value, now=NOW) == 90.0


def test_retry_after_http_date_with_an_offset_is_compared_in_utc() -> None:
    assert parse_retry_after("Fri, 09 Jan 2026 15:00:30 +0100", now=NOW) == 30.0


def test_retry_after_http_date_without_a_zone_is_read_as_utc() -> None:
    # A naive date compared with an aware now would raise TypeError, not be read.
    assert parse_retry_after("Fri, 09 Jan 2026 14:01:30", now=NOW) == 90.0


def test_retry_after_http_date_in_the_past_is_zero() -> None:
    value = format_datetime(NOW - timedelta(hours=1), usegmt=True)

    assert parse_retry_after(value, now=NOW) == 0.0


@pytest.mark.parametrize(
    "value",
    ["", "   ", "soon", "-1", "1.5", "12s", "1e3", "Mon, 99 Foo 2026", "\u00b2"],
)
def test_unreadable_retry_after_is_none(value: str) -> None:
    assert parse_retry_after(value, now=NOW) is None


def test_absent_retry_after_is_none() -> None:
    assert parse_retry_after(None) is None


# -- header -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Retry-After", "retry-after", "RETRY-AFTER", "rEtRy-AfTeR"])
def test_header_is_case_insensitive_in_a_plain_dict(name: str) -> None:
    headers = {"retry-after": "12", "Content-Type": "application/json"}

    assert header(headers, name) == "12"


def test_header_absent_is_none() -> None:
    assert header({"Content-Type": "application/json"}, "Retry-After") is None


# -- header_list --------------------------------------------------------------------------------


def test_header_list_joins_every_line_of_a_multidict() -> None:
    headers = CIMultiDictProxy(
        CIMultiDict([("Cache-Control", "max-age=60"), ("cache-control", "no-store")])
    )

    assert header_list(headers, "Cache-Control") == "max-age=60, no-store"


def test_header_list_of_one_line_is_that_line() -> None:
    assert header_list(CIMultiDict([("Vary", "*")]), "vary") == "*"


def test_header_list_joins_every_spelling_in_a_plain_dict() -> None:
    headers = {"Cache-Control": "max-age=60", "CACHE-CONTROL": "no-store", "Age": "1"}

    assert header_list(headers, "Cache-Control") == "max-age=60, no-store"


def test_header_list_finds_another_spelling_in_a_plain_dict() -> None:
    assert header_list({"cache-control": "no-store"}, "Cache-Control") == "no-store"


@pytest.mark.parametrize("headers", [{}, CIMultiDict(), {"Age": "1"}])
def test_header_list_absent_is_none(headers: Any) -> None:
    assert header_list(headers, "Cache-Control") is None


# -- header_lines -------------------------------------------------------------------------------


def test_header_lines_gives_each_line_of_a_multidict_in_order() -> None:
    headers = CIMultiDictProxy(
        CIMultiDict([("X-Robots-Tag", "otherbot: noai"), ("Age", "1"), ("x-robots-tag", "noai")])
    )

    assert header_lines(headers, "X-Robots-Tag") == ["otherbot: noai", "noai"]


def test_header_lines_counts_each_spelling_in_a_plain_dict_as_a_line() -> None:
    headers = {"X-Robots-Tag": "noai", "x-robots-tag": "noimageai", "Age": "1"}

    assert header_lines(headers, "X-ROBOTS-TAG") == ["noai", "noimageai"]


@pytest.mark.parametrize("headers", [{}, CIMultiDict(), {"Age": "1"}])
def test_header_lines_of_an_absent_header_are_empty(headers: Any) -> None:
    assert header_lines(headers, "X-Robots-Tag") == []


# -- parse_http_date ----------------------------------------------------------------------------


def test_an_http_date_is_read_as_seconds_since_the_epoch() -> None:
    assert parse_http_date("Fri, 09 Jan 2026 14:00:00 GMT") == NOW.timestamp()


@pytest.mark.parametrize("value", ["Fri, 09 Jan 2026 14:00:00", "Fri, 09 Jan 2026 14:00:00 -0000"])
def test_an_http_date_without_a_zone_is_read_as_utc(
    value: str, local_time_east_of_utc: None
) -> None:
    assert parse_http_date(value) == NOW.timestamp()


@pytest.mark.parametrize("value", [None, "", "0", "-1", "tomorrow", "Mon, 99 Foo 2026"])
def test_an_unreadable_http_date_is_none(value: str | None) -> None:
    assert parse_http_date(value) is None

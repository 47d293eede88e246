"""The API key and the daily search quota in `_quota`, with plain values and a fixed clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from meigen_async import ApiError, DailyLimitReached, RateLimited, RetryPolicy
from meigen_async._quota import (
    SearchQuota,
    api_key_from,
    daily_limit,
    next_utc_midnight,
    without_secret,
)
from meigen_async.retry import is_retryable

KEY = "meigen_sk_0123456789abcdef"
NOW = datetime(2026, 3, 1, 23, 59, 30, tzinfo=UTC)


def test_a_session_without_a_key_reads_meigen_api_key() -> None:
    assert api_key_from(None, {"MEIGEN_API_KEY": KEY}) == KEY
    assert api_key_from(None, {}) is None


def test_a_key_given_wins_over_the_variable_and_an_empty_one_sends_none() -> None:
    assert api_key_from("meigen_sk_other", {"MEIGEN_API_KEY": KEY}) == "meigen_sk_other"
    assert api_key_from("", {"MEIGEN_API_KEY": KEY}) is None
    assert api_key_from(None, {"MEIGEN_API_KEY": ""}) is None


@pytest.mark.parametrize(
    "key",
    [f"{KEY} ", f" {KEY}", f"{KEY}\r\nX-Evil: 1", f"{KEY}\x00", f"{KEY}\t", f"{KEY}\u00e9"],
)
def test_a_key_with_whitespace_or_control_characters_is_a_value_error_not_quoting_it(
    key: str,
) -> None:
    for given, environ, named in ((key, {}, "api_key"), (None, {"MEIGEN_API_KEY": key}, "$MEIGEN")):
        with pytest.raises(ValueError, match="whitespace, control characters") as caught:
            api_key_from(given, environ)
        assert named in str(caught.value)
        assert "meigen_sk_0123" not in str(caught.value)


def test_a_key_that_is_not_a_string_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="must be a string, got bytes"):
        api_key_from(KEY.encode(), {})


def test_an_error_message_holding_the_key_shows_it_as_api_key_and_keeps_the_type() -> None:
    error = RateLimited(f"HTTP 429: echo Authorization: Bearer {KEY}", retry_after=3.0)
    told = without_secret(error, KEY)
    assert isinstance(told, RateLimited)
    assert (str(told), told.retry_after) == (
        "HTTP 429: echo Authorization: Bearer [API key]",
        3.0,
    )
    plain = ApiError("HTTP 400: bad")
    assert without_secret(plain, KEY) is plain
    assert without_secret(plain, None) is plain


def test_daily_quotas_reset_at_the_next_utc_midnight_whatever_the_offset_of_now() -> None:
    assert next_utc_midnight(NOW) == datetime(2026, 3, 2, tzinfo=UTC)
    tokyo_morning = datetime(2026, 3, 2, 8, 0, tzinfo=timezone(timedelta(hours=9)))
    assert next_utc_midnight(tokyo_morning) == datetime(2026, 3, 2, tzinfo=UTC)
    assert next_utc_midnight(datetime(2026, 3, 2, tzinfo=UTC)) == datetime(2026, 3, 3, tzinfo=UTC)


def test_a_daily_limit_is_never_retried() -> None:
    error = daily_limit("HTTP 429: Daily search limit reached", {}, NOW)
    assert error.retry_after == 30.0
    assert not is_retryable(error)
    assert RetryPolicy().delay_before_retry(0, error) is None
    assert is_retryable(RateLimited("HTTP 429: Too many requests"))


def test_the_quota_refuses_until_its_reset_then_lets_searches_go_again() -> None:
    quota = SearchQuota()
    assert quota.refusal(NOW, "search 'neon' (limit 20, offset 0)") is None
    quota.spent(daily_limit("HTTP 429: Daily search limit reached", {}, NOW))
    refusal = quota.refusal(NOW + timedelta(seconds=20), "search 'neon' (limit 20, offset 0)")
    assert isinstance(refusal, DailyLimitReached)
    assert refusal.resets_at == datetime(2026, 3, 2, tzinfo=UTC)
    assert refusal.retry_after == 10.0
    assert str(refusal).startswith("search 'neon' (limit 20, offset 0): not sent:")
    assert quota.refusal(datetime(2026, 3, 2, tzinfo=UTC), "search 'neon'") is None
    assert quota.resets_at is None


def test_an_earlier_reset_does_not_shorten_a_later_one() -> None:
    quota = SearchQuota()
    later = daily_limit("HTTP 429", {"Retry-After": "600"}, NOW)
    quota.spent(later)
    quota.spent(daily_limit("HTTP 429", {"Retry-After": "60"}, NOW))
    assert quota.resets_at == later.resets_at

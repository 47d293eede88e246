"""RetryPolicy and is_retryable as plain decisions: no server, no event loop."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meigen_async import (
    ApiError,
    ImageNotFound,
    InvalidImageId,
    InvalidResponse,
    MeigenError,
    RateLimited,
    ServerError,
    TransportError,
)
from meigen_async._protocol import error_for_status
from meigen_async.retry import RETRYABLE_STATUSES, RetryPolicy, is_retryable

RETRYABLE = [408, 429, 500, 502, 503, 504]
NOT_RETRYABLE = [400, 401, 403, 404, 409, 422]


def status_error(status: int, *, retry_after: str | None = None) -> MeigenError:
    """The error the session makes of a response with this status."""
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return error_for_status(status, headers, b'{"success": false, "error": "x"}', image_id="1")


def rate_limited(retry_after: float | None = None) -> RateLimited:
    return RateLimited("HTTP 429", image_id="1", retry_after=retry_after)


def pinned(value: float, **settings: float) -> RetryPolicy:
    """A policy whose jitter always draws ``value``."""
    return RetryPolicy(random=lambda: value, **settings)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def fail_on_loop_errors() -> None:
    """Nothing to watch: these tests run no event loop (this replaces conftest's loop check).

    conftest's version opens a loop and collects garbage around every test, which here would
    cost far more than the tests themselves.
    """


SERVER_ERROR = ServerError("HTTP 503", image_id="1", status=503)
TRANSPORT_ERROR = TransportError("connection reset", image_id="1")


# -- is_retryable --------------------------------------------------------------------------------


def test_the_retryable_statuses_are_exactly_the_specified_ones() -> None:
    assert frozenset(RETRYABLE) == RETRYABLE_STATUSES


@pytest.mark.parametrize("status", RETRYABLE)
def test_a_retryable_status_is_retryable(status: int) -> None:
    assert is_retryable(status_error(status))


@pytest.mark.parametrize("status", [*NOT_RETRYABLE, 501])
def test_any_other_status_is_not_retryable(status: int) -> None:
    assert not is_retryable(status_error(status))


@pytest.mark.parametrize(
    "error",
    [
        TransportError("connection refused", image_id="1"),
        TransportError("timed out after 10s fetching image 1", image_id="1"),
        RateLimited("HTTP 429", image_id="1", retry_after=5.0),
        RateLimited("HTTP 429", image_id="1"),
        ServerError("HTTP 500", image_id="1", status=500),
    ],
    ids=["connection", "timeout", "429-retry-after", "429-bare", "500"],
)
def test_transport_errors_rate_limits_and_server_errors_are_retryable(error: MeigenError) -> None:
    assert is_retryable(error)


@pytest.mark.parametrize(
    "error",
    [
        InvalidResponse("response body is not JSON: '<!DOCTYPE html>'", image_id="1"),
        InvalidImageId("invalid image id 'a/b'", image_id="a/b"),
        ImageNotFound("HTTP 404", image_id="1", status=404),
        ApiError("HTTP 403", image_id="1", status=403),
        ApiError("the service reported an error", image_id="1"),
    ],
    ids=["invalid-response", "invalid-id", "not-found", "forbidden", "api-error-without-status"],
)
def test_invalid_responses_and_client_errors_are_not_retryable(error: MeigenError) -> None:
    assert not is_retryable(error)


# -- delay_before_retry: when to give up ---------------------------------------------------------


@pytest.mark.parametrize("status", [400, 403, 404])
def test_a_non_retryable_status_gets_no_delay(status: int) -> None:
    assert RetryPolicy().delay_before_retry(0, status_error(status)) is None


def test_an_invalid_response_gets_no_delay() -> None:
    error = InvalidResponse("envelope has no 'data' field", image_id="1")
    assert RetryPolicy().delay_before_retry(0, error) is None


@pytest.mark.parametrize(
    "error", [SERVER_ERROR, TRANSPORT_ERROR, rate_limited(1.0), rate_limited()]
)
def test_no_delay_once_max_retries_are_used_up(error: MeigenError) -> None:
    policy = RetryPolicy(max_retries=3)
    assert policy.delay_before_retry(2, error) is not None
    assert policy.delay_before_retry(3, error) is None
    assert policy.delay_before_retry(4, error) is None


@pytest.mark.parametrize("error", [SERVER_ERROR, TRANSPORT_ERROR, rate_limited(0.0)])
def test_zero_max_retries_never_retries(error: MeigenError) -> None:
    assert RetryPolicy(max_retries=0).delay_before_retry(0, error) is None


# -- delay_before_retry: exponential backoff with full jitter ------------------------------------


def test_the_longest_backoff_doubles_with_each_retry() -> None:
    policy = pinned(1.0, backoff_base=0.5, backoff_max=100.0, max_retries=10)
    delays = [policy.delay_before_retry(n, SERVER_ERROR) for n in range(5)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0]


def test_the_shortest_backoff_is_zero() -> None:
    policy = pinned(0.0, backoff_base=0.5, backoff_max=100.0, max_retries=10)
    assert [policy.delay_before_retry(n, SERVER_ERROR) for n in (0, 3, 7)] == [0.0, 0.0, 0.0]


def test_the_jitter_scales_the_ceiling() -> None:
    policy = pinned(0.25, backoff_base=2.0, backoff_max=100.0)
    assert policy.delay_before_retry(1, SERVER_ERROR) == pytest.approx(1.0)


def test_the_backoff_is_capped_at_backoff_max() -> None:
    policy = pinned(1.0, backoff_base=1.0, backoff_max=5.0, max_retries=20)
    assert policy.delay_before_retry(3, SERVER_ERROR) == 5.0
    assert policy.delay_before_retry(15, SERVER_ERROR) == 5.0


def test_a_transport_error_is_backed_off_like_a_server_error() -> None:
    policy = pinned(1.0, backoff_base=0.25, backoff_max=100.0)
    assert policy.delay_before_retry(2, TRANSPORT_ERROR) == 1.0


def test_the_jitter_is_random_by_default() -> None:
    policy = RetryPolicy(backoff_base=1.0, backoff_max=1.0, max_retries=1)
    delays = {policy.delay_before_retry(0, SERVER_ERROR) for _ in range(50)}
    assert len(delays) > 1


@given(
    retries_so_far=st.integers(0, 40),
    base=st.floats(0.0, 10.0),
    cap=st.floats(0.0, 60.0),
    draw=st.floats(0.0, 1.0, exclude_max=True),
    status=st.sampled_from([408, 500, 502, 503, 504]),
)
def test_every_backoff_lies_between_zero_and_the_capped_ceiling(
    retries_so_far: int, base: float, cap: float, draw: float, status: int
) -> None:
    policy = pinned(draw, backoff_base=base, backoff_max=cap, max_retries=50)
    delay = policy.delay_before_retry(retries_so_far, status_error(status))
    assert delay is not None
    assert 0.0 <= delay <= min(cap, base * 2.0**retries_so_far)


# -- delay_before_retry: Retry-After -------------------------------------------------------------


@pytest.mark.parametrize(("draw", "retries_so_far"), [(0.0, 0), (1.0, 2)])
def test_retry_after_is_honoured_exactly(draw: float, retries_so_far: int) -> None:
    policy = pinned(draw, backoff_base=0.001, backoff_max=0.01, rate_limited_wait=0.01)
    assert policy.delay_before_retry(retries_so_far, rate_limited(7.0)) == 7.0


def test_a_zero_retry_after_means_now() -> None:
    policy = pinned(1.0, rate_limited_wait=10.0)
    assert policy.delay_before_retry(0, rate_limited(0.0)) == 0.0


def test_retry_after_is_not_capped_by_backoff_max() -> None:
    policy = pinned(1.0, backoff_max=1.0, max_retry_after=60.0)
    assert policy.delay_before_retry(0, rate_limited(30.0)) == 30.0


def test_a_retry_after_of_exactly_max_retry_after_is_waited_for() -> None:
    assert RetryPolicy(max_retry_after=60.0).delay_before_retry(0, rate_limited(60.0)) == 60.0


def test_a_retry_after_beyond_max_retry_after_gives_up() -> None:
    assert RetryPolicy(max_retry_after=60.0).delay_before_retry(0, rate_limited(60.5)) is None


def test_a_retry_after_parsed_from_the_header_is_honoured() -> None:
    error = status_error(429, retry_after="12")
    assert isinstance(error, RateLimited)
    assert pinned(0.0).delay_before_retry(0, error) == 12.0


def server_error(retry_after: float | None = None, status: int = 503) -> ServerError:
    return ServerError(f"HTTP {status}", image_id="1", status=status, retry_after=retry_after)


@pytest.mark.parametrize(("draw", "retries_so_far"), [(0.0, 0), (1.0, 2)])
def test_a_503_retry_after_is_honoured_exactly(draw: float, retries_so_far: int) -> None:
    policy = pinned(draw, backoff_base=0.001, backoff_max=0.01)
    assert policy.delay_before_retry(retries_so_far, server_error(7.0)) == 7.0


def test_a_503_retry_after_is_not_capped_by_backoff_max() -> None:
    policy = pinned(1.0, backoff_max=1.0, max_retry_after=60.0)
    assert policy.delay_before_retry(0, server_error(30.0)) == 30.0


def test_a_503_retry_after_of_exactly_max_retry_after_is_waited_for() -> None:
    assert RetryPolicy(max_retry_after=60.0).delay_before_retry(0, server_error(60.0)) == 60.0


def test_a_503_retry_after_beyond_max_retry_after_gives_up() -> None:
    assert RetryPolicy(max_retry_after=60.0).delay_before_retry(0, server_error(60.5)) is None


def test_a_503_retry_after_parsed_from_the_header_is_honoured() -> None:
    error = status_error(503, retry_after="12")
    assert isinstance(error, ServerError)
    assert pinned(0.0).delay_before_retry(0, error) == 12.0


def test_a_503_retry_after_does_not_outlast_max_retries() -> None:
    assert RetryPolicy(max_retries=1).delay_before_retry(1, server_error(1.0)) is None


def test_a_503_without_retry_after_backs_off_as_usual() -> None:
    policy = pinned(0.5, backoff_base=2.0, backoff_max=30.0)
    assert policy.delay_before_retry(1, server_error()) == 2.0


def test_a_retry_after_on_a_500_is_backed_off_as_usual() -> None:
    policy = pinned(0.5, backoff_base=2.0, backoff_max=30.0)
    assert policy.delay_before_retry(0, status_error(500, retry_after="12")) == 1.0


# -- delay_before_retry: a 429 without Retry-After -----------------------------------------------


@pytest.mark.parametrize(("draw", "retries_so_far"), [(0.0, 0), (1.0, 0), (0.0, 1), (1.0, 1)])
def test_a_bare_429_waits_between_rate_limited_wait_and_its_double(
    draw: float, retries_so_far: int
) -> None:
    policy = pinned(draw, rate_limited_wait=10.0, backoff_max=30.0)
    delay = policy.delay_before_retry(retries_so_far, rate_limited())
    assert delay is not None
    assert 10.0 <= delay <= 20.0


def test_a_bare_429_waits_at_least_rate_limited_wait_even_with_no_jitter() -> None:
    policy = pinned(0.0, rate_limited_wait=10.0, backoff_base=0.001, backoff_max=30.0)
    assert policy.delay_before_retry(2, rate_limited()) == 10.0


def test_a_bare_429_waits_longer_with_each_retry() -> None:
    policy = pinned(1.0, rate_limited_wait=10.0, backoff_max=1000.0, max_retries=5)
    assert [policy.delay_before_retry(n, rate_limited()) for n in range(4)] == [10, 20, 40, 80]


def test_a_bare_429_wait_is_capped_by_backoff_max() -> None:
    policy = pinned(1.0, rate_limited_wait=10.0, backoff_max=30.0, max_retries=10)
    assert policy.delay_before_retry(5, rate_limited()) == 30.0


def test_backoff_max_never_cuts_a_bare_429_below_rate_limited_wait() -> None:
    policy = pinned(1.0, rate_limited_wait=10.0, backoff_max=2.0, max_retries=10)
    assert policy.delay_before_retry(3, rate_limited()) == 10.0


def test_a_bare_429_from_the_header_parser_uses_rate_limited_wait() -> None:
    error = status_error(429)
    assert isinstance(error, RateLimited)
    assert error.retry_after is None
    assert pinned(0.0, rate_limited_wait=10.0).delay_before_retry(0, error) == 10.0


# -- Settings ------------------------------------------------------------------------------------


def test_the_defaults_follow_the_services_advice() -> None:
    policy = RetryPolicy()
    assert policy.max_retries == 3
    assert 10.0 <= policy.rate_limited_wait <= 30.0
    assert policy.backoff_base <= policy.backoff_max


@pytest.mark.parametrize(
    "setting",
    [
        ("max_retries", -1),
        ("backoff_base", -0.1),
        ("backoff_max", -1.0),
        ("max_retry_after", -1.0),
        ("rate_limited_wait", -1.0),
    ],
)
def test_a_negative_setting_is_refused(setting: tuple[str, float]) -> None:
    name, value = setting
    with pytest.raises(ValueError, match="negative"):
        RetryPolicy(**{name: value})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "settings",
    [
        {"max_retries": 0},
        {"backoff_base": 0.0, "backoff_max": 0.0},
        {"max_retry_after": 0.0},
        {"rate_limited_wait": 0.0},
    ],
)
def test_zero_settings_are_accepted(settings: dict[str, float]) -> None:
    RetryPolicy(**settings)  # type: ignore[arg-type]

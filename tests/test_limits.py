"""The header -> cool-down decision (pure) and LocalRateLimiter on a fake clock."""

from __future__ import annotations

import pytest

from meigen_async import LocalRateLimiter, RateLimiter
from meigen_async.limits import MAX_COOL_DOWN, cool_down_after

NOW = 1_750_000_000.0


class FakeClock:
    """A timer and a sleep: sleeping moves the clock, nothing waits."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


# -- cool_down_after -------------------------------------------------------------------------


def test_a_429_with_retry_after_pauses_for_that_long() -> None:
    assert cool_down_after(429, {"Retry-After": "2"}, now=NOW) == 2.0


def test_a_503_with_retry_after_pauses_too() -> None:
    assert cool_down_after(503, {"retry-after": "7"}, now=NOW) == 7.0


def test_a_retry_after_date_is_read_against_now() -> None:
    date = "Sun, 15 Jun 2025 15:06:50 GMT"  # NOW + 10 s
    assert cool_down_after(429, {"Retry-After": date}, now=NOW) == pytest.approx(10.0)


def test_a_500_with_retry_after_does_not_pause() -> None:
    assert cool_down_after(500, {"Retry-After": "5"}, now=NOW) is None


def test_a_429_without_retry_after_does_not_pause_everyone() -> None:
    assert cool_down_after(429, {}, now=NOW) is None


def test_an_unreadable_retry_after_does_not_pause() -> None:
    assert cool_down_after(429, {"Retry-After": "soon"}, now=NOW) is None


def test_a_spent_budget_with_a_reset_in_seconds_pauses_until_the_reset() -> None:
    headers = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "3"}
    assert cool_down_after(200, headers, now=NOW) == 3.0


def test_a_reset_as_an_epoch_time_is_read_against_now() -> None:
    headers = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(NOW) + 4)}
    assert cool_down_after(200, headers, now=NOW) == pytest.approx(4.0)


def test_a_reset_in_the_past_does_not_pause() -> None:
    headers = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(NOW) - 4)}
    assert cool_down_after(200, headers, now=NOW) is None


def test_a_budget_not_yet_spent_does_not_pause() -> None:
    headers = {"X-RateLimit-Remaining": "1", "X-RateLimit-Reset": "3"}
    assert cool_down_after(200, headers, now=NOW) is None


def test_a_spent_budget_without_a_reset_does_not_pause() -> None:
    assert cool_down_after(200, {"X-RateLimit-Remaining": "0"}, now=NOW) is None


@pytest.mark.parametrize("reset", ["nan", "inf", "1_0", "", "soon"])
def test_an_unreadable_reset_does_not_pause(reset: str) -> None:
    headers = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset}
    assert cool_down_after(200, headers, now=NOW) is None


def test_a_429_without_retry_after_still_honours_a_spent_budget() -> None:
    headers = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "5"}
    assert cool_down_after(429, headers, now=NOW) == 5.0


def test_a_huge_pause_is_cut_to_the_maximum() -> None:
    assert cool_down_after(429, {"Retry-After": "86400"}, now=NOW) == MAX_COOL_DOWN


# -- LocalRateLimiter ------------------------------------------------------------------------


def test_the_local_limiter_follows_the_protocol() -> None:
    assert isinstance(LocalRateLimiter(5), RateLimiter)


def test_the_local_limiter_refuses_a_rate_that_is_not_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        LocalRateLimiter(0)


async def test_acquire_waits_out_a_cool_down() -> None:
    clock = FakeClock()
    limiter = LocalRateLimiter(1000, timer=clock, sleep=clock.sleep)
    await limiter.cool_down(2.0)
    await limiter.acquire()
    assert clock.waits == [2.0]


async def test_acquire_goes_at_once_without_a_cool_down() -> None:
    clock = FakeClock()
    limiter = LocalRateLimiter(1000, timer=clock, sleep=clock.sleep)
    await limiter.acquire()
    assert clock.waits == []


async def test_a_shorter_cool_down_does_not_shorten_a_longer_one() -> None:
    clock = FakeClock()
    limiter = LocalRateLimiter(1000, timer=clock, sleep=clock.sleep)
    await limiter.cool_down(5.0)
    await limiter.cool_down(1.0)
    await limiter.acquire()
    assert clock.waits == [5.0]


async def test_a_cool_down_begun_during_the_wait_is_waited_out_too() -> None:
    clock = FakeClock()
    limiter = LocalRateLimiter(1000, timer=clock, sleep=clock.sleep)

    async def sleep_then_extend(seconds: float) -> None:
        await clock.sleep(seconds)
        if len(clock.waits) == 1:
            limiter.pause(3.0)

    limiter._sleep = sleep_then_extend
    await limiter.cool_down(1.0)
    await limiter.acquire()
    assert clock.waits == [1.0, 3.0]

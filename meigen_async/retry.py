"""When to try again, and how long to wait first: plain decisions, no I/O.

The session asks [`RetryPolicy.delay_before_retry`][meigen_async.RetryPolicy.delay_before_retry]
after each failed attempt and sleeps
for the answer, or gives up when it is None.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import attrs

from .errors import DailyLimitReached, MeigenError, RateLimited, ServerError, TransportError

__all__ = ["RETRYABLE_STATUSES", "RetryPolicy", "is_retryable"]

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
"""Statuses worth asking again for: the request may well succeed a moment later."""


def is_retryable(error: MeigenError) -> bool:
    """Whether another attempt may succeed: a transport failure or a retryable status.

    A `DailyLimitReached` never is: no search succeeds before the quota resets.
    """
    if isinstance(error, DailyLimitReached):
        return False
    return isinstance(error, TransportError) or error.status in RETRYABLE_STATUSES


@attrs.frozen
class RetryPolicy:
    """How failed requests are retried.

    Exponential backoff with full jitter: before retry `n` (from 0) a random wait in
    `[0, min(backoff_max, backoff_base * 2**n)]`. A `Retry-After` from the server, on a 429
    or a 503, is honoured as it is, unless it asks for more than `max_retry_after` seconds:
    then the error (`RateLimited` or `ServerError`) is raised at once, `retry_after` set, for
    the caller to schedule.
    A 429 without `Retry-After` waits at least `rate_limited_wait` seconds, doubling
    from there, as the service's documentation asks (10-30 s).
    """

    max_retries: int = 3
    """Retries after the first attempt; 0 disables retrying."""
    backoff_base: float = 0.5
    """The first backoff's upper bound, in seconds."""
    backoff_max: float = 30.0
    """The cap on any backoff, in seconds."""
    max_retry_after: float = 60.0
    """The longest `Retry-After` waited for, in seconds; a longer one is raised at once."""
    rate_limited_wait: float = 10.0
    """The least wait after a 429 that gave no `Retry-After`, in seconds."""
    random: Callable[[], float] = attrs.field(default=random.random, repr=False, eq=False)
    """The source of jitter, a function returning a float in [0, 1); give a fixed one in tests."""

    def __attrs_post_init__(self) -> None:
        """Refuse settings that make no sense."""
        if self.max_retries < 0:
            raise ValueError("max_retries must not be negative")
        limits = (self.backoff_base, self.backoff_max, self.max_retry_after, self.rate_limited_wait)
        if min(limits) < 0:
            raise ValueError("backoff, retry-after and rate-limited waits must not be negative")

    def delay_before_retry(self, retries_so_far: int, error: MeigenError) -> float | None:
        """Seconds to wait before trying again after `error`, or None to give up now."""
        if not is_retryable(error) or retries_so_far >= self.max_retries:
            return None
        if isinstance(error, RateLimited):
            return self._rate_limited_delay(retries_so_far, error.retry_after)
        if isinstance(error, ServerError) and error.retry_after is not None:
            # A 503's Retry-After (RFC 9110 section 10.2.3), bounded as a 429's is.
            retry_after = error.retry_after
            return retry_after if retry_after <= self.max_retry_after else None
        return self.backoff(retries_so_far)

    def backoff(self, retries_so_far: int) -> float:
        """A full-jitter exponential backoff for retry number `retries_so_far` (from 0)."""
        ceiling = min(self.backoff_max, self.backoff_base * 2.0**retries_so_far)
        return ceiling * self.random()

    def _rate_limited_delay(self, retries_so_far: int, retry_after: float | None) -> float | None:
        if retry_after is not None:
            return retry_after if retry_after <= self.max_retry_after else None
        floor = self.rate_limited_wait
        ceiling = max(floor, min(self.backoff_max, floor * 2.0**retries_so_far))
        return floor + (ceiling - floor) * self.random()

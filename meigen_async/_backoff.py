"""`Backoff`: when to try a failing backend again (Redis, the SQLite cache's write lock).

Pure: no I/O, no asyncio; the caller reports outcomes and asks before each operation.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

__all__ = ["Backoff"]


class Backoff:
    """When to try a failing backend again: after 0.5 s, then twice as long each time, up to 5 s.

    Pure: the caller reports each operation's outcome and asks `ready` before the next.
    `failed` and `succeeded` say when an outage starts and ends, to log just that.

    Args:
        first: Seconds to wait after the first failure.
        longest: The longest wait, in seconds.
        timer: The clock, in seconds; a fake one in tests.

    """

    def __init__(
        self,
        *,
        first: float = 0.5,
        longest: float = 5.0,
        timer: Callable[[], float] = time.monotonic,
    ):
        self.first: float = first
        """Seconds to wait after the first failure."""
        self.longest: float = longest
        """The longest wait, in seconds."""
        self._timer = timer
        self._delay = 0.0
        self._down_since: float | None = None
        self._retry_at = -math.inf
        self._failures = 0
        self.outage: tuple[int, float] = (0, 0.0)
        """The last outage that ended: its failures counted, and its seconds."""

    @property
    def down(self) -> bool:
        """Whether the backend is considered out (since a failure, until a success)."""
        return self._down_since is not None

    @property
    def delay(self) -> float:
        """The current back-off in seconds (0 while the backend is up)."""
        return self._delay

    def ready(self) -> bool:
        """Whether to send the next operation, rather than skip it for now."""
        return self._timer() >= self._retry_at

    def failed(self) -> bool:
        """Record a failed operation; True when it starts an outage."""
        now = self._timer()
        self._failures += 1
        if self._down_since is None:
            self._failures = 1
            self._down_since = now
            self._delay = self.first
            self._retry_at = now + self._delay
            return True
        if now >= self._retry_at:
            # A probe after the back-off failed too. (Failures of operations sent together
            # with the first one do not count: they are the same outage, seen again.)
            self._delay = min(self._delay * 2, self.longest)
            self._retry_at = now + self._delay
        return False

    def succeeded(self, started: float) -> bool:
        """Record an operation sent at `started` that worked; True when it ends an outage."""
        if self._down_since is None or started < self._down_since:
            # An operation sent before the outage began proves nothing about now.
            return False
        self.outage = (self._failures, self._timer() - self._down_since)
        self._down_since = None
        self._failures = 0
        self._delay = 0.0
        self._retry_at = -math.inf
        return True

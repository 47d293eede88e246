"""A clock for tests to move by hand."""

from __future__ import annotations


class FakeTimer:
    """A clock the test moves by hand.

    A plain callable, not a context manager: cachetools wraps the timer it is given in its
    own ``_Timer``, which provides the ``with timer as now`` its TLRUCache uses internally.
    """

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

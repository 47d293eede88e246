"""Single flight: one task per key, shared by every caller that wants that key meanwhile.

`SingleFlight` starts a task for the first caller of a key, lets later callers join it, and
cancels it when the last one leaves. It owns every task it starts, finished or being cancelled,
so that `close` can wait for all of them: no task outlives it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Generic, TypeVar

__all__ = ["Flight", "SingleFlight"]

V = TypeVar("V")


class Flight(Generic[V]):
    """One running task and how many callers wait on it."""

    __slots__ = ("key", "task", "waiters")

    def __init__(self, key: str, task: asyncio.Task[V]):
        self.key = key
        self.task = task
        self.waiters = 0


class SingleFlight(Generic[V]):
    """Tasks keyed by id, each shared by its concurrent callers.

    Args:
        start: Makes the coroutine a key's task runs.
        task_name: The task's name for a key, to spot it in a debugger.
        closed_error: What a caller gets when `close` cancelled the task it waited on.
        outcomes: The exceptions a task may end in as its answer. Raised by a task nobody waits
            on any more, they are dropped; any other is reported to the event loop as a bug.

    """

    def __init__(
        self,
        start: Callable[[str], Coroutine[Any, Any, V]],
        *,
        task_name: Callable[[str], str],
        closed_error: Callable[[str], BaseException],
        outcomes: tuple[type[BaseException], ...] = (Exception,),
    ):
        self._start = start
        self._task_name = task_name
        self._closed_error = closed_error
        self._outcomes = outcomes
        self._flights: dict[str, Flight[V]] = {}
        # Cancelled when their last caller left, and not yet finished: still ours to wait for.
        self._winding_down: set[asyncio.Task[V]] = set()
        self.closed = False

    def __len__(self) -> int:
        """How many keys have a task in flight."""
        return len(self._flights)

    def running(self, key: str) -> bool:
        """Whether `key` has a task in flight."""
        return key in self._flights

    def join(
        self,
        key: str,
        loop: asyncio.AbstractEventLoop,
        start: Callable[[str], Coroutine[Any, Any, V]] | None = None,
    ) -> tuple[Flight[V], bool]:
        """Wait on `key`'s task, starting it in `loop` if there is none.

        A task started here runs `start(key)` when `start` is given, else the constructor's.
        Returns the flight and whether it was already running (the call was coalesced).
        """
        flight = self._flights.get(key)
        joined = flight is not None
        if flight is None:
            coroutine = self._start(key) if start is None else start(key)
            # The loop's own create_task: asyncio.create_task would look the loop up per key.
            task = loop.create_task(coroutine, name=self._task_name(key))
            flight = Flight(key, task)
            self._flights[key] = flight
        flight.waiters += 1
        return flight, joined

    def leave(self, flight: Flight[V]) -> bool:
        """Stop waiting on `flight`; True when that cancelled its task, nobody else waiting.

        The last caller to leave lands the flight (rather than a done callback on every task),
        cancelling its task when it has not finished.
        """
        flight.waiters -= 1
        if flight.waiters:
            return False
        if self._flights.get(flight.key) is flight:
            del self._flights[flight.key]
        task = flight.task
        if task.done():
            return False
        task.cancel()
        self._winding_down.add(task)
        task.add_done_callback(self._wound_down)
        return True

    def _wound_down(self, task: asyncio.Task[V]) -> None:
        self._winding_down.discard(task)
        # Its callers have gone: an answer of theirs is nobody's now, but a bug is still one.
        error = None if task.cancelled() else task.exception()
        if error is not None and not isinstance(error, self._outcomes):
            task.get_loop().call_exception_handler(
                {
                    "message": "a task nobody waited on any more failed",
                    "exception": error,
                    "task": task,
                }
            )

    async def leave_all(self, flights: Iterable[Flight[V]]) -> None:
        """Leave every flight, waiting for the tasks that leaving cancelled to wind down."""
        cancelled = [flight.task for flight in flights if self.leave(flight)]
        if cancelled:
            await asyncio.wait(cancelled)

    async def wait(self, flight: Flight[V]) -> V:
        """Wait for `flight`'s result as one of its callers, leaving it however that ends."""
        try:
            return await asyncio.shield(flight.task)
        except asyncio.CancelledError:
            if flight.task.cancelled() and self.closed:
                raise self._closed_error(flight.key) from None
            raise
        finally:
            self.leave(flight)

    async def wait_many(
        self, flights: list[Flight[V]], *, fail_fast: bool
    ) -> list[tuple[Flight[V], V | BaseException]]:
        """Wait on `flights` together; with `fail_fast`, only until the first fails.

        Every flight is left afterwards. Returns what each finished flight gave, its result or
        its exception; a flight that fail-fast left unfinished has no entry.
        """
        if not flights:
            return []
        # Waiting on the tasks themselves, with no task or shield per key: bulk calls are
        # where that overhead would show.
        try:
            await asyncio.wait(
                [flight.task for flight in flights],
                return_when=asyncio.FIRST_EXCEPTION if fail_fast else asyncio.ALL_COMPLETED,
            )
        finally:
            await self.leave_all(flights)
        return [
            (flight, self.outcome(flight))
            for flight in flights
            # Left unfinished by fail-fast: cancelled, and nobody's answer.
            if not (flight.task.cancelled() and not self.closed)
        ]

    def outcome(self, flight: Flight[V]) -> V | BaseException:
        """What a finished flight gave: its result, its exception, or the closed error."""
        task = flight.task
        if task.cancelled():
            return self._closed_error(flight.key)
        error = task.exception()
        return task.result() if error is None else error

    async def close(self) -> None:
        """Cancel every task, and wait until all of them, winding down ones too, have ended.

        Idempotent; callers still waiting get `closed_error`.
        """
        self.closed = True
        tasks = [flight.task for flight in self._flights.values()] + list(self._winding_down)
        for task in tasks:
            task.cancel()
        if tasks:
            # Until each has ended, even one that swallowed its cancellation (redis-py's own
            # wait_for can): none may outlive the session.
            await asyncio.wait(tasks)

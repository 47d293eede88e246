"""SingleFlight: join, leave, cancel, wait for all, fail fast; with plain coroutines, no HTTP.

An await that ends only when `close`, `leave` or fail-fast cancels a job that is never
finished is bounded by `soon()`: with that cancellation broken the test fails in seconds,
naming the await, rather than hanging.
"""

from __future__ import annotations

import asyncio

import pytest

from meigen_async._flight import SingleFlight


def soon() -> asyncio.Timeout:
    """A bound for an await that a working cancellation ends at once."""
    return asyncio.timeout(5.0)


class Closed(Exception):
    pass


class Jobs:
    """Coroutines that finish when told to, counting how often each key was started."""

    def __init__(self) -> None:
        self.started: dict[str, int] = {}
        self.release: dict[str, asyncio.Future[str]] = {}

    async def run(self, key: str) -> str:
        self.started[key] = self.started.get(key, 0) + 1
        future = self.release.setdefault(key, asyncio.get_running_loop().create_future())
        return await future

    def finish(self, key: str, value: str | None = None, error: Exception | None = None) -> None:
        future = self.release.setdefault(key, asyncio.get_running_loop().create_future())
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value if value is not None else key.upper())


def flights(jobs: Jobs) -> SingleFlight[str]:
    return SingleFlight(jobs.run, task_name="job ".__add__, closed_error=lambda key: Closed(key))


async def test_callers_of_one_key_share_one_task() -> None:
    jobs = Jobs()
    single = flights(jobs)
    loop = asyncio.get_running_loop()
    first, joined_first = single.join("a", loop)
    second, joined_second = single.join("a", loop)

    assert first is second
    assert (joined_first, joined_second) == (False, True)
    jobs.finish("a")
    assert await asyncio.gather(single.wait(first), single.wait(second)) == ["A", "A"]
    assert jobs.started == {"a": 1}
    assert len(single) == 0


async def test_the_task_is_named_for_its_key() -> None:
    single = flights(Jobs())
    flight, _ = single.join("a", asyncio.get_running_loop())

    assert flight.task.get_name() == "job a"
    async with soon():
        await single.close()


async def test_a_task_started_with_its_own_start_runs_it_and_later_callers_join_it() -> None:
    jobs, other = Jobs(), Jobs()
    single = flights(jobs)
    loop = asyncio.get_running_loop()
    first, _ = single.join("a", loop, other.run)
    second, joined = single.join("a", loop)
    other.finish("a", "from the other start")

    assert joined
    assert await single.wait(first) == await single.wait(second) == "from the other start"
    assert (jobs.started, other.started) == ({}, {"a": 1})


async def test_a_key_asked_again_after_its_flight_landed_starts_a_new_task() -> None:
    jobs = Jobs()
    single = flights(jobs)
    flight, _ = single.join("a", asyncio.get_running_loop())
    jobs.finish("a")
    await single.wait(flight)
    jobs.release.clear()

    again, joined = single.join("a", asyncio.get_running_loop())
    jobs.finish("a")
    await single.wait(again)

    assert not joined
    assert jobs.started == {"a": 2}


async def test_the_last_caller_leaving_cancels_the_task() -> None:
    single = flights(Jobs())
    flight, _ = single.join("a", asyncio.get_running_loop())
    single.join("a", asyncio.get_running_loop())

    assert not single.leave(flight)
    assert single.leave(flight)
    with pytest.raises(asyncio.CancelledError):
        async with soon():
            await flight.task


async def test_a_cancelled_caller_leaves_the_others_task_running() -> None:
    jobs = Jobs()
    single = flights(jobs)
    loop = asyncio.get_running_loop()
    flight, _ = single.join("a", loop)
    single.join("a", loop)
    waiting = asyncio.ensure_future(single.wait(flight))
    await asyncio.sleep(0)

    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting

    assert not flight.task.done()
    jobs.finish("a")
    assert await single.wait(flight) == "A"


async def test_close_fails_waiting_callers_with_the_closed_error() -> None:
    single = flights(Jobs())
    flight, _ = single.join("a", asyncio.get_running_loop())
    waiting = asyncio.ensure_future(single.wait(flight))
    await asyncio.sleep(0)

    async with soon():
        await single.close()

    with pytest.raises(Closed):
        async with soon():
            await waiting


async def test_close_waits_for_a_task_left_winding_down_by_its_last_caller() -> None:
    ended = asyncio.Event()

    async def stubborn(key: str) -> str:
        # Swallows its first cancellation, as redis-py's own wait_for did, and winds down later.
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await asyncio.sleep(0.01)
        ended.set()
        return key

    single: SingleFlight[str] = SingleFlight(
        stubborn, task_name=str, closed_error=lambda key: Closed(key)
    )
    flight, _ = single.join("a", asyncio.get_running_loop())
    await asyncio.sleep(0)
    assert single.leave(flight)  # cancelled, but it is still running
    assert len(single) == 0

    async with soon():
        await single.close()

    assert ended.is_set()
    assert flight.task.done()


async def test_wait_many_with_fail_fast_stops_at_the_first_error_and_cancels_the_rest() -> None:
    jobs = Jobs()
    single = flights(jobs)
    loop = asyncio.get_running_loop()
    a, _ = single.join("a", loop)
    b, _ = single.join("b", loop)
    jobs.finish("a", error=ValueError("boom"))

    async with soon():
        outcomes = await single.wait_many([a, b], fail_fast=True)

    assert [(flight.key, type(outcome)) for flight, outcome in outcomes] == [("a", ValueError)]
    assert b.task.cancelled()


async def test_wait_many_without_fail_fast_gives_every_outcome() -> None:
    jobs = Jobs()
    single = flights(jobs)
    loop = asyncio.get_running_loop()
    a, _ = single.join("a", loop)
    b, _ = single.join("b", loop)
    jobs.finish("a", error=ValueError("boom"))
    jobs.finish("b")

    outcomes = dict(
        (flight.key, outcome) for flight, outcome in await single.wait_many([a, b], fail_fast=False)
    )

    assert isinstance(outcomes["a"], ValueError)
    assert outcomes["b"] == "B"


async def test_wait_many_of_nothing_is_nothing() -> None:
    assert await flights(Jobs()).wait_many([], fail_fast=True) == []

"""RedisRateLimiter against a real redis-server on loopback, and across real processes.

The fast tests drive one or two limiters (two limiters share nothing but Redis, as two
processes would) with a sleep that records its waits and moves a fake clock; Redis keeps its
own time, which is what the script reads. The slow ones run 4 worker processes
(``tests/rate_limit_worker.py``) against one FakeGallery that notes when each request arrived.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip(
    "redis", reason="redis-py is not installed: pip install -e '.[redis]' to run these tests"
)
import redis.asyncio
from aiohttp import web
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis_helpers import RedisServer, WrongRedis, free_port

from meigen_async import RateLimiter
from meigen_async.redis_cache import RedisRateLimiter, rate_keys
from meigen_async.testing import Answer, FakeGallery

WORKER = Path(__file__).with_name("rate_limit_worker.py")


class FakeClock:
    """A timer and a sleep: sleeping moves the clock and records the wait, nothing waits."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


class RecordedSleep(FakeClock):
    """Sleeps for real, recording each wait: Redis's clock has to move for a cool-down to end."""

    def __call__(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(seconds)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.kill()


def quick_client(url: str) -> redis.asyncio.Redis:
    return redis.asyncio.Redis.from_url(
        url, socket_connect_timeout=0.2, socket_timeout=0.2, retry=Retry(NoBackoff(), 0)
    )


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[redis.asyncio.Redis]:
    client = quick_client(redis_server.url)
    yield client
    await client.aclose()


def limiter(client: redis.asyncio.Redis, clock: FakeClock, **options: Any) -> RedisRateLimiter:
    options.setdefault("rate", 10.0)
    return RedisRateLimiter(client, timer=clock, sleep=clock.sleep, **options)


# -- One Redis, fake clocks ------------------------------------------------------------------


def test_the_redis_limiter_follows_the_protocol(client: redis.asyncio.Redis) -> None:
    assert isinstance(RedisRateLimiter(client), RateLimiter)


@pytest.mark.parametrize(
    ("options", "words"),
    [({"rate": 0}, "rate"), ({"burst": 0}, "burst"), ({"timeout": 0}, "timeout")],
)
def test_settings_that_make_no_sense_are_refused(
    client: redis.asyncio.Redis, options: dict[str, float], words: str
) -> None:
    with pytest.raises(ValueError, match=words):
        RedisRateLimiter(client, **options)


async def test_a_burst_goes_at_once_and_then_requests_are_spaced(
    client: redis.asyncio.Redis,
) -> None:
    clock = FakeClock()
    paced = limiter(client, clock, rate=10.0, burst=2)
    for _ in range(5):
        await paced.acquire()
    assert clock.waits == pytest.approx([0.1, 0.2, 0.3], abs=0.02)


async def test_limiters_sharing_a_name_share_one_budget(client: redis.asyncio.Redis) -> None:
    clock_a, clock_b = FakeClock(), FakeClock()
    await limiter(client, clock_a).acquire()
    await limiter(client, clock_b).acquire()
    assert (clock_a.waits, clock_b.waits) == ([], [pytest.approx(0.1, abs=0.02)])


async def test_limiters_of_other_names_do_not_share(client: redis.asyncio.Redis) -> None:
    clock = FakeClock()
    await limiter(client, clock, name="a").acquire()
    await limiter(client, clock, name="b").acquire()
    assert clock.waits == []


@pytest.mark.slow
async def test_a_cool_down_from_one_limiter_holds_back_another(
    client: redis.asyncio.Redis,
) -> None:
    waits = RecordedSleep()
    await limiter(client, FakeClock()).cool_down(0.3)
    await limiter(client, waits).acquire()
    assert waits.waits == [pytest.approx(0.3, abs=0.05)]


async def test_pacing_resumes_after_a_cool_down_without_a_burst(
    client: redis.asyncio.Redis,
) -> None:
    await limiter(client, FakeClock(), rate=10.0, burst=3).cool_down(0.3)
    # Booked while the cool-down holds: the slots at 0.3, 0.4 and 0.5 s, not three at 0.3 s.
    reserved = [
        await limiter(client, FakeClock(), rate=10.0, burst=3)._run("reserve") for _ in "abc"
    ]
    assert reserved == [pytest.approx(t, abs=0.05) for t in (0.3, 0.4, 0.5)]


@pytest.mark.slow
async def test_a_slot_booked_before_a_cool_down_waits_it_out(
    client: redis.asyncio.Redis,
) -> None:
    other = limiter(client, FakeClock())
    await other.acquire()  # the next slot is 0.1 s away
    waits = RecordedSleep()

    async def sleep_while_another_meets_a_429(seconds: float) -> None:
        if not waits.waits:
            await other.cool_down(0.3)
        await waits.sleep(seconds)

    booked = RedisRateLimiter(client, rate=10.0, sleep=sleep_while_another_meets_a_429)
    await booked.acquire()
    # The slot's 0.1 s, then what is left of the 0.3 s cool-down.
    assert waits.waits == [pytest.approx(0.1, abs=0.03), pytest.approx(0.2, abs=0.05)]


async def test_a_wait_of_years_read_from_redis_is_not_believed(
    client: redis.asyncio.Redis,
) -> None:
    # A cool-down key someone else wrote: ten years from now.
    await client.set(rate_keys("meigen")[1], f"{time.time() + 10 * 365 * 86400:.6f}")
    waits: list[float] = []

    async def recorded(seconds: float) -> None:
        waits.append(seconds)

    paced = RedisRateLimiter(client, rate=10.0, sleep=recorded)
    async with asyncio.timeout(5):
        await paced.acquire()

    assert all(wait < 3600 for wait in waits)


async def test_the_script_keeps_its_keys_under_the_name(
    client: redis.asyncio.Redis,
) -> None:
    paced = limiter(client, FakeClock(), name="shards")
    await paced.acquire()
    await paced.cool_down(5.0)
    keys = sorted(k.decode() for k in await client.keys("*"))
    assert keys == sorted(rate_keys("shards"))
    assert 0 < await client.pttl(rate_keys("shards")[1]) <= 6000


# -- Redis unreachable -----------------------------------------------------------------------


async def test_without_redis_requests_are_paced_locally_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    client = quick_client(f"redis://127.0.0.1:{free_port()}/0")
    paced = limiter(client, clock, rate=1000.0)
    with caplog.at_level(logging.WARNING, logger="meigen_async"):
        for _ in range(5):
            await paced.acquire()
        await paced.cool_down(3.0)
        await paced.acquire()
    await client.aclose()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "pacing this process alone" in warnings[0].getMessage()
    assert clock.waits == [pytest.approx(3.0)]  # the cool-down, kept locally
    assert not paced.shared


async def test_a_server_answering_hello_wrongly_is_paced_past_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    async with WrongRedis(b":7\r\n") as wrong:  # HELLO gets an integer: AttributeError
        client = quick_client(wrong.url)
        paced = limiter(client, clock, rate=1000.0)
        with caplog.at_level(logging.WARNING, logger="meigen_async"):
            for _ in range(3):
                await paced.acquire()
        await client.aclose()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "AttributeError" in warnings[0].getMessage()
    assert not paced.shared


async def test_the_limiter_goes_back_to_redis_once_it_answers_again(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    client = quick_client(redis_server.url)
    paced = limiter(client, clock, rate=1000.0)
    redis_server.kill()
    await paced.acquire()
    assert not paced.shared
    redis_server.start()
    clock.now += 1.0  # past the first back-off
    with caplog.at_level(logging.INFO, logger="meigen_async"):
        await paced.acquire()
    await client.aclose()
    assert paced.shared
    assert any("available again" in r.getMessage() for r in caplog.records)


# -- Real processes --------------------------------------------------------------------------


class TimedGallery(FakeGallery):
    """The sample gallery, noting when each request arrived; `answer_429` sends one 429."""

    def __init__(self) -> None:
        from meigen_async.testing import sample_images

        super().__init__(sample_images())
        self.arrivals: list[float] = []
        self.answer_429: float | None = None
        self.sent_429: float | None = None

    async def _serve_image(self, request: web.Request) -> web.StreamResponse:
        now = time.monotonic()
        self.arrivals.append(now)
        if self.answer_429 is not None:
            self.answer_429, self.sent_429 = None, now
            self.script(request.match_info["image_id"], Answer.rate_limited(2))
        return await super()._serve_image(request)


RATE = 20.0
BURST = 2
PROCESSES = 4


async def run_workers(
    gallery: TimedGallery, redis_url: str, seconds: float, during: Any = None
) -> tuple[list[dict[str, Any]], list[str], float]:
    """Start the workers, let them go at once; the reports, their stderr, and when they went."""
    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(WORKER),
            gallery.url,
            redis_url,
            "meigen",
            str(RATE),
            str(BURST),
            str(seconds),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(PROCESSES)
    ]
    for worker in workers:
        assert worker.stdout is not None
        assert (await asyncio.wait_for(worker.stdout.readline(), 30)).strip() == b"ready"
    went = time.monotonic()
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write(b"go\n")
        await worker.stdin.drain()
    if during is not None:
        await during(went)
    outputs = [await asyncio.wait_for(w.communicate(), seconds + 30) for w in workers]
    reports = [json.loads(out.decode().strip().splitlines()[-1]) for out, _ in outputs]
    return reports, [err.decode() for _, err in outputs], went


def most_in_a_second(arrivals: list[float]) -> int:
    ordered = sorted(arrivals)
    return max(sum(1 for t in ordered[i:] if t < start + 1.0) for i, start in enumerate(ordered))


@pytest.fixture
async def timed_gallery() -> AsyncIterator[TimedGallery]:
    async with TimedGallery() as gallery:
        yield gallery


@pytest.mark.slow
@pytest.mark.xdist_group("processes")
async def test_four_processes_together_keep_to_the_shared_rate(
    redis_server: RedisServer, timed_gallery: TimedGallery
) -> None:
    seconds = 2.5
    reports, _, _ = await run_workers(timed_gallery, redis_server.url, seconds)
    sent = [report["sent"] for report in reports]
    assert most_in_a_second(timed_gallery.arrivals) <= RATE + BURST
    assert sum(sent) >= 0.8 * RATE * seconds
    assert min(sent) >= 0.5 * sum(sent) / PROCESSES  # no process starved
    assert all(report["errors"] == {} for report in reports)


@pytest.mark.slow
@pytest.mark.xdist_group("processes")
async def test_a_429_in_one_process_pauses_every_process(
    redis_server: RedisServer, timed_gallery: TimedGallery
) -> None:
    async def answer_429_soon(went: float) -> None:
        await asyncio.sleep(0.8)
        timed_gallery.answer_429 = time.monotonic()

    reports, _, _ = await run_workers(timed_gallery, redis_server.url, 3.5, answer_429_soon)
    t429 = timed_gallery.sent_429
    assert t429 is not None
    # Grace: requests already past the limiter when the 429 left the server may still arrive.
    during = [t for t in timed_gallery.arrivals if t429 + 0.1 < t < t429 + 1.95]
    after = [t for t in timed_gallery.arrivals if t > t429 + 2.0]
    assert during == []
    assert after
    assert sum(report["errors"].get("RateLimited", 0) for report in reports) == 1


@pytest.mark.slow
@pytest.mark.xdist_group("processes")
async def test_requests_go_on_paced_locally_when_redis_dies(
    redis_server: RedisServer, timed_gallery: TimedGallery
) -> None:
    seconds = 3.0
    killed: list[float] = []

    async def kill_redis_soon(went: float) -> None:
        await asyncio.sleep(1.0)
        redis_server.kill()
        killed.append(time.monotonic())

    reports, stderrs, went = await run_workers(
        timed_gallery, redis_server.url, seconds, kill_redis_soon
    )
    after = [t for t in timed_gallery.arrivals if t > killed[0] + 0.5]
    left = went + seconds - (killed[0] + 0.5)
    assert len(after) >= 0.8 * RATE * left  # going on, at least at the shared rate
    # Each process alone at RATE, after a first bucket of RATE (aiolimiter's): no faster.
    assert len(after) <= PROCESSES * RATE * (left + 1) + PROCESSES
    assert all(report["errors"] == {} for report in reports)
    assert all(err.count("is unavailable") == 1 for err in stderrs)

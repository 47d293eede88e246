"""RedisCache and the shared tier, against a real redis-server on loopback.

Each test that needs Redis gets a server of its own (``redis_server``), started on a free port
with persistence off and killed at teardown. Where a test says "another process", it is one
(``tests/redis_helpers.py`` run as a script); elsewhere a second session with a RedisCache of
its own stands for one: two sessions share nothing but Redis.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import attrs
import pytest

pytest.importorskip(
    "redis", reason="redis-py is not installed: pip install -e '.[redis]' to run these tests"
)
import redis.asyncio
from clocks import FakeTimer
from redis_helpers import RedisServer, WrongRedis, free_port
from yarl import URL

from meigen_async import (
    ApiError,
    GalleryImage,
    GallerySession,
    ImageNotFound,
    InvalidResponse,
    RetryPolicy,
    ServerError,
)
from meigen_async._shared_codec import decode, encode, gallery_of, shared_key
from meigen_async._shared_tier import SharedTier
from meigen_async.cache import MemoryCache
from meigen_async.models import structure_image
from meigen_async.redis_cache import (
    VALIDATOR_KEEP,
    RedisCache,
    entry_key,
    lease_key,
)
from meigen_async.shared import SharedEntry, SharedImage
from meigen_async.testing import Answer, FakeGallery

WORKER = Path(__file__).with_name("redis_helpers.py")
PREFIX = "test:"
MISSING = "1999999999999999999"
NO_RETRY = RetryPolicy(max_retries=0)
_T = TypeVar("_T")


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A redis-server of this test's own on 127.0.0.1."""
    server = RedisServer().start()
    yield server
    server.kill()


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[redis.asyncio.Redis]:
    """A plain client, to look at and tamper with what is in Redis."""
    client = redis.asyncio.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    await client.aclose()


def records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "meigen_async" and r.levelno == level]


@asynccontextmanager
async def peer(url: str, redis_url: str, **options: Any) -> AsyncIterator[GallerySession]:
    """A session with a RedisCache of its own, as another process would have."""
    async with (
        RedisCache(redis_url, prefix=PREFIX) as cache,
        GallerySession(url, cache=cache, **options) as session,
    ):
        yield session


async def run_workers(
    count: int, gallery: FakeGallery, server: RedisServer, ids: list[str]
) -> list[dict[str, Any]]:
    """Run ``count`` worker processes fetching ``ids``, all released at the same instant."""
    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(WORKER),
            gallery.url,
            server.url,
            PREFIX,
            "5.0",
            *ids,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        for _ in range(count)
    ]
    for worker in workers:
        assert worker.stdout is not None
        assert await worker.stdout.readline() == b"ready\n"
    outputs = await asyncio.gather(*(worker.communicate(b"go\n") for worker in workers))
    assert all(worker.returncode == 0 for worker in workers)
    return [json.loads(stdout) for stdout, _ in outputs]


# -- Keys and values ------------------------------------------------------------------------------


def key_of(gallery: FakeGallery, image_id: str) -> str:
    """The Redis key of `image_id` of `gallery`, as a session on it writes it."""
    return entry_key(PREFIX, shared_key(gallery_of(URL(gallery.url)), image_id))


def lease_of(gallery: FakeGallery, image_id: str) -> str:
    return lease_key(PREFIX, shared_key(gallery_of(URL(gallery.url)), image_id))


def value_of(image: GalleryImage, fresh_until: float, *, etag: str | None = None) -> str:
    return encode(SharedImage(image=image, fresh_until=fresh_until, etag=etag))


def entry_in(raw_value: str | bytes | None) -> SharedImage:
    """The image entry a raw Redis value holds."""
    assert raw_value is not None
    entry = decode(raw_value)
    assert isinstance(entry, SharedImage)
    return entry


def test_keys_are_versioned_under_the_prefix() -> None:
    key = "https://gallery.test/api/images/42"
    assert entry_key("bot:", key) == "bot:v2:entry:https://gallery.test/api/images/42"
    assert lease_key("bot:", key) == "bot:v2:lease:https://gallery.test/api/images/42"


# -- Importing and building -----------------------------------------------------------------------


@pytest.mark.slow
def test_importing_the_package_does_not_import_redis() -> None:
    code = "import sys, meigen_async, meigen_async.cache; print('redis' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)
    assert result.stdout == b"False\n"


def test_redis_cache_is_importable_from_the_cache_module() -> None:
    from meigen_async import redis_cache

    assert RedisCache is redis_cache.RedisCache


async def test_a_redis_cache_needs_a_url_or_a_client_but_not_both() -> None:
    client = redis.asyncio.Redis(host="127.0.0.1", port=free_port())  # never connected
    with pytest.raises(ValueError, match="url or a client"):
        RedisCache()
    with pytest.raises(ValueError, match="not both"):
        RedisCache("redis://127.0.0.1:1/0", client=client)
    await client.aclose()


async def test_a_memory_cache_passed_in_is_the_session_cache(gallery: FakeGallery) -> None:
    memory = MemoryCache(10)
    async with GallerySession(gallery.url, cache=memory) as session:
        image = await session.get_image(gallery.ids[0])
    assert memory.get(gallery.ids[0]) is image


# -- The lease protocol, against a scripted shared cache -----------------------------------------

IMAGE = GalleryImage(id="42")


class Scripted:
    """A SharedCache that another process, as the test scripts it, changes at a given moment.

    ``moves[n]`` runs right after the n-th call (from 1) is answered.
    """

    def __init__(self, *, held: bool, moves: dict[int, Callable[[Scripted], None]]) -> None:
        self.entry: SharedEntry | None = None
        self.held = held
        self.calls: list[str] = []
        self.moves = moves

    def _answer(self, name: str, answer: _T) -> _T:
        self.calls.append(name)
        move = self.moves.pop(len(self.calls), None)
        if move is not None:
            move(self)
        return answer

    async def get(self, image_id: str) -> SharedEntry | None:
        return self._answer("get", self.entry)

    async def lease_held(self, image_id: str) -> bool:
        return self._answer("lease_held", self.held)

    async def try_lease(self, image_id: str, ms: int) -> str | None:
        return self._answer("try_lease", None if self.held else "token")

    async def release(self, image_id: str, token: str) -> None:
        self._answer("release", None)

    async def set(
        self, image_id: str, image: GalleryImage, ttl: float, stale_window: float
    ) -> None:
        self._answer("set", None)

    async def set_missing(self, image_id: str, ttl: float) -> None:
        self._answer("set_missing", None)

    async def invalidate(self, image_id: str) -> None:
        self._answer("invalidate", None)

    async def clear(self) -> None:
        self._answer("clear", None)

    async def close(self) -> None:
        pass


def stores_and_releases(shared: Scripted) -> None:
    """The lease holder's fetch ends: it stores the image, then releases its lease."""
    shared.entry = SharedImage(image=IMAGE, fresh_until=time.time() + 60)
    shared.held = False


async def test_a_value_stored_just_before_the_lease_is_taken_is_used_not_fetched() -> None:
    shared = Scripted(held=False, moves={1: stores_and_releases})
    tier = SharedTier(shared, lease_time=1.0, gallery="https://gallery.test")
    claim = await tier.claim("42")
    await tier.drain()
    assert claim.image == IMAGE
    assert shared.calls == ["get", "try_lease", "get", "release"]


async def test_a_miss_after_invalidate_waits_for_the_shared_deletion() -> None:
    class SlowToForget(Scripted):
        async def invalidate(self, image_id: str) -> None:
            await asyncio.sleep(0.05)
            self.entry = None

    shared = SlowToForget(held=False, moves={})
    stores_and_releases(shared)
    tier = SharedTier(shared, lease_time=1.0, gallery="https://gallery.test")
    tier.invalidate_later("42")
    claim = await tier.claim("42")
    await tier.drain()
    assert claim.image is None
    assert claim.token == "token"


async def test_a_waiter_looks_at_the_lease_before_the_value() -> None:
    # The holder finishes between the waiter's two looks: had the waiter read the value
    # first, it would have seen neither value nor lease, and fetched the image again.
    shared = Scripted(held=True, moves={3: stores_and_releases})
    tier = SharedTier(shared, lease_time=1.0, gallery="https://gallery.test")
    claim = await tier.claim("42")
    assert claim.image == IMAGE
    assert shared.calls == ["get", "try_lease", "lease_held", "get"]


# -- Sharing between processes --------------------------------------------------------------------


@pytest.mark.slow
async def test_an_image_fetched_by_one_process_is_read_from_redis_by_another(
    gallery: FakeGallery, redis_server: RedisServer
) -> None:
    image_id = gallery.ids[0]
    [worker] = await run_workers(1, gallery, redis_server, [image_id])
    async with peer(gallery.url, redis_server.url) as session:
        image = await session.get_image(image_id)
    assert worker["outcomes"] == {image_id: "ok"}
    assert image.id == image_id
    assert gallery.requests[image_id] == 1
    assert session.stats.requests == 0


@pytest.mark.slow
@pytest.mark.xdist_group("processes")
async def test_concurrent_misses_in_four_processes_make_one_request_per_id(
    images: list[dict[str, Any]], redis_server: RedisServer
) -> None:
    async with FakeGallery(images, delay=0.2) as gallery:
        ids = gallery.ids[:5]
        workers = await run_workers(4, gallery, redis_server, ids)
    assert all(w["outcomes"] == dict.fromkeys(ids, "ok") for w in workers)
    assert {image_id: gallery.requests[image_id] for image_id in ids} == dict.fromkeys(ids, 1)
    assert sum(w["requests"] for w in workers) == len(ids)


@pytest.mark.slow
async def test_a_404_found_by_one_process_is_shared_with_another(
    gallery: FakeGallery, redis_server: RedisServer
) -> None:
    [worker] = await run_workers(1, gallery, redis_server, [MISSING])
    async with peer(gallery.url, redis_server.url) as session:
        with pytest.raises(ImageNotFound, match="remembered in the cache"):
            await session.get_image(MISSING)
    assert worker["outcomes"] == {MISSING: "ImageNotFound"}
    assert gallery.requests[MISSING] == 1
    assert session.stats.requests == 0


async def test_a_shared_hit_counts_as_a_miss_answered_by_the_shared_cache_with_no_request(
    gallery: FakeGallery, redis_server: RedisServer
) -> None:
    image_id = gallery.ids[0]
    async with peer(gallery.url, redis_server.url) as first:
        await first.get_image(image_id)
    async with peer(gallery.url, redis_server.url) as second:
        await second.get_image(image_id)
        await second.get_image(image_id)
    stats = second.stats
    assert (stats.cache_hits, stats.cache_misses, stats.shared_hits) == (1, 1, 1)
    assert second.stats.requests == 0


# -- TTL rules ------------------------------------------------------------------------------------


async def test_an_image_key_lives_max_age_less_age(
    gallery: FakeGallery, redis_server: RedisServer, raw: redis.asyncio.Redis
) -> None:
    gallery.validators = False  # with them, the key is kept longer: see below
    image_id = gallery.ids[0]
    gallery.extra_headers[image_id] = {"Cache-Control": "max-age=600", "Age": "100"}
    async with peer(gallery.url, redis_server.url) as session:
        await session.get_image(image_id)
    assert 495_000 < await raw.pttl(key_of(gallery, image_id)) <= 500_000


async def test_an_image_key_lives_s_maxage_not_max_age(
    gallery: FakeGallery, redis_server: RedisServer, raw: redis.asyncio.Redis
) -> None:
    gallery.validators = False  # with them, the key is kept longer: see below
    image_id = gallery.ids[0]
    gallery.extra_headers[image_id] = {"Cache-Control": "max-age=60, s-maxage=600", "Age": "100"}
    async with peer(gallery.url, redis_server.url) as session:
        await session.get_image(image_id)
    assert 495_000 < await raw.pttl(key_of(gallery, image_id)) <= 500_000


async def test_a_private_image_is_kept_in_process_but_not_written_to_redis(
    gallery: FakeGallery, redis_server: RedisServer, raw: redis.asyncio.Redis
) -> None:
    image_id = gallery.ids[0]
    gallery.extra_headers[image_id] = {"Cache-Control": "private, max-age=600"}
    async with peer(gallery.url, redis_server.url) as session:
        await session.get_image(image_id)
        await session.get_image(image_id)
    assert await raw.exists(key_of(gallery, image_id)) == 0
    assert gallery.requests[image_id] == 1
    assert session.stats.cache_hits == 1


async def test_the_stale_window_lengthens_the_key_but_not_the_freshness(
    gallery: FakeGallery, redis_server: RedisServer, raw: redis.asyncio.Redis
) -> None:
    gallery.validators = False  # with them, the key is kept longer: see below
    image_id = gallery.ids[0]
    gallery.extra_headers[image_id] = {"Cache-Control": "max-age=600"}
    async with peer(gallery.url, redis_server.url, stale_if_error=60) as session:
        await session.get_image(image_id)
    raw_value = await raw.get(key_of(gallery, image_id))
    assert raw_value is not None
    entry = entry_in(raw_value)
    assert 655_000 < await raw.pttl(key_of(gallery, image_id)) <= 660_000
    assert 595 < entry.fresh_until - time.time() <= 600


async def test_a_no_store_image_is_not_written_to_redis(
    gallery: FakeGallery, redis_server: RedisServer, raw: redis.asyncio.Redis
) -> None:
    image_id = gallery.ids[0]
    gallery.extra_headers[image_id] = {"Cache-Control": "no-store"}
    async with peer(gallery.url, redis_server.url) as session:
        await session.get_image(image_id)
    assert await raw.exists(key_of(gallery, image_id)) == 0


async def test_a_404_key_lives_negative_ttl(
    gallery: FakeGallery, redis_server: RedisServer, raw: redis.asyncio.Redis
) -> None:
    async with peer(gallery.url, redis_server.url, negative_ttl=45) as session:
        with pytest.raises(ImageNotFound):
            await session.get_image(MISSING)
    assert 44_000 < await raw.pttl(key_of(gallery, MISSING)) <= 45_000


async def test_an_entry_past_its_fresh_until_is_fetched_again_though_its_key_lives(
    gallery: FakeGallery, redis_server: RedisServer, raw: redis.asyncio.Redis
) -> None:
    image_id = gallery.ids[0]
    image = structure_image(gallery.images[image_id])
    await raw.set(key_of(gallery, image_id), value_of(image, time.time() - 1), px=60_000)
    async with peer(gallery.url, redis_server.url) as session:
        await session.get_image(image_id)
    assert gallery.requests[image_id] == 1


@pytest.mark.slow
async def test_a_shared_image_is_kept_in_process_only_for_what_is_left_of_its_life(
    gallery: FakeGallery, redis_server: RedisServer, raw: redis.asyncio.Redis
) -> None:
    image_id = gallery.ids[0]
    image = structure_image(gallery.images[image_id])
    await raw.set(key_of(gallery, image_id), value_of(image, time.time() + 0.3), px=60_000)
    async with peer(gallery.url, redis_server.url) as session:
        await session.get_image(image_id)
        await asyncio.sleep(0.4)
        await session.get_image(image_id)
    assert gallery.requests[image_id] == 1
    assert session.stats.requests == 1


async def test_an_expired_image_from_redis_is_served_when_the_upstream_fails(
    gallery: FakeGallery, redis_server: RedisServer, raw: redis.asyncio.Redis
) -> None:
    image_id = gallery.ids[0]
    image = structure_image(gallery.images[image_id])
    await raw.set(key_of(gallery, image_id), value_of(image, time.time() - 5), px=60_000)
    gallery.script(image_id, Answer.error(503))
    async with peer(gallery.url, redis_server.url, stale_if_error=60, retry=NO_RETRY) as session:
        served = await session.get_image(image_id)
    assert served == image
    assert session.stats.stale_served == 1


async def test_an_unreadable_value_is_a_miss_and_is_overwritten(
    gallery: FakeGallery,
    redis_server: RedisServer,
    raw: redis.asyncio.Redis,
    logs: pytest.LogCaptureFixture,
) -> None:
    image_id = gallery.ids[0]
    await raw.set(key_of(gallery, image_id), "garbage", px=60_000)
    async with peer(gallery.url, redis_server.url) as session:
        image = await session.get_image(image_id)
    raw_value = await raw.get(key_of(gallery, image_id))
    assert raw_value is not None
    stored = entry_in(raw_value)
    assert stored.image == image
    warnings = records(logs, logging.WARNING)
    assert warnings
    assert all("unreadable shared cache entry" in r.getMessage() for r in warnings)


async def test_an_unreadable_value_is_dropped_even_when_the_fetch_stores_nothing(
    gallery: FakeGallery, redis_server: RedisServer, raw: redis.asyncio.Redis
) -> None:
    image_id = gallery.ids[0]
    await raw.set(key_of(gallery, image_id), '{"fresh_until": NaN}', px=60_000)
    gallery.script(image_id, Answer.error(503))
    async with peer(gallery.url, redis_server.url, retry=NO_RETRY) as session:
        with pytest.raises(ServerError):
            await session.get_image(image_id)
    assert gallery.requests[image_id] == 1
    assert await raw.exists(key_of(gallery, image_id)) == 0


async def test_another_ids_image_under_an_ids_key_is_never_served_and_is_replaced(
    gallery: FakeGallery, redis_server: RedisServer, raw: redis.asyncio.Redis
) -> None:
    wanted, other = gallery.ids[:2]
    intruder = structure_image(gallery.images[other])
    await raw.set(key_of(gallery, wanted), value_of(intruder, time.time() + 60), px=60_000)
    async with peer(gallery.url, redis_server.url) as session:
        image = await session.get_image(wanted)
    assert image == structure_image(gallery.images[wanted])
    assert gallery.requests[wanted] == 1
    assert gallery.requests[other] == 0
    stored = await raw.get(key_of(gallery, wanted))
    assert stored is not None
    assert entry_in(stored).image == image


async def test_an_image_claiming_ten_years_of_life_is_not_believed(
    gallery: FakeGallery, redis_server: RedisServer, raw: redis.asyncio.Redis
) -> None:
    image_id = gallery.ids[0]
    image = structure_image(gallery.images[image_id])
    forever = time.time() + 10 * 365 * 86400
    await raw.set(key_of(gallery, image_id), value_of(image, forever), px=60_000)
    async with peer(gallery.url, redis_server.url, ttl=60) as session:
        await session.get_image(image_id)
    assert gallery.requests[image_id] == 1
    stored = await raw.get(key_of(gallery, image_id))
    assert stored is not None
    assert 55 < entry_in(stored).fresh_until - time.time() <= 60


async def test_an_image_read_back_is_kept_in_process_no_longer_than_max_ttl(
    gallery: FakeGallery, redis_server: RedisServer, raw: redis.asyncio.Redis
) -> None:
    image_id = gallery.ids[0]
    image = structure_image(gallery.images[image_id])
    # Past max_ttl by less than the clock-skew allowance: served, but for max_ttl at most.
    await raw.set(key_of(gallery, image_id), value_of(image, time.time() + 30), px=60_000)
    memory = FakeTimer()
    async with peer(gallery.url, redis_server.url, max_ttl=5, default_ttl=5) as session:
        session._images.cache._timer = memory  # the in-process tier's clock, moved by hand
        await session.get_image(image_id)
        memory.now += 5
        await session.get_image(image_id)
    stats = session.stats
    assert (stats.requests, stats.cache_misses, stats.shared_hits) == (0, 2, 2)


# -- Answers never to be stored -------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirect_writes_nothing_to_redis_and_is_not_followed(
    gallery: FakeGallery, redis_server: RedisServer, raw: redis.asyncio.Redis, status: int
) -> None:
    image_id = gallery.ids[0]
    moved = Answer(status=status, headers={"Location": f"/moved/{image_id}"}, body=b"moved")
    gallery.script(image_id, moved, moved)
    async with peer(gallery.url, redis_server.url) as session:
        for _ in range(2):
            with pytest.raises(ApiError):
                await session.get_image(image_id)
    assert await raw.keys("*") == []
    assert gallery.paths == [f"/api/images/{image_id}"] * 2


async def test_an_answer_for_another_id_writes_nothing_to_redis(
    gallery: FakeGallery,
    images: list[dict[str, Any]],
    redis_server: RedisServer,
    raw: redis.asyncio.Redis,
) -> None:
    asked, answered = gallery.ids[:2]
    other = next(data for data in images if data["id"] == answered)
    gallery.script(asked, Answer(body=json.dumps({"success": True, "data": other}).encode()))
    async with peer(gallery.url, redis_server.url) as session:
        with pytest.raises(InvalidResponse):
            await session.get_image(asked)
    assert await raw.keys("*") == []


async def test_a_deeply_nested_redis_value_is_a_miss_fetched_upstream(
    gallery: FakeGallery, redis_server: RedisServer, raw: redis.asyncio.Redis
) -> None:
    image_id = gallery.ids[0]
    await raw.set(key_of(gallery, image_id), "[" * 5000, px=60_000)
    async with peer(gallery.url, redis_server.url) as session:
        image = await session.get_image(image_id)
    assert image.id == image_id
    assert gallery.requests[image_id] == 1


# -- Leases ---------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_a_lease_nobody_releases_is_waited_for_a_bounded_time_then_fetched_past(
    gallery: FakeGallery, redis_server: RedisServer, raw: redis.asyncio.Redis
) -> None:
    image_id = gallery.ids[0]
    # As a holder with the same lease time writes it (a longer one is not a lease: see
    # test_shared_caches.py), then dies.
    await raw.set(lease_of(gallery, image_id), "a-process-that-died", px=500)
    started = time.monotonic()
    async with peer(gallery.url, redis_server.url, timeout=0.5) as session:
        await session.get_image(image_id)
    assert 0.45 < time.monotonic() - started < 2.5
    assert gallery.requests[image_id] == 1


@pytest.mark.slow
async def test_a_lease_that_expires_is_fetched_past_at_once(
    gallery: FakeGallery, redis_server: RedisServer, raw: redis.asyncio.Redis
) -> None:
    image_id = gallery.ids[0]
    await raw.set(lease_of(gallery, image_id), "a-process-that-died", px=200)
    started = time.monotonic()
    async with peer(gallery.url, redis_server.url, timeout=5.0) as session:
        await session.get_image(image_id)
    assert time.monotonic() - started < 2.5
    assert gallery.requests[image_id] == 1


@pytest.mark.slow
async def test_a_failed_fetch_releases_its_lease_and_the_waiters_fetch_themselves(
    gallery: FakeGallery, redis_server: RedisServer
) -> None:
    image_id = gallery.ids[0]
    gallery.script(image_id, attrs.evolve(Answer.error(500), delay=0.3))
    async with (
        peer(gallery.url, redis_server.url, retry=NO_RETRY) as holder,
        peer(gallery.url, redis_server.url, timeout=5.0) as waiter,
    ):
        failing = asyncio.create_task(holder.get_image(image_id))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        image = await waiter.get_image(image_id)
        waited = time.monotonic() - started
        with pytest.raises(ServerError):
            await failing
    assert image.id == image_id
    assert waited < 2.5
    assert gallery.requests[image_id] == 2


async def test_releasing_a_lease_never_deletes_another_process_lease(
    redis_server: RedisServer, raw: redis.asyncio.Redis
) -> None:
    async with RedisCache(redis_server.url, prefix=PREFIX) as cache:
        token = await cache.try_lease("42", 100)
        assert token is not None
        # Ours expired and another process took the lease.
        await raw.set(lease_key(PREFIX, "42"), "theirs", px=60_000)
        await cache.release("42", token)
    assert await raw.get(lease_key(PREFIX, "42")) == "theirs"


# -- Forgetting -----------------------------------------------------------------------------------


async def test_invalidate_deletes_the_shared_entry_before_the_next_miss(
    gallery: FakeGallery, redis_server: RedisServer
) -> None:
    image_id = gallery.ids[0]
    async with peer(gallery.url, redis_server.url) as session:
        await session.get_image(image_id)
        session.invalidate(image_id)
        await session.get_image(image_id)
    assert gallery.requests[image_id] == 2


async def test_clear_cache_empties_redis_under_the_prefix_only(
    gallery: FakeGallery, redis_server: RedisServer, raw: redis.asyncio.Redis
) -> None:
    # "glob*:" as a pattern would match "globX:" too: the prefix must be matched literally.
    await raw.set("globX:v2:entry:1", "another prefix's entry")
    async with (
        RedisCache(redis_server.url, prefix="glob*:") as cache,
        GallerySession(gallery.url, cache=cache) as session,
    ):
        await session.get_images(gallery.ids[:3])
        assert len(await raw.keys("glob[*]:v2:entry:*")) == 3
        session.clear_cache()
    assert await raw.keys("*") == ["globX:v2:entry:1"]


async def test_closing_the_session_leaves_the_cache_open(
    gallery: FakeGallery, redis_server: RedisServer, raw: redis.asyncio.Redis
) -> None:
    async with RedisCache(redis_server.url, prefix=PREFIX) as cache:
        async with GallerySession(gallery.url, cache=cache) as session:
            await session.get_image(gallery.ids[0])
        assert not cache.closed
        async with GallerySession(gallery.url, cache=cache) as session:
            await session.get_image(gallery.ids[1])
    assert await raw.exists(key_of(gallery, gallery.ids[1])) == 1


# -- Outages --------------------------------------------------------------------------------------


async def test_a_redis_that_refuses_connections_fails_no_call_and_warns_once(
    gallery: FakeGallery, logs: pytest.LogCaptureFixture
) -> None:
    started = time.monotonic()
    async with peer(gallery.url, f"redis://127.0.0.1:{free_port()}/0") as session:
        found = await session.get_images(gallery.ids[:5])
        found += await session.get_images(gallery.ids[5:10])
    assert [image.id for image in found] == gallery.ids[:10]
    assert time.monotonic() - started < 2.0
    assert len(records(logs, logging.WARNING)) == 1


async def test_try_lease_returns_a_token_while_redis_is_down() -> None:
    # Nobody can hold the lease then: a None would leave the caller waiting on nobody.
    cache = RedisCache(f"redis://127.0.0.1:{free_port()}/0", prefix=PREFIX)
    try:
        # The first call finds Redis down; the second comes during the back-off.
        tokens = [await cache.try_lease(MISSING, 1000) for _ in range(2)]
    finally:
        await cache.close()
    assert all(isinstance(token, str) and token for token in tokens), tokens


@pytest.mark.slow
async def test_a_redis_that_never_answers_costs_at_most_its_timeout(
    gallery: FakeGallery,
) -> None:
    with socket.socket() as silent:  # accepts connections (in its backlog), never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        started = time.monotonic()
        async with peer(gallery.url, f"redis://127.0.0.1:{port}/0") as session:
            image = await session.get_image(gallery.ids[0])
        elapsed = time.monotonic() - started
    assert image.id == gallery.ids[0]
    assert elapsed < 1.5


@pytest.mark.slow
async def test_a_redis_that_stops_answering_costs_a_call_at_most_its_timeout(
    gallery: FakeGallery, redis_server: RedisServer
) -> None:
    async with peer(gallery.url, redis_server.url) as session:
        await session.get_image(gallery.ids[0])  # connected, and the connection kept
        started = time.monotonic()
        with redis_server.frozen():
            # Bounded here too, so that a call that would hang fails this test instead.
            image = await asyncio.wait_for(session.get_image(gallery.ids[1]), 5)
        elapsed = time.monotonic() - started
    assert image.id == gallery.ids[1]
    assert elapsed < 1.5


async def test_killing_redis_mid_run_loses_no_request(
    gallery: FakeGallery, redis_server: RedisServer, logs: pytest.LogCaptureFixture
) -> None:
    ids = gallery.ids[:12]
    async with peer(gallery.url, redis_server.url) as session:
        before = await session.get_images(ids[:4])
        redis_server.kill()
        after = await asyncio.gather(*(session.get_image(image_id) for image_id in ids))
    assert [image.id for image in before + after] == ids[:4] + ids
    assert {image_id: gallery.requests[image_id] for image_id in ids} == dict.fromkeys(ids, 1)
    assert len(records(logs, logging.WARNING)) == 1


@pytest.mark.slow
async def test_a_restarted_redis_is_used_again(
    gallery: FakeGallery,
    redis_server: RedisServer,
    raw: redis.asyncio.Redis,
    logs: pytest.LogCaptureFixture,
) -> None:
    ids = iter(gallery.ids)
    async with peer(gallery.url, redis_server.url) as session:
        await session.get_image(next(ids))
        redis_server.kill()
        await session.get_image(next(ids))
        redis_server.start()
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            image_id = next(ids)
            await session.get_image(image_id)
            if await raw.exists(key_of(gallery, image_id)):
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("nothing was written to the restarted Redis")
    assert len(records(logs, logging.WARNING)) == 1
    assert len(records(logs, logging.INFO)) == 1


# -- Validators ----------------------------------------------------------------------------------


async def test_an_image_with_validators_is_kept_in_redis_past_its_stale_window(
    gallery: FakeGallery, redis_server: RedisServer, raw: redis.asyncio.Redis
) -> None:
    image_id = gallery.ids[0]
    gallery.extra_headers[image_id] = {"Cache-Control": "max-age=600"}
    async with peer(gallery.url, redis_server.url) as session:
        await session.get_image(image_id)
    kept = await raw.pttl(key_of(gallery, image_id))
    assert 600_000 + VALIDATOR_KEEP * 1000 - 5_000 < kept <= 600_000 + VALIDATOR_KEEP * 1000


async def test_an_expired_image_from_redis_is_revalidated_with_its_etag(
    gallery: FakeGallery, redis_server: RedisServer, raw: redis.asyncio.Redis
) -> None:
    image_id = gallery.ids[0]
    async with peer(gallery.url, redis_server.url) as first:
        image = await first.get_image(image_id)
    raw_value = await raw.get(key_of(gallery, image_id))
    assert raw_value is not None
    etag = entry_in(raw_value).etag
    assert etag is not None
    await raw.set(key_of(gallery, image_id), value_of(image, time.time() - 1, etag=etag), px=60_000)
    async with peer(gallery.url, redis_server.url) as second:
        again = await second.get_image(image_id)
        stats = second.stats
    renewed = await raw.get(key_of(gallery, image_id))
    assert renewed is not None

    assert again == image
    assert gallery.conditional[image_id] == 1
    assert gallery.not_modified[image_id] == 1
    assert stats.revalidated == 1
    assert entry_in(renewed).fresh_until > time.time() + 3000


# -- Redis-compatible servers that answer wrongly -------------------------------------------------

HELLO = b"%1\r\n+proto\r\n:3\r\n"  # what HELLO 3 should get: a map


@pytest.mark.parametrize(
    "server",
    [
        # HELLO answered with an integer: redis-py raises AttributeError while connecting.
        lambda: WrongRedis(b":7\r\n"),
        # HELLO right, every command answered with an array: a reply of the wrong type.
        lambda: WrongRedis(b"*1\r\n:5\r\n", hello=HELLO),
        # HELLO right, every command answered with an integer (as GET never is).
        lambda: WrongRedis(b":5\r\n", hello=HELLO),
    ],
    ids=["hello-an-integer", "replies-arrays", "replies-integers"],
)
async def test_a_server_answering_with_the_wrong_reply_types_is_a_redis_failure(
    gallery: FakeGallery, logs: pytest.LogCaptureFixture, server: Callable[[], WrongRedis]
) -> None:
    async with server() as wrong, peer(gallery.url, wrong.url, retry=NO_RETRY) as session:
        found = await session.get_images(gallery.ids[:3])
        again = await session.get_images(gallery.ids[3:6])
    assert [image.id for image in found + again] == gallery.ids[:6]
    assert wrong.commands  # it was asked, and failed
    warnings = records(logs, logging.WARNING)
    assert len(warnings) == 1
    assert "unavailable" in warnings[0].getMessage()


async def test_an_entry_under_a_key_of_the_format_before_galleries_is_never_read(
    gallery: FakeGallery, redis_server: RedisServer, raw: redis.asyncio.Redis
) -> None:
    image_id = gallery.ids[0]
    # As the previous release wrote it: the id alone names it, whatever gallery it came from.
    other = {**gallery.images[image_id], "text": "an image of another gallery"}
    old = json.dumps({"fresh_until": time.time() + 600, "image": other})
    await raw.set(f"{PREFIX}v1:image:{image_id}", old, px=60_000)
    async with peer(gallery.url, redis_server.url) as session:
        image = await session.get_image(image_id)
    assert image.text == gallery.images[image_id]["text"]
    assert gallery.requests[image_id] == 1

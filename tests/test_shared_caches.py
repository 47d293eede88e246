"""One conformance suite for every shared cache: SQLite, Redis and an in-memory one.

Each case runs against each backend (``backend``), through the shared tier as a session uses
it: round trips, poisoned values of each kind, leases (poisoned lease records too), expiry,
clear, a closed cache, and two galleries sharing one backend. A new backend gets them all by
adding a ``Backend`` below. Redis cases skip without ``redis-server`` (or redis-py), as the
other Redis tests do; one server serves the module, each test under a prefix of its own.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest
from redis_helpers import RedisServer
from shared_helpers import MemorySharedCache, MemoryStore
from yarl import URL

from meigen_async import GallerySession, ImageNotFound
from meigen_async._core import Raise, Store, from_shared
from meigen_async._protocol import Validators
from meigen_async._shared_codec import FORMAT, gallery_of, shared_key
from meigen_async._shared_tier import Claim, SharedTier
from meigen_async.cache import CachePolicy
from meigen_async.models import structure_image, unstructure_image
from meigen_async.shared import SharedCache, SharedImage, SharedMissing
from meigen_async.sqlite_cache import SQLiteCache
from meigen_async.testing import FakeGallery, sample_images

GALLERY = gallery_of(URL("https://gallery.test"))
IMAGE = structure_image(sample_images()[0])
ID = IMAGE.id
KEY = shared_key(GALLERY, ID)
LEASE_MS = 60_000
DATE = "Fri, 09 Jan 2026 10:00:00 GMT"


class Backend(Protocol):
    """One kind of shared cache, and the raw access a test needs to poison it."""

    async def open(self) -> SharedCache:
        """A new cache on the same store, as another process would open it; closed at teardown."""
        ...

    async def plant(self, key: str, raw: str) -> None:
        """Store `raw` under `key` as the backend stores values, alive for an hour."""
        ...

    async def peek(self, key: str) -> object | None:
        """The value stored under `key`, as stored, or None."""
        ...

    async def plant_lease(self, key: str, until: object, pid: object) -> bool:
        """Store a lease record on `key`; False when this backend's records cannot hold it."""
        ...

    async def close(self) -> None: ...


class SQLiteBackend:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.caches: list[SQLiteCache] = []

    async def open(self) -> SharedCache:
        cache = SQLiteCache(self.path)
        self.caches.append(cache)
        await cache.lease_held("-")  # makes the file and its tables
        return cache

    async def plant(self, key: str, raw: str) -> None:
        if not self.caches:
            await self.open()
        with sqlite3.connect(self.path) as connection:
            connection.execute(
                "INSERT OR REPLACE INTO entries VALUES (?, 'image', ?, ?, ?)",
                (key, raw, time.time() + 3600, time.time()),
            )

    async def peek(self, key: str) -> object | None:
        with sqlite3.connect(self.path) as connection:
            row = connection.execute("SELECT value FROM entries WHERE id = ?", (key,)).fetchone()
        return None if row is None else row[0]

    async def plant_lease(self, key: str, until: object, pid: object) -> bool:
        if not self.caches:
            await self.open()
        try:
            with sqlite3.connect(self.path) as connection:
                connection.execute(
                    "INSERT OR REPLACE INTO leases VALUES (?, 'theirs', ?, ?)", (key, until, pid)
                )
        except (sqlite3.Error, OverflowError):  # NULL, NaN (NULL too), an int past 64 bits
            return False
        return True

    async def close(self) -> None:
        for cache in self.caches:
            await cache.close()


class RedisBackend:
    def __init__(self, url: str, prefix: str) -> None:
        import redis.asyncio

        self.url = url
        self.prefix = prefix
        self.raw = redis.asyncio.Redis.from_url(url)
        self.caches: list[SharedCache] = []

    async def open(self) -> SharedCache:
        from meigen_async.redis_cache import RedisCache

        cache = RedisCache(self.url, prefix=self.prefix)
        self.caches.append(cache)
        return cache

    async def plant(self, key: str, raw: str) -> None:
        from meigen_async.redis_cache import entry_key

        await self.raw.set(entry_key(self.prefix, key), raw, px=3_600_000)

    async def peek(self, key: str) -> object | None:
        from meigen_async.redis_cache import entry_key

        value: object | None = await self.raw.get(entry_key(self.prefix, key))
        return value

    async def plant_lease(self, key: str, until: object, pid: object) -> bool:
        from meigen_async.redis_cache import lease_key

        # A Redis lease is a token and the key's expiry: no process id, no expiry of any type.
        if pid != os.getpid() or not (until is None or _is_finite_float(until)):
            return False
        name = lease_key(self.prefix, key)
        if until is None:
            await self.raw.set(name, "theirs")
        else:
            await self.raw.set(name, "theirs", px=math.ceil((until - time.time()) * 1000))
        return True

    async def close(self) -> None:
        for cache in self.caches:
            await cache.close()
        await self.raw.aclose()


def _is_finite_float(value: object) -> bool:
    return isinstance(value, float) and math.isfinite(value)


class MemoryBackend:
    def __init__(self) -> None:
        self.store = MemoryStore()

    async def open(self) -> SharedCache:
        return MemorySharedCache(self.store)

    async def plant(self, key: str, raw: str) -> None:
        self.store.entries[key] = (raw, time.time() + 3600)

    async def peek(self, key: str) -> object | None:
        found = self.store.entries.get(key)
        return None if found is None else found[0]

    async def plant_lease(self, key: str, until: object, pid: object) -> bool:
        self.store.leases[key] = ("theirs", until, pid)
        return True

    async def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """One redis-server for the module's Redis cases, which skip without it."""
    pytest.importorskip("redis", reason="redis-py is not installed: pip install -e '.[redis]'")
    server = RedisServer().start()
    yield server.url
    server.kill()


_prefixes = itertools.count()


@pytest.fixture(params=["sqlite", "redis", "memory"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """Each kind of shared cache, fresh for the test."""
    made: Backend
    if request.param == "sqlite":
        made = SQLiteBackend(tmp_path / "cache.sqlite")
    elif request.param == "redis":
        made = RedisBackend(request.getfixturevalue("redis_url"), f"t{next(_prefixes)}:")
    else:
        made = MemoryBackend()
    yield made
    await made.close()


def warnings_in(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


POLICY = CachePolicy(max_ttl=600, default_ttl=300, negative_ttl=30)


def tier_on(
    cache: SharedCache, *, gallery: str = GALLERY, ahead: float = 0.0, lease_time: float = 5.0
) -> SharedTier:
    """A session's shared tier on `cache`, its wall clock `ahead` seconds in the future."""
    return SharedTier(
        cache,
        lease_time=lease_time,
        gallery=gallery,
        policy=POLICY,
        clock=lambda: time.time() + ahead,
    )


def kept(claim: Claim) -> Store | Raise | None:
    """What the fetch keeps in process of what the shared tier found (nothing in process yet)."""
    found = claim.found
    if found is None:
        return None
    return from_shared(
        found.entry, found.left, image_id=ID, policy=POLICY, stale_window=0, stored=False
    )


def validators_kept(claim: Claim) -> Validators | None:
    store = kept(claim)
    assert isinstance(store, Store)
    return store.validators


# -- Round trips -----------------------------------------------------------------------------------


async def test_an_image_and_its_validators_come_back_as_stored(backend: Backend) -> None:
    validators = Validators(etag='"v1"', last_modified=DATE)
    await tier_on(await backend.open()).store(ID, IMAGE, 60, validators)
    reader = tier_on(await backend.open())
    claim = await reader.claim(ID)
    assert claim.image == IMAGE
    assert validators_kept(claim) == validators


async def test_a_404_comes_back_as_a_404(backend: Backend) -> None:
    await tier_on(await backend.open()).store_missing(ID, 30)
    reader = tier_on(await backend.open())
    claim = await reader.claim(ID)
    assert claim.missing
    assert isinstance(kept(claim), Raise)


async def test_a_stored_value_is_opaque_text_of_the_codec(backend: Backend) -> None:
    await tier_on(await backend.open()).store(ID, IMAGE, 60)
    raw = await backend.peek(KEY)
    assert isinstance(raw, (str, bytes))
    assert json.loads(raw)["v"] == FORMAT


# -- Poisoned values -------------------------------------------------------------------------------


def value(**fields: Any) -> str:
    """A stored image value of this format, with `fields` in place of the good ones."""
    good: dict[str, Any] = {
        "v": FORMAT,
        "kind": "image",
        "fresh_until": time.time() + 60,
        "image": unstructure_image(IMAGE),
    }
    return json.dumps(good | fields)


def missing_value(until: Any) -> str:
    return json.dumps({"v": FORMAT, "kind": "missing", "until": until})


OTHER = sample_images()[1]

# One of each kind; every variant of each is in test_shared_codec.py, on the codec alone.
POISONS: dict[str, Any] = {
    "not JSON": lambda: "garbage",
    "nested past the parser": lambda: "[" * 100_000,
    "a value of the format before keys named their gallery": lambda: json.dumps(
        {"fresh_until": time.time() + 60, "image": unstructure_image(IMAGE)}
    ),
    "neither an image nor a 404": lambda: value(kind="other"),
    "an image that is no image data": lambda: value(image={"id": 5}),
    "another id's image": lambda: value(image=OTHER),
    "an expiry that is NaN": lambda: value(fresh_until=math.nan),
    "an expiry of 400 digits": lambda: value(fresh_until=10**400),
    # More digits than Python's int() takes: json.loads raises ValueError, not JSONDecodeError.
    "an expiry of 5000 digits": lambda: value(fresh_until="X").replace('"X"', "9" * 5000),
    "an expiry that is a string": lambda: value(fresh_until="soon"),
    "an expiry ten years ahead": lambda: value(fresh_until=time.time() + 10 * 365 * 86400),
    "a 404 whose expiry is NaN": lambda: missing_value(math.nan),
    "a 404 a day ahead": lambda: missing_value(time.time() + 86400),
}


@pytest.mark.parametrize("poison", list(POISONS))
async def test_a_poisoned_value_is_a_miss_and_is_deleted(
    backend: Backend, poison: str, logs: pytest.LogCaptureFixture
) -> None:
    await backend.plant(KEY, POISONS[poison]())
    tier = tier_on(await backend.open())
    claim = await tier.claim(ID)
    assert (claim.image, claim.missing) == (None, False)
    assert claim.token is not None  # a miss: this process fetches
    assert claim.found is None
    assert await backend.peek(KEY) is None
    assert any("dropped" in message for message in warnings_in(logs))


@pytest.mark.parametrize(
    ("fields", "kept"),
    [
        ({"etag": "a\r\nX-Evil: 1"}, None),
        ({"etag": "caf\u00e9"}, None),
        ({"etag": "x" * 10_000}, None),
        ({"etag": 12}, None),
        ({"etag": "a\r\nX-Evil: 1", "last_modified": DATE}, Validators(last_modified=DATE)),
        ({"last_modified": "not a date"}, None),
    ],
    ids=["crlf", "not-ascii", "too-long", "a-number", "bad-etag-good-date", "not-a-date"],
)
async def test_a_validator_that_may_not_be_sent_is_dropped_and_the_image_served(
    backend: Backend, fields: dict[str, Any], kept: Validators | None
) -> None:
    await backend.plant(KEY, value(**fields))
    tier = tier_on(await backend.open())
    claim = await tier.claim(ID)
    assert claim.image == IMAGE
    assert validators_kept(claim) == kept


# -- Leases ----------------------------------------------------------------------------------------


async def test_a_lease_is_held_until_its_holder_releases_it(backend: Backend) -> None:
    holder, other = await backend.open(), await backend.open()
    token = await holder.try_lease(KEY, LEASE_MS)
    assert token is not None
    assert await other.try_lease(KEY, LEASE_MS) is None
    assert await other.lease_held(KEY)
    await other.release(KEY, "not-the-token")
    assert await other.lease_held(KEY)
    await holder.release(KEY, token)
    assert not await other.lease_held(KEY)
    assert await other.try_lease(KEY, LEASE_MS) is not None


async def test_a_lease_expires_by_itself(backend: Backend) -> None:
    holder, other = await backend.open(), await backend.open()
    assert await holder.try_lease(KEY, 1) is not None
    await asyncio.sleep(0.01)  # the backend's own clock: nothing to fake
    assert not await other.lease_held(KEY)
    assert await other.try_lease(KEY, LEASE_MS) is not None


def _soon() -> float:
    return time.time() + 3  # within the lease time: only the process id is wrong


LEASE_POISONS: dict[str, Any] = {
    "no expiry": lambda: (None, os.getpid()),
    "an expiry ten years ahead": lambda: (time.time() + 10 * 365 * 86400, os.getpid()),
    "an expiry that is a string": lambda: ("soon", os.getpid()),
    "an expiry that is NaN": lambda: (math.nan, os.getpid()),
    "an expiry of 400 digits": lambda: (10**400, os.getpid()),
    "a process id that is a string": lambda: (_soon(), "me"),
    "a process id of 0": lambda: (_soon(), 0),
    "a negative process id": lambda: (_soon(), -1),
    "a process id past 2**31": lambda: (_soon(), 2**40),
}


@pytest.mark.parametrize("poison", list(LEASE_POISONS))
async def test_a_poisoned_lease_is_taken_over_at_once(backend: Backend, poison: str) -> None:
    until, pid = LEASE_POISONS[poison]()
    if not await backend.plant_lease(KEY, until, pid):
        pytest.skip("this backend's lease records cannot hold it")
    tier = tier_on(await backend.open(), lease_time=5.0)
    started = time.monotonic()
    claim = await tier.claim(ID)
    assert claim.token is not None  # taken: no wait for a holder that is not there
    assert time.monotonic() - started < 1.0
    other = await backend.open()
    assert await other.try_lease(KEY, LEASE_MS) is None  # and now held, by this process
    assert await other.lease_held(KEY)


# -- Expiry ----------------------------------------------------------------------------------------


async def test_an_image_past_its_freshness_is_a_miss_kept_to_be_revalidated(
    backend: Backend,
) -> None:
    await tier_on(await backend.open()).store(ID, IMAGE, 60, Validators(etag='"v1"'))
    later = tier_on(await backend.open(), ahead=120)
    claim = await later.claim(ID)
    assert (claim.image, claim.token is not None) == (None, True)
    assert validators_kept(claim) == Validators(etag='"v1"')
    assert await backend.peek(KEY) is not None


async def test_an_entry_past_its_keeping_time_is_gone(backend: Backend) -> None:
    cache = await backend.open()
    await cache.set(KEY, IMAGE, 0.005, 0)
    await cache.set_missing(shared_key(GALLERY, "gone"), 0.005)
    await asyncio.sleep(0.02)  # the backend's own clock: nothing to fake
    assert await cache.get(KEY) is None
    assert await cache.get(shared_key(GALLERY, "gone")) is None


# -- Forgetting ------------------------------------------------------------------------------------


async def test_invalidate_forgets_one_entry(backend: Backend) -> None:
    cache = await backend.open()
    await cache.set(KEY, IMAGE, 60, 0)
    await cache.set_missing(shared_key(GALLERY, "other"), 30)
    await cache.invalidate(KEY)
    assert await cache.get(KEY) is None
    assert isinstance(await cache.get(shared_key(GALLERY, "other")), SharedMissing)


async def test_clear_forgets_every_entry_and_leaves_the_leases(backend: Backend) -> None:
    cache, other = await backend.open(), await backend.open()
    await cache.set(KEY, IMAGE, 60, 0)
    await cache.set_missing(shared_key(GALLERY, "other"), 30)
    token = await cache.try_lease(KEY, LEASE_MS)
    await other.clear()
    assert await cache.get(KEY) is None
    assert await cache.get(shared_key(GALLERY, "other")) is None
    assert token is not None
    assert await other.lease_held(KEY)


# -- A closed cache --------------------------------------------------------------------------------


async def test_a_closed_cache_answers_as_if_empty_without_a_word(
    backend: Backend, logs: pytest.LogCaptureFixture
) -> None:
    writer, cache = await backend.open(), await backend.open()
    await writer.set(KEY, IMAGE, 60, 0)
    await cache.close()
    await cache.close()  # idempotent
    assert await cache.get(KEY) is None
    await cache.set(shared_key(GALLERY, "new"), IMAGE, 60, 0)
    await cache.set_missing(shared_key(GALLERY, "gone"), 30)
    await cache.invalidate(KEY)
    await cache.clear()
    assert await cache.try_lease(KEY, LEASE_MS) is not None  # nobody to wait for
    assert not await cache.lease_held(KEY)
    await cache.release(KEY, "token")
    assert isinstance(await writer.get(KEY), SharedImage)  # nothing was deleted
    assert await writer.get(shared_key(GALLERY, "new")) is None  # nor written
    assert warnings_in(logs) == []


# -- Two galleries, one cache ----------------------------------------------------------------------


@pytest.fixture
async def two_galleries() -> AsyncIterator[tuple[FakeGallery, FakeGallery]]:
    """Two loopback galleries serving different images under the same ids."""
    first = sample_images()[:3]
    second = [{**data, "text": f"the other gallery's {data['id']}"} for data in first]
    async with FakeGallery(first) as one, FakeGallery(second) as two:
        yield one, two


async def test_two_galleries_sharing_one_cache_never_see_each_others_images(
    backend: Backend, two_galleries: tuple[FakeGallery, FakeGallery]
) -> None:
    one, two = two_galleries
    async with GallerySession(one.url, cache=await backend.open()) as first:
        mine = await first.get_images(one.ids)
    async with GallerySession(two.url, cache=await backend.open()) as second:
        theirs = await second.get_images(two.ids)
    assert [image.text for image in mine] == [one.images[i]["text"] for i in one.ids]
    assert [image.text for image in theirs] == [two.images[i]["text"] for i in two.ids]
    assert second.stats.requests == 3
    assert two.requests == dict.fromkeys(two.ids, 1)


async def test_a_404_of_one_gallery_is_not_remembered_for_another(
    backend: Backend, two_galleries: tuple[FakeGallery, FakeGallery]
) -> None:
    one, two = two_galleries
    image_id = two.ids[0]
    del one.images[image_id]
    async with GallerySession(one.url, cache=await backend.open()) as first:
        with pytest.raises(ImageNotFound):
            await first.get_image(image_id)
    async with GallerySession(two.url, cache=await backend.open()) as second:
        assert (await second.get_image(image_id)).id == image_id
    assert two.requests[image_id] == 1


async def test_a_lease_of_one_gallery_does_not_hold_back_another(backend: Backend) -> None:
    holder = await backend.open()
    assert await holder.try_lease(KEY, 1000) is not None
    elsewhere = gallery_of(URL("https://elsewhere.test"))
    tier = tier_on(await backend.open(), gallery=elsewhere, lease_time=1.0)
    assert (await tier.claim(ID)).token is not None  # not waited out: a lease of its own

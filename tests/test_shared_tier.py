"""What the shared tier makes of the entries a shared cache hands back (with fake clocks)."""

from __future__ import annotations

import math

import pytest
from clocks import FakeTimer

from meigen_async._shared_codec import shared_key
from meigen_async._shared_tier import SharedTier
from meigen_async.cache import CachePolicy, MemoryCache
from meigen_async.models import GalleryImage
from meigen_async.shared import SharedEntry, SharedImage, SharedMissing

A = GalleryImage(id="a", likes=1)
B = GalleryImage(id="b", likes=2)


# -- Entries read back from a shared cache (the check itself: test_shared_codec.py) -------------

NOW = 1_700_000_000.0  # the wall clock, in seconds since the epoch
POLICY = CachePolicy(max_ttl=600, default_ttl=300, negative_ttl=30)
GALLERY = "https://gallery.test"


def image_until(until: float, image: GalleryImage = A) -> SharedImage:
    return SharedImage(image=image, fresh_until=until)


class OneEntry:
    """A SharedCache holding one entry for every id, recording what the tier asks of it."""

    def __init__(self, entry: object) -> None:
        self.entry = entry
        self.asked: list[str] = []
        self.invalidated: list[str] = []

    async def get(self, image_id: str) -> SharedEntry | None:
        self.asked.append(image_id)
        return self.entry  # type: ignore[return-value]  # whatever a user's cache hands back

    async def invalidate(self, image_id: str) -> None:
        self.invalidated.append(image_id)
        self.entry = None

    async def try_lease(self, image_id: str, ms: int) -> str | None:
        return "token"

    async def lease_held(self, image_id: str) -> bool:
        return False

    async def release(self, image_id: str, token: str) -> None:
        pass

    async def set(
        self, image_id: str, image: GalleryImage, ttl: float, stale_window: float
    ) -> None:
        pass

    async def set_missing(self, image_id: str, ttl: float) -> None:
        pass

    async def clear(self) -> None:
        pass

    async def close(self) -> None:
        pass


def tier_on(shared: OneEntry, timer: FakeTimer, policy: CachePolicy = POLICY) -> SharedTier:
    return SharedTier(
        MemoryCache(10, timer=timer),
        shared,
        lease_time=1.0,
        gallery=GALLERY,
        policy=policy,
        clock=lambda: NOW,
    )


async def test_an_image_read_back_is_kept_in_process_no_longer_than_max_ttl(
    timer: FakeTimer,
) -> None:
    tier = tier_on(OneEntry(image_until(NOW + 630)), timer)
    claim = await tier.claim("a")
    assert claim.image == A
    timer.now += 599
    assert tier.memory.get("a") == A
    timer.now += 1
    assert tier.memory.get("a") is None


async def test_a_404_read_back_is_remembered_in_process_no_longer_than_negative_ttl(
    timer: FakeTimer,
) -> None:
    tier = tier_on(OneEntry(SharedMissing(until=NOW + 80)), timer)
    assert (await tier.claim("a")).missing
    timer.now += 29
    assert tier.memory.is_missing("a")
    timer.now += 1
    assert not tier.memory.is_missing("a")


async def test_an_image_claiming_ten_years_is_a_miss_and_is_dropped(timer: FakeTimer) -> None:
    shared = OneEntry(image_until(NOW + 10 * 365 * 86400))
    tier = tier_on(shared, timer)
    claim = await tier.claim("a")
    assert (claim.image, claim.token) == (None, "token")
    assert shared.invalidated == [shared_key(GALLERY, "a")]
    assert tier.memory.get_stale("a") is None


async def test_an_image_with_a_nan_expiry_is_a_miss_and_is_dropped(timer: FakeTimer) -> None:
    shared = OneEntry(image_until(math.nan))
    claim = await tier_on(shared, timer).claim("a")
    assert claim.token == "token"
    assert shared.invalidated == [shared_key(GALLERY, "a")]


async def test_another_ids_image_is_a_miss_and_is_dropped(timer: FakeTimer) -> None:
    shared = OneEntry(image_until(NOW + 60, B))
    tier = tier_on(shared, timer)
    claim = await tier.claim("a")
    assert (claim.image, claim.token) == (None, "token")
    assert shared.invalidated == [shared_key(GALLERY, "a")]
    assert tier.memory.get_stale("a") is None


async def test_an_expired_image_is_a_miss_but_is_not_dropped(timer: FakeTimer) -> None:
    shared = OneEntry(image_until(NOW - 5))
    claim = await tier_on(shared, timer).claim("a")
    assert claim.token == "token"
    assert shared.invalidated == []


async def test_an_expired_image_with_validators_is_kept_in_process_to_be_revalidated(
    timer: FakeTimer,
) -> None:
    from meigen_async._protocol import Validators

    entry = SharedImage(image=A, fresh_until=NOW - 10_000, etag='"v1"')
    tier = tier_on(OneEntry(entry), timer)
    claim = await tier.claim("a")
    assert claim.token == "token"
    assert tier.memory.get("a") is None
    assert tier.memory.validators("a") == (A, Validators(etag='"v1"'))


async def test_the_shared_cache_is_asked_for_the_galleries_key_not_the_bare_id(
    timer: FakeTimer,
) -> None:
    shared = OneEntry(None)
    await tier_on(shared, timer).claim("a")
    assert shared.asked == ["https://gallery.test/api/images/a"] * 2


@pytest.mark.parametrize(
    "entry",
    [
        "a string",
        SharedImage(image="not an image", fresh_until=NOW + 60),  # type: ignore[arg-type]
        image_until(10**400),
        image_until("soon"),  # type: ignore[arg-type]
        SharedMissing(until=math.nan),
    ],
    ids=["not-an-entry", "not-an-image", "400-digits", "a-string", "nan-404"],
)
async def test_whatever_a_users_cache_hands_back_is_checked_never_raised(
    timer: FakeTimer, entry: object
) -> None:
    shared = OneEntry(entry)
    tier = tier_on(shared, timer)
    claim = await tier.claim("a")
    assert (claim.image, claim.missing, claim.token) == (None, False, "token")
    assert shared.invalidated == [shared_key(GALLERY, "a")]

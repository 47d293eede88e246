"""What the shared tier makes of the entries a shared cache hands back (with fake clocks)."""

from __future__ import annotations

import math

import pytest

from meigen_async._shared_codec import shared_key
from meigen_async._shared_tier import SharedTier
from meigen_async.cache import CachePolicy
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


def tier_on(shared: OneEntry, policy: CachePolicy = POLICY) -> SharedTier:
    return SharedTier(
        shared,
        lease_time=1.0,
        gallery=GALLERY,
        policy=policy,
        clock=lambda: NOW,
    )


async def test_an_image_read_back_is_fresh_no_longer_than_max_ttl() -> None:
    claim = await tier_on(OneEntry(image_until(NOW + 630))).claim("a")
    assert claim.image == A
    assert claim.found is not None
    assert claim.found.left == 600


async def test_a_404_read_back_is_fresh_no_longer_than_negative_ttl() -> None:
    claim = await tier_on(OneEntry(SharedMissing(until=NOW + 80))).claim("a")
    assert claim.missing
    assert claim.found is not None
    assert claim.found.left == 30


async def test_an_image_claiming_ten_years_is_a_miss_and_is_dropped() -> None:
    shared = OneEntry(image_until(NOW + 10 * 365 * 86400))
    claim = await tier_on(shared).claim("a")
    assert (claim.found, claim.token) == (None, "token")
    assert shared.invalidated == [shared_key(GALLERY, "a")]


async def test_an_image_with_a_nan_expiry_is_a_miss_and_is_dropped() -> None:
    shared = OneEntry(image_until(math.nan))
    claim = await tier_on(shared).claim("a")
    assert claim.token == "token"
    assert shared.invalidated == [shared_key(GALLERY, "a")]


async def test_another_ids_image_is_a_miss_and_is_dropped() -> None:
    shared = OneEntry(image_until(NOW + 60, B))
    claim = await tier_on(shared).claim("a")
    assert (claim.found, claim.token) == (None, "token")
    assert shared.invalidated == [shared_key(GALLERY, "a")]


async def test_an_expired_image_is_no_answer_but_is_handed_back_and_not_dropped() -> None:
    shared = OneEntry(SharedImage(image=A, fresh_until=NOW - 10_000, etag='"v1"'))
    claim = await tier_on(shared).claim("a")
    assert (claim.answered, claim.image, claim.token) == (False, None, "token")
    assert claim.found is not None
    assert claim.found.entry == SharedImage(image=A, fresh_until=NOW - 10_000, etag='"v1"')
    assert shared.invalidated == []


async def test_the_shared_cache_is_asked_for_the_galleries_key_not_the_bare_id() -> None:
    shared = OneEntry(None)
    await tier_on(shared).claim("a")
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
async def test_whatever_a_users_cache_hands_back_is_checked_never_raised(entry: object) -> None:
    shared = OneEntry(entry)
    claim = await tier_on(shared).claim("a")
    assert (claim.found, claim.token) == (None, "token")
    assert shared.invalidated == [shared_key(GALLERY, "a")]

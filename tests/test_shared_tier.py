"""What the shared tier makes of the entries a shared cache hands back (with fake clocks)."""

from __future__ import annotations

import math

import pytest
from clocks import FakeTimer

from meigen_async._shared_tier import CLOCK_SKEW, SharedTier, check_shared_entry
from meigen_async.cache import CachePolicy, MemoryCache
from meigen_async.models import GalleryImage
from meigen_async.shared import SharedEntry, SharedImage, SharedMissing

A = GalleryImage(id="a", likes=1)
B = GalleryImage(id="b", likes=2)


# -- Entries read back from a shared cache --------------------------------------------------------

NOW = 1_700_000_000.0  # the wall clock, in seconds since the epoch
POLICY = CachePolicy(max_ttl=600, default_ttl=300, negative_ttl=30)


def image_until(until: float, image: GalleryImage = A) -> SharedImage:
    return SharedImage(image=image, fresh_until=until)


def test_an_image_read_back_is_fresh_for_what_is_left_of_its_life() -> None:
    assert check_shared_entry(image_until(NOW + 100), "a", policy=POLICY, now=NOW) == 100


def test_an_image_read_back_is_fresh_no_longer_than_max_ttl() -> None:
    # Within the clock-skew allowance: believable, but capped.
    left = check_shared_entry(image_until(NOW + 630), "a", policy=POLICY, now=NOW)
    assert left == 600


def test_an_explicit_ttl_caps_an_image_read_back_instead_of_max_ttl() -> None:
    policy = CachePolicy(ttl=20, max_ttl=600)
    assert check_shared_entry(image_until(NOW + 50), "a", policy=policy, now=NOW) == 20


def test_a_default_ttl_above_max_ttl_is_a_lifetime_the_session_gives_itself() -> None:
    policy = CachePolicy(max_ttl=600, default_ttl=7200)
    assert check_shared_entry(image_until(NOW + 7000), "a", policy=policy, now=NOW) == 7000


def test_a_404_read_back_is_remembered_no_longer_than_negative_ttl() -> None:
    assert check_shared_entry(SharedMissing(until=NOW + 80), "a", policy=POLICY, now=NOW) == 30


def test_an_expired_image_read_back_has_no_life_left_but_is_not_refused() -> None:
    assert check_shared_entry(image_until(NOW - 5), "a", policy=POLICY, now=NOW) == -5


@pytest.mark.parametrize(
    "entry",
    [
        image_until(NOW + 10 * 365 * 86400),
        image_until(NOW + 600 + CLOCK_SKEW + 1),
        SharedMissing(until=NOW + 30 + CLOCK_SKEW + 1),
    ],
    ids=["image-10-years", "image-past-the-skew", "404-past-the-skew"],
)
def test_a_lifetime_beyond_the_cap_and_the_clock_skew_is_refused(entry: SharedEntry) -> None:
    with pytest.raises(ValueError, match="more than"):
        check_shared_entry(entry, "a", policy=POLICY, now=NOW)


@pytest.mark.parametrize("until", [math.nan, math.inf, -math.inf, 0.0, -1.0])
def test_an_expiry_that_is_not_a_time_is_refused(until: float) -> None:
    for entry in (image_until(until), SharedMissing(until=until)):
        with pytest.raises(ValueError, match="not a time"):
            check_shared_entry(entry, "a", policy=POLICY, now=NOW)


def test_another_ids_image_is_refused() -> None:
    with pytest.raises(ValueError, match="holds image 'b'"):
        check_shared_entry(image_until(NOW + 60, B), "a", policy=POLICY, now=NOW)


class OneEntry:
    """A SharedCache holding one entry for every id, recording what the tier asks of it."""

    def __init__(self, entry: SharedEntry | None) -> None:
        self.entry = entry
        self.invalidated: list[str] = []

    async def get(self, image_id: str) -> SharedEntry | None:
        return self.entry

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
        MemoryCache(10, timer=timer), shared, lease_time=1.0, policy=policy, clock=lambda: NOW
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
    assert shared.invalidated == ["a"]
    assert tier.memory.get_stale("a") is None


async def test_an_image_with_a_nan_expiry_is_a_miss_and_is_dropped(timer: FakeTimer) -> None:
    shared = OneEntry(image_until(math.nan))
    claim = await tier_on(shared, timer).claim("a")
    assert claim.token == "token"
    assert shared.invalidated == ["a"]


async def test_another_ids_image_is_a_miss_and_is_dropped(timer: FakeTimer) -> None:
    shared = OneEntry(image_until(NOW + 60, B))
    tier = tier_on(shared, timer)
    claim = await tier.claim("a")
    assert (claim.image, claim.token) == (None, "token")
    assert shared.invalidated == ["a"]
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

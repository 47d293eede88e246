"""The cache policy (pure, from headers) and the in-process cache (with an injected timer)."""

from __future__ import annotations

import math

import pytest
from clocks import FakeTimer
from multidict import CIMultiDict, CIMultiDictProxy

from meigen_async._protocol import Validators
from meigen_async.cache import CachePolicy, MemoryCache
from meigen_async.models import GalleryImage

A = GalleryImage(id="a", likes=1)
B = GalleryImage(id="b", likes=2)
C = GalleryImage(id="c", likes=3)


# -- CachePolicy.ttl_for ------------------------------------------------------------------------


def test_an_explicit_ttl_overrides_max_age() -> None:
    policy = CachePolicy(ttl=10.0)

    assert policy.ttl_for({"Cache-Control": "public, max-age=3600"}) == 10.0


def test_an_explicit_ttl_of_zero_stores_nothing() -> None:
    assert CachePolicy(ttl=0.0).ttl_for({"Cache-Control": "max-age=3600"}) is None


def test_max_age_is_the_ttl_without_age() -> None:
    assert CachePolicy().ttl_for({"Cache-Control": "public, max-age=600"}) == 600.0


def test_max_age_less_age_is_the_ttl() -> None:
    headers = {"Cache-Control": "public, max-age=600", "Age": "100"}

    assert CachePolicy().ttl_for(headers) == 500.0


def test_the_private_cache_ignores_s_maxage_alone() -> None:
    policy = CachePolicy(default_ttl=42.0)

    assert policy.ttl_for({"Cache-Control": "public, s-maxage=120"}) == 42.0


def test_the_private_cache_takes_max_age_over_s_maxage() -> None:
    headers = {"Cache-Control": "public, s-maxage=900, max-age=60"}

    assert CachePolicy().ttl_for(headers) == 60.0


def test_a_shared_cache_takes_s_maxage_over_max_age() -> None:
    headers = {"Cache-Control": "public, s-maxage=900, max-age=60"}

    assert CachePolicy().ttl_for(headers, shared=True) == 900.0


def test_a_shared_cache_takes_s_maxage_less_age() -> None:
    headers = {"Cache-Control": "s-maxage=900", "Age": "100"}

    assert CachePolicy().ttl_for(headers, shared=True) == 800.0


def test_a_shared_cache_uses_max_age_without_s_maxage() -> None:
    assert CachePolicy().ttl_for({"Cache-Control": "max-age=60"}, shared=True) == 60.0


def test_a_shared_cache_caps_s_maxage_at_max_ttl() -> None:
    headers = {"Cache-Control": "s-maxage=86400"}

    assert CachePolicy(max_ttl=100.0).ttl_for(headers, shared=True) == 100.0


def test_the_private_cache_ignores_an_invalid_s_maxage() -> None:
    headers = {"Cache-Control": "max-age=60, s-maxage=soon"}

    assert CachePolicy().ttl_for(headers) == 60.0


def test_a_shared_cache_reads_an_invalid_s_maxage_as_stale() -> None:
    headers = {"Cache-Control": "max-age=60, s-maxage=soon"}

    assert CachePolicy().ttl_for(headers, shared=True) is None


def test_max_age_is_capped_at_max_ttl() -> None:
    policy = CachePolicy(max_ttl=100.0)

    assert policy.ttl_for({"Cache-Control": "max-age=86400"}) == 100.0


@pytest.mark.parametrize("age", ["600", "601", "10000"])
def test_an_age_at_or_past_max_age_is_not_stored(age: str) -> None:
    headers = {"Cache-Control": "max-age=600", "Age": age}

    assert CachePolicy().ttl_for(headers) is None


def test_max_age_zero_is_not_stored() -> None:
    assert CachePolicy().ttl_for({"Cache-Control": "max-age=0"}) is None


@pytest.mark.parametrize("directive", ["no-store", "no-cache", "No-Store", 'no-cache="Set-Cookie"'])
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("ttl", [None, 60.0])
def test_a_response_marked_not_storable_is_never_stored(
    directive: str, shared: bool, ttl: float | None
) -> None:
    headers = {"Cache-Control": f"{directive}, max-age=600"}

    assert CachePolicy(ttl=ttl).ttl_for(headers, shared=shared) is None


@pytest.mark.parametrize("directive", ["private", "Private", 'private="Set-Cookie"'])
def test_a_private_response_is_stored_by_the_private_cache(directive: str) -> None:
    headers = {"Cache-Control": f"{directive}, max-age=600"}

    assert CachePolicy().ttl_for(headers) == 600.0


@pytest.mark.parametrize("directive", ["private", "Private", 'private="Set-Cookie"'])
@pytest.mark.parametrize("ttl", [None, 60.0])
def test_a_private_response_is_never_stored_by_a_shared_cache(
    directive: str, ttl: float | None
) -> None:
    headers = {"Cache-Control": f"{directive}, max-age=600"}

    assert CachePolicy(ttl=ttl).ttl_for(headers, shared=True) is None


def test_no_cache_control_gives_the_default_ttl() -> None:
    assert CachePolicy(default_ttl=42.0).ttl_for({"Content-Type": "application/json"}) == 42.0


def test_a_cache_control_without_lifetime_gives_the_default_ttl() -> None:
    assert CachePolicy(default_ttl=42.0).ttl_for({"Cache-Control": "public"}) == 42.0


def test_a_default_ttl_of_zero_stores_nothing() -> None:
    assert CachePolicy(default_ttl=0.0).ttl_for({}) is None


@pytest.mark.parametrize(
    "value",
    [
        "max-age=soon",
        "max-age=abc",
        "max-age=-5",
        "max-age=-1",
        "max-age=1.5",
        "max-age=",
        "max-age",
        "max-age=nan",
        "max-age=inf",
        "max-age=1e3",
        "max-age=\u00b2",
        "max-age=60s",
        'max-age="60',
    ],
)
def test_a_max_age_that_is_not_delta_seconds_makes_the_response_stale(value: str) -> None:
    assert CachePolicy(default_ttl=42.0).ttl_for({"Cache-Control": value}) is None


@pytest.mark.parametrize(
    "fields",
    [{"max_ttl": -1}, {"ttl": math.nan}, {"default_ttl": math.inf}, {"negative_ttl": True}],
    ids=["negative", "nan", "inf", "bool"],
)
def test_a_policy_refuses_a_lifetime_that_is_no_number_of_seconds(
    fields: dict[str, object],
) -> None:
    (name,) = fields
    with pytest.raises(ValueError, match=name):
        CachePolicy(**fields)  # type: ignore[arg-type]


def test_a_policy_takes_zero_and_no_ttl() -> None:
    policy = CachePolicy(ttl=None, default_ttl=0, max_ttl=0, negative_ttl=0)
    assert policy.ttl_for({}) is None


@pytest.mark.parametrize(
    ("maxsize", "stale_window"), [(-1, 0.0), (4, -1.0), (4, math.inf)], ids=["size", "neg", "inf"]
)
def test_a_memory_cache_refuses_a_nonsense_size_or_stale_window(
    maxsize: int, stale_window: float
) -> None:
    with pytest.raises(ValueError, match="maxsize" if maxsize < 0 else "stale_window"):
        MemoryCache(maxsize, stale_window=stale_window)


def test_a_garbage_max_age_does_not_fall_back_to_s_maxage_or_expires() -> None:
    headers = {
        "Cache-Control": "max-age=soon, s-maxage=90",
        "Date": "Fri, 09 Jan 2026 15:00:00 GMT",
        "Expires": "Fri, 09 Jan 2026 16:00:00 GMT",
    }

    assert CachePolicy().ttl_for(headers) is None


def test_a_max_age_too_large_to_hold_is_read_as_two_to_the_31st() -> None:
    headers = {"Cache-Control": "max-age=" + "9" * 5000}

    assert CachePolicy(max_ttl=2.0**32).ttl_for(headers) == 2.0**31


@pytest.mark.parametrize("value", ["max-age=0, max-age=60", "max-age=60, Max-Age=0"])
def test_a_max_age_given_twice_differently_makes_the_response_stale(value: str) -> None:
    assert CachePolicy().ttl_for({"Cache-Control": value}) is None


def test_a_max_age_given_twice_alike_is_used() -> None:
    headers = {"Cache-Control": 'max-age=60, public, max-age="60"'}

    assert CachePolicy().ttl_for(headers) == 60.0


def test_an_s_maxage_given_twice_differently_is_stale_for_a_shared_cache() -> None:
    headers = {"Cache-Control": "max-age=60, s-maxage=0, s-maxage=600"}

    assert CachePolicy().ttl_for(headers, shared=True) is None


def test_a_max_age_inside_a_quoted_string_is_not_a_directive() -> None:
    headers = {"Cache-Control": 'ext="a, max-age=3600", no-transform'}

    assert CachePolicy(default_ttl=42.0).ttl_for(headers) == 42.0


def test_a_no_store_inside_a_quoted_string_is_not_a_directive() -> None:
    headers = {"Cache-Control": 'ext="no-store, x", max-age=60'}

    assert CachePolicy().ttl_for(headers) == 60.0


# -- Several Cache-Control lines ------------------------------------------------------------------


def test_a_second_cache_control_line_is_read() -> None:
    headers = CIMultiDict([("Cache-Control", "max-age=60"), ("Cache-Control", "no-store")])

    assert CachePolicy().ttl_for(CIMultiDictProxy(headers)) is None


def test_a_max_age_on_a_second_line_is_read() -> None:
    headers = CIMultiDict([("Cache-Control", "public"), ("cache-control", "max-age=60")])

    assert CachePolicy(default_ttl=42.0).ttl_for(headers) == 60.0


def test_max_ages_on_two_lines_that_differ_make_the_response_stale() -> None:
    headers = CIMultiDict([("Cache-Control", "max-age=0"), ("Cache-Control", "max-age=60")])

    assert CachePolicy().ttl_for(headers) is None


def test_two_spellings_in_a_plain_dict_are_two_lines() -> None:
    headers = {"Cache-Control": "max-age=60", "cache-control": "no-store"}

    assert CachePolicy().ttl_for(headers) is None


# -- Expires and Date -----------------------------------------------------------------------------

DATE = "Fri, 09 Jan 2026 15:00:00 GMT"
DATE_AT = 1767970800.0  # DATE in seconds since the epoch


def test_expires_less_date_is_the_lifetime_without_max_age() -> None:
    headers = {"Date": DATE, "Expires": "Fri, 09 Jan 2026 15:10:00 GMT"}

    assert CachePolicy().ttl_for(headers, now=DATE_AT + 5000) == 600.0


def test_expires_less_date_is_capped_and_less_age() -> None:
    headers = {"Date": DATE, "Expires": "Sat, 10 Jan 2026 15:00:00 GMT", "Age": "100"}

    assert CachePolicy(max_ttl=86400.0).ttl_for(headers) == 86300.0


@pytest.mark.parametrize("date", [None, "yesterday", ""])
def test_expires_without_a_valid_date_counts_from_the_receive_time(date: str | None) -> None:
    headers = {"Expires": "Fri, 09 Jan 2026 15:10:00 GMT"}
    if date is not None:
        headers["Date"] = date

    assert CachePolicy().ttl_for(headers, now=DATE_AT + 60) == 540.0


@pytest.mark.parametrize("expires", ["0", "-1", "never", "", DATE + ", " + DATE])
def test_an_invalid_expires_makes_the_response_stale(expires: str) -> None:
    headers = {"Date": DATE, "Expires": expires}

    assert CachePolicy(default_ttl=42.0).ttl_for(headers) is None


@pytest.mark.parametrize("expires", [DATE, "Fri, 09 Jan 2026 14:00:00 GMT"])
def test_an_expires_at_or_before_date_makes_the_response_stale(expires: str) -> None:
    assert CachePolicy().ttl_for({"Date": DATE, "Expires": expires}) is None


def test_max_age_wins_over_expires() -> None:
    headers = {
        "Cache-Control": "max-age=60",
        "Date": DATE,
        "Expires": "Fri, 09 Jan 2026 15:10:00 GMT",
    }

    assert CachePolicy().ttl_for(headers) == 60.0


def test_max_age_wins_over_an_invalid_expires() -> None:
    assert CachePolicy().ttl_for({"Cache-Control": "max-age=60", "Expires": "0"}) == 60.0


def test_a_shared_cache_takes_s_maxage_over_expires() -> None:
    headers = {"Cache-Control": "s-maxage=60", "Expires": "0"}

    assert CachePolicy().ttl_for(headers, shared=True) == 60.0


def test_an_explicit_ttl_overrides_a_past_expires() -> None:
    assert CachePolicy(ttl=10.0).ttl_for({"Expires": "0"}) == 10.0


def test_the_same_expires_with_another_date_gives_another_lifetime() -> None:
    # The memoised lifetime is keyed on both strings, not on Expires alone.
    expires = "Fri, 09 Jan 2026 15:10:00 GMT"
    policy = CachePolicy()

    assert policy.ttl_for({"Date": DATE, "Expires": expires}) == 600.0
    assert policy.ttl_for({"Date": "Fri, 09 Jan 2026 15:05:00 GMT", "Expires": expires}) == 300.0


def test_the_same_expires_without_date_follows_the_receive_time() -> None:
    headers = {"Expires": "Fri, 09 Jan 2026 15:10:00 GMT"}
    policy = CachePolicy()

    assert policy.ttl_for(headers, now=DATE_AT) == 600.0
    assert policy.ttl_for(headers, now=DATE_AT + 500) == 100.0


# -- Vary -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("vary", ["*", "Accept-Encoding, *", " * "])
@pytest.mark.parametrize("ttl", [None, 60.0])
def test_a_response_that_varies_on_everything_is_never_stored(vary: str, ttl: float | None) -> None:
    headers = {"Cache-Control": "max-age=600", "Vary": vary}

    assert CachePolicy(ttl=ttl).ttl_for(headers) is None


def test_a_vary_star_on_a_second_line_is_read() -> None:
    headers = CIMultiDict([("Vary", "Accept"), ("Vary", "*"), ("Cache-Control", "max-age=60")])

    assert CachePolicy().ttl_for(headers) is None


def test_a_vary_on_named_fields_is_stored() -> None:
    headers = {"Cache-Control": "max-age=600", "Vary": "Accept-Encoding"}

    assert CachePolicy().ttl_for(headers) == 600.0


@pytest.mark.parametrize("age", ["old", "-30", ""])
def test_a_garbage_age_is_ignored(age: str) -> None:
    headers = {"Cache-Control": "max-age=600", "Age": age}

    assert CachePolicy().ttl_for(headers) == 600.0


def test_headers_are_read_case_insensitively() -> None:
    headers = {"cache-control": "max-age=600", "age": "100"}

    assert CachePolicy().ttl_for(headers) == 500.0


def test_no_store_in_lower_case_headers_is_honoured() -> None:
    assert CachePolicy(ttl=60.0).ttl_for({"cache-control": "no-store"}) is None


# -- MemoryCache: images ------------------------------------------------------------------------


def test_get_returns_a_fresh_entry(timer: FakeTimer) -> None:
    cache = MemoryCache(10, timer=timer)
    cache.set("a", A, ttl=60)
    timer.now += 59

    assert cache.get("a") == A


def test_get_returns_none_once_expired(timer: FakeTimer) -> None:
    cache = MemoryCache(10, timer=timer)
    cache.set("a", A, ttl=60)
    timer.now += 60

    assert cache.get("a") is None


def test_get_of_an_unknown_id_is_none(timer: FakeTimer) -> None:
    assert MemoryCache(10, timer=timer).get("nope") is None


def test_set_replaces_an_entry_and_its_freshness(timer: FakeTimer) -> None:
    cache = MemoryCache(10, timer=timer)
    cache.set("a", A, ttl=10)
    timer.now += 5
    cache.set("a", B, ttl=10)
    timer.now += 8

    assert cache.get("a") == B


def test_get_stale_returns_an_expired_entry_within_the_stale_window(timer: FakeTimer) -> None:
    cache = MemoryCache(10, stale_window=30, timer=timer)
    cache.set("a", A, ttl=60)
    timer.now += 89

    assert cache.get("a") is None
    assert cache.get_stale("a") == A


def test_get_is_none_once_expired_even_while_kept_for_the_stale_window(
    timer: FakeTimer,
) -> None:
    cache = MemoryCache(10, stale_window=30, timer=timer)
    cache.set("a", A, ttl=60)
    timer.now += 60

    assert cache.get("a") is None
    assert cache.get_stale("a") == A


def test_get_stale_returns_a_fresh_entry_too(timer: FakeTimer) -> None:
    cache = MemoryCache(10, stale_window=30, timer=timer)
    cache.set("a", A, ttl=60)

    assert cache.get_stale("a") == A


def test_get_stale_returns_none_after_the_stale_window(timer: FakeTimer) -> None:
    cache = MemoryCache(10, stale_window=30, timer=timer)
    cache.set("a", A, ttl=60)
    timer.now += 90

    assert cache.get_stale("a") is None
    assert len(cache) == 0


def test_without_a_stale_window_nothing_is_served_stale(timer: FakeTimer) -> None:
    cache = MemoryCache(10, timer=timer)
    cache.set("a", A, ttl=60)
    timer.now += 60

    assert cache.get_stale("a") is None


def test_len_counts_stale_entries_in_their_window(timer: FakeTimer) -> None:
    cache = MemoryCache(10, stale_window=30, timer=timer)
    cache.set("a", A, ttl=60)
    cache.set("b", B, ttl=10)
    timer.now += 20

    assert len(cache) == 2


def test_maxsize_evicts_the_least_recently_used_image(timer: FakeTimer) -> None:
    cache = MemoryCache(2, timer=timer)
    cache.set("a", A, ttl=60)
    cache.set("b", B, ttl=60)
    assert cache.get("a") == A  # "b" is now the least recently used

    cache.set("c", C, ttl=60)

    assert len(cache) == 2
    assert cache.get("b") is None
    assert cache.get("a") == A
    assert cache.get("c") == C


def test_maxsize_zero_stores_nothing(timer: FakeTimer) -> None:
    cache = MemoryCache(0, stale_window=30, timer=timer)

    cache.set("a", A, ttl=60)
    cache.set_missing("b", ttl=60)

    assert cache.get("a") is None
    assert cache.get_stale("a") is None
    assert not cache.is_missing("b")
    assert len(cache) == 0


# -- MemoryCache: remembered 404s ---------------------------------------------------------------


def test_a_remembered_404_is_missing_until_its_ttl(timer: FakeTimer) -> None:
    cache = MemoryCache(10, timer=timer)
    cache.set_missing("a", ttl=30)
    timer.now += 29

    assert cache.is_missing("a")


def test_a_remembered_404_expires_after_its_ttl(timer: FakeTimer) -> None:
    cache = MemoryCache(10, timer=timer)
    cache.set_missing("a", ttl=30)
    timer.now += 30

    assert not cache.is_missing("a")


def test_an_unknown_id_is_not_missing(timer: FakeTimer) -> None:
    assert not MemoryCache(10, timer=timer).is_missing("a")


def test_set_missing_with_zero_ttl_remembers_nothing(timer: FakeTimer) -> None:
    cache = MemoryCache(10, timer=timer)
    cache.set_missing("a", ttl=0)

    assert not cache.is_missing("a")


def test_set_clears_a_remembered_404(timer: FakeTimer) -> None:
    cache = MemoryCache(10, timer=timer)
    cache.set_missing("a", ttl=30)

    cache.set("a", A, ttl=60)

    assert not cache.is_missing("a")
    assert cache.get("a") == A


def test_set_missing_clears_a_stored_image(timer: FakeTimer) -> None:
    cache = MemoryCache(10, stale_window=30, timer=timer)
    cache.set("a", A, ttl=60)

    cache.set_missing("a", ttl=30)

    assert cache.is_missing("a")
    assert cache.get("a") is None
    assert cache.get_stale("a") is None


def test_remembered_404s_do_not_count_as_images(timer: FakeTimer) -> None:
    cache = MemoryCache(10, timer=timer)
    cache.set_missing("a", ttl=30)

    assert len(cache) == 0


# -- MemoryCache: invalidate and clear ----------------------------------------------------------


def test_invalidate_forgets_an_image(timer: FakeTimer) -> None:
    cache = MemoryCache(10, stale_window=30, timer=timer)
    cache.set("a", A, ttl=60)
    cache.set("b", B, ttl=60)

    cache.invalidate("a")

    assert cache.get("a") is None
    assert cache.get_stale("a") is None
    assert cache.get("b") == B


def test_invalidate_forgets_a_remembered_404(timer: FakeTimer) -> None:
    cache = MemoryCache(10, timer=timer)
    cache.set_missing("a", ttl=30)

    cache.invalidate("a")

    assert not cache.is_missing("a")


def test_invalidate_of_an_unknown_id_does_nothing(timer: FakeTimer) -> None:
    cache = MemoryCache(10, timer=timer)
    cache.set("b", B, ttl=60)

    cache.invalidate("a")

    assert cache.get("b") == B


def test_clear_forgets_images_and_remembered_404s(timer: FakeTimer) -> None:
    cache = MemoryCache(10, timer=timer)
    cache.set("a", A, ttl=60)
    cache.set_missing("b", ttl=30)

    cache.clear()

    assert cache.get("a") is None
    assert not cache.is_missing("b")
    assert len(cache) == 0


@pytest.mark.parametrize(
    ("name", "home"),
    [("SharedCache", "meigen_async.shared"), ("RedisCache", "meigen_async.redis_cache")],
)
def test_the_old_spellings_in_cache_still_work_with_a_deprecation_warning(
    name: str, home: str
) -> None:
    import importlib

    import meigen_async.cache

    with pytest.warns(DeprecationWarning, match=home):
        moved = getattr(meigen_async.cache, name)

    assert moved is getattr(importlib.import_module(home), name)


def test_the_cache_module_knows_no_shared_cache_implementation() -> None:
    import ast
    from pathlib import Path

    import meigen_async.cache

    tree = ast.parse(Path(meigen_async.cache.__file__).read_text())
    imported = {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }

    assert not any("redis" in module or "sqlite" in module for module in imported)


def test_an_expired_image_with_validators_is_kept_past_its_stale_window(timer: FakeTimer) -> None:
    cache = MemoryCache(10, stale_window=5, timer=timer)
    cache.set("a", GalleryImage(id="a"), 10, validators=Validators(etag='"1"'))
    timer.now += 10_000

    assert cache.get("a") is None
    assert cache.get_stale("a") is None
    assert cache.validators("a") == (GalleryImage(id="a"), Validators(etag='"1"'))


def test_an_expired_image_without_validators_goes_after_its_stale_window(timer: FakeTimer) -> None:
    cache = MemoryCache(10, stale_window=5, timer=timer)
    cache.set("a", GalleryImage(id="a"), 10)
    timer.now += 16

    assert cache.entry("a") is None
    assert len(cache) == 0


def test_expired_images_with_validators_give_way_to_the_lru(timer: FakeTimer) -> None:
    cache = MemoryCache(2, timer=timer)
    cache.set("a", GalleryImage(id="a"), 10, validators=Validators(etag='"1"'))
    timer.now += 100
    cache.set("b", GalleryImage(id="b"), 10)
    cache.set("c", GalleryImage(id="c"), 10)

    assert cache.validators("a") is None


def test_an_image_is_kept_through_its_revalidate_window(timer: FakeTimer) -> None:
    cache = MemoryCache(10, timer=timer)
    cache.set("a", GalleryImage(id="a"), 10, revalidate_window=20)
    timer.now += 25

    assert cache.entry("a") is not None

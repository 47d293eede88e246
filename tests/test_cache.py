"""The cache policy (pure, from headers) and the in-process cache (with an injected timer)."""

from __future__ import annotations

import pytest
from clocks import FakeTimer

from meigen_async.cache import CachePolicy, MemoryCache, parse_cache_control
from meigen_async.models import GalleryImage

A = GalleryImage(id="a", likes=1)
B = GalleryImage(id="b", likes=2)
C = GalleryImage(id="c", likes=3)


# -- parse_cache_control ------------------------------------------------------------------------


def test_parse_cache_control_lowercases_names_and_keeps_arguments() -> None:
    parsed = parse_cache_control('Public, Max-Age=60, S-MAXAGE="120", no-transform')

    assert parsed == {"public": None, "max-age": "60", "s-maxage": "120", "no-transform": None}


@pytest.mark.parametrize("value", [None, "", " , ,"])
def test_parse_cache_control_of_nothing_is_empty(value: str | None) -> None:
    assert parse_cache_control(value) == {}


def test_parse_cache_control_keeps_a_garbage_argument_as_text() -> None:
    assert parse_cache_control("max-age=soon") == {"max-age": "soon"}


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


def test_s_maxage_is_used_when_max_age_is_absent() -> None:
    assert CachePolicy().ttl_for({"Cache-Control": "public, s-maxage=120"}) == 120.0


def test_max_age_is_preferred_over_s_maxage() -> None:
    headers = {"Cache-Control": "public, s-maxage=900, max-age=60"}

    assert CachePolicy().ttl_for(headers) == 60.0


def test_max_age_is_capped_at_max_ttl() -> None:
    policy = CachePolicy(max_ttl=100.0)

    assert policy.ttl_for({"Cache-Control": "max-age=86400"}) == 100.0


@pytest.mark.parametrize("age", ["600", "601", "10000"])
def test_an_age_at_or_past_max_age_is_not_stored(age: str) -> None:
    headers = {"Cache-Control": "max-age=600", "Age": age}

    assert CachePolicy().ttl_for(headers) is None


def test_max_age_zero_is_not_stored() -> None:
    assert CachePolicy().ttl_for({"Cache-Control": "max-age=0"}) is None


@pytest.mark.parametrize("directive", ["no-store", "no-cache", "private", "No-Store"])
@pytest.mark.parametrize("ttl", [None, 60.0])
def test_a_response_marked_not_storable_is_never_stored(directive: str, ttl: float | None) -> None:
    headers = {"Cache-Control": f"{directive}, max-age=600"}

    assert CachePolicy(ttl=ttl).ttl_for(headers) is None


def test_no_cache_control_gives_the_default_ttl() -> None:
    assert CachePolicy(default_ttl=42.0).ttl_for({"Content-Type": "application/json"}) == 42.0


def test_a_cache_control_without_lifetime_gives_the_default_ttl() -> None:
    assert CachePolicy(default_ttl=42.0).ttl_for({"Cache-Control": "public"}) == 42.0


def test_a_default_ttl_of_zero_stores_nothing() -> None:
    assert CachePolicy(default_ttl=0.0).ttl_for({}) is None


@pytest.mark.parametrize("value", ["max-age=soon", "max-age=-5", "max-age=", "max-age=nan"])
def test_a_garbage_max_age_is_ignored(value: str) -> None:
    assert CachePolicy(default_ttl=42.0).ttl_for({"Cache-Control": value}) == 42.0


def test_a_garbage_max_age_falls_back_to_s_maxage() -> None:
    headers = {"Cache-Control": "max-age=soon, s-maxage=90"}

    assert CachePolicy().ttl_for(headers) == 90.0


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

"""What FakeGallery's search answers, and its quotas, in `_fake_search`: plain values."""

from __future__ import annotations

from typing import Any

import pytest
from clocks import FakeTimer

from meigen_async._fake_search import (
    SEARCH_FIELDS,
    SearchQuotas,
    bearer_key,
    search_items,
)
from meigen_async.testing import sample_images

IMAGES = [
    {"id": "1", "text": "a red fox in snow", "created_at": "2025-01-01T00:00:00+00:00"},
    {"id": "2", "text": "a fox", "author_username": "snowy", "media_urls": ["a", "b", "c"]},
    {"id": "3", "text": "snow on a red roof", "created_at": "2026-01-01T00:00:00Z"},
    {"id": "4", "text": "the sea", "created_at": "2025-06-01T00:00:00"},
]


def ids(items: list[dict[str, Any]]) -> list[str]:
    return [item["id"] for item in items]


def test_an_item_has_exactly_the_searchs_fields_and_the_matched_index_only_when_asked() -> None:
    [plain] = search_items(sample_images()[:1], "northframe", matched_media=False)
    assert set(plain) == {*SEARCH_FIELDS, "rank"}
    [matched] = search_items(sample_images()[:1], "northframe", matched_media=True)
    assert set(matched) == {*SEARCH_FIELDS, "rank", "matched_media_index"}
    assert "created_at" not in matched
    assert "sref" not in matched


def test_any_word_matches_and_more_matching_words_rank_higher() -> None:
    items = search_items(IMAGES, "Red FOX snow", matched_media=False)
    assert ids(items) == ["1", "3", "2"]
    assert [item["rank"] for item in items] == [1.0, 2 / 3, 1 / 3]


def test_ties_keep_the_order_the_images_were_given() -> None:
    assert ids(search_items(IMAGES, "a", matched_media=False)) == ["1", "2", "3"]


def test_the_empty_query_lists_every_image_newest_first_undated_last() -> None:
    items = search_items(IMAGES, "", matched_media=True)
    assert ids(items) == ["3", "4", "1", "2"]
    assert {item["rank"] for item in items} == {0.0}
    assert {item["matched_media_index"] for item in items} == {None}


def matched(query: str) -> int | None:
    [item] = [item for item in search_items(IMAGES, query, matched_media=True) if item["id"] == "2"]
    index: int | None = item["matched_media_index"]
    return index


def test_the_matched_index_names_one_of_the_images_pictures_the_same_each_time() -> None:
    assert matched("fox") == matched("fox") == matched("FOX")
    assert matched("fox") in {0, 1, 2}
    assert len({matched(f"fox {word}") for word in ("one", "two", "three", "four", "five")}) > 1
    [without_media] = search_items(IMAGES[:1], "fox", matched_media=True)
    assert without_media["matched_media_index"] is None


def test_an_authorization_header_gives_its_bearer_key() -> None:
    assert bearer_key("Bearer meigen_sk_1") == "meigen_sk_1"
    assert bearer_key("bearer  meigen_sk_1 ") == "meigen_sk_1"
    assert bearer_key("Basic dXNlcjpwYXNz") is None
    assert bearer_key("Bearer ") is None
    assert bearer_key(None) is None


def quotas(timer: FakeTimer, **options: Any) -> SearchQuotas:
    return SearchQuotas(clock=timer, wall_clock=lambda: 1_772_409_600.0 + timer.now, **options)


def test_an_address_past_its_limit_gets_the_429_until_the_window_ends(timer: FakeTimer) -> None:
    limits = quotas(timer, search_limit=2, window=60.0)
    assert [limits.admit("10.0.0.1", None) for _ in range(2)] == [None, None]
    assert limits.admit("10.0.0.1", None) == (429, {"success": False, "error": "Too many requests"})
    assert limits.admit("10.0.0.2", None) is None
    timer.now += 60.0
    assert limits.admit("10.0.0.1", None) is None


def test_a_key_has_its_daily_limit_instead_of_the_addresss(timer: FakeTimer) -> None:
    limits = quotas(timer, search_limit=1, daily_search_limit=2)
    assert [limits.admit("10.0.0.1", "k") for _ in range(2)] == [None, None]
    assert limits.admit("10.0.0.1", "k") == (
        429,
        {"success": False, "error": "Daily search limit reached", "code": "DAILY_LIMIT_REACHED"},
    )
    assert limits.admit("10.0.0.1", "other") is None
    assert limits.admit("10.0.0.1", None) is None  # the address's own limit is untouched
    timer.now += 86_400  # the next UTC day
    assert limits.admit("10.0.0.1", "k") is None


def test_a_key_not_among_the_accepted_ones_is_a_401(timer: FakeTimer) -> None:
    limits = quotas(timer, api_keys=["good"])
    assert limits.admit("10.0.0.1", "good") is None
    assert limits.admit("10.0.0.1", "bad") == (401, {"success": False, "error": "Invalid API key"})


@pytest.mark.parametrize("key", [None, "k"])
def test_without_limits_everything_is_admitted(timer: FakeTimer, key: str | None) -> None:
    limits = quotas(timer)
    assert all(limits.admit("10.0.0.1", key) is None for _ in range(100))

"""The search contract and paging decisions in `_search`, with plain values."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import attrs
import pytest
from clocks import FakeTimer
from helpers import JSON_VALUES
from hypothesis import given, settings
from hypothesis import strategies as st
from yarl import URL

import meigen_async._search
from meigen_async import (
    ApiError,
    DailyLimitReached,
    InvalidQuery,
    InvalidResponse,
    MeigenError,
    RateLimited,
    SearchHit,
    ServerError,
)
from meigen_async._protocol import validate_image_id
from meigen_async._search import (
    Page,
    PageCache,
    Pager,
    decode_page,
    page_bytes,
    page_error,
    page_key,
    parse_page_key,
    search_urls,
    subject,
    validate_max_results,
    validate_page,
    validate_query,
)
from meigen_async._status import SEARCH, kind_of, retry_after
from meigen_async.models import structure_search_hit


def body(value: Any) -> bytes:
    return json.dumps(value).encode()


def hits(*ids: str) -> list[SearchHit]:
    return [SearchHit(id=i) for i in ids]


def page(*ids: str) -> Page:
    """A page of these hits, as the server sent it: no result skipped."""
    return Page(hits=tuple(hits(*ids)), received=len(ids))


NOW = datetime(2026, 3, 1, 15, 30, tzinfo=UTC)


def decode(raw: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Page:
    return decode_page(status, headers or {}, raw, limit=20, now=NOW)


# -- Queries -------------------------------------------------------------------------------------


def test_a_query_is_stripped_of_surrounding_whitespace() -> None:
    assert validate_query("  cherry blossom \n") == "cherry blossom"


@pytest.mark.parametrize("query", ["", "   ", "\t\n"])
def test_a_query_of_spaces_is_the_empty_query_which_browses(query: str) -> None:
    assert validate_query(query) == ""
    assert subject(validate_query(query), 20, 0) == "browse recent posts (limit 20, offset 0)"


@pytest.mark.parametrize("query", ["a" * 201, "x\ud800", None, 42, b"neon"])
def test_a_long_unencodable_or_non_string_query_is_invalid_query(query: object) -> None:
    with pytest.raises(InvalidQuery):
        validate_query(query)


def test_invalid_query_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="at most 200"):
        validate_query(" " + "a" * 201)


def test_a_query_of_200_characters_is_taken() -> None:
    assert validate_query("é" * 200) == "é" * 200


@pytest.mark.parametrize(("limit", "offset"), [(0, 0), (21, 0), (True, 0), (5, -1), (5, 1.0)])
def test_a_limit_outside_1_to_20_or_a_negative_offset_is_invalid_query(
    limit: object, offset: object
) -> None:
    with pytest.raises(InvalidQuery):
        validate_page(limit, offset)


@pytest.mark.parametrize("max_results", [0, -3, 2.5, True])
def test_max_results_below_one_or_not_whole_is_invalid_query(max_results: object) -> None:
    with pytest.raises(InvalidQuery):
        validate_max_results(max_results)


# -- URLs and keys -------------------------------------------------------------------------------


def test_the_url_percent_encodes_every_reserved_character_of_the_query() -> None:
    url = search_urls(URL("http://127.0.0.1:8080/base/"))("a b&c#d?e+f=g/h 桜", 20, 40)
    assert str(url) == (
        "http://127.0.0.1:8080/base/api/search?q=a%20b%26c%23d%3Fe%2Bf%3Dg%2Fh%20%E6%A1%9C"
        "&type=posts&limit=20&offset=40&media=matched-v1"
    )
    assert url.query["q"] == "a b&c#d?e+f=g/h 桜"


def test_the_empty_query_is_sent_as_an_empty_q() -> None:
    url = search_urls(URL("https://www.meigen.ai"))("", 20, 0)
    assert str(url) == (
        "https://www.meigen.ai/api/search?q=&type=posts&limit=20&offset=0&media=matched-v1"
    )


def test_page_keys_tell_apart_queries_that_a_naive_join_would_mix_up() -> None:
    assert page_key("a,1", 2, 3) != page_key("a", 1, 23)
    assert parse_page_key(page_key('a"]\\', 5, 10)) == ('a"]\\', 5, 10)


# -- Decoding a page -----------------------------------------------------------------------------


def test_a_page_decodes_to_its_hits_ignoring_unknown_fields_and_nulls() -> None:
    data = [{"id": "1", "likes": 5, "x": [1]}, {"id": "2", "model": None}]
    assert decode(body({"success": True, "data": data})) == Page(
        hits=(SearchHit(id="1", likes=5), SearchHit(id="2")), received=2
    )


def test_a_hit_has_its_lone_surrogates_replaced_like_an_image() -> None:
    raw = (
        b'{"success": true, "data": [{"id": "1", "text": "a\\ud800b", "media_urls": ["\\udfff"]}]}'
    )
    [hit] = decode(raw).hits
    assert hit.text == "a\ufffdb"
    assert hit.media_urls == ("\ufffd",)


def test_a_hit_parses_its_prompt_like_an_image() -> None:
    [hit] = decode(body({"success": True, "data": [{"id": "1", "text": '{"a": 1}'}]})).hits
    assert hit.prompt.data == {"a": 1}


def test_an_empty_data_list_is_an_empty_page() -> None:
    assert decode(body({"success": True, "data": []})) == Page()


BAD_IDS: list[Any] = ["9\n10", "", "x" * 129, "../1", "a b", "\x1b]0;owned\x07", 7, None, ["1"]]


def test_a_result_whose_id_is_not_a_gallery_id_is_skipped_and_named_printable() -> None:
    data = [{"id": "1"}, *({"id": bad, "text": "injected"} for bad in BAD_IDS), {"text": "no id"}]
    decoded = decode_page(200, {}, body({"success": True, "data": data}), limit=20)
    assert decoded.hits == (SearchHit(id="1"),)
    assert decoded.received == len(data)
    assert len(decoded.skipped) == len(BAD_IDS) + 1
    assert decoded.skipped[0] == "'9\\n10'"
    assert all(shown.isprintable() for shown in decoded.skipped)


def test_only_the_first_limit_results_are_built(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[object] = []

    def counting(item: object) -> SearchHit:
        built.append(item)
        return structure_search_hit(item)

    monkeypatch.setattr(meigen_async._search, "structure_search_hit", counting)
    raw = body({"success": True, "data": [{"id": str(i)} for i in range(100_000)]})
    decoded = decode_page(200, {}, raw, limit=20)
    assert len(built) == 20
    assert [hit.id for hit in decoded.hits] == [str(i) for i in range(20)]
    assert decoded.received == 20


def test_results_past_the_limit_are_not_looked_at() -> None:
    data = [{"id": "1"}, {"id": "2"}, {"id": "3", "likes": "many"}, "not even an object"]
    assert decode_page(200, {}, body({"success": True, "data": data}), limit=2) == page("1", "2")


HIT_FIELDS = [a.name for a in attrs.fields(SearchHit)]
RESULTS = st.builds(
    lambda rest, id_: {**rest, "id": id_},
    st.dictionaries(st.sampled_from(HIT_FIELDS), JSON_VALUES),
    st.sampled_from(["1", "a_B-2"]) | JSON_VALUES,
)


@pytest.mark.slow
@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.dictionaries(st.sampled_from(HIT_FIELDS), JSON_VALUES) | JSON_VALUES, max_size=4)
)
def test_any_json_in_any_result_is_hits_with_gallery_ids_or_invalid_response(
    data: list[Any],
) -> None:
    try:
        decoded = decode_page(200, {}, body({"success": True, "data": data}), limit=3)
    except InvalidResponse:
        return
    for hit in decoded.hits:
        validate_image_id(hit.id)
        for value in attrs.astuple(hit):
            if isinstance(value, str):
                value.encode("utf-8")  # strict: a lone surrogate would raise
    assert len(decoded.hits) + len(decoded.skipped) == decoded.received <= 3


@pytest.mark.parametrize(
    "raw",
    [
        b"<html>",
        b"[" * 100_000,
        body([1]),
        body({"success": True}),
        body({"success": True, "data": {"id": "1"}}),
        body({"success": True, "data": ["1"]}),
        body({"success": True, "data": [{"id": "1", "likes": "many"}]}),
        body({"data": []}),
    ],
)
def test_a_body_that_is_not_a_page_is_invalid_response(raw: bytes) -> None:
    with pytest.raises(InvalidResponse):
        decode(raw)


def test_an_invalid_result_is_named_by_its_place_in_the_page() -> None:
    with pytest.raises(InvalidResponse, match=r"result 1: .*data\.likes"):
        decode(body({"success": True, "data": [{"id": "1"}, {"id": "2", "likes": "x"}]}))


@pytest.mark.parametrize(
    "envelope", [{"success": False, "error": "search is down"}, {"error": "search is down"}]
)
def test_both_error_shapes_on_a_2xx_are_api_error_with_the_services_message(
    envelope: dict[str, Any],
) -> None:
    with pytest.raises(ApiError, match="search is down"):
        decode(body(envelope))


def test_a_429_is_rate_limited_with_its_retry_after_and_message() -> None:
    with pytest.raises(RateLimited, match="Too many") as caught:
        decode(body({"error": "Too many searches"}), 429, {"retry-after": "7"})
    assert caught.value.retry_after == 7.0
    assert type(caught.value) is RateLimited


DAILY = {"success": False, "error": "Daily search limit reached", "code": "DAILY_LIMIT_REACHED"}


def test_the_daily_limit_429_is_daily_limit_reached_resetting_at_the_next_utc_midnight() -> None:
    with pytest.raises(DailyLimitReached, match="Daily search limit reached") as caught:
        decode(body(DAILY), 429)
    assert caught.value.resets_at == datetime(2026, 3, 2, tzinfo=UTC)
    assert caught.value.retry_after == 8.5 * 3600
    assert caught.value.status == 429


def test_the_daily_limit_resets_at_its_retry_after_when_the_service_sends_one() -> None:
    with pytest.raises(DailyLimitReached) as caught:
        decode(body(DAILY), 429, {"Retry-After": "120"})
    assert caught.value.resets_at == datetime(2026, 3, 1, 15, 32, tzinfo=UTC)


@pytest.mark.parametrize("code", ["daily_limit_reached", None, ["DAILY_LIMIT_REACHED"]])
def test_a_429_with_another_code_is_the_per_address_limit(code: object) -> None:
    with pytest.raises(RateLimited) as caught:
        decode(body({**DAILY, "code": code}), 429)
    assert type(caught.value) is RateLimited


def test_a_503_is_server_error_with_its_retry_after() -> None:
    with pytest.raises(ServerError) as caught:
        decode(body({"success": False, "error": "busy"}), 503, {"Retry-After": "3"})
    assert caught.value.retry_after == 3.0


def test_a_redirect_is_api_error_naming_where_and_is_not_followed() -> None:
    with pytest.raises(ApiError, match=r"redirected to 'http://evil\.example/'") as caught:
        decode(b"", 302, {"Location": "http://evil.example/"})
    assert caught.value.status == 302


@pytest.mark.parametrize("status", [100, 301, 400, 404, 429, 500, 503])
def test_a_search_error_is_the_searchs_class_for_its_status_kind(status: int) -> None:
    headers = {"Retry-After": "7", "Location": "/elsewhere"}

    error = page_error(status, headers, body({"error": "no"}))

    kind = kind_of(status)
    assert kind is not None
    assert type(error) is SEARCH.class_for(kind)
    assert error.status == status
    assert getattr(error, "retry_after", None) == retry_after(status, headers)


@pytest.mark.parametrize("status", [200, 500])
def test_the_services_error_is_quoted_with_nothing_a_terminal_obeys(status: int) -> None:
    with pytest.raises(MeigenError) as caught:
        decode(body({"success": False, "error": "down\x1b[2J\u202eevil"}), status)
    assert "down\\x1b[2J\\u202eevil" in caught.value.message
    assert caught.value.message.isprintable()


def test_a_404_is_api_error_not_image_not_found() -> None:
    with pytest.raises(ApiError) as caught:
        decode(body({"success": False, "error": "Not found"}), 404)
    assert type(caught.value) is ApiError


# -- Paging --------------------------------------------------------------------------------------


def test_the_pager_moves_the_offset_by_the_results_the_page_held() -> None:
    pager = Pager(3, None)
    assert pager.take(page("a", "b", "c")) == hits("a", "b", "c")
    assert (pager.offset, pager.done) == (3, False)


def test_a_server_capping_pages_below_the_page_size_does_not_end_the_paging() -> None:
    pager = Pager(20, None)
    for start in range(0, 30, 10):
        pager.take(page(*(str(i) for i in range(start, start + 10))))
        assert (pager.offset, pager.done) == (start + 10, False)
    pager.take(page("30", "31"))
    assert (pager.offset, pager.done) == (32, True)


def test_a_first_short_page_is_followed_by_one_more_request_which_comes_back_empty() -> None:
    pager = Pager(20, None)
    assert pager.take(page("a", "b")) == hits("a", "b")
    assert (pager.offset, pager.done) == (2, False)
    assert pager.take(page()) == []
    assert pager.done


def test_the_pager_drops_ids_already_yielded_by_an_earlier_page_or_the_same_one() -> None:
    pager = Pager(3, None)
    pager.take(page("a", "b", "c"))
    assert pager.take(page("c", "d", "d")) == hits("d")
    assert not pager.done


def test_the_pager_stops_at_a_page_shorter_than_the_page_size_and_the_longest_seen() -> None:
    pager = Pager(3, None)
    pager.take(page("a", "b", "c"))
    assert pager.take(page("d", "e")) == hits("d", "e")
    assert pager.done


def test_the_pager_stops_at_an_empty_page() -> None:
    pager = Pager(3, None)
    assert pager.take(page()) == []
    assert pager.done


def test_the_pager_stops_at_a_full_page_adding_no_new_id() -> None:
    pager = Pager(2, None)
    pager.take(page("a", "b"))
    assert pager.take(page("b", "a")) == []
    assert pager.done


def test_the_pager_stops_at_max_results_cutting_the_last_page() -> None:
    pager = Pager(3, 4)
    pager.take(page("a", "b", "c"))
    assert pager.take(page("d", "e", "f")) == hits("d")
    assert pager.done


def test_duplicates_do_not_count_towards_max_results() -> None:
    pager = Pager(3, 4)
    pager.take(page("a", "b", "c"))
    assert pager.take(page("a", "d", "e")) == hits("d")
    assert pager.done


def test_a_page_sent_full_is_not_the_last_because_some_of_its_results_were_skipped() -> None:
    pager = Pager(3, None)
    sent_full = Page(hits=tuple(hits("a", "b")), received=3, skipped=("'x y'",))
    assert pager.take(sent_full) == hits("a", "b")
    assert not pager.done


def test_the_pager_stops_at_a_full_page_of_skipped_results() -> None:
    pager = Pager(3, None)
    assert pager.take(Page(received=3, skipped=("''",) * 3)) == []
    assert pager.done


# -- Keeping pages -------------------------------------------------------------------------------


def test_a_kept_page_is_served_until_its_ttl_runs_out() -> None:
    timer = FakeTimer()
    cache = PageCache(4, timer)
    cache.set("k", page("1"), 60)
    timer.now += 59.9
    assert cache.get("k") == page("1")
    timer.now += 0.1
    assert cache.get("k") is None


def test_a_page_without_a_lifetime_is_not_kept_and_forgets_the_old_one() -> None:
    cache = PageCache(4, FakeTimer())
    cache.set("k", page(), 60)
    cache.set("k", page(), None)
    assert cache.get("k") is None


def test_a_page_cache_of_size_zero_keeps_nothing() -> None:
    cache = PageCache(0, FakeTimer())
    cache.set("k", page(), 60)
    assert cache.get("k") is None


def big(key: str, characters: int, fill: str = "a") -> tuple[str, Page]:
    """A page whose one hit holds a prompt of `characters` characters."""
    return key, Page(hits=(SearchHit(id=key, text=fill * characters),), received=1)


def test_a_pages_weight_counts_what_its_strings_take_in_memory() -> None:
    key, ascii_page = big("k", 100_000)
    _, wide_page = big("k", 100_000, fill="\U0001f600")
    assert 100_000 < page_bytes(key, ascii_page) < 101_000
    assert 400_000 < page_bytes(key, wide_page) < 401_000


def test_pages_are_evicted_least_recent_first_to_stay_within_the_byte_budget() -> None:
    cache = PageCache(256, FakeTimer(), max_bytes=1_000_000)
    for key in "abc":
        cache.set(*big(key, 300_000), 60)
    assert cache.get("a") is not None  # now b is the least recently used
    cache.set(*big("d", 300_000), 60)
    assert [key for key in "abcd" if cache.get(key) is not None] == ["a", "c", "d"]
    assert cache.kept_bytes <= 1_000_000


def test_a_page_larger_than_the_whole_budget_is_not_kept_nor_evicts_the_others() -> None:
    cache = PageCache(256, FakeTimer(), max_bytes=1_000_000)
    cache.set(*big("a", 1000), 60)
    cache.set(*big("b", 2_000_000), 60)
    assert cache.get("b") is None
    assert cache.get("a") is not None


def test_small_pages_are_still_bounded_by_count() -> None:
    cache = PageCache(4, FakeTimer(), max_bytes=1_000_000)
    for key in "abcde":
        cache.set(key, page(key), 60)
    assert len(cache) == 4
    assert cache.get("a") is None

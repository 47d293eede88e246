"""The search contract and paging decisions in `_search`, with plain values."""

from __future__ import annotations

import json
from typing import Any

import pytest
from clocks import FakeTimer
from yarl import URL

from meigen_async import (
    ApiError,
    InvalidQuery,
    InvalidResponse,
    RateLimited,
    SearchHit,
    ServerError,
)
from meigen_async._search import (
    PageCache,
    Pager,
    decode_page,
    page_key,
    parse_page_key,
    search_urls,
    validate_max_results,
    validate_page,
    validate_query,
)


def body(value: Any) -> bytes:
    return json.dumps(value).encode()


def hits(*ids: str) -> list[SearchHit]:
    return [SearchHit(id=i) for i in ids]


# -- Queries -------------------------------------------------------------------------------------


def test_a_query_is_stripped_of_surrounding_whitespace() -> None:
    assert validate_query("  cherry blossom \n") == "cherry blossom"


@pytest.mark.parametrize("query", ["", "   ", "\t\n", "a" * 201, "x\ud800", None, 42, b"neon"])
def test_a_blank_long_unencodable_or_non_string_query_is_invalid_query(query: object) -> None:
    with pytest.raises(InvalidQuery):
        validate_query(query)


def test_invalid_query_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="empty"):
        validate_query(" ")


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
        "&type=posts&limit=20&offset=40"
    )
    assert url.query["q"] == "a b&c#d?e+f=g/h 桜"


def test_page_keys_tell_apart_queries_that_a_naive_join_would_mix_up() -> None:
    assert page_key("a,1", 2, 3) != page_key("a", 1, 23)
    assert parse_page_key(page_key('a"]\\', 5, 10)) == ('a"]\\', 5, 10)


# -- Decoding a page -----------------------------------------------------------------------------


def test_a_page_decodes_to_its_hits_ignoring_unknown_fields_and_nulls() -> None:
    page = decode_page(
        200,
        {},
        body(
            {
                "success": True,
                "data": [{"id": "1", "likes": 5, "x": [1]}, {"id": "2", "model": None}],
            }
        ),
    )
    assert page == (SearchHit(id="1", likes=5), SearchHit(id="2"))


def test_a_hit_has_its_lone_surrogates_replaced_like_an_image() -> None:
    raw = (
        b'{"success": true, "data": [{"id": "1", "text": "a\\ud800b", "media_urls": ["\\udfff"]}]}'
    )
    [hit] = decode_page(200, {}, raw)
    assert hit.text == "a\ufffdb"
    assert hit.media_urls == ("\ufffd",)


def test_a_hit_parses_its_prompt_like_an_image() -> None:
    [hit] = decode_page(200, {}, body({"success": True, "data": [{"id": "1", "text": '{"a": 1}'}]}))
    assert hit.prompt.data == {"a": 1}


def test_an_empty_data_list_is_an_empty_page() -> None:
    assert decode_page(200, {}, body({"success": True, "data": []})) == ()


@pytest.mark.parametrize(
    "raw",
    [
        b"<html>",
        b"[" * 100_000,
        body([1]),
        body({"success": True}),
        body({"success": True, "data": {"id": "1"}}),
        body({"success": True, "data": [{"text": "no id"}]}),
        body({"success": True, "data": [{"id": 7}]}),
        body({"success": True, "data": ["1"]}),
        body({"success": True, "data": [{"id": "1", "likes": "many"}]}),
        body({"data": []}),
    ],
)
def test_a_body_that_is_not_a_page_is_invalid_response(raw: bytes) -> None:
    with pytest.raises(InvalidResponse):
        decode_page(200, {}, raw)


def test_an_invalid_result_is_named_by_its_place_in_the_page() -> None:
    with pytest.raises(InvalidResponse, match=r"result 1: .*data\.likes"):
        decode_page(
            200, {}, body({"success": True, "data": [{"id": "1"}, {"id": "2", "likes": "x"}]})
        )


@pytest.mark.parametrize(
    "envelope", [{"success": False, "error": "search is down"}, {"error": "search is down"}]
)
def test_both_error_shapes_on_a_2xx_are_api_error_with_the_services_message(
    envelope: dict[str, Any],
) -> None:
    with pytest.raises(ApiError, match="search is down"):
        decode_page(200, {}, body(envelope))


def test_a_429_is_rate_limited_with_its_retry_after_and_message() -> None:
    with pytest.raises(RateLimited, match="Too many") as caught:
        decode_page(429, {"retry-after": "7"}, body({"error": "Too many searches"}))
    assert caught.value.retry_after == 7.0


def test_a_503_is_server_error_with_its_retry_after() -> None:
    with pytest.raises(ServerError) as caught:
        decode_page(503, {"Retry-After": "3"}, body({"success": False, "error": "busy"}))
    assert caught.value.retry_after == 3.0


def test_a_redirect_is_api_error_naming_where_and_is_not_followed() -> None:
    with pytest.raises(ApiError, match=r"redirected to 'http://evil\.example/'") as caught:
        decode_page(302, {"Location": "http://evil.example/"}, b"")
    assert caught.value.status == 302


def test_a_404_is_api_error_not_image_not_found() -> None:
    with pytest.raises(ApiError) as caught:
        decode_page(404, {}, body({"success": False, "error": "Not found"}))
    assert type(caught.value) is ApiError


# -- Paging --------------------------------------------------------------------------------------


def test_the_pager_moves_the_offset_by_the_page_size() -> None:
    pager = Pager(3, None)
    assert pager.take(hits("a", "b", "c")) == hits("a", "b", "c")
    assert (pager.offset, pager.done) == (3, False)


def test_the_pager_drops_ids_already_yielded_by_an_earlier_page_or_the_same_one() -> None:
    pager = Pager(3, None)
    pager.take(hits("a", "b", "c"))
    assert pager.take(hits("c", "d", "d")) == hits("d")
    assert not pager.done


def test_the_pager_stops_at_a_short_page() -> None:
    pager = Pager(3, None)
    assert pager.take(hits("a", "b")) == hits("a", "b")
    assert pager.done


def test_the_pager_stops_at_an_empty_page() -> None:
    pager = Pager(3, None)
    assert pager.take([]) == []
    assert pager.done


def test_the_pager_stops_at_a_full_page_adding_no_new_id() -> None:
    pager = Pager(2, None)
    pager.take(hits("a", "b"))
    assert pager.take(hits("b", "a")) == []
    assert pager.done


def test_the_pager_stops_at_max_results_cutting_the_last_page() -> None:
    pager = Pager(3, 4)
    pager.take(hits("a", "b", "c"))
    assert pager.take(hits("d", "e", "f")) == hits("d")
    assert pager.done


def test_duplicates_do_not_count_towards_max_results() -> None:
    pager = Pager(3, 4)
    pager.take(hits("a", "b", "c"))
    assert pager.take(hits("a", "d", "e")) == hits("d")
    assert pager.done


# -- Keeping pages -------------------------------------------------------------------------------


def test_a_kept_page_is_served_until_its_ttl_runs_out() -> None:
    timer = FakeTimer()
    cache = PageCache(4, timer)
    cache.set("k", (SearchHit(id="1"),), 60)
    timer.now += 59.9
    assert cache.get("k") == (SearchHit(id="1"),)
    timer.now += 0.1
    assert cache.get("k") is None


def test_a_page_without_a_lifetime_is_not_kept_and_forgets_the_old_one() -> None:
    cache = PageCache(4, FakeTimer())
    cache.set("k", (), 60)
    cache.set("k", (), None)
    assert cache.get("k") is None


def test_a_page_cache_of_size_zero_keeps_nothing() -> None:
    cache = PageCache(0, FakeTimer())
    cache.set("k", (), 60)
    assert cache.get("k") is None

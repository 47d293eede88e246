"""The decision core on plain values: no server, no event loop."""

from __future__ import annotations

import json

import pytest

from meigen_async._core import (
    COALESCED,
    REFRESHED,
    SENT,
    SHARED_HIT,
    DontStore,
    Lookup,
    Raise,
    Refetch,
    Refresh,
    RefreshFailed,
    Retry,
    ServeStale,
    Store,
    Tally,
    after_failed_refresh,
    after_failure,
    after_giving_up,
    for_image,
    freshness,
    from_shared,
    look_up,
    may_refresh,
    read_response,
)
from meigen_async._protocol import Validators, conditional_headers, validators_from
from meigen_async.cache import CachePolicy, MemoryCache
from meigen_async.errors import (
    ApiError,
    ImageNotFound,
    InvalidResponse,
    RateLimited,
    ServerError,
    TransportError,
)
from meigen_async.models import GalleryImage, SessionStats
from meigen_async.retry import RetryPolicy
from meigen_async.shared import SharedImage, SharedMissing

ID = "2009629483448627597"
IMAGE = GalleryImage(id=ID, text="a garden")
BODY = json.dumps({"success": True, "data": {"id": ID, "text": "a garden"}}).encode()


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# -- look_up -------------------------------------------------------------------------------------


def test_a_fresh_image_is_a_hit_with_the_image() -> None:
    cache = MemoryCache(10)
    cache.set(ID, IMAGE, 60)

    assert look_up(cache, ID) == (Lookup.HIT, IMAGE)


def test_a_remembered_404_is_known_missing() -> None:
    cache = MemoryCache(10)
    cache.set_missing(ID, 30)

    assert look_up(cache, ID) == (Lookup.KNOWN_MISSING, None)


def test_an_expired_image_is_a_miss() -> None:
    clock = Clock()
    cache = MemoryCache(10, timer=clock)
    cache.set(ID, IMAGE, 60)
    clock.now = 61

    assert look_up(cache, ID) == (Lookup.MISS, None)


# -- read_response -------------------------------------------------------------------------------


def test_a_good_response_with_a_lifetime_is_stored_for_it() -> None:
    outcome = read_response(
        200, {"Cache-Control": "max-age=120"}, BODY, image_id=ID, policy=CachePolicy()
    )

    assert outcome == Store(IMAGE, 120.0, None)


def test_with_a_shared_tier_its_own_lifetime_is_read_from_s_maxage() -> None:
    headers = {"Cache-Control": "max-age=120, s-maxage=600"}

    outcome = read_response(200, headers, BODY, image_id=ID, policy=CachePolicy(), shared=True)

    assert outcome == Store(IMAGE, 120.0, 600.0)


def test_a_private_response_is_stored_in_process_only() -> None:
    headers = {"Cache-Control": "private, max-age=120"}

    outcome = read_response(200, headers, BODY, image_id=ID, policy=CachePolicy(), shared=True)

    assert outcome == Store(IMAGE, 120.0, None)


def test_a_good_response_marked_no_store_is_not_stored() -> None:
    outcome = read_response(
        200, {"Cache-Control": "no-store"}, BODY, image_id=ID, policy=CachePolicy()
    )

    assert outcome == DontStore(IMAGE)


def test_an_error_status_is_raised_as_its_error() -> None:
    with pytest.raises(ServerError):
        read_response(503, {}, b'{"error": "busy"}', image_id=ID, policy=CachePolicy())


def test_a_body_that_is_not_json_is_an_invalid_response() -> None:
    with pytest.raises(InvalidResponse):
        read_response(200, {}, b"<html>", image_id=ID, policy=CachePolicy())


# -- after_failure and after_giving_up -----------------------------------------------------------

POLICY = RetryPolicy(max_retries=2, backoff_base=1.0, backoff_max=8.0, random=lambda: 1.0)


def test_a_retryable_failure_is_retried_after_the_policys_backoff() -> None:
    assert after_failure(ServerError("down", status=503), 1, POLICY) == Retry(2.0)


def test_a_failure_past_the_last_retry_gives_up() -> None:
    assert after_failure(ServerError("down", status=503), 2, POLICY) is None


def test_a_client_error_is_never_retried() -> None:
    assert after_failure(ApiError("bad", status=400), 0, POLICY) is None


def test_a_rate_limit_waits_its_retry_after() -> None:
    error = RateLimited("slow down", retry_after=7.0)

    assert after_failure(error, 0, POLICY) == Retry(7.0)


def test_a_404_is_raised_and_remembered_for_the_negative_ttl() -> None:
    error = ImageNotFound("gone", status=404)

    assert after_giving_up(error, stale=IMAGE, negative_ttl=30) == Raise(error, 30)


def test_a_retryable_failure_with_stale_data_serves_it() -> None:
    error = TransportError("refused")

    assert after_giving_up(error, stale=IMAGE, negative_ttl=30) == ServeStale(IMAGE)


def test_a_retryable_failure_without_stale_data_is_raised() -> None:
    error = TransportError("refused")

    assert after_giving_up(error, stale=None, negative_ttl=30) == Raise(error)


def test_stale_data_never_masks_a_non_retryable_error() -> None:
    error = InvalidResponse("garbage")

    assert after_giving_up(error, stale=IMAGE, negative_ttl=30) == Raise(error)


def test_an_error_from_a_transport_is_told_for_its_image_and_retries() -> None:
    told = for_image(TransportError("cannot connect to h:9: connection refused"), ID, 3)

    assert isinstance(told, TransportError)
    assert told.image_id == ID
    assert str(told) == (
        f"request for image {ID} failed: cannot connect to h:9: connection refused "
        "(after 3 retries)"
    )


def test_an_error_after_no_retry_says_nothing_of_retries() -> None:
    told = for_image(InvalidResponse("too large"), ID, 0)

    assert isinstance(told, InvalidResponse)
    assert str(told) == f"image {ID}: too large"


# -- Tally ---------------------------------------------------------------------------------------


def test_the_tally_counts_each_outcome_under_its_counter() -> None:
    tally = Tally()
    for outcome in (
        Lookup.HIT,
        Lookup.KNOWN_MISSING,
        SHARED_HIT,
        Lookup.MISS,
        Lookup.MISS,
        SENT,
        SENT,
        SENT,
        COALESCED,
        Retry(1.0),
        ServeStale(IMAGE),
        Raise(TransportError("x")),
    ):
        tally.record(outcome)

    assert tally.snapshot() == SessionStats(
        requests=3,
        cache_hits=2,
        shared_hits=1,
        cache_misses=2,
        coalesced=1,
        retries=1,
        errors=2,
        stale_served=1,
    )


def test_a_new_tally_is_all_zeros() -> None:
    assert Tally().snapshot() == SessionStats()


# -- Freshness -----------------------------------------------------------------------------------

ETAG = '"v1"'
LAST_MODIFIED = "Thu, 07 Aug 2025 21:09:16 GMT"
VALIDATORS = Validators(etag=ETAG, last_modified=LAST_MODIFIED)


def test_freshness_before_expiry_is_a_hit() -> None:
    assert freshness(10.0, 60.0, 90.0, True) is Lookup.HIT


def test_freshness_within_the_revalidate_window_serves_and_refreshes() -> None:
    assert freshness(70.0, 60.0, 90.0, False) is Lookup.REFRESH


def test_freshness_past_the_window_with_validators_is_stale() -> None:
    assert freshness(95.0, 60.0, 90.0, True) is Lookup.STALE


def test_freshness_past_the_window_without_validators_is_a_miss() -> None:
    assert freshness(95.0, 60.0, 90.0, False) is Lookup.MISS


def test_an_expired_image_with_validators_is_stale_without_the_image() -> None:
    clock = Clock()
    cache = MemoryCache(10, timer=clock)
    cache.set(ID, IMAGE, 60, validators=VALIDATORS)
    clock.now = 10_000

    assert look_up(cache, ID) == (Lookup.STALE, None)


def test_an_image_in_its_revalidate_window_is_a_refresh_with_the_image() -> None:
    clock = Clock()
    cache = MemoryCache(10, timer=clock)
    cache.set(ID, IMAGE, 60, revalidate_window=30)
    clock.now = 75

    assert look_up(cache, ID) == (Lookup.REFRESH, IMAGE)


def test_an_image_past_its_revalidate_window_without_validators_is_a_miss() -> None:
    clock = Clock()
    cache = MemoryCache(10, timer=clock)
    cache.set(ID, IMAGE, 60, revalidate_window=30)
    clock.now = 91

    assert look_up(cache, ID) == (Lookup.MISS, None)


def test_a_response_keeps_its_etag_and_last_modified() -> None:
    headers = {"Cache-Control": "max-age=60", "ETag": ETAG, "Last-Modified": LAST_MODIFIED}
    outcome = read_response(200, headers, BODY, image_id=ID, policy=CachePolicy())

    assert outcome == Store(IMAGE, 60.0, None, VALIDATORS, 0.0)


def test_a_304_renews_the_stored_image_with_the_304s_own_lifetime() -> None:
    outcome = read_response(
        304,
        {"Cache-Control": "max-age=120"},
        b"",
        image_id=ID,
        policy=CachePolicy(),
        stored=(IMAGE, VALIDATORS),
    )

    assert outcome == Refresh(IMAGE, 120.0, None, VALIDATORS, 0.0)


def revalidated_by(headers: dict[str, str], sent: Validators = VALIDATORS) -> object:
    """What a 304 with `headers` means to a request sent with `sent`."""
    return read_response(304, headers, b"", image_id=ID, policy=CachePolicy(), stored=(IMAGE, sent))


def test_a_304_with_the_etag_sent_renews_and_takes_its_new_last_modified() -> None:
    newer = "Fri, 08 Aug 2025 09:00:00 GMT"
    outcome = revalidated_by({"Cache-Control": "max-age=120", "ETag": ETAG, "Last-Modified": newer})

    assert isinstance(outcome, Refresh)
    assert outcome.validators == Validators(etag=ETAG, last_modified=newer)


def test_a_304_with_another_strong_etag_renews_nothing_and_asks_for_a_refetch() -> None:
    assert revalidated_by({"Cache-Control": "max-age=120", "ETag": '"v2"'}) == Refetch()


def test_a_304_with_the_strong_form_of_a_weak_etag_sent_is_another_representation() -> None:
    sent = Validators(etag='W/"v1"')

    assert revalidated_by({"ETag": '"v1"'}, sent) == Refetch()


def test_a_304_with_a_weak_etag_matching_the_one_sent_weakly_renews() -> None:
    assert isinstance(revalidated_by({"ETag": 'W/"v1"'}), Refresh)


def test_a_304_with_a_weak_etag_of_another_representation_renews_nothing() -> None:
    assert revalidated_by({"ETag": 'W/"v2"'}) == Refetch()


def test_a_304_with_an_etag_to_a_request_sent_without_one_renews_nothing() -> None:
    sent = Validators(last_modified=LAST_MODIFIED)

    assert revalidated_by({"ETag": '"v1"'}, sent) == Refetch()


def test_a_304_without_an_etag_renews_the_stored_image() -> None:
    assert isinstance(revalidated_by({"Cache-Control": "max-age=120"}), Refresh)


def test_a_304_saying_no_store_renews_nothing() -> None:
    outcome = read_response(
        304,
        {"Cache-Control": "no-store"},
        b"",
        image_id=ID,
        policy=CachePolicy(),
        stored=(IMAGE, VALIDATORS),
    )

    assert outcome == DontStore(IMAGE)


def test_a_304_to_a_request_that_was_not_conditional_is_an_invalid_response() -> None:
    with pytest.raises(InvalidResponse, match="not conditional"):
        read_response(304, {}, b"", image_id=ID, policy=CachePolicy())


def test_the_servers_stale_while_revalidate_gives_the_window() -> None:
    headers = {"Cache-Control": "max-age=60, stale-while-revalidate=30"}
    outcome = read_response(200, headers, BODY, image_id=ID, policy=CachePolicy())

    assert isinstance(outcome, Store)
    assert outcome.revalidate_window == 30.0


def test_the_servers_stale_while_revalidate_is_capped_at_the_sessions_value() -> None:
    policy = CachePolicy(stale_while_revalidate=10)

    assert policy.revalidate_window({"Cache-Control": "stale-while-revalidate=30"}) == 10.0


def test_the_servers_stale_while_revalidate_is_capped_at_max_ttl_when_the_session_sets_none() -> (
    None
):
    policy = CachePolicy(max_ttl=100)

    assert policy.revalidate_window({"Cache-Control": "stale-while-revalidate=99999"}) == 100.0


def test_without_the_directive_the_window_is_the_sessions() -> None:
    policy = CachePolicy(stale_while_revalidate=15)

    assert policy.revalidate_window({"Cache-Control": "max-age=60"}) == 15.0


def test_conditional_headers_carry_both_validators() -> None:
    assert conditional_headers(VALIDATORS) == {
        "If-None-Match": ETAG,
        "If-Modified-Since": LAST_MODIFIED,
    }


def test_no_validators_make_no_conditional_headers() -> None:
    assert conditional_headers(None) is None


def test_a_validator_that_could_not_be_sent_back_is_dropped() -> None:
    headers = {"ETag": '"a\r\nX-Evil: 1"', "Last-Modified": "not a date"}

    assert validators_from(headers) is None


def test_a_weak_etag_is_kept_as_it_came() -> None:
    assert validators_from({"ETag": 'W/"x"'}) == Validators(etag='W/"x"')


def test_the_tally_counts_a_304_as_revalidated_and_a_refresh_as_refreshed() -> None:
    tally = Tally()
    tally.record(Refresh(IMAGE, 60.0, None, VALIDATORS))
    tally.record(REFRESHED)
    tally.record(Lookup.REFRESH)
    tally.record(Lookup.STALE)

    assert tally.snapshot() == SessionStats(
        revalidated=1, refreshed=1, cache_hits=1, cache_misses=1
    )


def test_a_remembered_404_says_the_cache_answered_it() -> None:
    from meigen_async._core import remembered_404

    error = remembered_404("a1")

    assert str(error) == "image a1 not found (HTTP 404, remembered in the cache, not asked again)"
    assert error.status == 404


def test_an_error_told_for_its_subject_keeps_what_callers_branch_on() -> None:
    told = for_image(RateLimited("slow down", retry_after=7.0), None, 2, subject="search 'x'")

    assert isinstance(told, RateLimited)
    assert (told.status, told.retry_after, told.image_id) == (429, 7.0, None)
    assert str(told) == "search 'x': slow down (after 2 retries)"


# -- from_shared ---------------------------------------------------------------------------------

SWR = CachePolicy(stale_while_revalidate=30.0)


def shared(**fields: object) -> SharedImage:
    return SharedImage(image=IMAGE, fresh_until=0.0, **fields)  # type: ignore[arg-type]


def test_a_fresh_shared_image_answers_with_the_sessions_revalidate_window() -> None:
    kept = from_shared(
        shared(etag='"v1"'), 60.0, image_id=ID, policy=SWR, stale_window=0.0, stored=False
    )

    assert kept == Store(IMAGE, 60.0, None, Validators(etag='"v1"'), 30.0)


def test_a_fresh_shared_404_answers_and_is_remembered_for_what_it_has_left() -> None:
    kept = from_shared(
        SharedMissing(until=0.0), 12.0, image_id=ID, policy=SWR, stale_window=0.0, stored=False
    )

    assert isinstance(kept, Raise)
    assert isinstance(kept.error, ImageNotFound)
    assert kept.remember_missing == 12.0


def test_an_expired_shared_404_is_nothing() -> None:
    missing = SharedMissing(until=0.0)
    kept = from_shared(missing, 0.0, image_id=ID, policy=SWR, stale_window=60.0, stored=False)
    assert kept is None


@pytest.mark.parametrize(
    ("entry", "stale_window", "stored", "kept"),
    [
        (shared(), 60.0, False, True),  # may serve stale-if-error
        (shared(), 5.0, False, False),  # past its stale window, and nothing to revalidate
        (shared(etag='"v1"'), 0.0, False, True),  # to revalidate
        (shared(etag='"v1"'), 60.0, True, False),  # the in-process entry stays
    ],
    ids=["stale-window", "past-it", "validators", "stored"],
)
def test_an_expired_shared_image_is_no_answer_kept_only_when_it_can_serve(
    entry: SharedImage, stale_window: float, stored: bool, kept: bool
) -> None:
    decision = from_shared(
        entry, -10.0, image_id=ID, policy=SWR, stale_window=stale_window, stored=stored
    )

    if kept:
        assert isinstance(decision, Store)
        assert decision.ttl == -10.0  # stored already expired: no answer
    else:
        assert decision is None


# -- After a failed background refresh -----------------------------------------------------------

HALF = RetryPolicy(backoff_base=2.0, backoff_max=30.0, random=lambda: 0.5)


def test_an_id_whose_refresh_never_failed_may_be_refreshed() -> None:
    assert may_refresh(None, 1000.0)


def test_a_failed_refresh_waits_the_policys_backoff_before_the_next() -> None:
    failed = after_failed_refresh(ServerError("busy", status=500), None, now=1000.0, policy=HALF)

    assert failed == RefreshFailed(failures=1, until=1001.0, wait=1.0)
    assert not may_refresh(failed, 1000.999)
    assert may_refresh(failed, 1001.0)


def test_each_failed_refresh_in_a_row_backs_off_longer_up_to_the_policys_cap() -> None:
    error = TransportError("refused")
    failed = None
    waits = []
    for _ in range(6):
        failed = after_failed_refresh(error, failed, now=0.0, policy=HALF)
        waits.append(failed.wait)

    assert waits == [1.0, 2.0, 4.0, 8.0, 15.0, 15.0]
    assert failed is not None
    assert failed.failures == 6


def test_a_refresh_failing_for_hours_in_a_row_still_backs_off_by_the_policys_cap() -> None:
    previous = RefreshFailed(failures=5000, until=0.0, wait=15.0)

    failed = after_failed_refresh(TransportError("refused"), previous, now=0.0, policy=HALF)

    assert (failed.failures, failed.wait) == (5001, 15.0)


def test_a_failed_refresh_waits_its_retry_after_rather_than_the_backoff() -> None:
    error = RateLimited("slow down", status=429, retry_after=120.0)

    failed = after_failed_refresh(error, None, now=1000.0, policy=HALF)

    assert (failed.until, may_refresh(failed, 1119.0), may_refresh(failed, 1120.0)) == (
        1120.0,
        False,
        True,
    )


def test_a_huge_retry_after_holds_refreshes_back_five_minutes_at_most() -> None:
    error = ServerError("down", status=503, retry_after=float("inf"))

    assert after_failed_refresh(error, None, now=0.0, policy=HALF).until == 300.0

"""The shared-cache codec and the one check of entries read back (pure: plain values)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from yarl import URL

from meigen_async._shared_codec import (
    CLOCK_SKEW,
    FORMAT,
    LEASE_SLACK,
    VALIDATOR_KEEP,
    BadEntry,
    check,
    decode,
    encode,
    gallery_of,
    lease_in_force,
    lease_pid,
    shared_key,
    stored_image,
    stored_missing,
)
from meigen_async.cache import CachePolicy
from meigen_async.models import GalleryImage, structure_image
from meigen_async.shared import SharedEntry, SharedImage, SharedMissing

A = GalleryImage(id="a", likes=1)
B = GalleryImage(id="b", likes=2)
NOW = 1_700_000_000.0  # the wall clock, in seconds since the epoch
POLICY = CachePolicy(max_ttl=600, default_ttl=300, negative_ttl=30)
DATE = "Fri, 09 Jan 2026 10:00:00 GMT"


def image_until(until: Any, image: GalleryImage = A, **validators: Any) -> SharedImage:
    return SharedImage(image=image, fresh_until=until, **validators)


# -- Keys ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spelling",
    ["https://www.meigen.ai", "https://WWW.Meigen.AI/", "https://www.meigen.ai:443//"],
)
def test_one_gallery_has_one_key_however_its_url_is_spelled(spelling: str) -> None:
    assert gallery_of(URL(spelling)) == "https://www.meigen.ai"


def test_a_galleries_key_names_its_scheme_port_and_path() -> None:
    galleries = {
        gallery_of(URL(url))
        for url in ("https://h", "http://h", "https://h:8443", "https://h/x", "https://h/y/")
    }
    assert len(galleries) == 5


def test_a_galleries_key_never_holds_its_user_or_password() -> None:
    assert gallery_of(URL("https://user:secret@h/base")) == "https://h/base"


def test_an_entry_key_is_the_images_url() -> None:
    assert shared_key("http://127.0.0.1:8080/x", "42") == "http://127.0.0.1:8080/x/api/images/42"


# -- Values ----------------------------------------------------------------------------------------


def test_every_sample_image_survives_the_trip_through_its_stored_text(
    images: list[dict[str, Any]],
) -> None:
    for data in images:
        entry = image_until(1234.5, structure_image(data), etag='"v1"', last_modified=DATE)
        assert decode(encode(entry)) == entry
        assert decode(encode(entry).encode()) == entry


def test_a_404_survives_the_trip_through_its_stored_text() -> None:
    assert decode(encode(SharedMissing(until=99.25))) == SharedMissing(until=99.25)


def test_an_image_is_kept_past_its_freshness_for_its_stale_window() -> None:
    stored = stored_image(A, 60, 30, now=NOW)
    assert stored is not None
    assert (stored.kind, stored.until) == ("image", NOW + 90)
    assert decode(stored.value) == image_until(NOW + 60)


def test_an_image_with_validators_is_kept_an_hour_longer_to_be_revalidated() -> None:
    stored = stored_image(A, 60, 30, now=NOW, etag='"v1"')
    assert stored is not None
    assert stored.until == NOW + 90 + VALIDATOR_KEEP


def test_a_404_is_kept_for_its_ttl() -> None:
    stored = stored_missing(30, now=NOW)
    assert stored is not None
    assert (stored.kind, stored.until) == ("missing", NOW + 30)
    assert decode(stored.value) == SharedMissing(until=NOW + 30)


@pytest.mark.parametrize("ttl", [0, -1, math.nan])
def test_nothing_is_stored_for_a_lifetime_that_is_not_positive(ttl: float) -> None:
    assert stored_image(A, ttl, 30, now=NOW) is None
    assert stored_missing(ttl, now=NOW) is None


def test_fields_a_newer_version_adds_are_ignored_on_read() -> None:
    value = json.loads(encode(image_until(1234.5))) | {"a_field_from_later": [1]}
    assert decode(json.dumps(value)) == image_until(1234.5)


def test_a_lone_surrogate_in_a_stored_value_comes_back_replaced() -> None:
    raw = json.dumps(
        {"v": FORMAT, "kind": "image", "fresh_until": 1, "image": {"id": "a", "text": "x\ud800"}}
    )
    entry = decode(raw)
    assert isinstance(entry, SharedImage)
    assert entry.image.text == "x\ufffd"


@pytest.mark.parametrize(
    "raw",
    [
        12,
        None,
        "not json",
        b"\xff\xfe not utf-8",
        "[" * 100_000,
        "[]",
        '{"fresh_until": 1, "image": {"id": "a"}}',
        '{"v": 1, "kind": "image", "fresh_until": 1, "image": {"id": "a"}}',
        '{"v": 2, "kind": "video"}',
        '{"v": 2, "kind": "image", "fresh_until": 1, "image": {"id": 5}}',
        '{"v": 2, "kind": "image", "fresh_until": 1, "image": []}',
    ],
    ids=[
        "an-int",
        "none",
        "not-json",
        "not-utf-8",
        "nested-too-deep",
        "an-array",
        "before-keys-named-their-gallery",
        "another-version",
        "another-kind",
        "an-image-of-the-wrong-types",
        "no-image-object",
    ],
)
def test_a_value_that_is_not_an_entry_of_this_version_is_refused(raw: Any) -> None:
    with pytest.raises(BadEntry):
        decode(raw)


# -- The check -------------------------------------------------------------------------------------


def left_of(entry: SharedEntry, policy: CachePolicy = POLICY) -> float:
    return check(entry, "a", policy=policy, now=NOW).left


def test_an_image_read_back_is_fresh_for_what_is_left_of_its_life() -> None:
    assert left_of(image_until(NOW + 100)) == 100


def test_an_image_read_back_is_fresh_no_longer_than_max_ttl() -> None:
    # Within the clock-skew allowance: believable, but capped.
    assert left_of(image_until(NOW + 630)) == 600


def test_an_explicit_ttl_caps_an_image_read_back_instead_of_max_ttl() -> None:
    assert left_of(image_until(NOW + 50), CachePolicy(ttl=20, max_ttl=600)) == 20


def test_a_default_ttl_above_max_ttl_is_a_lifetime_the_session_gives_itself() -> None:
    assert left_of(image_until(NOW + 7000), CachePolicy(max_ttl=600, default_ttl=7200)) == 7000


def test_a_404_read_back_is_remembered_no_longer_than_negative_ttl() -> None:
    assert left_of(SharedMissing(until=NOW + 80)) == 30


def test_an_expired_image_read_back_has_no_life_left_but_is_not_refused() -> None:
    assert left_of(image_until(NOW - 5)) == -5


def test_an_integer_expiry_reads_as_a_float() -> None:
    checked = check(image_until(int(NOW) + 10), "a", policy=POLICY, now=NOW)
    assert checked.entry == image_until(NOW + 10)
    assert isinstance(checked.entry, SharedImage)
    assert type(checked.entry.fresh_until) is float


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
    with pytest.raises(BadEntry, match="more than"):
        check(entry, "a", policy=POLICY, now=NOW)


@pytest.mark.parametrize(
    "until",
    [math.nan, math.inf, -math.inf, 0, -1.0, 10**400, 10**5000, "soon", True, None, [NOW]],
    ids=[
        "nan",
        "inf",
        "-inf",
        "zero",
        "negative",
        "400-digits",
        "5000-digits",
        "string",
        "bool",
        "none",
        "list",
    ],
)
def test_an_expiry_that_is_not_a_time_is_refused(until: Any) -> None:
    for entry in (image_until(until), SharedMissing(until=until)):
        with pytest.raises(BadEntry, match="expiry"):
            check(entry, "a", policy=POLICY, now=NOW)


def test_another_ids_image_is_refused() -> None:
    with pytest.raises(BadEntry, match="holds image 'b'"):
        check(image_until(NOW + 60, B), "a", policy=POLICY, now=NOW)


@pytest.mark.parametrize(
    "entry",
    [GalleryImage(id="a"), "a", None, SharedImage(image={"id": "a"}, fresh_until=NOW)],  # type: ignore[arg-type]
    ids=["an-image", "a-string", "none", "a-dict-for-an-image"],
)
def test_what_is_not_a_shared_entry_is_refused(entry: object) -> None:
    with pytest.raises(BadEntry):
        check(entry, "a", policy=POLICY, now=NOW)


@pytest.mark.parametrize(
    "validators",
    [
        {"etag": "a\r\nX-Evil: 1"},
        {"etag": "caf\u00e9"},
        {"etag": "x" * 513},
        {"etag": ""},
        {"etag": 12},
        {"last_modified": "yesterday"},
        {"last_modified": b"Fri, 09 Jan 2026 10:00:00 GMT"},
    ],
    ids=["crlf", "not-ascii", "too-long", "empty", "a-number", "not-a-date", "bytes"],
)
def test_a_validator_that_may_not_be_sent_back_is_dropped_not_the_image(
    validators: dict[str, Any],
) -> None:
    checked = check(image_until(NOW + 60, **validators), "a", policy=POLICY, now=NOW)
    assert checked.entry == image_until(NOW + 60)


def test_good_validators_are_kept() -> None:
    entry = image_until(NOW + 60, etag='W/"v1"', last_modified=DATE)
    assert check(entry, "a", policy=POLICY, now=NOW).entry == entry


# -- Leases ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("until", "held"),
    [
        (NOW + 5, True),
        (NOW + 10 + LEASE_SLACK, True),
        (NOW + 10 + LEASE_SLACK + 0.01, False),
        (NOW, False),
        (NOW - 1, False),
        (math.nan, False),
        (math.inf, False),
        (10**400, False),
        ("soon", False),
        (None, False),
        (True, False),
    ],
)
def test_a_lease_holds_only_until_a_finite_time_within_the_lease_time(
    until: Any, held: bool
) -> None:
    assert lease_in_force(until, now=NOW, ms=10_000) is held


def test_without_a_known_lease_time_any_finite_future_expiry_holds() -> None:
    assert lease_in_force(NOW + 86400, now=NOW, ms=None)


@pytest.mark.parametrize(
    ("value", "pid"),
    [(1, 1), (4_194_304, 4_194_304), (2**31 - 1, 2**31 - 1)]
    + [(bad, None) for bad in (0, -1, 2**31, 10**30, 1.0, "123", True, None)],
)
def test_a_lease_names_a_process_only_by_a_small_positive_integer(value: Any, pid: Any) -> None:
    assert lease_pid(value) == pid

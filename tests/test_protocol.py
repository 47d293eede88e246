"""The endpoint's contract as plain functions: ids, the URL, errors by status, decoding bodies.

The last section checks the bodies that are not the envelope end to end, against FakeGallery
over loopback: what the caller of a session sees of them.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from helpers import fast

from meigen_async import GallerySession
from meigen_async._protocol import (
    MAX_ID_LENGTH,
    decode_response,
    error_for_status,
    image_url,
    validate_image_id,
)
from meigen_async._status import IMAGES, kind_of, retry_after
from meigen_async.errors import (
    ApiError,
    ImageNotFound,
    InvalidImageId,
    InvalidResponse,
    MeigenError,
    RateLimited,
    ServerError,
)
from meigen_async.models import GalleryImage
from meigen_async.retry import is_retryable
from meigen_async.testing import Answer, FakeGallery

ID = "2009629483448627597"
JSON_HEADERS = {"Content-Type": "application/json"}

DATA: dict[str, Any] = {
    "id": ID,
    "text": "A serene Japanese garden with cherry blossoms",
    "media_urls": [f"https://images.meigen.ai/tweets/{ID}/0.jpg"],
    "thumbnail_url": f"https://images.meigen.ai/tweets/{ID}/0.jpg",
    "image_width": 1650,
    "image_height": 2048,
    "model": "midjourney",
    "created_at": "2026-01-09T14:13:00+00:00",
    "likes": 113,
    "views": 9266,
    "retweets": 8,
    "author_username": "creator",
    "author_display_name": "Creator Name",
    "author_avatar_url": "https://pbs.twimg.com/profile_images/1/normal.jpg",
}
NOT_FOUND = b'{ "success": false, "error": "Image not found" }'


def body(value: Any) -> bytes:
    return json.dumps(value).encode()


def decode(status: int, payload: bytes, headers: dict[str, str] | None = None) -> GalleryImage:
    return decode_response(status, headers or JSON_HEADERS, payload, image_id=ID)


# -- validate_image_id --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "image_id",
    [
        ID,
        "a",
        "Z",
        "0",
        "_",
        "-",
        "abc-DEF_123",
        "a" * MAX_ID_LENGTH,
    ],
)
def test_a_valid_id_is_returned_unchanged(image_id: str) -> None:
    assert validate_image_id(image_id) == image_id


def test_the_longest_id_accepted_is_128_characters() -> None:
    assert MAX_ID_LENGTH == 128


@pytest.mark.parametrize(
    "image_id",
    [
        "",
        "a" * (MAX_ID_LENGTH + 1),
        " ",
        "abc def",
        " abc",
        "abc\n",
        "../x",
        "..",
        "a/b",
        "a\\b",
        "%2e",
        "a?b=1",
        "a#b",
        "a.b",
        "١٢٣",
        "abc\u00e9",
        "\uff41\uff42\uff43",  # fullwidth "abc"
        "a\x00",
    ],
)
def test_an_invalid_id_string_raises_invalid_image_id(image_id: str) -> None:
    with pytest.raises(InvalidImageId) as caught:
        validate_image_id(image_id)

    assert caught.value.image_id == image_id


@pytest.mark.parametrize("image_id", [2009629483448627597, None, ID.encode(), 1.5, [ID]])
def test_an_id_that_is_not_a_string_raises_invalid_image_id(image_id: object) -> None:
    with pytest.raises(InvalidImageId, match=type(image_id).__name__):
        validate_image_id(image_id)


def test_an_invalid_id_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="invalid image id"):
        validate_image_id("a/b")


def test_a_very_long_invalid_id_is_shortened_in_the_message() -> None:
    with pytest.raises(InvalidImageId) as caught:
        validate_image_id("x" * 10_000)

    assert len(str(caught.value)) < 300


# -- image_url ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("https://www.meigen.ai", f"https://www.meigen.ai/api/images/{ID}"),
        ("https://www.meigen.ai/", f"https://www.meigen.ai/api/images/{ID}"),
        ("http://127.0.0.1:8080", f"http://127.0.0.1:8080/api/images/{ID}"),
        ("http://127.0.0.1:8080/", f"http://127.0.0.1:8080/api/images/{ID}"),
        ("https://proxy.example/meigen", f"https://proxy.example/meigen/api/images/{ID}"),
    ],
)
def test_image_url_is_base_then_api_images_then_id(base: str, expected: str) -> None:
    assert image_url(base, ID) == expected


def test_image_url_keeps_dashes_and_underscores_in_the_id() -> None:
    assert image_url("https://www.meigen.ai", "a-b_C") == "https://www.meigen.ai/api/images/a-b_C"


# -- error_for_status: Retry-After on a 503 -----------------------------------------------------


def test_a_503_carries_its_retry_after() -> None:
    error = error_for_status(503, {"Retry-After": "7"}, b"", image_id=ID)

    assert isinstance(error, ServerError)
    assert error.retry_after == 7.0


def test_a_503_retry_after_may_be_an_http_date() -> None:
    value = format_datetime(datetime.now(UTC) + timedelta(seconds=90), usegmt=True)

    error = error_for_status(503, {"retry-after": value}, b"", image_id=ID)

    assert isinstance(error, ServerError)
    assert error.retry_after is not None
    assert 85.0 < error.retry_after <= 90.0


@pytest.mark.parametrize(
    ("status", "headers"),
    [(503, {}), (503, {"Retry-After": "soon"}), (500, {"Retry-After": "7"})],
)
def test_a_server_error_has_no_retry_after_unless_a_503_gives_one(
    status: int, headers: dict[str, str]
) -> None:
    error = error_for_status(status, headers, b"", image_id=ID)

    assert isinstance(error, ServerError)
    assert error.retry_after is None


@pytest.mark.parametrize("status", [100, 301, 400, 404, 429, 500, 503])
def test_an_images_error_is_the_images_class_for_its_status_kind(status: int) -> None:
    headers = {"Retry-After": "7", "Location": "/elsewhere"}

    error = error_for_status(status, headers, b'{"error": "no"}', image_id=ID)

    kind = kind_of(status)
    assert kind is not None
    assert type(error) is IMAGES.class_for(kind)
    assert (error.status, error.image_id) == (status, ID)
    assert getattr(error, "retry_after", None) == retry_after(status, headers)


# -- decode_response: success -------------------------------------------------------------------


def test_a_success_envelope_decodes_to_a_gallery_image() -> None:
    image = decode(200, body({"success": True, "data": DATA}))

    assert isinstance(image, GalleryImage)
    assert image.id == ID
    assert image.likes == 113
    assert image.created_at == datetime(2026, 1, 9, 14, 13, tzinfo=UTC)


def test_a_success_envelope_with_extra_envelope_fields_still_decodes() -> None:
    image = decode(200, body({"success": True, "data": DATA, "cached": True}))

    assert image.id == ID


def test_a_success_envelope_with_a_badly_typed_field_raises_invalid_response() -> None:
    payload = body({"success": True, "data": {**DATA, "likes": "many"}})

    with pytest.raises(InvalidResponse, match="likes") as caught:
        decode(200, payload)

    assert caught.value.image_id == ID


# -- decode_response: error statuses ------------------------------------------------------------


def test_a_404_raises_image_not_found_saying_the_gallery_answered_it() -> None:
    with pytest.raises(ImageNotFound) as caught:
        decode(404, NOT_FOUND)

    assert caught.value.status == 404
    assert caught.value.image_id == ID
    assert str(caught.value) == f"image {ID} not found (HTTP 404, from the gallery)"


def test_a_429_with_retry_after_raises_rate_limited_with_seconds() -> None:
    with pytest.raises(RateLimited) as caught:
        decode(429, body({"success": False, "error": "Too many requests"}), {"Retry-After": "12"})

    assert caught.value.retry_after == 12.0
    assert caught.value.status == 429
    assert "Too many requests" in str(caught.value)


def test_a_429_reads_retry_after_from_a_lower_case_plain_dict_key() -> None:
    with pytest.raises(RateLimited) as caught:
        decode(429, b"", {"retry-after": "5"})

    assert caught.value.retry_after == 5.0


@pytest.mark.parametrize("value", ["soon", "\u00b2"])
def test_a_429_with_an_unreadable_retry_after_has_no_retry_after(value: str) -> None:
    with pytest.raises(RateLimited) as caught:
        decode(429, b"", {"Retry-After": value})

    assert caught.value.retry_after is None


def test_a_429_without_retry_after_has_no_retry_after() -> None:
    with pytest.raises(RateLimited) as caught:
        decode(429, b"")

    assert caught.value.retry_after is None


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (500, ServerError),
        (502, ServerError),
        (503, ServerError),
        (400, ApiError),
        (403, ApiError),
        (418, ApiError),
    ],
)
def test_an_error_status_raises_the_matching_error(
    status: int, error_type: type[MeigenError]
) -> None:
    with pytest.raises(error_type) as caught:
        decode(status, body({"success": False, "error": "Something went wrong"}))

    assert type(caught.value) is error_type
    assert caught.value.status == status
    assert caught.value.image_id == ID
    assert "Something went wrong" in str(caught.value)


def test_a_502_with_an_html_body_raises_server_error_with_a_snippet() -> None:
    page = b"<html><body><h1>502 Bad Gateway</h1></body></html>"

    with pytest.raises(ServerError, match="502 Bad Gateway"):
        decode(502, page, {"Content-Type": "text/html"})


def test_an_error_status_with_an_empty_body_says_so() -> None:
    with pytest.raises(ServerError, match="empty body"):
        decode(503, b"")


# -- decode_response: bodies that are not the envelope ------------------------------------------


def test_an_html_body_on_200_raises_invalid_response_with_a_snippet() -> None:
    page = b"<!DOCTYPE html><html><head><title>Just a moment...</title></head></html>"

    with pytest.raises(InvalidResponse, match="Just a moment") as caught:
        decode(200, page, {"Content-Type": "text/html"})

    assert caught.value.image_id == ID


def test_a_huge_html_body_is_shortened_in_the_message() -> None:
    page = b"<html>" + b"x" * 100_000 + b"</html>"

    with pytest.raises(InvalidResponse) as caught:
        decode(200, page)

    assert "<html>" in str(caught.value)
    assert len(str(caught.value)) < 500


def test_truncated_json_raises_invalid_response() -> None:
    payload = body({"success": True, "data": DATA})[:-20]

    with pytest.raises(InvalidResponse, match="not JSON"):
        decode(200, payload)


def test_a_body_that_is_not_utf8_raises_invalid_response() -> None:
    with pytest.raises(InvalidResponse):
        decode(200, b"\xff\xfe\x00garbage")


def test_an_empty_200_body_raises_invalid_response() -> None:
    with pytest.raises(InvalidResponse):
        decode(200, b"")


def test_a_json_array_raises_invalid_response() -> None:
    with pytest.raises(InvalidResponse, match="list"):
        decode(200, body([{"success": True, "data": DATA}]))


def test_an_envelope_without_data_raises_invalid_response() -> None:
    with pytest.raises(InvalidResponse, match="'data'"):
        decode(200, body({"success": True}))


def test_an_envelope_with_null_data_raises_invalid_response() -> None:
    with pytest.raises(InvalidResponse, match="data"):
        decode(200, body({"success": True, "data": None}))


def test_success_false_with_an_error_on_a_200_raises_api_error_with_the_message() -> None:
    with pytest.raises(ApiError, match="Image not found") as caught:
        decode(200, NOT_FOUND)

    assert caught.value.image_id == ID


@pytest.mark.parametrize(
    "envelope",
    [{"data": DATA}, {"success": "true", "data": DATA}, {"success": 1, "data": DATA}],
)
def test_an_envelope_whose_success_is_not_true_raises_invalid_response(
    envelope: dict[str, Any],
) -> None:
    with pytest.raises(InvalidResponse, match="success"):
        decode(200, body(envelope))


# -- decode_response: redirects -----------------------------------------------------------------

REDIRECT_BODY = b"<html>Moved: see the page of another site</html>"


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_raises_api_error_naming_the_location(status: int) -> None:
    headers = {"Location": "https://elsewhere.example/api/images/x"}

    with pytest.raises(ApiError) as caught:
        decode(status, REDIRECT_BODY, headers)

    assert type(caught.value) is ApiError
    assert caught.value.status == status
    assert "redirected to 'https://elsewhere.example/api/images/x'" in str(caught.value)
    assert "set base_url" in str(caught.value)


def test_a_redirect_body_is_not_quoted() -> None:
    with pytest.raises(ApiError) as caught:
        decode(302, REDIRECT_BODY, {"Location": "/moved"})

    assert "another site" not in str(caught.value)


def test_a_redirect_is_not_retryable() -> None:
    with pytest.raises(ApiError) as caught:
        decode(307, REDIRECT_BODY, {"location": "/moved"})

    assert not is_retryable(caught.value)


def test_a_redirect_status_without_a_location_says_so() -> None:
    with pytest.raises(ApiError, match="no Location"):
        decode(300, REDIRECT_BODY)


def test_a_long_or_unprintable_location_is_shortened_and_printable() -> None:
    location = "/x\ud800\n" + "y" * 10_000

    with pytest.raises(ApiError) as caught:
        decode(301, b"", {"Location": location})

    message = str(caught.value)
    message.encode("utf-8")
    assert "\n" not in message
    assert len(message) < 500


# -- decode_response: the answer of another id --------------------------------------------------


def test_data_of_another_id_raises_invalid_response_naming_both() -> None:
    with pytest.raises(InvalidResponse) as caught:
        decode(200, body({"success": True, "data": {**DATA, "id": "other-id"}}))

    assert ID in str(caught.value)
    assert "'other-id'" in str(caught.value)
    assert caught.value.image_id == ID


def test_data_of_an_id_differing_only_in_case_raises_invalid_response() -> None:
    with pytest.raises(InvalidResponse):
        decode_response(
            200, JSON_HEADERS, body({"success": True, "data": {"id": "AbC"}}), image_id="abc"
        )


# -- decode_response: deep nesting --------------------------------------------------------------

DEEP = b"[" * 5000


@pytest.mark.parametrize(
    ("status", "error_type"),
    [(200, InvalidResponse), (404, ImageNotFound), (503, ServerError), (400, ApiError)],
)
def test_a_deeply_nested_body_raises_the_statuss_error(
    status: int, error_type: type[MeigenError]
) -> None:
    with pytest.raises(error_type) as caught:
        decode(status, DEEP)

    assert type(caught.value) is error_type


def test_a_deeply_nested_200_body_is_said_to_be_nested_too_deep() -> None:
    with pytest.raises(InvalidResponse, match="nested too deep"):
        decode(200, DEEP)


def test_a_deeply_nested_body_after_a_valid_prefix_raises_invalid_response() -> None:
    payload = b'{"success": true, "data": {"id": "%s", "text": ' % ID.encode() + DEEP

    with pytest.raises(InvalidResponse):
        decode(200, payload)


# -- decode_response: lone surrogates -----------------------------------------------------------


def test_a_lone_surrogate_escape_becomes_a_replacement_character() -> None:
    payload = b'{"success": true, "data": {"id": "%s", "text": "a\\udc00b"}}' % ID.encode()

    assert decode(200, payload).text == "a\ufffdb"


def test_cesu8_surrogate_bytes_become_replacement_characters() -> None:
    # U+1F600 as CESU-8: each half of the surrogate pair encoded on its own.
    cesu8 = "\ud83d\ude00".encode("utf-8", "surrogatepass")
    payload = b'{"success": true, "data": {"id": "%s", "text": "' % ID.encode() + cesu8 + b'"}}'

    assert decode(200, payload).text == "\ufffd\ufffd"


def test_a_lone_surrogate_in_the_services_error_message_is_replaced() -> None:
    with pytest.raises(ServerError) as caught:
        decode(500, b'{"success": false, "error": "gone \\ud800"}')

    assert str(caught.value).endswith("gone \ufffd")


def test_a_lone_surrogate_in_an_error_envelope_on_a_200_is_replaced() -> None:
    with pytest.raises(ApiError) as caught:
        decode(200, b'{"success": false, "error": "down \\ud800"}')

    str(caught.value).encode("utf-8")


# -- Over loopback: bodies that are not the envelope -------------------------------------------


async def test_an_html_page_is_an_invalid_response_quoting_the_page(
    client: GallerySession, gallery: FakeGallery
) -> None:
    image_id = gallery.ids[0]
    gallery.script(image_id, Answer.html())
    with pytest.raises(InvalidResponse) as caught:
        await client.get_image(image_id)
    message = str(caught.value)
    assert "DOCTYPE" in message
    assert len(message) < 300  # a snippet, not the whole page
    assert caught.value.image_id == image_id


async def test_truncated_json_is_an_invalid_response_quoting_the_body(
    client: GallerySession, gallery: FakeGallery
) -> None:
    image_id = gallery.ids[0]
    gallery.script(image_id, Answer.truncated(keep=40))
    with pytest.raises(InvalidResponse, match="not JSON") as caught:
        await client.get_image(image_id)
    assert '{"success": true' in str(caught.value)


async def test_json_without_the_envelope_is_an_invalid_response(
    client: GallerySession, gallery: FakeGallery
) -> None:
    image_id = gallery.ids[0]
    gallery.script(image_id, Answer(body=b'{"id": "1"}'))
    with pytest.raises(InvalidResponse) as caught:
        await client.get_image(image_id)
    assert '"id"' in str(caught.value)


async def test_an_html_error_page_keeps_its_status_and_quotes_the_page(
    gallery: FakeGallery,
) -> None:
    image_id = gallery.ids[0]
    gallery.script(image_id, Answer.html(502))
    async with GallerySession(gallery.url, retry=fast(max_retries=0)) as client:
        with pytest.raises(ServerError, match="Bad Gateway") as caught:
            await client.get_image(image_id)
    assert caught.value.status == 502


def test_the_services_error_message_is_quoted_with_its_controls_escaped() -> None:
    body = json.dumps({"error": "gone\x1b]0;pwned\x07\u202e\nfake"}).encode()
    error = error_for_status(400, {}, body, image_id="7")
    assert error.message == "HTTP 400 for image 7: gone\\x1b]0;pwned\\x07\\u202e\\nfake"

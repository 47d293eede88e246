"""The data classes and the one cattrs converter that builds them from the endpoint's JSON."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import cattrs
import pytest
from helpers import JSON_VALUES, UNTRUSTED_TEXT
from hypothesis import given, settings
from hypothesis import strategies as st

from meigen_async import models
from meigen_async._fake_search import SEARCH_FIELDS
from meigen_async._text import replace_surrogates
from meigen_async.errors import ImageNotFound, InvalidResponse
from meigen_async.models import (
    GalleryImage,
    ImageResult,
    PromptSegment,
    structure_image,
    structure_search_hit,
    unstructure_image,
    unstructure_search_hit,
)

ID = "2009629483448627597"


def realistic_data() -> dict[str, Any]:
    """The documented example, plus the fields the table documents but the example omits.

    `profile` (a Midjourney personalization code) is newer than the endpoint's page
    (issue 25, from docs.meigen.ai, 2026).
    """
    return {
        "id": ID,
        "text": "A serene Japanese garden with cherry blossoms",
        "prompt_ready": True,
        "prompt_segments": [
            {"label": "Scene", "text": "a serene Japanese garden"},
            {"label": "Detail", "text": "cherry blossoms"},
        ],
        "media_urls": [
            f"https://images.meigen.ai/tweets/{ID}/0.jpg",
            f"https://images.meigen.ai/tweets/{ID}/1.jpg",
        ],
        "thumbnail_url": f"https://images.meigen.ai/tweets/{ID}/0.jpg",
        "image_width": 1650,
        "image_height": 2048,
        "model": "midjourney",
        "sref": "1234567890",
        "profile": "m7abc1234",
        "created_at": "2026-01-09T14:13:00+00:00",
        "likes": 113,
        "views": 9266,
        "retweets": 8,
        "author_username": "creator",
        "author_display_name": "Creator Name",
        "author_avatar_url": "https://pbs.twimg.com/profile_images/1/normal.jpg",
    }


def with_field(name: str, value: Any) -> dict[str, Any]:
    data = realistic_data()
    data[name] = value
    return data


def without_field(name: str) -> dict[str, Any]:
    data = realistic_data()
    del data[name]
    return data


# -- Structuring a realistic data object --------------------------------------------------------


def test_every_documented_field_is_structured_under_its_name() -> None:
    image = structure_image(realistic_data())

    assert image == GalleryImage(
        id=ID,
        text="A serene Japanese garden with cherry blossoms",
        prompt_ready=True,
        prompt_segments=(
            PromptSegment(label="Scene", text="a serene Japanese garden"),
            PromptSegment(label="Detail", text="cherry blossoms"),
        ),
        media_urls=(
            f"https://images.meigen.ai/tweets/{ID}/0.jpg",
            f"https://images.meigen.ai/tweets/{ID}/1.jpg",
        ),
        thumbnail_url=f"https://images.meigen.ai/tweets/{ID}/0.jpg",
        image_width=1650,
        image_height=2048,
        model="midjourney",
        sref="1234567890",
        profile="m7abc1234",
        created_at=datetime(2026, 1, 9, 14, 13, tzinfo=UTC),
        likes=113,
        views=9266,
        retweets=8,
        author_username="creator",
        author_display_name="Creator Name",
        author_avatar_url="https://pbs.twimg.com/profile_images/1/normal.jpg",
    )


def test_the_model_declares_exactly_the_documented_fields() -> None:
    documented = set(realistic_data())

    assert {field.name for field in attrs.fields(GalleryImage)} == documented


def test_media_urls_become_a_tuple() -> None:
    image = structure_image(realistic_data())

    assert isinstance(image.media_urls, tuple)


def test_a_whole_number_float_count_is_accepted_as_an_int() -> None:
    image = structure_image(with_field("likes", 113.0))

    assert image.likes == 113
    assert type(image.likes) is int


# -- created_at ---------------------------------------------------------------------------------


def test_created_at_keeps_a_non_utc_offset() -> None:
    image = structure_image(with_field("created_at", "2026-01-09T23:13:00+09:00"))

    assert image.created_at is not None
    assert image.created_at.utcoffset() == timedelta(hours=9)
    assert image.created_at == datetime(2026, 1, 9, 14, 13, tzinfo=UTC)


def test_created_at_accepts_a_z_suffix_as_utc() -> None:
    image = structure_image(with_field("created_at", "2026-01-09T14:13:00Z"))

    assert image.created_at == datetime(2026, 1, 9, 14, 13, tzinfo=UTC)
    assert image.created_at is not None
    assert image.created_at.utcoffset() == timedelta(0)


def test_a_naive_created_at_is_taken_as_utc() -> None:
    image = structure_image(with_field("created_at", "2026-01-09T14:13:00"))

    assert image.created_at is not None
    assert image.created_at.tzinfo is not None
    assert image.created_at == datetime(2026, 1, 9, 14, 13, tzinfo=UTC)


# -- Forward compatibility ----------------------------------------------------------------------


def test_unknown_extra_fields_are_ignored() -> None:
    data = realistic_data()
    data["collections"] = ["favourites"]
    data["score"] = {"nested": True}

    assert structure_image(data) == structure_image(realistic_data())


@pytest.mark.parametrize(
    ("name", "default"),
    [
        ("text", ""),
        ("prompt_ready", None),
        ("prompt_segments", None),
        ("media_urls", ()),
        ("thumbnail_url", None),
        ("image_width", None),
        ("image_height", None),
        ("model", None),
        ("sref", None),
        ("created_at", None),
        ("likes", 0),
        ("views", 0),
        ("retweets", 0),
        ("author_username", None),
        ("author_display_name", None),
        ("author_avatar_url", None),
    ],
)
def test_a_null_field_takes_its_default(name: str, default: Any) -> None:
    image = structure_image(with_field(name, None))

    assert getattr(image, name) == default


@pytest.mark.parametrize(
    "name",
    ["text", "media_urls", "likes", "views", "retweets", "created_at", "prompt_ready", "sref"],
)
def test_a_missing_optional_field_takes_its_default(name: str) -> None:
    image = structure_image(without_field(name))

    assert getattr(image, name) == attrs.fields_dict(GalleryImage)[name].default


def test_a_data_object_with_only_an_id_is_an_image_of_defaults() -> None:
    assert structure_image({"id": ID}) == GalleryImage(id=ID)


# -- Wrong types --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("likes", "12"),
        ("views", True),
        ("retweets", 1.5),
        ("media_urls", ["https://images.meigen.ai/a.jpg", 3]),
        ("media_urls", "https://images.meigen.ai/a.jpg"),
        ("prompt_ready", 1),
        ("image_width", "1650"),
        ("text", 42),
        ("id", 2009629483448627597),
        ("created_at", "last tuesday"),
        ("created_at", 1767967980),
    ],
)
def test_a_field_of_the_wrong_type_raises_invalid_response_naming_it(name: str, value: Any) -> None:
    with pytest.raises(InvalidResponse, match=rf"\b{name}\b"):
        structure_image(with_field(name, value))


def test_a_missing_id_raises_invalid_response_naming_it() -> None:
    with pytest.raises(InvalidResponse, match=r"\bid\b"):
        structure_image(without_field("id"))


def test_a_null_id_raises_invalid_response_naming_it() -> None:
    with pytest.raises(InvalidResponse, match=r"\bid\b"):
        structure_image(with_field("id", None))


@pytest.mark.parametrize("data", [[realistic_data()], "image", 42, None])
def test_data_that_is_not_an_object_raises_invalid_response(data: Any) -> None:
    with pytest.raises(InvalidResponse, match="data"):
        structure_image(data)


def test_invalid_response_carries_the_image_id_it_was_given() -> None:
    with pytest.raises(InvalidResponse) as caught:
        structure_image(with_field("likes", "12"), image_id=ID)

    assert caught.value.image_id == ID


# -- prompt_segments never fail the image -------------------------------------------------------


def test_odd_prompt_segment_entries_are_dropped_and_good_ones_kept() -> None:
    segments = [
        {"label": "Scene", "text": "a garden"},
        7,
        {"label": "Broken"},
        {"label": "Also broken", "text": 12},
        None,
        ["nested"],
        {"label": "Style", "text": "watercolour"},
    ]

    image = structure_image(with_field("prompt_segments", segments))

    assert image.prompt_segments == (
        PromptSegment(label="Scene", text="a garden"),
        PromptSegment(label="Style", text="watercolour"),
    )


def test_a_prompt_segment_without_a_string_label_keeps_its_text() -> None:
    image = structure_image(with_field("prompt_segments", [{"label": 3, "text": "a garden"}]))

    assert image.prompt_segments == (PromptSegment(label="", text="a garden"),)


def test_a_plain_string_prompt_segment_is_kept_as_unlabelled_text() -> None:
    image = structure_image(with_field("prompt_segments", ["a garden"]))

    assert image.prompt_segments == (PromptSegment(label="", text="a garden"),)


@pytest.mark.parametrize("value", ["a garden", 5, {"label": "Scene", "text": "a garden"}, True])
def test_prompt_segments_that_are_not_a_list_become_none(value: Any) -> None:
    image = structure_image(with_field("prompt_segments", value))

    assert image.prompt_segments is None
    assert image.likes == 113


def test_prompt_segments_with_only_odd_entries_become_none() -> None:
    image = structure_image(with_field("prompt_segments", [1, {"label": "x"}, None]))

    assert image.prompt_segments is None


# -- Round trip ---------------------------------------------------------------------------------


def test_structure_of_unstructure_is_the_same_image_for_every_sample(
    images: list[dict[str, Any]],
) -> None:
    assert images
    for data in images:
        image = structure_image(data)
        assert structure_image(unstructure_image(image)) == image, data["id"]


def test_unstructure_gives_the_documented_json_shape() -> None:
    data = unstructure_image(structure_image(realistic_data()))

    assert data["created_at"] == "2026-01-09T14:13:00+00:00"
    assert data["prompt_segments"][0] == {"label": "Scene", "text": "a serene Japanese garden"}
    assert list(data["media_urls"]) == realistic_data()["media_urls"]
    assert set(data) == set(realistic_data())


# -- The classes --------------------------------------------------------------------------------


def test_gallery_image_is_frozen() -> None:
    image = structure_image(realistic_data())

    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        image.likes = 0  # type: ignore[misc]


def test_gallery_image_is_slotted() -> None:
    image = structure_image(realistic_data())

    assert "__slots__" in GalleryImage.__dict__
    assert not hasattr(image, "__dict__")


def test_image_result_is_ok_with_an_image_and_no_error() -> None:
    result = ImageResult(id=ID, image=GalleryImage(id=ID))

    assert result.ok is True


def test_image_result_is_not_ok_with_an_error() -> None:
    result = ImageResult(id=ID, error=ImageNotFound("gone", image_id=ID, status=404))

    assert result.ok is False


# -- The converter ------------------------------------------------------------------------------


def test_the_converter_is_one_private_module_level_cattrs_converter() -> None:
    converter = models._converter
    assert isinstance(converter, cattrs.Converter)

    structure_image(realistic_data())
    unstructure_image(structure_image(realistic_data()))

    assert models._converter is converter


def test_the_module_converter_carries_the_strict_hooks() -> None:
    with pytest.raises(cattrs.BaseValidationError):
        models._converter.structure({"id": ID, "likes": "12"}, GalleryImage)


def test_the_converters_old_public_name_still_works_with_a_deprecation_warning() -> None:
    with pytest.warns(DeprecationWarning, match="unstructure_search_hit"):
        assert models.converter is models._converter


def test_a_search_hit_unstructures_to_what_structures_it_again() -> None:
    hit = structure_search_hit({"id": ID, "text": "a garden", "likes": 3})

    assert structure_search_hit(unstructure_search_hit(hit)) == hit


# -- Untrusted data: foreign ids, deep nesting, lone surrogates ---------------------------------

STRING_FIELDS = [
    "text",
    "thumbnail_url",
    "model",
    "sref",
    "author_username",
    "author_display_name",
    "author_avatar_url",
]
LONE = "a\ud800b\udfffc"
REPLACED = "a\ufffdb\ufffdc"


def strings_of(image: GalleryImage) -> list[str]:
    """Every string an image holds, the nested ones included."""
    found: list[str] = []
    for value in attrs.astuple(image, recurse=True):
        stack = [value]
        while stack:
            item = stack.pop()
            if isinstance(item, str):
                found.append(item)
            elif isinstance(item, (list, tuple)):
                stack.extend(item)
    return found


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


def test_data_of_another_id_than_the_one_asked_for_raises_invalid_response() -> None:
    with pytest.raises(InvalidResponse, match="image 'other'") as caught:
        structure_image(with_field("id", "other"), image_id=ID)

    assert ID in str(caught.value)


def test_data_of_the_id_asked_for_is_an_image() -> None:
    assert structure_image(realistic_data(), image_id=ID).id == ID


def test_a_field_nested_far_past_the_recursion_limit_raises_invalid_response() -> None:
    with pytest.raises(InvalidResponse):
        structure_image(with_field("text", nested(100_000)))


@pytest.mark.parametrize("name", STRING_FIELDS)
def test_a_lone_surrogate_in_a_string_field_becomes_a_replacement_character(name: str) -> None:
    image = structure_image(with_field(name, LONE))

    assert getattr(image, name) == REPLACED


def test_lone_surrogates_in_media_urls_become_replacement_characters() -> None:
    image = structure_image(with_field("media_urls", [LONE, "https://ok/0.jpg"]))

    assert image.media_urls == (REPLACED, "https://ok/0.jpg")


def test_lone_surrogates_in_prompt_segments_become_replacement_characters() -> None:
    segments = [{"label": LONE, "text": LONE}, LONE]
    image = structure_image(with_field("prompt_segments", segments))

    assert image.prompt_segments == (
        PromptSegment(label=REPLACED, text=REPLACED),
        PromptSegment(label="", text=REPLACED),
    )


def test_a_valid_string_is_kept_as_the_same_object() -> None:
    # The hot path: ASCII and valid non-ASCII text are not copied.
    for text in ("plain ascii", "樱花树下的女孩 🌸", "café"):
        assert replace_surrogates(text) is text


FIELDS = [a.name for a in attrs.fields(GalleryImage)]


@pytest.mark.slow
@settings(max_examples=120, deadline=None)
@given(st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES))
def test_any_json_in_any_field_is_an_image_or_invalid_response(changes: dict[str, Any]) -> None:
    data = {**realistic_data(), **changes}
    try:
        image = structure_image(data)
    except InvalidResponse:
        return
    for text in strings_of(image):
        text.encode("utf-8")  # strict: a lone surrogate would raise


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(st.sampled_from(STRING_FIELDS), UNTRUSTED_TEXT)
def test_every_string_of_an_image_encodes_as_utf8(name: str, text: str) -> None:
    image = structure_image(
        {**with_field(name, text), "media_urls": [text], "prompt_segments": [text]}
    )

    for value in strings_of(image):
        value.encode("utf-8")


# -- Search hits ---------------------------------------------------------------------------------


def search_item(**changes: Any) -> dict[str, Any]:
    """A search item in exactly the search's shape (issue 25: MeiGen's MCP client v2.x)."""
    data = {key: realistic_data()[key] for key in SEARCH_FIELDS}
    return {**data, "rank": 0.75, "matched_media_index": 1, **changes}


def test_a_search_item_is_a_hit_with_its_rank_and_matched_media_index() -> None:
    hit = structure_search_hit(search_item())
    assert (hit.id, hit.rank, hit.matched_media_index) == (ID, 0.75, 1)
    assert hit.matched_media_url == f"https://images.meigen.ai/tweets/{ID}/1.jpg"
    assert structure_search_hit(search_item(rank=3)).rank == 3.0


@pytest.mark.parametrize("index", [None, 2, -1])
def test_the_matched_media_url_is_the_first_when_none_or_no_such_picture_matched(
    index: int | None,
) -> None:
    hit = structure_search_hit(search_item(matched_media_index=index))
    assert hit.matched_media_url == f"https://images.meigen.ai/tweets/{ID}/0.jpg"
    assert structure_search_hit({"id": ID, "matched_media_index": 0}).matched_media_url is None


@pytest.mark.parametrize("rank", ["1", True, float("nan"), float("inf"), 10**400, [1]])
def test_a_rank_that_is_no_finite_number_is_invalid_response(rank: Any) -> None:
    with pytest.raises(InvalidResponse, match=r"data\.rank"):
        structure_search_hit(search_item(rank=rank))

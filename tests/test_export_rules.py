"""The export's pure rules: keys, statuses, what a sample's row holds, types for the readers."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meigen_async import GalleryImage
from meigen_async._export_rules import COLUMNS, json_row, sample_key, sample_rows, status_of
from meigen_async.errors import (
    ImageNotFound,
    InvalidImageId,
    InvalidResponse,
    MediaDecompressionBomb,
    MediaHTTPError,
    MediaNotAllowed,
    MediaNotAnImage,
    MediaServerError,
    MediaTooLarge,
    MediaTooManyFiles,
    MediaTransportError,
    MeigenError,
    TransportError,
)
from meigen_async.media import MediaFile

GALLERY_IDS = st.from_regex(r"[A-Za-z0-9_-]{1,128}", fullmatch=True)


@given(GALLERY_IDS, st.integers(0, 10_000), GALLERY_IDS, st.integers(0, 10_000))
@pytest.mark.slow
def test_keys_carry_no_dot_and_two_pictures_never_share_one(a, i, b, j):
    assert "." not in sample_key(a, i)
    assert (sample_key(a, i) == sample_key(b, j)) == ((a, i) == (b, j))


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (ImageNotFound("gone"), "not_found"),
        (InvalidImageId("no id"), "not_found"),
        (MediaHTTPError("404", status=404), "not_found"),
        (MediaHTTPError("410", status=410), "not_found"),
        (MediaHTTPError("403", status=403), "failed_to_download"),
        (MediaServerError("503", status=503), "failed_to_download"),
        (MediaTransportError("reset"), "failed_to_download"),
        (TransportError("reset"), "failed_to_download"),
        (MediaNotAllowed("host"), "refused"),
        (MediaNotAnImage("html"), "refused"),
        (MediaTooLarge("big"), "refused"),
        (MediaDecompressionBomb("pixels"), "refused"),
        (MediaTooManyFiles("files"), "refused"),
    ],
)
def test_a_failure_has_the_status_img2dataset_users_expect(error: MeigenError, status: str):
    assert status_of(error) == status


def _media(index: int, opted_out: bool = False) -> MediaFile:
    path = Path("media/x") / f"{index}.png"
    return MediaFile("u", path, 10, "ab" * 32, "image/png", 4, 3, opted_out=opted_out)


IMAGE = GalleryImage(
    id="x",
    text="neon city --sref 123 456 --profile p1",
    media_urls=("u0", "u1", "u2"),
    created_at=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
)


def test_each_picture_is_a_sample_and_a_missing_one_takes_the_posts_error():
    error = MediaNotAnImage("u2 is an HTML page")
    samples = sample_rows("x", IMAGE, [_media(0), _media(1, opted_out=True)], error)
    assert [s.row["status"] for s in samples] == ["success", "opted_out", "refused"]
    assert [s.key for s in samples] == ["x_0", "x_1", "x_2"]
    assert [s.picture is not None for s in samples] == [True, False, False]
    assert samples[2].row["error_message"] == "u2 is an HTML page"
    first = samples[0].row
    assert (first["sref"], first["profile"], first["created_at"]) == (
        "123 456",
        "p1",
        "2025-01-02T03:04:05Z",
    )
    assert set(first) == {name for name, _ in COLUMNS}


def test_a_post_whose_data_is_invalid_fails_to_download_saying_the_gallerys_data_was_bad():
    error = InvalidResponse("invalid image data: expected a datetime @ data.created_at")
    [sample] = sample_rows("x", None, [], error)
    assert (sample.row["status"], sample.row["error_message"]) == (
        "failed_to_download",
        "the gallery's data for this post is invalid: invalid image data: expected a datetime "
        "@ data.created_at",
    )


def test_an_opted_out_picture_is_written_only_when_told_to_ignore_opt_outs():
    samples = sample_rows("x", IMAGE, [_media(0, opted_out=True)], None, ignore_opt_out=True)
    assert samples[0].row["status"] == "success"
    assert samples[0].picture is not None


@pytest.mark.parametrize("image_id", ["../../etc", "a.b", "", "x" * 129])
def test_no_key_is_made_of_an_id_that_is_no_gallery_id(image_id):
    image = GalleryImage(id=image_id, media_urls=("u0",))
    [sample] = sample_rows(image, image, [_media(0)], None)
    assert sample.key is None
    assert sample.picture is None
    assert sample.row["status"] == "not_found"


def test_a_post_without_pictures_or_without_data_has_one_row_and_no_key():
    [empty] = sample_rows("y", GalleryImage(id="y"), [], None)
    assert (empty.key, empty.row["id"], empty.row["status"]) == (None, "y", "not_found")
    [lost] = sample_rows("z\udcff", None, [], TransportError("reset"))
    assert (lost.key, lost.row["id"], lost.row["status"]) == (None, "z\ufffd", "failed_to_download")


def test_a_webdataset_row_has_one_type_a_field_and_no_null():
    [failed] = sample_rows("y", GalleryImage(id="y"), [], None)
    row = json_row(failed.row)
    assert None not in row.values()
    for name, kind in COLUMNS:
        assert type(row[name]) is (int if kind == "int64" else str)

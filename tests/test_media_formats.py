"""The pure reading of media bodies: magic bytes, declared types, sizes from headers."""

from __future__ import annotations

import struct

import pytest

from meigen_async._media_formats import Kind, dimensions, sniff, verify
from meigen_async.errors import MediaNotAnImage
from meigen_async.testing import jpeg_bytes, png_bytes, webp_bytes

GIF_HEADER = b"GIF89a" + struct.pack("<HH", 12, 7) + b"\x80\x00\x00"
AVIF_HEADER = b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf" + b"\x00" * 8


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (jpeg_bytes(), Kind.JPEG),
        (png_bytes(), Kind.PNG),
        (webp_bytes(), Kind.WEBP),
        (GIF_HEADER, Kind.GIF),
        (AVIF_HEADER, Kind.AVIF),
        (b"<!DOCTYPE html><html>", None),
        (b"", None),
    ],
)
def test_the_magic_bytes_tell_the_type(body, kind):
    assert sniff(body) is kind


def test_an_html_page_served_as_an_image_is_named_in_the_error():
    page = b"<!DOCTYPE html><html><title>Just a moment...</title></html>"
    with pytest.raises(
        MediaNotAnImage, match="got an HTML page: '<!DOCTYPE html><html><title>Just"
    ):
        verify(page, "text/html; charset=utf-8", url="https://images.meigen.ai/x", status=200)


def test_bytes_of_another_type_than_the_content_type_are_refused():
    with pytest.raises(MediaNotAnImage, match="Content-Type: 'image/png', but the bytes are JPEG"):
        verify(jpeg_bytes(), "image/png", url="https://images.meigen.ai/x", status=200)


def test_a_content_type_of_the_same_family_is_accepted():
    assert verify(jpeg_bytes(), "image/pjpeg", url="u", status=200) is Kind.JPEG


def test_no_content_type_leaves_the_magic_bytes_to_decide():
    assert verify(png_bytes(), None, url="u", status=200) is Kind.PNG


@pytest.mark.parametrize(
    ("body", "size"),
    [
        (jpeg_bytes(17, 9), (17, 9)),
        (png_bytes(640, 2), (640, 2)),
        (webp_bytes(), (5, 3)),
        (GIF_HEADER, (12, 7)),
    ],
)
def test_the_header_gives_the_dimensions(body, size):
    kind = sniff(body)
    assert kind is not None
    assert dimensions(body, kind) == size


def test_a_jpeg_frame_header_after_an_app_segment_is_found():
    body = jpeg_bytes(33, 21)
    exif = b"\xff\xe1" + struct.pack(">H", 1002) + b"E" * 1000
    assert dimensions(body[:2] + exif + body[2:], Kind.JPEG) == (33, 21)


def test_a_cut_header_gives_no_dimensions_rather_than_an_error():
    assert dimensions(jpeg_bytes()[:30], Kind.JPEG) is None
    assert dimensions(png_bytes()[:18], Kind.PNG) is None


def test_avif_dimensions_are_not_read():
    assert dimensions(AVIF_HEADER, Kind.AVIF) is None

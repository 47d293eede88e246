"""The pure media rules: hosts, redirects, statuses, sniffing, dimensions, layout, resume."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from yarl import URL

from meigen_async._media_rules import (
    MAX_REDIRECTS,
    Kind,
    ManifestEntry,
    check_media_url,
    dimensions,
    file_name,
    file_record,
    host_set,
    manifest_text,
    media_dir,
    read_file_record,
    read_manifest,
    redirect_target,
    sniff,
    status_error,
    verify,
    worth_hashing,
)
from meigen_async.errors import (
    InvalidImageId,
    MediaHTTPError,
    MediaNotAllowed,
    MediaNotAnImage,
    MediaRateLimited,
    MediaServerError,
)
from meigen_async.media import MediaFile
from meigen_async.retry import RetryPolicy
from meigen_async.testing import jpeg_bytes, png_bytes, webp_bytes

HOSTS = host_set(["images.meigen.ai", "pbs.twimg.com"])
GIF_HEADER = b"GIF89a" + struct.pack("<HH", 12, 7) + b"\x80\x00\x00"
AVIF_HEADER = b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf" + b"\x00" * 8


# -- Hosts and URLs ------------------------------------------------------------------------------


def test_an_allowed_https_url_passes():
    assert check_media_url("https://images.meigen.ai/a/b.png", HOSTS).host == "images.meigen.ai"


def test_host_names_compare_without_case_or_a_trailing_dot():
    assert check_media_url("https://IMAGES.meigen.AI./x.png", HOSTS).path == "/x.png"


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/x.png",
        "https://sub.images.meigen.ai/x.png",
        "https://images.meigen.ai.evil.example/x.png",
        "ftp://images.meigen.ai/x.png",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "/relative/x.png",
        "https://images.meigen.ai:99999/x.png",
    ],
)
def test_a_url_off_the_allowed_hosts_or_schemes_is_refused(url):
    with pytest.raises(MediaNotAllowed) as caught:
        check_media_url(url, HOSTS)
    assert caught.value.url == url


def test_a_single_string_as_media_hosts_is_a_type_error():
    with pytest.raises(TypeError):
        host_set("images.meigen.ai")


# -- Redirects -----------------------------------------------------------------------------------


def test_a_non_redirect_status_has_no_target():
    here = URL("https://images.meigen.ai/x")
    kw = {"redirects_so_far": 0, "hosts": HOSTS, "original": str(here)}
    assert redirect_target(200, "https://pbs.twimg.com/y", here, **kw) is None


def test_a_relative_redirect_on_an_allowed_host_is_followed():
    here = URL("https://images.meigen.ai/a/x")
    kw = {"redirects_so_far": 0, "hosts": HOSTS, "original": str(here)}
    assert redirect_target(302, "../b/y.png", here, **kw) == URL("https://images.meigen.ai/b/y.png")


def test_a_redirect_off_the_allowed_hosts_is_refused():
    here = URL("https://images.meigen.ai/x")
    with pytest.raises(MediaNotAllowed, match="redirected off the allowed hosts") as caught:
        redirect_target(
            301,
            "http://169.254.169.254/latest",
            here,
            redirects_so_far=0,
            hosts=HOSTS,
            original=str(here),
        )
    assert caught.value.host == "169.254.169.254"  # the target's host, to be named as refused


def test_a_redirect_past_the_limit_is_an_error():
    here = URL("https://images.meigen.ai/x")
    with pytest.raises(MediaHTTPError, match="more than 3 redirects"):
        redirect_target(
            307, "/y", here, redirects_so_far=MAX_REDIRECTS, hosts=HOSTS, original=str(here)
        )


def test_a_redirect_without_location_is_an_error():
    here = URL("https://images.meigen.ai/x")
    with pytest.raises(MediaHTTPError, match="no Location"):
        redirect_target(302, None, here, redirects_so_far=0, hosts=HOSTS, original=str(here))


# -- Statuses ------------------------------------------------------------------------------------


def test_a_429_carries_its_retry_after_and_is_waited_for_by_the_retry_policy():
    error = status_error(429, {"Retry-After": "7"}, "https://images.meigen.ai/x")
    assert isinstance(error, MediaRateLimited)
    assert error.retry_after == 7.0
    assert RetryPolicy().delay_before_retry(0, error) == 7.0


def test_a_503_is_a_retryable_server_error():
    error = status_error(503, {}, "https://images.meigen.ai/x")
    assert isinstance(error, MediaServerError)
    assert RetryPolicy().delay_before_retry(0, error) is not None


def test_a_404_is_an_http_error_not_retried():
    error = status_error(404, {}, "https://images.meigen.ai/x")
    assert type(error) is MediaHTTPError
    assert error.status == 404
    assert RetryPolicy().delay_before_retry(0, error) is None


# -- Sniffing and dimensions ---------------------------------------------------------------------


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


# -- Layout and resume ---------------------------------------------------------------------------


def test_files_go_under_the_id_with_the_extension_of_their_type():
    assert media_dir(Path("out"), "abc_1") / file_name(2, Kind.WEBP) == Path("out/abc_1/2.webp")


@pytest.mark.parametrize("image_id", ["../etc", "a/b", "", ".."])
def test_an_id_that_is_no_gallery_id_makes_no_path(image_id):
    with pytest.raises(InvalidImageId):
        media_dir(Path("out"), image_id)


def _file(name: str = "0.png", url: str = "https://images.meigen.ai/x") -> MediaFile:
    return MediaFile(url, Path("out/a") / name, 10, "ab" * 32, "image/png", 4, 3)


def test_a_manifest_reads_back_what_was_written():
    entries = read_manifest(manifest_text("a", [(0, _file())]))
    media = _file()
    assert entries[0] == ManifestEntry(
        0, media.url, media.path.name, media.bytes, media.sha256, media.content_type
    )


def test_a_manifest_entry_naming_another_path_is_ignored():
    text = manifest_text("a", [(0, _file())]).replace('"0.png"', '"../../etc/passwd.png"')
    assert read_manifest(text) == {}


_URL = "https://images.meigen.ai/x"


def test_a_file_record_reads_back_what_a_rerun_checks():
    record = file_record(_URL, 10, "ab" * 32)
    entry = read_file_record("0.png", record, [_URL])
    assert entry == ManifestEntry(0, _URL, "0.png", 10, "ab" * 32, "image/png", on_file=True)


def test_a_file_record_fits_inside_an_ext4_inode():
    assert len(file_record(_URL * 100, 2**40, "ab" * 32)) <= 60


def test_a_file_record_for_another_url_is_not_believed():
    assert read_file_record("0.png", file_record(_URL, 10, "ab" * 32), [_URL + "?v=2"]) is None


@pytest.mark.parametrize(
    "name", ["00.png", "0.jpeg", "0", "x.png", "\u00b2.png", "1.png", ".0.png"]
)
def test_a_file_record_on_a_name_that_is_not_ours_is_not_believed(name):
    # "1.png": an index with no URL (the image has one); "²": a digit, but not an ASCII one.
    assert read_file_record(name, file_record(_URL, 10, "ab" * 32), [_URL]) is None


def test_an_unreadable_file_record_is_none():
    assert read_file_record("0.png", b"\xff{not a record", [_URL]) is None
    record = bytearray(file_record(_URL, 10, "ab" * 32))
    record[0] = 2  # a later version
    assert read_file_record("0.png", bytes(record), [_URL]) is None


def test_an_unreadable_manifest_is_empty():
    assert read_manifest("{not json") == {}
    assert read_manifest(json.dumps({"files": [{"index": "0"}]})) == {}


def test_a_file_is_worth_hashing_only_with_the_same_url_and_size():
    entry = ManifestEntry(0, "https://h/x", "0.png", 10, "ab" * 32, "image/png")
    assert worth_hashing(entry, "https://h/x", 10)
    assert not worth_hashing(entry, "https://h/x", 9)
    assert not worth_hashing(entry, "https://h/other", 10)
    assert not worth_hashing(entry, "https://h/x", None)
    assert not worth_hashing(None, "https://h/x", 10)

"""The pure media rules: origins, redirects, statuses, limits, layout."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import png_claiming
from yarl import URL

from meigen_async._media_formats import Kind
from meigen_async._media_rules import (
    MAX_REDIRECTS,
    check_media_url,
    file_index,
    file_name,
    head_pixels,
    media_dir,
    opts_out,
    origin_set,
    redirect_target,
    status_error,
    too_many_files,
    too_many_pixels,
)
from meigen_async._status import MEDIA, kind_of, retry_after
from meigen_async.errors import (
    InvalidImageId,
    MediaDecompressionBomb,
    MediaHTTPError,
    MediaNotAllowed,
    MediaRateLimited,
    MediaServerError,
    MediaTooLarge,
    MediaTooManyFiles,
)
from meigen_async.media import DEFAULT_MAX_MEDIA_PIXELS
from meigen_async.retry import RetryPolicy
from meigen_async.testing import png_bytes

HOSTS = origin_set(["images.meigen.ai", "pbs.twimg.com"])


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
        origin_set("images.meigen.ai")


@pytest.mark.parametrize(
    "url",
    [
        "https://images.meigen.ai:8443/x.png",
        "http://images.meigen.ai:443/x.png",
        "https://images.meigen.ai:80/x.png",
    ],
)
def test_a_host_without_a_port_allows_only_the_default_port_of_the_scheme(url):
    with pytest.raises(MediaNotAllowed, match="is not in media_hosts"):
        check_media_url(url, HOSTS)


def test_the_default_port_written_out_is_the_same_origin():
    assert check_media_url("https://images.meigen.ai:443/x", HOSTS).port == 443
    assert check_media_url("http://images.meigen.ai:80/x", HOSTS).port == 80


def test_an_entry_with_a_port_allows_that_port_only():
    origins = origin_set(["127.0.0.1:8080"])
    assert check_media_url("http://127.0.0.1:8080/x", origins).port == 8080
    assert check_media_url("https://127.0.0.1:8080/x", origins).port == 8080
    for url in ("http://127.0.0.1/x", "http://127.0.0.1:8081/x", "https://127.0.0.1/x"):
        with pytest.raises(MediaNotAllowed, match=r"origin 'http\w?://127\.0\.0\.1"):
            check_media_url(url, origins)


def test_an_entry_with_a_scheme_allows_that_scheme_only():
    origins = origin_set(["https://cdn.example", "[::1]:9000"])
    assert check_media_url("https://CDN.example./x", origins).host == "cdn.example."
    assert check_media_url("http://[::1]:9000/x", origins).port == 9000
    with pytest.raises(MediaNotAllowed):
        check_media_url("http://cdn.example/x", origins)


@pytest.mark.parametrize(
    "entry",
    ["", " . ", "ftp://h", "h/path", "h:0", "h:99999", "h:port", "user@h", "h?x=1", 80, None],
)
def test_an_entry_that_names_no_origin_is_a_value_error(entry):
    with pytest.raises(ValueError, match="media_hosts must hold host names or origins"):
        origin_set([entry])


def test_a_refusal_names_the_allowed_origins():
    origins = origin_set(["b.example:8080", "https://a.example", "c.example."])
    with pytest.raises(
        MediaNotAllowed, match=r"\(b\.example:8080, c\.example, https://a\.example\)"
    ):
        check_media_url("https://d.example/x", origins)


# -- Redirects -----------------------------------------------------------------------------------


def test_a_non_redirect_status_has_no_target():
    here = URL("https://images.meigen.ai/x")
    kw = {"redirects_so_far": 0, "origins": HOSTS, "original": str(here)}
    assert redirect_target(200, "https://pbs.twimg.com/y", here, **kw) is None


def test_a_relative_redirect_on_an_allowed_host_is_followed():
    here = URL("https://images.meigen.ai/a/x")
    kw = {"redirects_so_far": 0, "origins": HOSTS, "original": str(here)}
    assert redirect_target(302, "../b/y.png", here, **kw) == URL("https://images.meigen.ai/b/y.png")


def test_a_redirect_off_the_allowed_hosts_is_refused():
    here = URL("https://images.meigen.ai/x")
    with pytest.raises(MediaNotAllowed, match="redirected off the allowed hosts") as caught:
        redirect_target(
            301,
            "https://169.254.169.254/latest",
            here,
            redirects_so_far=0,
            origins=HOSTS,
            original=str(here),
        )
    assert caught.value.host == "169.254.169.254"  # the target's host, to be named as refused


def test_a_redirect_from_https_to_http_is_refused_even_on_an_allowed_origin():
    here = URL("https://images.meigen.ai/x")
    with pytest.raises(MediaNotAllowed, match="from https to http") as caught:
        redirect_target(
            302,
            "http://images.meigen.ai/x",
            here,
            redirects_so_far=0,
            origins=HOSTS,
            original=str(here),
        )
    assert (caught.value.status, caught.value.url) == (302, str(here))


def test_a_redirect_from_http_to_https_is_followed():
    here = URL("http://images.meigen.ai/x")
    kw = {"redirects_so_far": 0, "origins": HOSTS, "original": str(here)}
    assert redirect_target(301, "https://images.meigen.ai/x", here, **kw) == URL(
        "https://images.meigen.ai/x"
    )


def test_a_redirect_past_the_limit_is_an_error():
    here = URL("https://images.meigen.ai/x")
    with pytest.raises(MediaHTTPError, match="more than 3 redirects"):
        redirect_target(
            307, "/y", here, redirects_so_far=MAX_REDIRECTS, origins=HOSTS, original=str(here)
        )


def test_a_redirect_without_location_is_an_error():
    here = URL("https://images.meigen.ai/x")
    with pytest.raises(MediaHTTPError, match="no Location"):
        redirect_target(302, None, here, redirects_so_far=0, origins=HOSTS, original=str(here))


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


@pytest.mark.parametrize("status", [100, 300, 304, 400, 404, 429, 500, 503])
def test_a_media_error_is_the_media_class_for_its_status_kind(status):
    headers = {"Retry-After": "7"}

    error = status_error(status, headers, "https://images.meigen.ai/x")

    assert type(error) is MEDIA.class_for(kind_of(status))
    assert (error.status, error.url) == (status, "https://images.meigen.ai/x")
    assert error.retry_after == retry_after(status, headers)


def test_a_2xx_is_no_media_error():
    assert status_error(206, {}, "https://images.meigen.ai/x") is None


def test_a_404_is_an_http_error_not_retried():
    error = status_error(404, {}, "https://images.meigen.ai/x")
    assert type(error) is MediaHTTPError
    assert error.status == 404
    assert RetryPolicy().delay_before_retry(0, error) is None


# -- Limits ------------------------------------------------------------------------------------


def test_files_up_to_max_media_files_pass_and_the_first_past_it_is_named():
    urls = [f"https://images.meigen.ai/{n}" for n in range(5)]
    assert too_many_files(urls[:3], 3) is None
    error = too_many_files(urls, 3)
    assert isinstance(error, MediaTooManyFiles)
    assert error.url == urls[3]
    assert "5 media URLs, more than max_media_files=3: the last 2" in error.message


def test_pillows_bomb_limit_is_the_default_and_a_header_past_it_is_a_bomb():
    assert DEFAULT_MAX_MEDIA_PIXELS == 178_956_970 == 17_895_697 * 10
    assert too_many_pixels((17_895_697, 10), DEFAULT_MAX_MEDIA_PIXELS, url="u") is None
    error = too_many_pixels((17_895_698, 10), DEFAULT_MAX_MEDIA_PIXELS, url="u", status=200)
    assert isinstance(error, MediaDecompressionBomb)
    assert isinstance(error, MediaTooLarge)
    assert error.status == 200
    assert "decompression bomb" in error.message


def test_a_header_that_tells_no_size_is_no_bomb():
    assert too_many_pixels(None, 1, url="u") is None


def test_the_size_a_png_header_claims_is_checked_against_max_media_pixels():
    head = png_claiming(65_535, 65_535)  # 4.3 gigapixels, in 70 bytes
    with pytest.raises(MediaDecompressionBomb, match="65535x65535"):
        head_pixels(head, Kind.PNG, DEFAULT_MAX_MEDIA_PIXELS, url="u", status=200)
    head_pixels(png_bytes(10, 10), Kind.PNG, 100, url="u", status=200)


# -- Layout and resume ---------------------------------------------------------------------------


def test_files_go_under_the_id_with_the_extension_of_their_type():
    assert media_dir(Path("out"), "abc_1") / file_name(2, Kind.WEBP) == Path("out/abc_1/2.webp")


@pytest.mark.parametrize(
    ("name", "index"),
    [("2.webp", 2), ("10.jpg", 10), ("02.png", None), (".0.png", None), ("0.txt", None)],
)
def test_only_names_that_file_name_makes_have_an_index(name, index):
    assert file_index(name) == index


@pytest.mark.parametrize("image_id", ["../etc", "a/b", "", ".."])
def test_an_id_that_is_no_gallery_id_makes_no_path(image_id):
    with pytest.raises(InvalidImageId):
        media_dir(Path("out"), image_id)


@pytest.mark.parametrize(
    ("values", "opted_out"),
    [
        (["noai"], True),
        (["noindex, NoImageAI"], True),
        (["noindex", "noai"], True),
        (["meigen-async: noai"], True),
        (["noai, unavailable_after: 25 Jun 2030 15:00:00 PST"], True),
        (["unavailable_after: 25 Jun 2030 15:00:00 PST, noimageai"], True),
        (["GPTBot: noai"], False),
        (["noindex, nofollow"], False),
        (["unavailable_after: 25 Jun 2030 15:00:00 PST"], False),
        (["noairplane"], False),
        ([], False),
    ],
)
def test_x_robots_tag_opts_out_for_everyone_or_for_us(values, opted_out):
    assert opts_out(values) is opted_out

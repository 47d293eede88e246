"""Media downloads decided with plain values: no asyncio, no aiohttp, no I/O.

Which URLs may be requested (`origin_set`, `check_media_url`), where a redirect goes
(`redirect_target`), what an HTTP status means (`status_error`), the limits of a download
(`too_large`, `too_many_files`, `too_many_pixels`), where a file goes (`media_dir`,
`file_name`) and what a refused write says (`write_error`). What a body's bytes are is
`_media_formats`; what a directory says of the files in it, `_media_records`. The downloading
shell, `_media` (HTTP) and `_media_files` (disk), asks these.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import attrs
from yarl import URL

from ._media_formats import Kind, dimensions
from ._protocol import validate_image_id
from ._status import MEDIA
from ._text import printable
from .errors import (
    MediaDecompressionBomb,
    MediaError,
    MediaHTTPError,
    MediaNotAllowed,
    MediaTooLarge,
    MediaTooManyFiles,
    MediaTransportError,
    MediaWriteError,
)
from .media import MediaFile

__all__ = [
    "HEAD_BYTES",
    "MAX_REDIRECTS",
    "MediaOrigins",
    "check_media_url",
    "file_index",
    "file_name",
    "head_pixels",
    "kind_of_name",
    "media_dir",
    "media_file",
    "opts_out",
    "origin_set",
    "redirect_target",
    "status_error",
    "too_large",
    "too_many_files",
    "too_many_pixels",
    "transport_error",
    "write_error",
]

MAX_REDIRECTS = 3
"""Redirects followed for one file, each checked against `media_hosts`."""

HEAD_BYTES = 65536
"""The first bytes of a body kept in memory: enough to sniff it and, for JPEG, to reach the
frame header past a typical EXIF block."""

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

_URL_SHOWN = 200
_DEFAULT_PORTS: Mapping[str, int] = {"http": 80, "https": 443}
_BY_EXT: Mapping[str, Kind] = {kind.ext: kind for kind in Kind}


# -- Which URLs ----------------------------------------------------------------------------------


@attrs.frozen
class MediaOrigins:
    """`media_hosts` as compared: the origins allowed, and the entries as written."""

    allowed: frozenset[tuple[str, str, int]]
    """(scheme, host, port) of every origin allowed; the host lower case, no trailing dot."""
    entries: tuple[str, ...]
    """The entries, normalised and sorted, to name in a refusal."""


def origin_set(entries: Iterable[str]) -> MediaOrigins:
    """`media_hosts` read as origins: what `check_media_url` allows.

    An entry is `host`, `host:port` or `scheme://host[:port]` (`[::1]:8080` for IPv6), the
    scheme http or https. Without a port it allows the scheme's default one (80 for http,
    443 for https) and no other: a service on another port of an allowed host is another
    origin. Without a scheme it allows both. Names compare without case or a trailing dot.

    Raises:
        TypeError: a single `str` was given rather than an iterable of entries.
        ValueError: an entry is not a string of one of these forms.

    """
    if isinstance(entries, (str, bytes)):
        raise TypeError("media_hosts must be an iterable of host names, not a single string")
    allowed: set[tuple[str, str, int]] = set()
    shown: set[str] = set()
    for entry in entries:
        scheme, host, port = _origin(entry)
        for each in (scheme,) if scheme else ("http", "https"):
            allowed.add((each, host, port or _DEFAULT_PORTS[each]))
        named = f"[{host}]" if ":" in host else host
        named = f"{named}:{port}" if port else named
        shown.add(f"{scheme}://{named}" if scheme else named)
    return MediaOrigins(frozenset(allowed), tuple(sorted(shown)))


def _origin(entry: object) -> tuple[str, str, int | None]:
    """An entry's scheme ('' for both), host and port (None for the scheme's default)."""
    refused = ValueError(
        "media_hosts must hold host names or origins (host, host:port, https://host:port), "
        f"got {entry!r}"
    )
    if not isinstance(entry, str) or not entry.strip(". "):
        raise refused
    text = entry.strip()
    try:
        url = URL(text) if "://" in text else URL("//" + text)
        host, port = url.host, url.explicit_port
    except (ValueError, TypeError):
        raise refused from None
    if (
        (url.scheme and url.scheme not in _DEFAULT_PORTS)
        or not host
        or not host.rstrip(".")
        or port == 0
        or url.user is not None
        or url.password is not None
        or url.path not in ("", "/")
        or url.query_string
        or url.fragment
    ):
        raise refused
    return url.scheme, host.rstrip(".").lower(), port


def check_media_url(url: str | URL, origins: MediaOrigins) -> URL:
    """`url` parsed, when it is http(s) on one of `origins` (exactly: subdomains are others).

    Raises:
        MediaNotAllowed: it is not, or it is not a URL; no request should be made.

    """
    shown = printable(str(url), _URL_SHOWN)
    try:
        parsed = url if isinstance(url, URL) else URL(url)
        port = parsed.port  # yarl checks a port's range only when asked
        host = parsed.host
    except (ValueError, TypeError) as exc:
        raise MediaNotAllowed(f"refused {shown}: not a URL ({exc})", url=str(url)) from None
    if parsed.scheme not in _DEFAULT_PORTS or not host or port is None:
        raise MediaNotAllowed(
            f"refused {shown}: only http:// and https:// URLs are downloaded", url=str(url)
        )
    if (parsed.scheme, host.rstrip(".").lower(), port) not in origins.allowed:
        raise MediaNotAllowed(
            f"refused {shown}: the origin {printable(str(parsed.origin()), 100)} is not in "
            f"media_hosts ({', '.join(origins.entries) or 'none'})",
            url=str(url),
            host=_entry_for(parsed.scheme, host.rstrip(".").lower(), port),
        )
    return parsed


def _entry_for(scheme: str, host: str, port: int) -> str:
    """The `media_hosts` entry (and `--media-host` value) that allows this origin."""
    return host if port == _DEFAULT_PORTS[scheme] else f"{host}:{port}"


def redirect_target(
    status: int,
    location: str | None,
    current: URL,
    *,
    redirects_so_far: int,
    origins: MediaOrigins,
    original: str,
) -> URL | None:
    """Where a response sends us next: None when it is not a redirect.

    Raises:
        MediaNotAllowed: the target is outside `origins` (or not http(s)), or it leaves https
            for http: it is not requested.
        MediaHTTPError: a redirect with no usable `Location`, or one past `MAX_REDIRECTS`.

    """
    if status not in REDIRECT_STATUSES:
        return None
    if not location:
        raise MediaHTTPError(
            f"HTTP {status} for {printable(original, _URL_SHOWN)} with no Location",
            url=original,
            status=status,
        )
    if redirects_so_far >= MAX_REDIRECTS:
        raise MediaHTTPError(
            f"more than {MAX_REDIRECTS} redirects for {printable(original, _URL_SHOWN)}",
            url=original,
            status=status,
        )
    try:
        target = current.join(URL(location))
    except (ValueError, TypeError):
        target = None
    if target is None or not target.is_absolute():
        raise MediaHTTPError(
            f"HTTP {status} for {printable(original, _URL_SHOWN)} with an unreadable Location "
            f"{printable(location, _URL_SHOWN)}",
            url=original,
            status=status,
        )
    if current.scheme == "https" and target.scheme == "http":
        # What https protects (the bytes, and that they come from the named host) would be
        # lost from here on, at the word of a server.
        raise MediaNotAllowed(
            f"{printable(original, _URL_SHOWN)} redirected from https to http "
            f"({printable(str(target), _URL_SHOWN)}): refused",
            url=original,
            status=status,
        )
    try:
        return check_media_url(target, origins)
    except MediaNotAllowed as refused:
        raise MediaNotAllowed(
            f"{printable(original, _URL_SHOWN)} redirected off the allowed hosts: "
            f"{refused.message}",
            url=original,
            status=status,
            host=refused.host,
        ) from None


def status_error(status: int, headers: Mapping[str, str], url: str) -> MediaError | None:
    """The error a final (non-redirect) status stands for; None for a 2xx.

    Its class is the media's one for the status's kind (`_status.MEDIA`).
    """
    if 200 <= status < 300:
        return None
    error = MEDIA.error(status, headers, f"HTTP {status} for {printable(url, _URL_SHOWN)}", url=url)
    assert isinstance(error, MediaError)  # every class of the media family is one
    return error


def transport_error(url: str, message: str) -> MediaTransportError:
    """The error of a media request to `url` that did not complete, saying `message` why."""
    return MEDIA.transport(f"download of {printable(url, _URL_SHOWN)} failed: {message}", url=url)


def too_large(url: str, limit: int, why: str, status: int) -> MediaTooLarge:
    """The error of a file past `max_media_bytes`."""
    return MediaTooLarge(
        f"{printable(url, _URL_SHOWN)} is larger than max_media_bytes={limit} ({why})",
        url=url,
        status=status,
    )


def too_many_files(urls: Sequence[str], limit: int) -> MediaTooManyFiles | None:
    """The error of an image with more media URLs than `max_media_files`; None within it.

    The files before the limit are downloaded; the error names the first one past it.
    """
    if len(urls) <= limit:
        return None
    return MediaTooManyFiles(
        f"the image has {len(urls)} media URLs, more than max_media_files={limit}: "
        f"the last {len(urls) - limit} were not downloaded",
        url=urls[limit],
    )


def too_many_pixels(
    size: tuple[int, int] | None, limit: int, *, url: str, status: int | None = None
) -> MediaDecompressionBomb | None:
    """The error of a header claiming more than `limit` pixels (`max_media_pixels`).

    None within the limit, and when the header does not tell the size (see `dimensions`).
    """
    if size is None or size[0] * size[1] <= limit:
        return None
    width, height = size
    return MediaDecompressionBomb(
        f"{printable(url, _URL_SHOWN)} claims {width}x{height} = {width * height:,} pixels, "
        f"more than max_media_pixels={limit:,}: refused as a decompression bomb",
        url=url,
        status=status,
    )


def head_pixels(head: bytes, kind: Kind, limit: int, *, url: str, status: int) -> None:
    """Check the size `head` claims against `max_media_pixels`.

    Raises:
        MediaDecompressionBomb: it claims more than `limit` pixels.

    """
    error = too_many_pixels(dimensions(head, kind), limit, url=url, status=status)
    if error is not None:
        raise error


# -- Where files go, and what is already there ----------------------------------------------------


def media_dir(root: Path, image_id: str) -> Path:
    """The directory of an image's files: `root/{id}`, for a *valid* id only.

    A gallery id holds only letters, digits, `_` and `-`, so no id escapes `root`.

    Raises:
        InvalidImageId: it is not a gallery id.

    """
    return root / validate_image_id(image_id)


def file_name(index: int, kind: Kind) -> str:
    """The name of media file number `index` (from 0) of an image: `{index}{ext}`."""
    return f"{index}{kind.ext}"


def file_index(name: str) -> int | None:
    """The index of a name that `file_name` makes, such as 2 for `2.webp`; None for others."""
    stem, _, _ = name.partition(".")
    kind = kind_of_name(name)
    if kind is None or not (stem.isascii() and stem.isdigit()):
        return None
    index = int(stem)
    return index if name == file_name(index, kind) else None


def write_error(
    path: Path, exc: OSError, *, url: str | None = None, link: bool = False
) -> MediaWriteError:
    """The error of a write under `path` that failed with `exc`, its cause.

    `link` says that `path` is a symbolic link where the image's directory goes: refused,
    whatever it points to.
    """
    if link:
        message = (
            f"refused to write into {path}: it is a symbolic link, and no media file is "
            "written through one"
        )
    else:
        message = f"cannot write {path}: {exc.strerror or exc}"
    error = MediaWriteError(message, url=url)
    error.__cause__ = exc
    return error


def media_file(
    url: str,
    path: Path,
    size: int,
    sha256: str,
    kind: Kind,
    head: bytes,
    opted_out: bool = False,
) -> MediaFile:
    """The `MediaFile` of a verified file: its type is `kind`, its dimensions read from `head`."""
    size_read = dimensions(head, kind)
    return MediaFile(
        url=url,
        path=path,
        bytes=size,
        sha256=sha256,
        content_type=kind.mime,
        width=size_read[0] if size_read else None,
        height=size_read[1] if size_read else None,
        opted_out=opted_out,
    )


# -- What came back -------------------------------------------------------------------------------

_USER_AGENT_TOKEN = "meigen-async"
_NO_AI = frozenset({"noai", "noimageai"})
# Directives that take a value after a colon: `unavailable_after: <date>` names no user agent.
_VALUED = frozenset({"unavailable_after", "max-snippet", "max-image-preview", "max-video-preview"})


def opts_out(values: Iterable[str]) -> bool:
    """Whether `X-Robots-Tag` header values forbid use for AI: `noai` or `noimageai`.

    A directive counts when its value names no user agent, or names ours
    (`meigen-async: noai`); one for another crawler (`GPTBot: noai`) is that crawler's, as
    img2dataset reads them.
    """
    for value in values:
        agent, colon, rest = value.partition(":")
        agent = agent.strip().lower()
        named = bool(colon) and agent not in _VALUED and not any(c in agent for c in ", \t")
        if named and agent != _USER_AGENT_TOKEN:
            continue
        listed = rest if named else value
        if any(part.partition(":")[0].strip().lower() in _NO_AI for part in listed.split(",")):
            return True
    return False


def kind_of_name(name: str) -> Kind | None:
    """The type a file name made by `file_name` stands for."""
    return _BY_EXT.get(Path(name).suffix)

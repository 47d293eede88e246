"""Media downloads decided with plain values: no asyncio, no aiohttp.

Which URLs may be requested (`check_media_url`), where a redirect goes (`redirect_target`),
what an HTTP status means (`status_error`), what a body's first bytes are (`sniff`, `verify`),
an image's size from its header (`dimensions`), where a file goes (`media_dir`, `file_name`),
and whether a file already on disk is the one wanted (`read_file_record`, `read_manifest`,
`worth_hashing`).
The downloading shell, `_media`, asks these.
"""

from __future__ import annotations

import enum
import hashlib
import json
import struct
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
from yarl import URL

from ._protocol import header, parse_retry_after, snippet, validate_image_id
from ._text import printable
from .errors import (
    MediaError,
    MediaHTTPError,
    MediaNotAllowed,
    MediaNotAnImage,
    MediaRateLimited,
    MediaServerError,
    MediaTooLarge,
)
from .media import MediaFile

__all__ = [
    "HEAD_BYTES",
    "MANIFEST_NAME",
    "MAX_REDIRECTS",
    "RECORD_ATTRIBUTE",
    "Kind",
    "ManifestEntry",
    "check_media_url",
    "dimensions",
    "file_name",
    "file_record",
    "host_set",
    "kind_of_name",
    "manifest_text",
    "media_dir",
    "media_file",
    "read_file_record",
    "read_manifest",
    "redirect_target",
    "sniff",
    "status_error",
    "too_large",
    "verify",
    "worth_hashing",
]

MAX_REDIRECTS = 3
"""Redirects followed for one file, each checked against `media_hosts`."""

HEAD_BYTES = 65536
"""The first bytes of a body kept in memory: enough to sniff it and, for JPEG, to reach the
frame header past a typical EXIF block."""

RECORD_ATTRIBUTE = "user.meigen_async"
"""The extended attribute holding a file's record; set before the fsync, so it is as durable."""
MANIFEST_NAME = "manifest.json"
"""Written in an image's directory when its file system keeps no extended attributes."""

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

_URL_SHOWN = 200


class Kind(enum.Enum):
    """An image type this library downloads: its MIME type and the extension it is saved with."""

    JPEG = ("image/jpeg", ".jpg")
    PNG = ("image/png", ".png")
    WEBP = ("image/webp", ".webp")
    GIF = ("image/gif", ".gif")
    AVIF = ("image/avif", ".avif")

    @property
    def mime(self) -> str:
        """The MIME type written in `MediaFile.content_type`."""
        return self.value[0]

    @property
    def ext(self) -> str:
        """The file extension, dot included."""
        return self.value[1]


_FAMILIES: Mapping[str, Kind] = {
    "image/jpeg": Kind.JPEG,
    "image/jpg": Kind.JPEG,
    "image/pjpeg": Kind.JPEG,
    "image/png": Kind.PNG,
    "image/apng": Kind.PNG,
    "image/webp": Kind.WEBP,
    "image/gif": Kind.GIF,
    "image/avif": Kind.AVIF,
    "image/avif-sequence": Kind.AVIF,
}
_BY_EXT: Mapping[str, Kind] = {kind.ext: kind for kind in Kind}


# -- Which URLs ----------------------------------------------------------------------------------


def host_set(hosts: Iterable[str]) -> frozenset[str]:
    """`media_hosts` as compared: lower case, no trailing dot.

    Raises:
        TypeError: a single `str` was given rather than an iterable of hosts.
        ValueError: a host is empty or not a string.

    """
    if isinstance(hosts, (str, bytes)):
        raise TypeError("media_hosts must be an iterable of host names, not a single string")
    normalised = set()
    for host in hosts:
        if not isinstance(host, str) or not host.strip(". "):
            raise ValueError(f"media_hosts must hold host names, got {host!r}")
        normalised.add(host.strip().rstrip(".").lower())
    return frozenset(normalised)


def check_media_url(url: str | URL, hosts: frozenset[str]) -> URL:
    """`url` parsed, when it is http(s) on one of `hosts` (exactly: subdomains are others).

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
    if parsed.scheme not in ("http", "https") or not host or port is None:
        raise MediaNotAllowed(
            f"refused {shown}: only http:// and https:// URLs are downloaded", url=str(url)
        )
    if host.rstrip(".").lower() not in hosts:
        raise MediaNotAllowed(
            f"refused {shown}: the host {printable(host, 80)} is not in media_hosts "
            f"({', '.join(sorted(hosts)) or 'none'})",
            url=str(url),
            host=host.rstrip(".").lower(),
        )
    return parsed


def redirect_target(
    status: int,
    location: str | None,
    current: URL,
    *,
    redirects_so_far: int,
    hosts: frozenset[str],
    original: str,
) -> URL | None:
    """Where a response sends us next: None when it is not a redirect.

    Raises:
        MediaNotAllowed: the target is outside `hosts` (or not http(s)): it is not requested.
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
    try:
        return check_media_url(target, hosts)
    except MediaNotAllowed as refused:
        raise MediaNotAllowed(
            f"{printable(original, _URL_SHOWN)} redirected off the allowed hosts: "
            f"{refused.message}",
            url=original,
            status=status,
            host=refused.host,
        ) from None


def status_error(status: int, headers: Mapping[str, str], url: str) -> MediaError | None:
    """The error a final (non-redirect) status stands for; None for a 2xx."""
    if 200 <= status < 300:
        return None
    message = f"HTTP {status} for {printable(url, _URL_SHOWN)}"
    if status == 429:
        wait = parse_retry_after(header(headers, "Retry-After"))
        return MediaRateLimited(message, url=url, status=status, retry_after=wait)
    if status >= 500:
        wait = parse_retry_after(header(headers, "Retry-After")) if status == 503 else None
        return MediaServerError(message, url=url, status=status, retry_after=wait)
    return MediaHTTPError(message, url=url, status=status)


def too_large(url: str, limit: int, why: str, status: int) -> MediaTooLarge:
    """The error of a file past `max_media_bytes`."""
    return MediaTooLarge(
        f"{printable(url, _URL_SHOWN)} is larger than max_media_bytes={limit} ({why})",
        url=url,
        status=status,
    )


# -- What came back -------------------------------------------------------------------------------


def sniff(head: bytes) -> Kind | None:
    """The image type of a body by its first bytes (its magic number), or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return Kind.JPEG
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return Kind.PNG
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return Kind.WEBP
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return Kind.GIF
    if head[4:8] == b"ftyp" and _avif_brand(head):
        return Kind.AVIF
    return None


def _avif_brand(head: bytes) -> bool:
    (size,) = struct.unpack(">I", head[:4]) if len(head) >= 4 else (0,)
    box = head[8 : min(size, len(head))] if size >= 16 else head[8:12]
    # The major brand, then the compatible brands, four bytes each (minor version skipped).
    brands = [box[0:4], *(box[i : i + 4] for i in range(8, len(box) - 3, 4))]
    return any(brand in (b"avif", b"avis") for brand in brands)


def describe_body(head: bytes) -> str:
    """What a body that is no image looks like, in a few words and a quote."""
    if not head:
        return "an empty body"
    start = head[:1024].lstrip().lower()
    if start.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in start:
        what = "an HTML page"
    elif start.startswith((b"{", b"[")):
        what = "JSON"
    elif start.startswith(b"<"):
        what = "XML or markup"
    else:
        try:
            head[:256].decode("utf-8")
            what = "text"
        except UnicodeDecodeError:
            return f"{len(head)}+ bytes of no known image type (starting {head[:8].hex()})"
    return f"{what}: {snippet(head)}"


def verify(head: bytes, content_type: str | None, *, url: str, status: int) -> Kind:
    """The type of a body: its magic bytes, which must agree with its `Content-Type` family.

    A missing `Content-Type` leaves the magic bytes to decide alone.

    Raises:
        MediaNotAnImage: the bytes are no image type known here, or another than declared.

    """
    sniffed = sniff(head)
    declared_text = content_type.split(";", 1)[0].strip().lower() if content_type else ""
    shown = printable(url, _URL_SHOWN)
    said = f"Content-Type: {printable(declared_text, 60)}" if declared_text else "no Content-Type"
    if sniffed is None:
        raise MediaNotAnImage(
            f"{shown} is not an image: got {describe_body(head)} ({said})",
            url=url,
            status=status,
        )
    if declared_text and _FAMILIES.get(declared_text) is not sniffed:
        raise MediaNotAnImage(
            f"{shown} is not what it says: {said}, but the bytes are {sniffed.name}",
            url=url,
            status=status,
        )
    return sniffed


def dimensions(head: bytes, kind: Kind) -> tuple[int, int] | None:
    """Width and height read from an image's header, or None where it does not tell cheaply.

    Read for JPEG (the first frame header), PNG (`IHDR`), WebP (`VP8 `, `VP8L` and `VP8X`) and
    GIF (the logical screen); not for AVIF, whose size sits in a box tree.
    """
    try:
        if kind is Kind.PNG and head[12:16] == b"IHDR":
            return _positive(*struct.unpack(">II", head[16:24]))
        if kind is Kind.GIF:
            return _positive(*struct.unpack("<HH", head[6:10]))
        if kind is Kind.WEBP:
            return _webp_size(head)
        if kind is Kind.JPEG:
            return _jpeg_size(head)
    except struct.error:
        return None
    return None


def _positive(width: int, height: int) -> tuple[int, int] | None:
    return (width, height) if width > 0 and height > 0 else None


def _webp_size(head: bytes) -> tuple[int, int] | None:
    chunk = head[12:16]
    if chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", head[26:30])
        return _positive(width & 0x3FFF, height & 0x3FFF)
    if chunk == b"VP8L" and head[20:21] == b"\x2f":
        (bits,) = struct.unpack("<I", head[21:25])
        return ((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if chunk == b"VP8X" and len(head) >= 30:
        width = int.from_bytes(head[24:27], "little") + 1
        height = int.from_bytes(head[27:30], "little") + 1
        return (width, height)
    return None


# The start-of-frame markers: every C0-CF but DHT (C4), JPG (C8) and DAC (CC).
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})


def _jpeg_size(head: bytes) -> tuple[int, int] | None:
    at = 2
    while at + 4 <= len(head):
        if head[at] != 0xFF:
            return None
        marker = head[at + 1]
        if marker == 0xFF:  # fill bytes before a marker
            at += 1
            continue
        if marker in _STANDALONE:
            at += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no frame header before
            return None
        (length,) = struct.unpack(">H", head[at + 2 : at + 4])
        if marker in _SOF:
            height, width = struct.unpack(">HH", head[at + 5 : at + 9])
            return _positive(width, height)
        if length < 2:
            return None
        at += 2 + length
    return None


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


@attrs.frozen
class ManifestEntry:
    """What a manifest says of one finished file."""

    index: int
    url: str
    name: str
    bytes: int
    sha256: str
    content_type: str
    on_file: bool = False
    """Read from the file's own record (its extended attribute), not from a manifest."""


def read_manifest(text: str) -> dict[int, ManifestEntry]:
    """The entries of a manifest, by index; an unreadable manifest or entry counts as absent.

    An entry is kept only when its name is exactly what `file_name` would make of its index
    and type: a manifest edited by hand cannot point a rerun at another path.
    """
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        return {}
    files = document.get("files") if isinstance(document, dict) else None
    if not isinstance(files, list):
        return {}
    entries: dict[int, ManifestEntry] = {}
    for item in files:
        entry = _entry(item)
        if entry is not None:
            entries[entry.index] = entry
    return entries


def _entry(item: Any) -> ManifestEntry | None:
    if not isinstance(item, dict):
        return None
    index, url, name, size, digest, mime = (
        item.get(key) for key in ("index", "url", "name", "bytes", "sha256", "content_type")
    )
    kind = kind_of_name(name) if isinstance(name, str) else None
    if (
        type(index) is not int
        or type(size) is not int
        or not isinstance(url, str)
        or not isinstance(digest, str)
        or kind is None
        or name != file_name(index, kind)
        or mime != kind.mime
    ):
        return None
    return ManifestEntry(
        index=index,
        url=url,
        name=name,
        bytes=size,
        sha256=digest,
        content_type=mime,
    )


def _fields(index: int, media: MediaFile) -> dict[str, Any]:
    return {
        "index": index,
        "url": media.url,
        "name": media.path.name,
        "bytes": media.bytes,
        "sha256": media.sha256,
        "content_type": media.content_type,
        "width": media.width,
        "height": media.height,
    }


def manifest_text(image_id: str, files: Iterable[tuple[int, MediaFile]]) -> str:
    """The manifest of an image's finished files, as JSON."""
    entries = [_fields(index, media) for index, media in sorted(files, key=lambda pair: pair[0])]
    # Compact: with an indent json uses its pure-Python encoder, whose closures make a
    # reference cycle per call (garbage that only the cycle collector frees).
    return json.dumps({"id": image_id, "files": entries}, separators=_COMPACT) + "\n"


# Version, SHA-256, size, and the first 16 bytes of the URL's SHA-256: 57 bytes, which ext4
# keeps inside the inode (up to 60 with this attribute name). A longer record (the URL itself,
# as JSON) took an extra 4 KiB block a file, allocated, written and journaled.
_RECORD = struct.Struct(">B32sQ16s")
_RECORD_VERSION = 1


def file_record(url: str, size: int, sha256: str) -> bytes:
    """What a file's extended attribute `RECORD_ATTRIBUTE` holds: what a rerun checks.

    The rest of a `MediaFile` is read from the file itself: its type from its name, its size
    in pixels from its header.
    """
    return _RECORD.pack(_RECORD_VERSION, bytes.fromhex(sha256), size, _url_digest(url))


def read_file_record(name: str, record: bytes, urls: Sequence[str]) -> ManifestEntry | None:
    """The entry of file `name` of an image whose media URLs are `urls`, from its record.

    None unless `record` is a record, `name` is a name `file_name` makes, and the record was
    written for the URL now at that index (a changed URL is downloaded again).
    """
    if len(record) != _RECORD.size:
        return None
    version, digest, size, url_digest = _RECORD.unpack(record)
    stem, _, _ = name.partition(".")
    kind = kind_of_name(name)
    if version != _RECORD_VERSION or kind is None or not (stem.isascii() and stem.isdigit()):
        return None
    index = int(stem)
    if name != file_name(index, kind) or index >= len(urls):
        return None
    if url_digest != _url_digest(urls[index]):
        return None
    return ManifestEntry(
        index=index,
        url=urls[index],
        name=name,
        bytes=size,
        sha256=digest.hex(),
        content_type=kind.mime,
        on_file=True,
    )


def media_file(url: str, path: Path, size: int, sha256: str, kind: Kind, head: bytes) -> MediaFile:
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
    )


def kind_of_name(name: str) -> Kind | None:
    """The type a file name made by `file_name` stands for."""
    return _BY_EXT.get(Path(name).suffix)


def _url_digest(url: str) -> bytes:
    return hashlib.sha256(url.encode("utf-8", "surrogatepass")).digest()[:16]


_COMPACT = (",", ":")


def worth_hashing(entry: ManifestEntry | None, url: str, size_on_disk: int | None) -> bool:
    """Whether a file on disk may be the one wanted: same URL, the expected size.

    Its SHA-256 is then compared with the entry's; a match skips the download.
    """
    return entry is not None and entry.url == url and size_on_disk == entry.bytes

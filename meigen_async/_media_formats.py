"""Media bodies read with plain values: their type by magic bytes, their size from headers.

Pure (no asyncio, no aiohttp, no I/O). Apart from `_media_rules` because it is a concern of its
own, bytes rather than URLs and paths: what a body's first bytes are (`sniff`, `verify`), and
an image's size in pixels from its header (`dimensions`), read by a small parser with no image
library.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Mapping

from ._protocol import snippet
from ._text import printable
from .errors import MediaNotAnImage

__all__ = ["Kind", "describe_body", "dimensions", "sniff", "verify"]

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

"""What an image's directory says of the files already in it: records and manifests.

Pure (no asyncio, no aiohttp, no I/O): the bytes of a file's record (its extended attribute)
and the text of a manifest, written and read back, and whether a file on disk may be the one
wanted. Apart from `_media_rules` because resuming is a concern of its own; `_media_files`
reads and writes them.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from ._media_rules import file_index, file_name, kind_of_name
from .media import MediaFile

__all__ = [
    "MANIFEST_NAME",
    "RECORD_ATTRIBUTE",
    "ManifestEntry",
    "file_record",
    "manifest_text",
    "read_file_record",
    "read_manifest",
    "worth_hashing",
]

RECORD_ATTRIBUTE = "user.meigen_async"
"""The extended attribute holding a file's record; set before the fsync, so it is as durable."""
MANIFEST_NAME = "manifest.json"
"""Written in an image's directory when its file system keeps no extended attributes."""


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
    opted_out: bool = False
    """Its response said `X-Robots-Tag: noai` or `noimageai` (see `_media_rules.opts_out`)."""


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
    index, url, name, size, digest, mime, opted_out = (
        item.get(key)
        for key in ("index", "url", "name", "bytes", "sha256", "content_type", "opted_out")
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
        or type(opted_out) is not bool  # written before opt-outs were recorded: unknown
    ):
        return None
    return ManifestEntry(
        index=index,
        url=url,
        name=name,
        bytes=size,
        sha256=digest,
        content_type=mime,
        opted_out=opted_out,
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
        "opted_out": media.opted_out,
    }


def manifest_text(image_id: str, files: Iterable[tuple[int, MediaFile]]) -> str:
    """The manifest of an image's finished files, as JSON."""
    entries = [_fields(index, media) for index, media in sorted(files, key=lambda pair: pair[0])]
    # Compact: with an indent json uses its pure-Python encoder, whose closures make a
    # reference cycle per call (garbage that only the cycle collector frees).
    return json.dumps({"id": image_id, "files": entries}, separators=_COMPACT) + "\n"


# Version, SHA-256, size, the first 16 bytes of the URL's SHA-256, and flags: 58 bytes, which
# ext4 keeps inside the inode (up to 60 with this attribute name). A longer record (the URL
# itself, as JSON) took an extra 4 KiB block a file, allocated, written and journaled.
# Version 1 had no flags: such a file's opt-out is unknown, so it is not taken as recorded.
_RECORD = struct.Struct(">B32sQ16sB")
_RECORD_VERSION = 2
_OPTED_OUT = 0x01


def file_record(url: str, size: int, sha256: str, opted_out: bool = False) -> bytes:
    """What a file's extended attribute `RECORD_ATTRIBUTE` holds: what a rerun checks.

    The rest of a `MediaFile` is read from the file itself: its type from its name, its size
    in pixels from its header.
    """
    flags = _OPTED_OUT if opted_out else 0
    return _RECORD.pack(_RECORD_VERSION, bytes.fromhex(sha256), size, _url_digest(url), flags)


def read_file_record(name: str, record: bytes, urls: Sequence[str]) -> ManifestEntry | None:
    """The entry of file `name` of an image whose media URLs are `urls`, from its record.

    None unless `record` is a record, `name` is a name `file_name` makes, and the record was
    written for the URL now at that index (a changed URL is downloaded again).
    """
    if len(record) != _RECORD.size:
        return None
    version, digest, size, url_digest, flags = _RECORD.unpack(record)
    index = file_index(name)
    kind = kind_of_name(name)
    if version != _RECORD_VERSION or index is None or kind is None or index >= len(urls):
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
        opted_out=bool(flags & _OPTED_OUT),
    )


def _url_digest(url: str) -> bytes:
    return hashlib.sha256(url.encode("utf-8", "surrogatepass")).digest()[:16]


_COMPACT = (",", ":")


def worth_hashing(entry: ManifestEntry | None, url: str, size_on_disk: int | None) -> bool:
    """Whether a file on disk may be the one wanted: same URL, the expected size.

    Its SHA-256 is then compared with the entry's; a match skips the download.
    """
    return entry is not None and entry.url == url and size_on_disk == entry.bytes

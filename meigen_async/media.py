"""What a media download gives back: `MediaFile` per file written, `MediaResult` per image.

The downloading itself is `GallerySession.download_media` and `GallerySession.iter_media`;
see docs/media.md.
"""

from __future__ import annotations

from pathlib import Path

import attrs

from .errors import MeigenError
from .models import GalleryImage

__all__ = [
    "DEFAULT_MAX_MEDIA_BYTES",
    "DEFAULT_MAX_MEDIA_FILES",
    "DEFAULT_MAX_MEDIA_PIXELS",
    "DEFAULT_MEDIA_HOSTS",
    "DEFAULT_MEDIA_TIMEOUT",
    "MediaFile",
    "MediaResult",
]

DEFAULT_MEDIA_HOSTS: tuple[str, ...] = ("images.meigen.ai", "pbs.twimg.com")
"""The hosts media is downloaded from by default: the gallery's image host and Twitter's,
each on its scheme's default port (an entry such as `127.0.0.1:8080` names another port)."""

DEFAULT_MAX_MEDIA_BYTES = 20 * 1024 * 1024
"""The largest media file downloaded by default: 20 MiB."""

DEFAULT_MEDIA_TIMEOUT = 300.0
"""Seconds one media request may take, body included, by default: 5 minutes, enough for
`DEFAULT_MAX_MEDIA_BYTES` at 70 KB/s, and a host that trickles bytes holds a file no longer."""

DEFAULT_MAX_MEDIA_FILES = 16
"""The most media files downloaded for one image by default; the gallery's images have one to
four."""

DEFAULT_MAX_MEDIA_PIXELS = 178_956_970
"""The most pixels an image's header may claim by default: Pillow's decompression-bomb limit
(twice its `Image.MAX_IMAGE_PIXELS`), past which Pillow refuses to open a file at all."""


@attrs.frozen(slots=True)
class MediaFile:
    """One media file on disk, complete and verified."""

    url: str
    """The URL it was downloaded from (the image's, before any redirect)."""
    path: Path
    """Where it is: `{out}/{image id}/{index}{ext}`, the extension from its verified type."""
    bytes: int
    """Its size."""
    sha256: str
    """The hex SHA-256 of its bytes."""
    content_type: str
    """Its verified type, such as `image/png`."""
    width: int | None = None
    """Its width in pixels, when its header tells it (JPEG, PNG, WebP, GIF), else None."""
    height: int | None = None
    """Its height in pixels, likewise."""
    reused: bool = attrs.field(default=False, eq=False)
    """True when it was already there, complete, from an earlier run: not downloaded again.

    Left out of comparisons: the file is the same either way.
    """
    opted_out: bool = False
    """Its response carried `X-Robots-Tag: noai` or `noimageai`: its author does not want it
    used for AI. Kept in the file's record, so a file found on disk says it too."""


@attrs.frozen(slots=True)
class MediaResult:
    """The outcome for one image of `iter_media`: the files written, and the error if any.

    `files` holds every file that was written (or found complete) even when another of the
    image's files failed; `error` is the first failure: fetching the image's data, or one of
    its files.
    """

    id: str
    """The image's id."""
    files: tuple[MediaFile, ...] = ()
    """The files on disk: written now, or found complete from an earlier run."""
    error: MeigenError | None = None
    """The first failure (the image's data, or one of its files), or None."""
    image: GalleryImage | None = None
    """The image's data, when it was fetched (or given)."""

    @property
    def ok(self) -> bool:
        """True when every media file of the image is on disk."""
        return self.error is None

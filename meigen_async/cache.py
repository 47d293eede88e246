"""The cache policy and the in-process cache.

:class:`CachePolicy` decides how long a response may be kept, from the session's settings and
the response's ``Cache-Control`` and ``Age`` headers; it is pure and needs no network.
:class:`MemoryCache` keeps images and remembered 404s, bounded and with per-entry expiry.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import attrs
from cachetools import TLRUCache

from .models import GalleryImage
from .protocol import header

__all__ = ["CachePolicy", "MemoryCache", "parse_cache_control"]

_NOT_STORABLE = frozenset({"no-store", "no-cache", "private"})


def parse_cache_control(value: str | None) -> dict[str, str | None]:
    """Split a ``Cache-Control`` header into lower-cased directives and their values."""
    directives: dict[str, str | None] = {}
    if not value:
        return directives
    for part in value.split(","):
        name, sep, argument = part.strip().partition("=")
        if name:
            directives[name.strip().lower()] = argument.strip().strip('"') if sep else None
    return directives


def _seconds(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


@attrs.frozen
class CachePolicy:
    """How long responses are kept.

    ``ttl`` overrides what the server says; otherwise ``max-age`` (or, without it,
    ``s-maxage``) less ``Age``, capped at ``max_ttl``; otherwise ``default_ttl``. A response
    marked ``no-store``, ``no-cache`` or ``private`` is never stored, whatever ``ttl`` says.
    """

    ttl: float | None = None
    default_ttl: float = 300.0
    max_ttl: float = 3600.0
    negative_ttl: float = 30.0

    def ttl_for(self, headers: Mapping[str, str]) -> float | None:
        """Seconds to keep a successful response, or None when it must not be stored."""
        directives = parse_cache_control(header(headers, "Cache-Control"))
        if not _NOT_STORABLE.isdisjoint(directives):
            return None
        if self.ttl is not None:
            return self.ttl if self.ttl > 0 else None
        lifetime = _seconds(directives.get("max-age"))
        if lifetime is None:
            lifetime = _seconds(directives.get("s-maxage"))
        if lifetime is None:
            return self.default_ttl if self.default_ttl > 0 else None
        remaining = min(lifetime - (_seconds(header(headers, "Age")) or 0.0), self.max_ttl)
        return remaining if remaining > 0 else None


# A stored image and the monotonic time until which it is fresh.
_Entry = tuple[GalleryImage, float]


class MemoryCache:
    """Images and remembered 404s, each bounded to ``maxsize`` entries (0 disables both).

    An image stays stored ``stale_window`` seconds past its freshness so that it can still
    be served when the upstream fails; :meth:`get` only ever returns fresh ones.
    """

    def __init__(
        self,
        maxsize: int,
        *,
        stale_window: float = 0.0,
        timer: Callable[[], float] = time.monotonic,
    ):
        self.maxsize = maxsize
        self.stale_window = stale_window
        self._timer = timer
        self._images: TLRUCache[str, _Entry] = TLRUCache(
            max(maxsize, 1), ttu=self._expires_at, timer=timer
        )
        self._missing: TLRUCache[str, float] = TLRUCache(max(maxsize, 1), ttu=_until, timer=timer)

    def _expires_at(self, _key: str, entry: _Entry, _now: float) -> float:
        return entry[1] + self.stale_window

    def get(self, image_id: str) -> GalleryImage | None:
        """The fresh image stored for ``image_id``, or None."""
        try:
            image, fresh_until = self._images[image_id]
        except KeyError:
            return None
        return image if self._timer() < fresh_until else None

    def get_stale(self, image_id: str) -> GalleryImage | None:
        """The image stored for ``image_id`` even if no longer fresh, within the stale window."""
        entry = self._images.get(image_id)
        return entry[0] if entry is not None else None

    def set(self, image_id: str, image: GalleryImage, ttl: float) -> None:
        """Store ``image`` as fresh for ``ttl`` seconds."""
        if self.maxsize > 0:
            self._images[image_id] = (image, self._timer() + ttl)
            self._missing.pop(image_id, None)

    def is_missing(self, image_id: str) -> bool:
        """Whether a 404 for ``image_id`` is remembered."""
        return image_id in self._missing

    def set_missing(self, image_id: str, ttl: float) -> None:
        """Remember a 404 for ``image_id`` for ``ttl`` seconds."""
        if self.maxsize > 0 and ttl > 0:
            self._missing[image_id] = self._timer() + ttl
            self._images.pop(image_id, None)

    def invalidate(self, image_id: str) -> None:
        """Forget anything stored for ``image_id``."""
        self._images.pop(image_id, None)
        self._missing.pop(image_id, None)

    def clear(self) -> None:
        """Forget everything."""
        self._images.clear()
        self._missing.clear()

    def __len__(self) -> int:
        """How many images are stored, stale ones in their window included."""
        return len(self._images)


def _until(_key: str, until: float, _now: float) -> float:
    return until

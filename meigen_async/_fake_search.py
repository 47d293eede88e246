"""What `FakeGallery`'s search answers, and its quotas: plain functions and values, no server.

The search the fake serves is the service's (docs/search.md): items in exactly the search's
shape, ranked by relevance (every word of the query that an image's text or author names
holds counts; more matching words rank higher), the empty query listing the newest posts
first. The quotas are the service's two 429s: a limit per address over a window of about a
minute for searches without a key, and a daily limit per API key, until 00:00 UTC.
"""

from __future__ import annotations

import re
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from ._protocol import DAILY_LIMIT_CODE

__all__ = [
    "SEARCH_FIELDS",
    "SearchQuotas",
    "bearer_key",
    "search_items",
    "words",
]

SEARCH_FIELDS = (
    "id",
    "text",
    "thumbnail_url",
    "media_urls",
    "author_username",
    "author_display_name",
    "likes",
    "views",
    "model",
    "prompt_ready",
    "image_width",
    "image_height",
)
"""The fields of an image a search item carries, besides `rank` and `matched_media_index`."""

TOO_MANY = {"success": False, "error": "Too many requests"}
DAILY_LIMIT = {"success": False, "error": "Daily search limit reached", "code": DAILY_LIMIT_CODE}
BAD_KEY = {"success": False, "error": "Invalid API key"}

_WORD = re.compile(r"\w+")


def words(text: str) -> set[str]:
    """The words of `text`, lower case."""
    return set(_WORD.findall(text.lower()))


def _image_words(data: Mapping[str, Any]) -> set[str]:
    fields = (data.get("text"), data.get("author_username"), data.get("author_display_name"))
    return {word for field in fields if isinstance(field, str) for word in words(field)}


def _posted(data: Mapping[str, Any]) -> float:
    """When an image was posted, as a number to sort by; unknown dates sort last."""
    value = data.get("created_at")
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            return float("-inf")
        return (when if when.tzinfo is not None else when.replace(tzinfo=UTC)).timestamp()
    return float("-inf")


def search_items(
    images: Iterable[Mapping[str, Any]], query: str, *, matched_media: bool
) -> list[dict[str, Any]]:
    """The items a search for `query` answers, best first, in the search's shape.

    A query matches an image when any of its words is a word of the image's text or author
    names (ignoring case); `rank` is the share of the query's words it holds, and the items
    come by rank, then in the order the images were given. The empty query (no words) lists
    every image, newest `created_at` first, `rank` 0. With `matched_media`,
    `matched_media_index` names one of the image's `media_urls` (picked from the query and
    the id, so that it is the same on every request), or null when there is none or the
    query is empty.
    """
    wanted = words(query)
    scored: list[tuple[float, Mapping[str, Any]]]
    if not wanted:
        scored = [(0.0, data) for data in sorted(images, key=_posted, reverse=True)]
    else:
        scored = []
        for data in images:
            score = len(wanted & _image_words(data)) / len(wanted)
            if score > 0:
                scored.append((score, data))
        scored.sort(key=lambda pair: pair[0], reverse=True)  # stable: ties keep their order
    items = []
    for rank, data in scored:
        item = {field: data.get(field) for field in SEARCH_FIELDS}
        item["rank"] = rank
        if matched_media:
            item["matched_media_index"] = _matched(data, query) if wanted else None
        items.append(item)
    return items


def _matched(data: Mapping[str, Any], query: str) -> int | None:
    media = data.get("media_urls")
    if not isinstance(media, list) or not media:
        return None
    return zlib.crc32(f"{query.lower()}\0{data.get('id')}".encode()) % len(media)


def bearer_key(authorization: str | None) -> str | None:
    """The key of an `Authorization: Bearer <key>` header; None for no header or another kind."""
    if authorization is None:
        return None
    kind, _, key = authorization.partition(" ")
    return (key.strip() or None) if kind.lower() == "bearer" else None


class SearchQuotas:
    """The fake's search limits: per address without a key, per key and UTC day with one.

    Args:
        api_keys: The keys accepted; another key is answered 401. None accepts any key.
        search_limit: Searches an address may make without a key in one window; None: no
            limit.
        daily_search_limit: Searches one key may make in one UTC day; None: no limit.
        window: The per-address window, in seconds.
        clock: Monotonic seconds, for the window.
        wall_clock: Seconds since the epoch, for the UTC day.

    """

    def __init__(
        self,
        *,
        api_keys: Iterable[str] | None = None,
        search_limit: int | None = None,
        daily_search_limit: int | None = None,
        window: float = 60.0,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
    ):
        self.api_keys = None if api_keys is None else frozenset(api_keys)
        self.search_limit = search_limit
        self.daily_search_limit = daily_search_limit
        self.window = window
        self._clock = clock
        self._wall_clock = wall_clock
        self._windows: dict[str, tuple[float, int]] = {}
        self.daily: Counter[tuple[str, str]] = Counter()
        """Searches counted per (key, UTC date)."""

    def admit(self, address: str, key: str | None) -> tuple[int, dict[str, Any]] | None:
        """None when a search from `address` with `key` may be answered; else its error.

        The error is a status and its body: 401 for a key not accepted, 429 `Too many
        requests` past the per-address limit, 429 `DAILY_LIMIT_REACHED` past the key's daily
        limit. A search with a key is not counted against its address.
        """
        if key is not None:
            if self.api_keys is not None and key not in self.api_keys:
                return 401, BAD_KEY
            day = datetime.fromtimestamp(self._wall_clock(), UTC).date().isoformat()
            self.daily[key, day] += 1
            limit = self.daily_search_limit
            return (
                (429, DAILY_LIMIT) if limit is not None and self.daily[key, day] > limit else None
            )
        if self.search_limit is None:
            return None
        now = self._clock()
        started, count = self._windows.get(address, (now, 0))
        if now - started >= self.window:
            started, count = now, 0
        self._windows[address] = (started, count + 1)
        return (429, TOO_MANY) if count + 1 > self.search_limit else None

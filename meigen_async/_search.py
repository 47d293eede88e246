"""The search endpoint's contract and the paging decisions, as plain functions and values.

`GET {base_url}/api/search?q=QUERY&type=posts&limit=N&offset=K&media=matched-v1` answers
`{"success": true, "data": [...]}`, each item a summary of an image with its `rank` and
`matched_media_index` (docs/search.md says where each fact comes from). An empty query lists
recent posts. Searches are limited per address (a 429), or, with an API key sent as a Bearer
token, by the key's daily quota (a 429 with the code `DAILY_LIMIT_REACHED`, until 00:00 UTC).
No asyncio or aiohttp here: `_searcher` does the I/O and asks these.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import attrs
from cachetools import LRUCache
from yarl import URL

from ._protocol import (
    is_daily_limit,
    not_followed,
    reported_error,
    service_message,
    snippet,
    validate_image_id,
)
from ._quota import daily_limit
from ._status import SEARCH, Kind, kind_of
from ._text import printable
from .errors import ApiError, InvalidImageId, InvalidQuery, InvalidResponse, MeigenError
from .models import SearchHit, structure_search_hit

__all__ = [
    "MAX_PAGE_SIZE",
    "MAX_QUERY_LENGTH",
    "PAGE_CACHE_BYTES",
    "PAGE_CACHE_PAGES",
    "Page",
    "PageCache",
    "Pager",
    "decode_page",
    "page_bytes",
    "page_error",
    "page_key",
    "parse_page_key",
    "search_urls",
    "subject",
    "validate_max_results",
    "validate_page",
    "validate_query",
]


MAX_QUERY_LENGTH = 200
"""The longest query accepted, in characters, after stripping."""

MAX_PAGE_SIZE = 20
"""The most results a page asks for: what MeiGen's own client asks."""

PAGE_CACHE_PAGES = 256
"""The most search pages a session keeps in memory."""

PAGE_CACHE_BYTES = 32 * 1024 * 1024
"""The most memory, in bytes as `page_bytes` estimates it, the kept search pages may take.

A page of 20 real hits takes 60 KB on average, 116 KB at most (measured over the prompt
corpus), so 256 such pages fit; pages a server made huge are evicted down to this, where
256 of them took about 7 GB before pages were cut to their limit and weighed.
"""

_QUERY_SHOWN = 60
_SKIPPED_SHOWN = 40  # characters of a refused id quoted in the log: a valid id has at most 128


# -- Before any request --------------------------------------------------------------------------


def validate_query(query: object) -> str:
    """`query` stripped of surrounding whitespace, when the search takes it.

    The empty query (or one of spaces) is taken: it browses, listing recent posts.

    Raises:
        InvalidQuery: it is not a string, is longer than 200 characters once stripped, or
            cannot be sent as UTF-8 (a lone surrogate).

    """
    if not isinstance(query, str):
        raise InvalidQuery(f"a search query must be a string, got {type(query).__name__}")
    stripped = query.strip()
    if len(stripped) > MAX_QUERY_LENGTH:
        raise InvalidQuery(
            f"a search query is at most {MAX_QUERY_LENGTH} characters, "
            f"got {len(stripped)}: {printable(stripped, _QUERY_SHOWN)}"
        )
    try:
        stripped.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidQuery(
            f"a search query must be text that UTF-8 can carry (no lone surrogates), "
            f"got {printable(stripped, _QUERY_SHOWN)}"
        ) from None
    return stripped


def validate_page(limit: object, offset: object) -> None:
    """Check a page's `limit` (1 to 20) and `offset` (>= 0), both whole numbers.

    Raises:
        InvalidQuery: either is out of range or not an `int` (a `bool` is not one).

    """
    if type(limit) is not int or not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidQuery(f"limit must be a whole number from 1 to {MAX_PAGE_SIZE}, got {limit!r}")
    if type(offset) is not int or offset < 0:
        raise InvalidQuery(f"offset must be a whole number >= 0, got {offset!r}")


def validate_max_results(max_results: object) -> None:
    """Check `iter_search`'s `max_results`: a whole number >= 1, or None for no bound.

    Raises:
        InvalidQuery: it is not.

    """
    if max_results is not None and (type(max_results) is not int or max_results < 1):
        raise InvalidQuery(f"max_results must be a whole number >= 1 or None, got {max_results!r}")


def search_urls(base: URL) -> Callable[[str, int, int], URL]:
    """A function giving the URL of one page of a *validated* query, ready for aiohttp.

    The query is percent-encoded here, every reserved character included (space as `%20`,
    `&`, `#`, `?`, `+`, `=`, `/`, and non-ASCII as UTF-8), and the URL is handed over as
    already encoded, so that neither yarl nor aiohttp re-reads it: the server sees exactly
    the query given (`q=` for the empty one). `media=matched-v1` asks each item's
    `matched_media_index`. `base` is the session's base URL, already checked.
    """
    prefix = str(base.with_path(f"{base.raw_path.rstrip('/')}/api/search", encoded=True))

    def url(query: str, limit: int, offset: int) -> URL:
        q = quote(query, safe="")
        return URL(
            f"{prefix}?q={q}&type=posts&limit={limit}&offset={offset}&media=matched-v1",
            encoded=True,
        )

    return url


def page_key(query: str, limit: int, offset: int) -> str:
    """The cache and single-flight key of one page: unambiguous for any query."""
    return json.dumps([query, limit, offset], ensure_ascii=False)


def parse_page_key(key: str) -> tuple[str, int, int]:
    """The query, limit and offset a `page_key` was made of."""
    query, limit, offset = json.loads(key)
    return query, limit, offset


def subject(query: str, limit: int, offset: int) -> str:
    """What a page's errors name: `search 'neon city' (limit 20, offset 40)`.

    The empty query browses: `browse recent posts (limit 20, offset 0)`.
    """
    what = f"search {printable(query, _QUERY_SHOWN)}" if query else "browse recent posts"
    return f"{what} (limit {limit}, offset {offset})"


# -- Reading a page ------------------------------------------------------------------------------


@attrs.frozen
class Page:
    """One decoded page: the hits it gives, and what the server sent for them."""

    hits: tuple[SearchHit, ...] = ()
    """The hits, in the server's order: the results within the limit that name a gallery id."""
    received: int = 0
    """How many results the page counted, cut to the `limit` asked: what tells a last page."""
    skipped: tuple[str, ...] = ()
    """The ids of the results left out (not gallery ids), each quoted printable, for the log."""


def decode_page(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    limit: int,
    now: datetime | None = None,
) -> Page:
    """One response as the page it stands for, or the error it stands for, raised.

    A 2xx must carry `{"success": true, "data": [...]}`; `{"success": false, "error": ...}`
    and `{"error": ...}` are the service's errors, on any status. The errors name no query:
    the caller tells them for the page.

    Only the first `limit` results are looked at, and built: a server sending more than it
    was asked (100,000 hits in 2 MB) costs no more than `limit` of them. A result whose `id`
    is missing or not a gallery id (`validate_image_id`: a newline in it, say) is skipped,
    and named in `skipped`; a result that is no object, or whose other fields have the
    wrong type, fails the page as a wrong field fails an image.

    `now` (UTC, the clock's by default) dates a daily limit's reset.

    Raises:
        MeigenError: the matching subclass; never a raw exception, whatever the body holds.

    """
    if not 200 <= status < 300:
        raise page_error(status, headers, body, now=now)
    envelope = _load_json(body)
    if not isinstance(envelope, dict):
        raise InvalidResponse(
            f"expected a JSON object envelope, got {type(envelope).__name__}: {snippet(body)}"
        )
    if envelope.get("success") is not True:
        reported = reported_error(envelope)
        if reported is not None:
            raise ApiError(f"the service reported an error: {reported}", status=status)
        raise InvalidResponse(f"envelope field 'success' is not true: {snippet(body)}")
    data = envelope.get("data")
    if not isinstance(data, list):
        what = "no 'data' field" if "data" not in envelope else f"'data' is {type(data).__name__}"
        raise InvalidResponse(f"expected a list of results, but the envelope has {what}")
    results = data[:limit]
    hits: list[SearchHit] = []
    skipped: list[str] = []
    for index, item in enumerate(results):
        if isinstance(item, dict):
            try:
                validate_image_id(item.get("id"))
            except InvalidImageId:
                skipped.append(_shown_id(item.get("id")))
                continue
        try:
            hits.append(structure_search_hit(item))
        except InvalidResponse as error:
            raise InvalidResponse(f"result {index}: {error.message}") from error.__cause__
    return Page(hits=tuple(hits), received=len(results), skipped=tuple(skipped))


def _shown_id(value: object) -> str:
    if value is None:
        return "(no id)"
    if isinstance(value, str):
        return printable(value, _SKIPPED_SHOWN)
    return f"(a {type(value).__name__})"


def page_error(
    status: int, headers: Mapping[str, str], body: bytes, *, now: datetime | None = None
) -> MeigenError:
    """The error a non-2xx search response stands for, with the service's message.

    Its class is the search's one for the status's kind (`_status.SEARCH`), but for a 429
    whose body's `code` is `DAILY_LIMIT_REACHED` (an API key's daily quota): that is
    `DailyLimitReached`, resetting at the `Retry-After` if sent, else the next 00:00 UTC
    after `now`. Any other 429 (the limit on searches per address) is `RateLimited` with its
    `Retry-After`; a 5xx `ServerError` (a 503's `Retry-After` read); a 3xx an `ApiError`
    naming its `Location`, never followed; anything else, 404 included, `ApiError`.
    """
    if kind_of(status) is Kind.REDIRECT:
        return SEARCH.error(status, headers, f"HTTP {status}: {not_followed(headers)}")
    message = f"HTTP {status}: {service_message(body)}"
    if is_daily_limit(status, body):
        return daily_limit(message, headers, now if now is not None else datetime.now(UTC))
    return SEARCH.error(status, headers, message)


def _load_json(body: bytes) -> Any:
    try:
        # surrogatepass as for images: CESU-8 surrogates decode, and the converter replaces them.
        return json.loads(body.decode("utf-8", "surrogatepass"))
    except (ValueError, RecursionError) as exc:
        problem = "nested too deep to decode" if isinstance(exc, RecursionError) else str(exc)
        raise InvalidResponse(f"response body is not JSON ({problem}): {snippet(body)}") from exc


# -- Paging --------------------------------------------------------------------------------------


class Pager:
    """What `iter_search` asks next and yields, page by page: offsets, dedupe, when to stop.

    The service pages by offset alone (no total, no "has more"), and may send more or fewer
    results than the `limit` asked: each offset moves by the results the last page counted,
    and a page shorter than `page_size` is the last only when it is also shorter than the
    longest page seen so far (a server capping pages at 10 sends 10 a page, not a last page).
    Pages shift while the gallery changes, so an id already yielded is dropped. The paging
    stops at such a last page, at an empty page, at a page that adds no new id (the offsets
    have run past anything new, or the server repeats itself), or at `max_results` hits
    yielded.

    Args:
        page_size: The `limit` of every page, 1 to 20.
        max_results: The most hits to yield; None for no bound.

    """

    def __init__(self, page_size: int, max_results: int | None):
        self.page_size = page_size
        self.offset = 0
        self.done = False
        self._left = max_results
        self._seen: set[str] = set()
        self._longest = 0

    def take(self, page: Page) -> list[SearchHit]:
        """The hits of the page just fetched at `offset` to yield; moves on to the next page.

        A page counts the results it held (`received`, cut to the limit), skipped ones
        included: a page the server sent full is not taken for the last because some of its
        ids were refused, and the next offset skips past them.
        """
        new: list[SearchHit] = []
        for hit in page.hits:
            if self._left is not None and len(new) >= self._left:
                break
            if hit.id not in self._seen:
                self._seen.add(hit.id)
                new.append(hit)
        if self._left is not None:
            self._left -= len(new)
        received = page.received
        self.offset += received
        last = received < self.page_size and received < self._longest
        self._longest = max(self._longest, received)
        self.done = received == 0 or last or not new or self._left == 0
        return new


# -- Keeping pages -------------------------------------------------------------------------------


def page_bytes(key: str, page: Page) -> int:
    """An estimate of the memory one kept page takes, in bytes: its key, hits and strings.

    `sys.getsizeof` of every object the page holds (each hit, each field's value, each media
    URL): what a page's strings cost in memory, which a body's length does not tell (one
    emoji makes every character of a Python string 4 bytes). Small shared values (None,
    small ints) are counted as if they were the page's own: an overestimate of a few bytes.
    A prompt parsed later (`hit.prompt`) is not counted.
    """
    size = sys.getsizeof(key) + sys.getsizeof(page) + sys.getsizeof(page.hits)
    size += sum(map(sys.getsizeof, page.skipped))
    for hit in page.hits:
        size += sys.getsizeof(hit)
        for value in attrs.astuple(hit, recurse=False):
            size += sys.getsizeof(value)
            if type(value) is tuple:
                size += sum(map(sys.getsizeof, value))
    return size


class PageCache:
    """Pages kept by key, each until its own expiry, within a count and a memory budget.

    At most `max_pages` pages and `max_bytes` bytes of them, as `page_bytes` estimates: the
    least recently used go first. Each page counts at least `max_bytes / max_pages`, which is
    how the one budget bounds both (cachetools' `LRUCache` weighs entries by one measure). A
    page larger than the whole budget is not kept. `max_pages` 0 keeps none.

    Args:
        max_pages: The most pages kept.
        timer: The clock, `time.monotonic` but in tests.
        max_bytes: The most bytes the kept pages take.

    """

    def __init__(
        self, max_pages: int, timer: Callable[[], float], *, max_bytes: int = PAGE_CACHE_BYTES
    ):
        self.max_pages = max_pages
        self.max_bytes = max_bytes
        self._timer = timer
        self._least = max_bytes // max(max_pages, 1)
        self._pages: LRUCache[str, _Kept] = LRUCache(
            max(max_bytes, 1), getsizeof=lambda kept: kept.weight
        )

    def get(self, key: str) -> Page | None:
        """The fresh page kept under `key`, or None."""
        kept = self._pages.get(key)
        if kept is None:
            return None
        if self._timer() < kept.expires:
            return kept.page
        del self._pages[key]
        return None

    def set(self, key: str, page: Page, ttl: float | None) -> None:
        """Keep `page` `ttl` seconds; None or 0 keeps nothing and forgets what was kept."""
        weight = max(page_bytes(key, page), self._least)
        if self.max_pages > 0 and ttl is not None and ttl > 0 and weight <= self.max_bytes:
            self._pages[key] = _Kept(page, self._timer() + ttl, weight)
        else:
            self._pages.pop(key, None)

    def clear(self) -> None:
        """Forget every page."""
        self._pages.clear()

    def __len__(self) -> int:
        """How many pages are kept, expired ones not yet touched included."""
        return len(self._pages)

    @property
    def kept_bytes(self) -> int:
        """The bytes the kept pages count for (each at least `max_bytes / max_pages`)."""
        return int(self._pages.currsize)


@attrs.frozen
class _Kept:
    page: Page
    expires: float
    weight: int

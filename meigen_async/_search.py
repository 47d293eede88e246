"""The search endpoint's contract and the paging decisions, as plain functions and values.

`GET {base_url}/api/search?q=QUERY&type=posts&limit=N&offset=K` answers
`{"success": true, "data": [...]}`, each item shaped like the image endpoint's `data`. The
service does not document it; this is how MeiGen's own client calls it. No asyncio or aiohttp
here: `_searcher` does the I/O and asks these.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote

from cachetools import LRUCache
from yarl import URL

from ._protocol import header, parse_retry_after, service_message, snippet
from ._text import printable, replace_surrogates
from .errors import (
    ApiError,
    InvalidQuery,
    InvalidResponse,
    MeigenError,
    RateLimited,
    ServerError,
)
from .models import SearchHit, structure_search_hit

__all__ = [
    "MAX_PAGE_SIZE",
    "MAX_QUERY_LENGTH",
    "PageCache",
    "Pager",
    "decode_page",
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

_QUERY_SHOWN = 60
_LOCATION_SHOWN = 200


# -- Before any request --------------------------------------------------------------------------


def validate_query(query: object) -> str:
    """`query` stripped of surrounding whitespace, when the search takes it.

    Raises:
        InvalidQuery: it is not a string, is blank, is longer than 200 characters once
            stripped, or cannot be sent as UTF-8 (a lone surrogate).

    """
    if not isinstance(query, str):
        raise InvalidQuery(f"a search query must be a string, got {type(query).__name__}")
    stripped = query.strip()
    if not stripped:
        raise InvalidQuery("a search query cannot be empty or only whitespace")
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
    the query given. `base` is the session's base URL, already checked.
    """
    prefix = str(base.with_path(f"{base.raw_path.rstrip('/')}/api/search", encoded=True))

    def url(query: str, limit: int, offset: int) -> URL:
        q = quote(query, safe="")
        return URL(f"{prefix}?q={q}&type=posts&limit={limit}&offset={offset}", encoded=True)

    return url


def page_key(query: str, limit: int, offset: int) -> str:
    """The cache and single-flight key of one page: unambiguous for any query."""
    return json.dumps([query, limit, offset], ensure_ascii=False)


def parse_page_key(key: str) -> tuple[str, int, int]:
    """The query, limit and offset a `page_key` was made of."""
    query, limit, offset = json.loads(key)
    return query, limit, offset


def subject(query: str, limit: int, offset: int) -> str:
    """What a page's errors name: `search 'neon city' (limit 20, offset 40)`."""
    return f"search {printable(query, _QUERY_SHOWN)} (limit {limit}, offset {offset})"


# -- Reading a page ------------------------------------------------------------------------------


def decode_page(status: int, headers: Mapping[str, str], body: bytes) -> tuple[SearchHit, ...]:
    """One response as the page's hits, or the error it stands for, raised.

    A 2xx must carry `{"success": true, "data": [...]}`; `{"success": false, "error": ...}`
    and `{"error": ...}` are the service's errors, on any status. The errors name no query:
    the caller tells them for the page.

    Raises:
        MeigenError: the matching subclass; never a raw exception, whatever the body holds.

    """
    if not 200 <= status < 300:
        raise page_error(status, headers, body)
    envelope = _load_json(body)
    if not isinstance(envelope, dict):
        raise InvalidResponse(
            f"expected a JSON object envelope, got {type(envelope).__name__}: {snippet(body)}"
        )
    if envelope.get("success") is not True:
        error = envelope.get("error")
        if isinstance(error, str):
            raise ApiError(
                f"the service reported an error: {replace_surrogates(error)}", status=status
            )
        raise InvalidResponse(f"envelope field 'success' is not true: {snippet(body)}")
    data = envelope.get("data")
    if not isinstance(data, list):
        what = "no 'data' field" if "data" not in envelope else f"'data' is {type(data).__name__}"
        raise InvalidResponse(f"expected a list of results, but the envelope has {what}")
    hits = []
    for index, item in enumerate(data):
        try:
            hits.append(structure_search_hit(item))
        except InvalidResponse as error:
            raise InvalidResponse(f"result {index}: {error.message}") from error.__cause__
    return tuple(hits)


def page_error(status: int, headers: Mapping[str, str], body: bytes) -> MeigenError:
    """The error a non-2xx search response stands for, with the service's message.

    A 429 (the service's limit on searches per address) is `RateLimited` with its
    `Retry-After`; a 5xx `ServerError` (a 503's `Retry-After` read); a 3xx an `ApiError`
    naming its `Location`, never followed; anything else, 404 included, `ApiError`.
    """
    if 300 <= status < 400:
        location = header(headers, "Location")
        where = (
            f"the gallery redirected to {printable(location, _LOCATION_SHOWN)}"
            if location
            else "the gallery answered with a redirect status and no Location"
        )
        return ApiError(
            f"HTTP {status}: {where}; this library does not follow redirects: if the service "
            "moved, set base_url to it",
            status=status,
        )
    message = f"HTTP {status}: {service_message(body)}"
    if status == 429:
        retry_after = parse_retry_after(header(headers, "Retry-After"))
        return RateLimited(message, status=status, retry_after=retry_after)
    if status >= 500:
        retry_after = parse_retry_after(header(headers, "Retry-After")) if status == 503 else None
        return ServerError(message, status=status, retry_after=retry_after)
    return ApiError(message, status=status)


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

    Offsets move by `page_size`. Pages shift while the gallery changes, so an id already
    yielded is dropped. The paging stops at a page shorter than `page_size` (the last), at
    `max_results` hits yielded, or at a page that adds no new id (the offsets have run past
    anything new, or the server repeats itself).

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

    def take(self, page: Iterable[SearchHit]) -> list[SearchHit]:
        """The hits of the page just fetched at `offset` to yield; moves on to the next page."""
        hits = list(page)
        new: list[SearchHit] = []
        for hit in hits:
            if self._left is not None and len(new) >= self._left:
                break
            if hit.id not in self._seen:
                self._seen.add(hit.id)
                new.append(hit)
        if self._left is not None:
            self._left -= len(new)
        self.offset += self.page_size
        self.done = len(hits) < self.page_size or not new or self._left == 0
        return new


# -- Keeping pages -------------------------------------------------------------------------------


class PageCache:
    """Pages kept by key, each until its own expiry; at most `maxsize` (0 keeps none).

    Args:
        maxsize: The most pages kept; the least recently used goes first.
        timer: The clock, `time.monotonic` but in tests.

    """

    def __init__(self, maxsize: int, timer: Callable[[], float]):
        self.maxsize = maxsize
        self._timer = timer
        self._pages: LRUCache[str, tuple[tuple[SearchHit, ...], float]] = LRUCache(max(maxsize, 1))

    def get(self, key: str) -> tuple[SearchHit, ...] | None:
        """The fresh page kept under `key`, or None."""
        entry = self._pages.get(key)
        if entry is None:
            return None
        if self._timer() < entry[1]:
            return entry[0]
        del self._pages[key]
        return None

    def set(self, key: str, hits: tuple[SearchHit, ...], ttl: float | None) -> None:
        """Keep `hits` `ttl` seconds; None or 0 keeps nothing and forgets what was kept."""
        if self.maxsize > 0 and ttl is not None and ttl > 0:
            self._pages[key] = (hits, self._timer() + ttl)
        else:
            self._pages.pop(key, None)

    def clear(self) -> None:
        """Forget every page."""
        self._pages.clear()

    def __len__(self) -> int:
        """How many pages are kept, expired ones not yet touched included."""
        return len(self._pages)

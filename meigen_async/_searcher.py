"""`Searcher`: the I/O of search pages, through the session's own `Upstream`.

A page is looked up in its own cache (never the image cache), else fetched in a single flight
keyed by (query, limit, offset), through the `Upstream` the images use: the same concurrency
slots, pacer, retries and `Retry-After` handling. What each step means is decided in `_search`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable

from yarl import URL

from ._flight import SingleFlight
from ._search import (
    PageCache,
    Pager,
    decode_page,
    page_key,
    parse_page_key,
    search_urls,
    subject,
    validate_max_results,
    validate_page,
    validate_query,
)
from ._transport import RawResponse
from ._upstream import Upstream
from .cache import CachePolicy
from .errors import MeigenError, TransportError
from .models import SearchHit

__all__ = ["SEARCH_TASK_PREFIX", "Searcher"]

SEARCH_TASK_PREFIX = "meigen-async search "
"""Search pages are fetched in tasks named this prefix plus the page's key."""

_PAGES_KEPT = 256


class Searcher:
    """Search pages: validated, cached with their own lifetime, fetched once at a time each.

    Args:
        base: The session's base URL, checked.
        upstream: The session's `Upstream`.
        policy: How long a page is kept: `Cache-Control`, else its `default_ttl`.
        cache_pages: Whether pages are kept at all (the session's `cache_size` > 0).
        timer: The cache's clock.

    """

    def __init__(
        self,
        base: URL,
        *,
        upstream: Upstream,
        policy: CachePolicy,
        cache_pages: bool = True,
        timer: Callable[[], float] = time.monotonic,
    ):
        self._url = search_urls(base)
        self._upstream = upstream
        self._policy = policy
        self._pages = PageCache(_PAGES_KEPT if cache_pages else 0, timer)
        self._flights: SingleFlight[tuple[SearchHit, ...]] = SingleFlight(
            self._fetch,
            task_name=SEARCH_TASK_PREFIX.__add__,
            closed_error=_closed_error,
            outcomes=(MeigenError,),
        )

    async def search(self, query: str, limit: int, offset: int) -> list[SearchHit]:
        """One page of hits for a query (validated here, before any I/O)."""
        query = validate_query(query)
        validate_page(limit, offset)
        return list(await self._page(query, limit, offset))

    def iter_search(
        self, query: str, *, max_results: int | None, page_size: int
    ) -> AsyncGenerator[SearchHit, None]:
        """Validate now, then page through the hits lazily, one page in flight."""
        query = validate_query(query)
        validate_page(page_size, 0)
        validate_max_results(max_results)
        return self._iterate(query, Pager(page_size, max_results))

    async def _iterate(self, query: str, pager: Pager) -> AsyncGenerator[SearchHit, None]:
        while not pager.done:
            page = await self._page(query, pager.page_size, pager.offset)
            for hit in pager.take(page):
                yield hit

    async def _page(self, query: str, limit: int, offset: int) -> tuple[SearchHit, ...]:
        key = page_key(query, limit, offset)
        hits = self._pages.get(key)
        if hits is not None:
            return hits
        if self._flights.closed:
            raise RuntimeError("this GallerySession is closed")
        flight, _ = self._flights.join(key, asyncio.get_running_loop())
        return await self._flights.wait(flight)

    async def _fetch(self, key: str) -> tuple[SearchHit, ...]:
        query, limit, offset = parse_page_key(key)
        policy = self._policy

        def read(raw: RawResponse) -> tuple[tuple[SearchHit, ...], float | None]:
            return decode_page(raw.status, raw.headers, raw.body), policy.ttl_for(raw.headers)

        hits, ttl = await self._upstream.request(
            self._url(query, limit, offset),
            read,
            image_id=None,
            subject=subject(query, limit, offset),
        )
        self._pages.set(key, hits, ttl)
        return hits

    def clear(self) -> None:
        """Forget every page kept."""
        self._pages.clear()

    async def close(self) -> None:
        """Cancel the pages in flight and wait for their tasks."""
        await self._flights.close()


def _closed_error(key: str) -> TransportError:
    query, limit, offset = parse_page_key(key)
    return TransportError(
        f"the session was closed while {subject(query, limit, offset)} was being fetched"
    )

"""`Searcher`: the I/O of search pages, through the session's own `Upstream`.

A page is looked up in its own cache (never the image cache), else fetched in a single flight
keyed by (query, limit, offset), through the `Upstream` the images use: the same concurrency
slots, pacer, retries and `Retry-After` handling. What each step means is decided in `_search`.

Results whose id is not a gallery id are skipped there; here they are counted in the session's
`stats.search_hits_skipped` and logged: the first page with any as a warning on the
`meigen_async` logger, once a session (a server sending them on every page would otherwise
flood the log), later ones at debug level.

The API key goes here alone, as the `Authorization` header of search requests: the image
and media requests never carry it. It appears in no log line or error message (`_quota`).
After a daily limit, a page that would need a request is refused with none until the reset.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Callable
from datetime import UTC, datetime

from yarl import URL

from . import _telemetry
from ._core import SKIPPED_HIT, Tally
from ._flight import SingleFlight
from ._quota import SearchQuota, without_secret
from ._search import (
    PAGE_CACHE_PAGES,
    Page,
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
from .errors import DailyLimitReached, MeigenError, TransportError
from .models import SearchHit

__all__ = ["SEARCH_TASK_PREFIX", "Searcher"]

logger = logging.getLogger("meigen_async")

SEARCH_TASK_PREFIX = "meigen-async search "
"""Search pages are fetched in tasks named this prefix plus the page's key."""
_SKIPPED_NAMED = 3  # ids of skipped results a log line quotes


class Searcher:
    """Search pages: validated, cached with their own lifetime, fetched once at a time each.

    Args:
        base: The session's base URL, checked.
        upstream: The session's `Upstream`.
        policy: How long a page is kept: `Cache-Control`, else its `default_ttl`.
        tally: The session's counters, where skipped results are counted.
        cache_pages: Whether pages are kept at all (the session's `cache_size` > 0).
        timer: The cache's clock.
        api_key: Sent as `Authorization: Bearer <key>` on every search request; None: none.
        wall_clock: Seconds since the epoch, to date a daily limit; `time.time` but in tests.

    """

    def __init__(
        self,
        base: URL,
        *,
        upstream: Upstream,
        policy: CachePolicy,
        tally: Tally,
        cache_pages: bool = True,
        timer: Callable[[], float] = time.monotonic,
        api_key: str | None = None,
        wall_clock: Callable[[], float] = time.time,
    ):
        self._url = search_urls(base)
        self._secret = api_key
        self._authorization = {"Authorization": f"Bearer {api_key}"} if api_key else None
        self._wall_clock = wall_clock
        self._quota = SearchQuota()
        self._upstream = upstream
        self._policy = policy
        self._tally = tally
        self._warned = False
        self._pages = PageCache(PAGE_CACHE_PAGES if cache_pages else 0, timer)
        self._flights: SingleFlight[Page] = SingleFlight(
            self._fetch,
            task_name=SEARCH_TASK_PREFIX.__add__,
            closed_error=_closed_error,
            outcomes=(MeigenError,),
        )

    async def search(self, query: str, limit: int, offset: int) -> list[SearchHit]:
        """One page of hits for a query (validated here, before any I/O)."""
        query = validate_query(query)
        validate_page(limit, offset)
        return list((await self._page(query, limit, offset)).hits)

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

    async def _page(self, query: str, limit: int, offset: int) -> Page:
        key = page_key(query, limit, offset)
        page = self._pages.get(key)
        if page is not None:
            return page
        if self._flights.closed:
            raise RuntimeError("this GallerySession is closed")
        refusal = self._quota.refusal(self._now(), subject(query, limit, offset))
        if refusal is not None:
            raise refusal
        flight, _ = self._flights.join(key, asyncio.get_running_loop())
        return await self._flights.wait(flight)

    async def _fetch(self, key: str) -> Page:
        query, limit, offset = parse_page_key(key)
        policy = self._policy

        def read(raw: RawResponse) -> tuple[Page, float | None]:
            page = decode_page(raw.status, raw.headers, raw.body, limit=limit, now=self._now())
            return page, policy.ttl_for(raw.headers)

        where = subject(query, limit, offset)
        with _telemetry.search_page(query, limit, offset) as span:
            try:
                page, ttl = await self._upstream.request(
                    self._url(query, limit, offset),
                    read,
                    image_id=None,
                    subject=where,
                    headers=self._authorization,
                )
            except MeigenError as error:
                if isinstance(error, DailyLimitReached):
                    self._quota.spent(error)
                told = without_secret(error, self._secret)
                if told is error:
                    raise
                raise told from error.__cause__
            span.set_attribute("meigen.search.results", len(page.hits))
        if page.skipped:
            self._skipped(page, where)
        self._pages.set(key, page, ttl)
        return page

    def _skipped(self, page: Page, where: str) -> None:
        for _ in page.skipped:
            self._tally.record(SKIPPED_HIT)
        named = ", ".join(page.skipped[:_SKIPPED_NAMED])
        if self._secret and self._secret in named:  # a server echoing the key as an id
            named = named.replace(self._secret, "[API key]")
        more = len(page.skipped) - _SKIPPED_NAMED
        if more > 0:
            named += f" and {more} more"
        if self._warned:
            logger.debug(
                "%s: skipped results whose id is not a gallery id: %s",
                where,
                named,
                extra={"skipped": len(page.skipped)},
            )
            return
        self._warned = True
        logger.warning(
            "%s: skipped %d results whose id is not a gallery id: %s; later ones in this "
            "session are counted in stats.search_hits_skipped and logged at debug level",
            where,
            len(page.skipped),
            named,
            extra={"skipped": len(page.skipped)},
        )

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._wall_clock(), UTC)

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

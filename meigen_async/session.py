"""`GallerySession`: the options checked, the pieces wired, the public methods documented.

Every image request goes through `_images.ImagePath` (cache, shared tier, single flight, fetch,
counters), the bulk calls through the drivers of `_bulk`, search pages through `_searcher`,
every request through `_upstream` and `_transport`; what each step decides lives in `_core`.
See docs/architecture.md for how they fit together.

Longer than 450 lines on purpose: it is the reference of the public methods, and most of its
lines are their docstrings; the work is in the modules above.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import AsyncGenerator, AsyncIterable, Callable, Iterable
from types import TracebackType
from typing import Literal, overload

import aiohttp

from . import _telemetry
from ._bulk import gather_images, refuse_single_id, stream_images, stream_media
from ._core import HIT, Tally, unreachable_after
from ._export import export_images
from ._images import FETCH_TASK_PREFIX, ImagePath
from ._media import MediaDownloader
from ._media_rules import origin_set
from ._quota import api_key_from
from ._searcher import Searcher
from ._shared_codec import gallery_of
from ._shared_tier import SharedTier
from ._transport import AiohttpTransport, default_user_agent, image_urls, parse_base_url
from ._upstream import Upstream
from .cache import CachePolicy, MemoryCache, _require_seconds
from .errors import MediaError, MediaTransportError, MeigenError
from .export import DEFAULT_SHARD_SIZE, ExportFormat, ExportProgress, ExportSummary
from .limits import LocalRateLimiter, Pacer, RateLimiter
from .media import (
    DEFAULT_MAX_MEDIA_BYTES,
    DEFAULT_MAX_MEDIA_FILES,
    DEFAULT_MAX_MEDIA_PIXELS,
    DEFAULT_MEDIA_HOSTS,
    DEFAULT_MEDIA_TIMEOUT,
    MediaFile,
    MediaResult,
)
from .models import GalleryImage, ImageResult, SearchHit, SessionStats
from .retry import RetryPolicy
from .shared import SharedCache

__all__ = ["DEFAULT_BASE_URL", "FETCH_TASK_PREFIX", "GallerySession"]

DEFAULT_BASE_URL = "https://www.meigen.ai"
"""The real service."""


class GallerySession:
    """An async client for `GET /api/images/:id` with a TTL cache and request coalescing.

    Use it as an async context manager, or call `close()` when done. One session is meant to
    be shared by every task of a program: its cache, its coalescing and its `concurrency`
    bound all work across calls.

    Args:
        base_url: Where the service lives, an absolute http(s) URL (`ValueError` otherwise);
            only `{base_url}/api/images/{id}` is requested.
        concurrency: Most upstream requests in flight at once, across all calls.
        timeout: Seconds allowed for one request, body included.
        cache_size: Most images kept (and, separately, most 404s remembered); 0 disables
            caching.
        ttl: Seconds to keep every image, overriding the server's `Cache-Control`.
        default_ttl: Seconds to keep an image when the server gives no lifetime.
        max_ttl: The longest the server's `Cache-Control` may make us keep an image.
        negative_ttl: Seconds a 404 is remembered; 0 disables.
        max_body_bytes: A larger response body is refused as `InvalidResponse`.
        session: An `aiohttp.ClientSession` to use; it is never closed by this object.
        user_agent: The `User-Agent` header; a `meigen-async/<version>` one by default.
        retry: How failed requests are retried; `RetryPolicy(max_retries=0)` disables.
        rate_limit: Most upstream requests per second for the whole session (None: no
            limit; a number: a `LocalRateLimiter`, with a cool-down after a 429), or a
            `RateLimiter` (`acquire` and `cool_down`), such as
            `meigen_async.redis_cache.RedisRateLimiter`, to share one budget among
            processes; an object with `acquire` alone paces without cool-downs.
        stale_if_error: Seconds past expiry an image may still be served when the upstream
            fails with a retryable error after every retry.
        stale_while_revalidate: Seconds past expiry an image is still served at once, while
            one background request refreshes it (conditional when it can be). The server's
            own `stale-while-revalidate=N` directive counts too, capped at this value when it
            is set, or at `max_ttl`.
        cache: None for an in-process `MemoryCache(cache_size, stale_window=stale_if_error)`;
            a `MemoryCache` to use as the in-process cache as it is (its own size and stale
            window apply); or a shared cache (a `SharedCache`, such as
            `meigen_async.redis_cache.RedisCache`), put behind an in-process cache built as
            for None. A cache passed in is never closed by this object.
        search_ttl: Seconds to keep a search page when the server gives no lifetime (the
            server's `Cache-Control` otherwise, capped at `max_ttl`); 0 keeps none. Pages
            are kept in process only, apart from the images.


        media_hosts: The only origins `download_media` and `iter_media` request, redirects
            included: `host` (http and https on their default ports, 80 and 443),
            `host:port` (that port), or `https://host[:port]` (that scheme only). Names are
            exact (a subdomain is another host); `ValueError` for an entry of another form.
        max_media_bytes: A larger media file is refused as `MediaTooLarge`.
        media_concurrency: Most media requests in flight at once to one host.
        media_timeout: Seconds one media request may take, from sending it to its last
            byte (default 300); past it, the request fails as `MediaTransportError` and is
            retried as a timeout is. `timeout` still bounds each wait for more of the body.
        max_media_files: The most media files downloaded for one image (default 16); the
            URLs past it are refused as `MediaTooManyFiles`, with no request.
        max_media_pixels: A media file whose header claims more pixels is refused as
            `MediaDecompressionBomb` (default 178,956,970, Pillow's bomb limit).
        api_key: A MeiGen API key (`meigen_sk_...`), sent as `Authorization: Bearer <key>`
            on search requests only, so that the account's daily search quota applies rather
            than the per-address limit; never on image requests, nor to a media host, and
            never shown in a log, a repr, an error message or `stats`. None (the default)
            reads `$MEIGEN_API_KEY`; `""` sends none. A key holding whitespace or control
            characters is a `ValueError`, which does not quote it.
        telemetry_name: The `meigen.session` attribute of this session's OpenTelemetry
            metrics (see "Running in a service" in the docs), to tell sessions apart;
            `"default"` if not given. Without the `otel` extra, nothing is reported.

    """

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        concurrency: int = 16,
        timeout: float = 10.0,
        cache_size: int = 4096,
        ttl: float | None = None,
        default_ttl: float = 300.0,
        max_ttl: float = 3600.0,
        negative_ttl: float = 30.0,
        max_body_bytes: int = 2_097_152,
        session: aiohttp.ClientSession | None = None,
        user_agent: str | None = None,
        retry: RetryPolicy | None = None,
        rate_limit: float | RateLimiter | Pacer | None = None,
        stale_if_error: float = 0.0,
        cache: MemoryCache | SharedCache | None = None,
        search_ttl: float = 60.0,
        stale_while_revalidate: float = 0.0,
        media_hosts: Iterable[str] = DEFAULT_MEDIA_HOSTS,
        max_media_bytes: int = DEFAULT_MAX_MEDIA_BYTES,
        media_concurrency: int = 8,
        media_timeout: float = DEFAULT_MEDIA_TIMEOUT,
        max_media_files: int = DEFAULT_MAX_MEDIA_FILES,
        max_media_pixels: int = DEFAULT_MAX_MEDIA_PIXELS,
        api_key: str | None = None,
        telemetry_name: str = "default",
    ):
        _require(concurrency >= 1, "concurrency must be at least 1")
        _require_duration("timeout", timeout)
        _require(cache_size >= 0, "cache_size must not be negative")
        _require(max_body_bytes > 0, "max_body_bytes must be positive")
        _require(
            not isinstance(rate_limit, (int, float))
            or (rate_limit > 0 and math.isfinite(rate_limit)),
            "rate_limit must be a finite number of requests a second, more than 0",
        )
        # The other lifetimes are checked by CachePolicy, under the same names.
        _require_seconds("stale_if_error", stale_if_error)
        _require_seconds("search_ttl", search_ttl)
        _require(max_media_bytes > 0, "max_media_bytes must be positive")
        _require(media_concurrency >= 1, "media_concurrency must be at least 1")
        _require_duration("media_timeout", media_timeout)
        _require(max_media_files >= 1, "max_media_files must be at least 1")
        _require(max_media_pixels >= 1, "max_media_pixels must be at least 1")
        api_key = api_key_from(api_key, os.environ)
        self.base_url: str = base_url.rstrip("/")
        """Where the service lives, without a trailing slash."""
        image_url = image_urls(self.base_url)
        self.concurrency: int = concurrency
        """Most upstream requests in flight at once."""
        self.policy: CachePolicy = CachePolicy(
            ttl=ttl,
            default_ttl=default_ttl,
            max_ttl=max_ttl,
            negative_ttl=negative_ttl,
            stale_while_revalidate=stale_while_revalidate,
        )
        """How long responses are kept."""
        self.retry: RetryPolicy = retry if retry is not None else RetryPolicy()
        """How failed requests are retried."""
        shared: SharedTier | None = None
        if isinstance(cache, MemoryCache):
            memory = cache
        else:
            memory = MemoryCache(cache_size, stale_window=stale_if_error)
            if cache is not None:
                # A lease lasts one request's timeout: longer than a live holder's attempt.
                shared = SharedTier(
                    cache,
                    stale_window=memory.stale_window,
                    lease_time=timeout,
                    gallery=gallery_of(parse_base_url(self.base_url)),
                    policy=self.policy,
                )
        self._tally = Tally()
        _telemetry.watch(self._tally, telemetry_name)
        self._transport = AiohttpTransport(
            timeout=timeout,
            max_body_bytes=max_body_bytes,
            headers={
                "User-Agent": user_agent or default_user_agent(),
                "Accept": "application/json",
            },
            session=session,
            connections=concurrency,
        )
        pacer = LocalRateLimiter(rate_limit) if isinstance(rate_limit, (int, float)) else rate_limit
        self._upstream = upstream = Upstream(
            self._transport.send,
            concurrency=concurrency,
            retry=self.retry,
            tally=self._tally,
            pacer=pacer,
            stream=self._transport.stream,
            host_concurrency=media_concurrency,
        )
        self._images = ImagePath(
            cache=memory,
            shared=shared,
            upstream=upstream,
            policy=self.policy,
            retry=self.retry,
            image_url=image_url,
            tally=self._tally,
        )
        # The path's cache, for the hit inlined in get_image: reached through the path, a hit
        # took 100 instructions more (6,636 against 6,538, under callgrind).
        self._cache = memory
        self._searcher = Searcher(
            parse_base_url(self.base_url),
            upstream=upstream,
            policy=CachePolicy(default_ttl=search_ttl, max_ttl=max_ttl, negative_ttl=0),
            cache_pages=cache_size > 0 and search_ttl > 0,
            tally=self._tally,
            api_key=api_key,
        )
        self.media_concurrency: int = media_concurrency
        """Most media requests in flight at once to one host."""
        self._media = MediaDownloader(
            upstream=upstream,
            origins=origin_set(media_hosts),
            max_bytes=max_media_bytes,
            media_timeout=media_timeout,
            max_files=max_media_files,
            max_pixels=max_media_pixels,
        )
        self._closed = False

    # -- Lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> GallerySession:
        """Open the HTTP session; the cache starts empty."""
        self._ensure_open()
        self._transport.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the session."""
        await self.close()

    async def close(self) -> None:
        """Cancel fetches in flight, wait for every task started, close the HTTP session.

        Background refreshes are fetches too: cancelled and waited for, none outlives this.
        Media downloads are cancelled and waited for as well, before the HTTP session they
        read from is closed; none is retried. Idempotent. A caller still waiting on a
        cancelled fetch gets `TransportError`, on a download `MediaTransportError`, and
        `iter_media` ends. With a shared cache, the deletions and lease releases still
        running are waited for; the cache itself is left open, for whoever made it to close.
        """
        if self._closed:
            return
        self._closed = True
        self._upstream.close()
        await self._media.close()
        await self._images.close()
        await self._searcher.close()
        await self._transport.close()

    @property
    def closed(self) -> bool:
        """Whether `close()` has been called."""
        return self._closed

    def _ensure_open(self) -> None:
        if self._closed:
            raise RuntimeError("this GallerySession is closed")

    # -- Single images -------------------------------------------------------------------------

    async def get_image(self, image_id: str) -> GalleryImage:
        """The image with this id, from the cache or the service.

        Concurrent calls for one id share one upstream request. An image past its freshness
        but within its stale-while-revalidate window is returned at once, and refreshed by
        one background request shared by every caller.

        Raises:
            InvalidImageId: before any I/O, when the id is not a gallery id.
            ImageNotFound: the gallery has no such image (remembered `negative_ttl` seconds).
            MeigenError: any other failure, as one of its subclasses.

        """
        # A fresh hit answered here, inlined (a warm session answers most calls so, and a call
        # to the path would cost a frame), with the path's own cache and tally bound once;
        # everything else is the image path's.
        image = self._cache.get(image_id) if type(image_id) is str else None
        if image is not None:
            self._tally.record(HIT)
            return image
        return await self._images.get(image_id)

    def peek(self, image_id: str) -> GalleryImage | None:
        """The fresh image the in-process cache holds for `image_id`, or None: no I/O at all.

        For a caller that must answer now (a bot inside Discord's 3-second window): nothing
        is fetched, refreshed or asked of a shared cache, and only the hit or miss is counted.

        Raises:
            InvalidImageId: the id is not a gallery id.

        """
        return self._images.peek(image_id)

    # -- Many images ---------------------------------------------------------------------------

    @overload
    async def get_images(
        self, ids: Iterable[str], *, return_exceptions: Literal[False] = False
    ) -> list[GalleryImage]: ...

    @overload
    async def get_images(
        self, ids: Iterable[str], *, return_exceptions: Literal[True]
    ) -> list[GalleryImage | MeigenError]: ...

    async def get_images(
        self, ids: Iterable[str], *, return_exceptions: bool = False
    ) -> list[GalleryImage] | list[GalleryImage | MeigenError]:
        """The images for `ids`, in input order, each distinct id fetched once.

        By default the first error to happen is raised and the fetches still running are
        cancelled (what finished stays cached). With `return_exceptions=True` every id gets
        its image or its `MeigenError` in the list.

        Raises:
            TypeError: `ids` is a single `str` or `bytes` rather than an iterable of ids.

        """
        refuse_single_id(ids)
        self._ensure_open()
        return await gather_images(self._images, ids, return_exceptions=return_exceptions)

    def iter_images(
        self,
        ids: Iterable[str] | AsyncIterable[str],
        *,
        stop_after_transport_failures: int | None = None,
    ) -> AsyncGenerator[ImageResult, None]:
        """Yield an `ImageResult` per id, as each completes.

        `ids` is consumed lazily and at most `concurrency` fetches are kept going, so a
        generator of a million ids runs in flat memory. Errors are reported in the results,
        never raised. Leaving the loop early cancels the fetches still running; wrap the
        iterator in `contextlib.aclosing` to make that happen at once.

        With `stop_after_transport_failures=N`, a run of N consecutive ids whose fetch failed
        with a `TransportError` (refused, DNS, every attempt timed out; no answer of the
        upstream in between) stops the iteration: the fetches running are cancelled and
        yielded with an `UpstreamUnreachable` error, and the iterator ends. When none was
        running, the next id (if any) is read and yielded so, so that a stop always shows as
        an `UpstreamUnreachable`. The ids not read are left in `ids`.

        Raises:
            TypeError: `ids` is a single `str` or `bytes` rather than an iterable of ids.
            ValueError: `stop_after_transport_failures` is less than 1.

        """
        refuse_single_id(ids)
        if stop_after_transport_failures is not None:
            _require(
                stop_after_transport_failures >= 1,
                "stop_after_transport_failures must be at least 1",
            )
        self._ensure_open()
        return stream_images(
            self._images,
            ids,
            concurrency=self.concurrency,
            stop_after_transport_failures=stop_after_transport_failures,
        )

    # -- Search --------------------------------------------------------------------------------

    async def search(self, query: str, limit: int = 20, offset: int = 0) -> list[SearchHit]:
        """One page of the gallery's search for `query`: up to `limit` hits from `offset`.

        `GET /api/search`; see docs/search.md. The empty query (or one of spaces) lists recent
        posts. Pages share this session's concurrency bound, rate limit and retries; each is
        kept `search_ttl` seconds (or as the server's `Cache-Control` says), and identical
        pages asked at once share one request. A server may send fewer hits than `limit`
        (its own page size) on a page that is not the last.

        Raises:
            InvalidQuery: before any I/O, for a query longer than 200 characters once
                stripped, or a `limit` outside 1 to 20 or `offset` below 0 (a `ValueError`).
            DailyLimitReached: the API key's daily search quota is spent (never retried; the
                session sends no search before its `resets_at`).
            MeigenError: the search failed, as one of its subclasses (`RateLimited` when the
                per-address limit on searches was hit and no retry was left).

        """
        self._ensure_open()
        return await self._searcher.search(query, limit, offset)

    def iter_search(
        self, query: str, *, max_results: int | None = 100, page_size: int = 20
    ) -> AsyncGenerator[SearchHit, None]:
        """Yield the hits for `query` (`""`: recent posts), page after page by offset, each once.

        One page is in flight at a time; each offset moves by the results the last page held.
        It stops at a page shorter than `page_size` and than the longest page seen so far
        (so a server's own page size does not end it), at an empty page or one that adds no
        id not yet yielded, or after `max_results` hits (None: no bound). Pages are fetched
        and kept as by `search`.

        Raises:
            InvalidQuery: at the call, before any I/O, for a bad query, `page_size` (1 to
                20) or `max_results` (>= 1 or None).

        """
        self._ensure_open()
        return self._searcher.iter_search(query, max_results=max_results, page_size=page_size)

    # -- Media files ---------------------------------------------------------------------------

    async def download_media(
        self, image: GalleryImage, out: str | os.PathLike[str]
    ) -> list[MediaFile]:
        """Download every media URL of `image` into `out/{id}/{index}{ext}`; see docs/media.md.

        A file already there whose record (an extended attribute on the file, or the image's
        `manifest.json` where there are none) says it came from the same URL, with the size
        and SHA-256 it still has, is not requested again.

        Raises:
            MediaError: a file could not be downloaded (the others were); its subclass says why:
                `MediaWriteError` when `out/{id}` is a symbolic link, `MediaTransportError`
                when the session was closed meanwhile.
            InvalidImageId: `image.id` is not a gallery id.

        """
        self._ensure_open()
        files, error = await self._media.download(image, out)
        if error is not None:
            raise error
        return files

    def iter_media(
        self,
        images: Iterable[str | GalleryImage] | AsyncIterable[str | GalleryImage],
        out: str | os.PathLike[str],
    ) -> AsyncGenerator[MediaResult, None]:
        """Yield a `MediaResult` per id or image, as each completes, downloading its media.

        Ids are fetched first (through the cache). At most twice `media_concurrency` images
        are worked on at once, and `images` is read only that far ahead. Errors are reported
        in the results, never raised. Closing the session ends it: the images in flight are
        given with a `MediaTransportError`, and no more of `images` is read.

        Raises:
            TypeError: `images` is a single `str` or `bytes`.

        """
        refuse_single_id(images)
        self._ensure_open()
        return stream_media(
            images,
            get_image=self._images.get,
            download=functools.partial(self._media.download_image, root=out),
            tasks=self._media.tasks,
            limit=2 * self.media_concurrency,
        )

    async def export(
        self,
        images: Iterable[str | GalleryImage] | AsyncIterable[str | GalleryImage],
        out: str | os.PathLike[str],
        *,
        format: ExportFormat,
        shard_size: int = DEFAULT_SHARD_SIZE,
        resume: bool = False,
        media: str | os.PathLike[str] | None = None,
        ignore_opt_out: bool = False,
        progress: Callable[[ExportProgress], None] | None = None,
        command: str | None = None,
        source: str = "the posts given",
    ) -> ExportSummary:
        """Export the pictures of `images` (ids or images) with their prompts as a dataset.

        `format` is `"imagefolder"`, `"webdataset"` or `"parquet"`, laid out in `out` as
        docs/datasets.md says, with a status table and stats per shard and a dataset card
        (`README.md`). Pictures come through `download_media`'s own path (hosts, size, type
        and pixel checks, retries, the rate limit), into `media`; pictures already there with
        their records are not downloaded again. Without `media`, each picture goes from its
        download to its shard in memory (at most 128 MiB of pictures held at once; past
        that, staged in `out/.media`, emptied as shards are done). A picture whose host
        sends `X-Robots-Tag: noai` or `noimageai` is not written (`ignore_opt_out=True`
        writes it, and the card says so).

        `out` must be empty or new, unless `resume=True`: then the shards done are kept and
        the input read past them (give the same input), and the rest is made again. Shards
        appear whole, by rename, so a kill at any moment leaves only whole shards. `images`
        is read lazily, and memory holds at most a few shards' rows, plus the set of ids
        seen (each id is exported once).

        Raises:
            ValueError: before any I/O, for an unknown `format` or a `shard_size` outside 1
                to 10,000.
            ExportError: `out` is not empty (without `resume`), holds another export, or
                cannot be written; or the input differs from the one a resumed export had.
            UpstreamUnreachable: a run of posts could not reach the gallery or their
                pictures' host (2 x `concurrency`, at least 20): the export stopped, keeping
                the shards done.
            MeigenError: reading `images` failed (a search, say), as one of its subclasses.
            RuntimeError: the session was closed, before or while it ran (its downloads are
                ended by `close()`; the shards done are kept, no row says a picture failed).

        """
        self._ensure_open()
        return await export_images(
            images,
            out,
            get_image=self._images.get,
            download=self._export_download,
            fmt=format,
            shard_size=shard_size,
            resume=resume,
            media=media,
            ignore_opt_out=ignore_opt_out,
            window=4 * self.media_concurrency,
            stop_after=unreachable_after(self.concurrency),
            progress=progress,
            command=command or f"GallerySession.export(format={format!r})",
            gallery=self.base_url,
            source=source,
        )

    async def _export_download(
        self, image: GalleryImage, root: str | os.PathLike[str]
    ) -> tuple[list[MediaFile], MediaError | None]:
        """`download_media`'s owned download, so that `close()` ends an export's downloads too.

        A download ended by `close()` is no failure of its picture: the export stops (as any
        call on a closed session does), rather than writing a row that says it failed.
        """
        try:
            return await self._media.download(image, root)
        except MediaTransportError:
            self._ensure_open()
            raise

    # -- Cache control and counters ------------------------------------------------------------

    def invalidate(self, image_id: str) -> None:
        """Forget what is cached for `image_id` (an image or a remembered 404).

        With a shared cache, the in-process entry goes at once and the shared one in a task
        that this session's next miss, and `close()`, wait for.
        """
        self._images.invalidate(image_id)

    def clear_cache(self) -> None:
        """Forget every cached image, remembered 404 and search page.

        With a shared cache, it is cleared too, for every process using it: in a task, as for
        `invalidate()`.
        """
        self._images.clear()
        self._searcher.clear()

    @property
    def stats(self) -> SessionStats:
        """A snapshot of the counters since the session was made."""
        return self._tally.snapshot()


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _require_duration(name: str, value: float) -> None:
    # A timeout must end: an infinite one reached aiohttp (and the shared tier's lease time)
    # as an OverflowError on the first request.
    _require_seconds(name, value)
    _require(value > 0, f"{name} must be more than 0 seconds")

"""What a flight's task runs for one id: the shared tier, then the upstream, then the caches.

`Fetcher` is the I/O shell around `_core`'s decisions: it asks the shared tier (when there is
one) and keeps what it found as `from_shared` says, sends through `Upstream` (a conditional
request when the stored image has validators, and one plain request more when its 304 was for
another representation), stores what `read_response` says to store, and ends a failed fetch as
`after_giving_up` says. It is the only writer of the in-process cache (but for a user's
`invalidate` and `clear_cache`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any

from yarl import URL

from . import _telemetry
from ._core import (
    SHARED_HIT,
    DontStore,
    Raise,
    Refetch,
    Refresh,
    Store,
    Tally,
    after_giving_up,
    from_shared,
    read_response,
)
from ._protocol import Validators, conditional_headers
from ._shared_tier import SharedTier
from ._transport import RawResponse
from ._upstream import Upstream
from .cache import CachePolicy, MemoryCache
from .errors import MeigenError
from .models import GalleryImage

__all__ = ["Fetcher"]


class Fetcher:
    """Fetches one id and keeps what it may keep.

    Args:
        cache: The in-process cache.
        shared: The shared tier behind it, if any.
        upstream: Where requests go.
        policy: How long responses are kept.
        image_url: The URL of a valid id.
        tally: Where the outcomes are counted.

    """

    def __init__(
        self,
        *,
        cache: MemoryCache,
        shared: SharedTier | None,
        upstream: Upstream,
        policy: CachePolicy,
        image_url: Callable[[str], URL],
        tally: Tally,
    ):
        self._cache = cache
        self._shared = shared
        self._upstream = upstream
        self._policy = policy
        self._image_url = image_url
        self._tally = tally
        # Without a shared tier the task runs the upstream loop itself: one frame less for
        # every resumption of every request.
        run = self._fetch_upstream if shared is None else self._fetch_shared
        self.fetch: Callable[[str], Coroutine[Any, Any, GalleryImage]] = _telemetry.traced_fetch(
            run
        )
        """Fetch one id that missed the cache."""
        self.refresh: Callable[[str], Coroutine[Any, Any, GalleryImage]] = _telemetry.traced_fetch(
            functools.partial(run, refresh=True), refresh=True
        )
        """Fetch one id as a background refresh (stale-while-revalidate): a failure ends in its
        error, never in the stale image (stale-if-error), which its caller already has."""

    async def _fetch_shared(self, image_id: str, refresh: bool = False) -> GalleryImage:
        """Ask the shared tier first; fetch upstream under its lease when it has nothing fresh."""
        shared = self._shared
        assert shared is not None  # chosen only when there is a shared tier
        with _telemetry.shared_lookup(image_id, type(shared.shared).__name__) as span:
            claim = await shared.claim(image_id)
            span.set_attribute("meigen.shared_cache.found", claim.found is not None)
        found = claim.found
        if found is not None:
            kept = from_shared(
                found.entry,
                found.left,
                image_id=image_id,
                policy=self._policy,
                stale_window=self._cache.stale_window,
                stored=self._cache.entry(image_id) is not None,
            )
            if isinstance(kept, Raise):
                self._cache.set_missing(image_id, kept.remember_missing)
                self._tally.record(SHARED_HIT)
                _telemetry.answered("shared_cache")
                raise kept.error
            if kept is not None:
                assert kept.ttl is not None  # from_shared always gives one
                self._keep(image_id, kept, kept.ttl)
                if kept.ttl > 0:
                    self._tally.record(SHARED_HIT)
                    _telemetry.answered("shared_cache")
                    return kept.image
        try:
            return await self._fetch_upstream(image_id, refresh)
        finally:
            # After the value is stored, so that processes waiting on the lease find it there.
            if claim.token is not None:
                shared.release_later(image_id, claim.token)

    async def _fetch_upstream(self, image_id: str, refresh: bool = False) -> GalleryImage:
        try:
            # An image kept past its freshness with validators is asked after conditionally.
            outcome = await self._request(image_id, self._cache.validators(image_id))
            if isinstance(outcome, Refetch):
                # A 304 for another representation renews nothing: ask once more, plainly.
                outcome = await self._request(image_id, None)
                assert not isinstance(outcome, Refetch)  # only a conditional request gets one
        except MeigenError as error:
            return await self._give_up(image_id, error, refresh)
        if isinstance(outcome, Store):
            if isinstance(outcome, Refresh):
                self._tally.record(outcome)
                _telemetry.answered("revalidated")
            if outcome.ttl is not None:
                self._keep(image_id, outcome, outcome.ttl)
            else:
                self._cache.invalidate(image_id)
            if self._shared is not None:
                await self._shared.store(
                    image_id, outcome.image, outcome.shared_ttl, outcome.validators
                )
        else:
            self._cache.invalidate(image_id)
            if self._shared is not None:
                await self._shared.store(image_id, outcome.image, None)
        return outcome.image

    def _keep(self, image_id: str, store: Store, ttl: float) -> None:
        """Write `store`'s image in process, fresh `ttl` seconds, with its validators and window."""
        self._cache.set(
            image_id,
            store.image,
            ttl,
            validators=store.validators,
            revalidate_window=store.revalidate_window,
        )

    async def _request(
        self, image_id: str, stored: tuple[GalleryImage, Validators] | None
    ) -> Store | DontStore | Refetch:
        """What the upstream answers for `image_id`, asked conditionally when `stored` is given."""
        policy = self._policy
        shared = self._shared is not None

        def read(raw: RawResponse) -> Store | DontStore | Refetch:
            return read_response(
                raw.status,
                raw.headers,
                raw.body,
                image_id=image_id,
                policy=policy,
                shared=shared,
                stored=stored,
            )

        return await self._upstream.request(
            self._image_url(image_id),
            read,
            image_id=image_id,
            headers=None if stored is None else conditional_headers(stored[1]),
        )

    async def _give_up(self, image_id: str, error: MeigenError, refresh: bool) -> GalleryImage:
        stale = None if refresh else self._cache.get_stale(image_id)
        ending = after_giving_up(error, stale=stale, negative_ttl=self._policy.negative_ttl)
        self._tally.record(ending)
        if not isinstance(ending, Raise):
            _telemetry.answered("stale")
            return ending.image
        if ending.remember_missing > 0:
            self._cache.set_missing(image_id, ending.remember_missing)
            if self._shared is not None:
                await self._shared.store_missing(image_id, ending.remember_missing)
        raise ending.error

"""What a fetch does next, decided with plain values: no asyncio, no aiohttp.

The image path (`_images`, `_fetch`) does the I/O and asks these functions at each step: what
the cache holds for an id (`look_up`, `freshness`), what an entry of the shared tier means
(`from_shared`), what a response means (`read_response`, a 304 included), whether a failed
attempt is tried again (`after_failure`), what a fetch that gave up ends in
(`after_giving_up`), and when a background refresh that failed may run again
(`after_failed_refresh`, `may_refresh`). `Tally` turns those outcomes into the counters of
`SessionStats`: the one place where a counter moves.

Longer than 450 lines on purpose: these are the steps of one fetch, each a few lines, whose
outcome types (`Store`, `Raise`, `ServeStale`, ...) are shared by the steps and by `Tally`;
split apart, each piece would import the others' types, and the fetch would read in five files.
"""

from __future__ import annotations

import copy
import enum
from collections.abc import Mapping

import attrs

from ._protocol import (
    MAX_COOL_DOWN,
    Validators,
    decode_response,
    header,
    not_found_message,
    validators_from,
)
from .cache import CachePolicy, MemoryCache
from .errors import (
    ImageNotFound,
    InvalidResponse,
    MeigenError,
    RateLimited,
    ServerError,
    TransportError,
)
from .models import GalleryImage, SessionStats
from .retry import RetryPolicy, is_retryable
from .shared import SharedEntry, SharedMissing

__all__ = [
    "COALESCED",
    "HIT",
    "KNOWN_MISSING",
    "MEDIA_RETRIED",
    "MEDIA_SENT",
    "MISS",
    "REFRESH",
    "REFRESHED",
    "SENT",
    "SHARED_HIT",
    "SKIPPED_HIT",
    "STALE",
    "DontStore",
    "Lookup",
    "Raise",
    "Refetch",
    "Refresh",
    "RefreshFailed",
    "Retry",
    "ServeStale",
    "Store",
    "Tally",
    "after_failed_refresh",
    "after_failure",
    "after_giving_up",
    "for_image",
    "freshness",
    "from_shared",
    "look_up",
    "may_refresh",
    "read_response",
    "remembered_404",
    "retold",
    "retries_note",
    "unreachable_after",
]


# -- Looking in the cache ------------------------------------------------------------------------


class Lookup(enum.Enum):
    """What the in-process cache holds for an id."""

    HIT = "hit"
    """A fresh image: the answer."""
    KNOWN_MISSING = "known 404"
    """A remembered 404: `ImageNotFound`, with no request."""
    MISS = "miss"
    """Nothing usable: the shared tier or the upstream has to answer."""
    STALE = "stale"
    """An expired image with validators: a miss, answered by a conditional request."""
    REFRESH = "refresh"
    """Expired, but within its stale-while-revalidate window: served, and refreshed behind."""


# The members as module constants: on Python 3.11 each `Lookup.X` is a lookup through the enum
# class (measured: 0.13 µs), and the hit path compares against them on every call.
HIT = Lookup.HIT
KNOWN_MISSING = Lookup.KNOWN_MISSING
MISS = Lookup.MISS
STALE = Lookup.STALE
REFRESH = Lookup.REFRESH


def freshness(
    now: float, fresh_until: float, revalidate_until: float, has_validators: bool
) -> Lookup:
    """What a stored image is worth at `now`: a hit, one to serve and refresh, or a miss.

    A miss is `STALE` when the image can be revalidated (it has validators), else `MISS`.
    """
    if now < fresh_until:
        return HIT
    if now < revalidate_until:
        return REFRESH
    return STALE if has_validators else MISS


def look_up(cache: MemoryCache, image_id: str) -> tuple[Lookup, GalleryImage | None]:
    """What `cache` holds for `image_id`, and the image when it is one to answer with.

    The image comes with `HIT` and `REFRESH` only: an expired image is never the answer, but
    within its stale-while-revalidate window.
    """
    image = cache.get(image_id)
    if image is not None:
        return HIT, image
    entry = cache.entry(image_id)
    if entry is not None:
        stored, fresh_until, revalidate_until, _, validators = entry
        lookup = freshness(cache.now(), fresh_until, revalidate_until, validators is not None)
        return lookup, (stored if lookup is REFRESH else None)
    return (KNOWN_MISSING if cache.is_missing(image_id) else MISS), None


def remembered_404(image_id: str) -> ImageNotFound:
    """The error a remembered 404 answers with."""
    message = not_found_message(image_id, remembered=True)
    return ImageNotFound(message, image_id=image_id, status=404)


# -- Reading a response --------------------------------------------------------------------------


@attrs.frozen
class Store:
    """A good response: keep `image` `ttl` seconds in process and `shared_ttl` in a shared tier.

    None for either means not there: what that tier held for the id goes. `validators` are
    kept with it, for a later conditional request; `revalidate_window` is how long past
    expiry it may be served while a background refresh runs.
    """

    image: GalleryImage
    ttl: float | None
    shared_ttl: float | None
    validators: Validators | None = None
    revalidate_window: float = 0.0


@attrs.frozen
class Refresh(Store):
    """A 304: the stored `image` is still good; its lifetime is renewed from the 304's headers."""


@attrs.frozen
class DontStore:
    """A good response that may be kept nowhere; what was stored for it goes."""

    image: GalleryImage


@attrs.frozen
class Refetch:
    """A 304 for another representation than the stored one: it renews nothing.

    Ask again with no validators (RFC 9111 section 4.3.4: a cache must not use such a 304 to
    update what it stored).
    """


def _same_representation(sent: Validators, etag: str | None) -> bool:
    """Whether a 304 carrying `etag` is about the response stored with `sent` validators.

    RFC 9111 section 4.3.4: a strong ETag must be the stored one, a weak one must match it
    by weak comparison (RFC 9110 section 8.8.3.2); a 304 with no ETag says nothing against it.
    """
    if etag is None or not (etag := etag.strip()):
        return True
    if not etag.startswith("W/"):
        return etag == sent.etag
    return sent.etag is not None and sent.etag.removeprefix("W/") == etag.removeprefix("W/")


def read_response(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    image_id: str,
    policy: CachePolicy,
    shared: bool = False,
    stored: tuple[GalleryImage, Validators] | None = None,
) -> Store | DontStore | Refetch:
    """What one response means: an image to store, one not to store, or its error, raised.

    With `shared`, the lifetime in a shared tier is read too (RFC 9111 gives a shared cache its
    own: `s-maxage` first, `private` never stored); else it is None. `stored` is the image and
    validators a conditional request was sent with: a 304 then renews that image (`Refresh`),
    its lifetime and validators read from the 304's own headers (RFC 9111 section 4.3.4),
    unless it carries an ETag of another representation: then `Refetch`, and nothing renewed.

    Raises:
        MeigenError: the response stands for an error (its status, a body that is not an
            image, a 304 to a request that was not conditional); the caller's retry decision
            comes next.

    """
    if status == 304:
        if stored is None:
            raise InvalidResponse(
                f"HTTP 304 for image {image_id}, but the request was not conditional",
                image_id=image_id,
                status=304,
            )
        image, kept = stored
        if not _same_representation(kept, header(headers, "ETag")):
            return Refetch()
        validators: Validators | None = kept.updated_by(validators_from(headers))
        new: type[Store] = Refresh
    else:
        image = decode_response(status, headers, body, image_id=image_id)
        validators = validators_from(headers)
        new = Store
    ttl = policy.ttl_for(headers)
    shared_ttl = policy.ttl_for(headers, shared=True) if shared else None
    if ttl is None and shared_ttl is None:
        return DontStore(image)
    window = policy.revalidate_window(headers) if ttl is not None else 0.0
    return new(image, ttl, shared_ttl, validators, window)


def from_shared(
    entry: SharedEntry,
    left: float,
    *,
    image_id: str,
    policy: CachePolicy,
    stale_window: float,
    stored: bool,
) -> Store | Raise | None:
    """What an entry the shared tier found, fresh `left` seconds more, means to the fetch.

    `entry` has passed the shared tier's check. A fresh image is the answer, kept in process
    as one from the upstream would be: `Store` for `left` seconds, with its validators and
    the session's stale-while-revalidate window (`policy.stale_while_revalidate`; a server's
    own directive is not kept in a shared cache). A fresh 404 is the answer too: `Raise`, to be
    remembered `left` seconds. An expired image is no answer (its `Store` has a `ttl` of 0 or
    less: stored already expired) and is kept only when the in-process cache has nothing for
    the id (`stored` False) and it may yet be served within `stale_window` if the upstream
    fails, or revalidated with its validators. None: nothing to keep, and no answer.
    """
    if isinstance(entry, SharedMissing):
        return Raise(remembered_404(image_id), remember_missing=left) if left > 0 else None
    validators = (
        Validators(etag=entry.etag, last_modified=entry.last_modified)
        if entry.etag is not None or entry.last_modified is not None
        else None
    )
    if left <= 0 and (stored or (left + stale_window <= 0 and validators is None)):
        return None
    return Store(entry.image, left, None, validators, policy.stale_while_revalidate)


# -- After a failed attempt ----------------------------------------------------------------------


def for_image(
    error: MeigenError, image_id: str | None, retries: int, *, subject: str | None = None
) -> MeigenError:
    """`error`, from a transport that knows only URLs, told for `image_id` after `retries`.

    `subject` names what the request was for instead of `image {image_id}` (a search page).
    """
    after = retries_note(retries)
    what = subject if subject is not None else f"image {image_id}"
    if isinstance(error, TransportError):
        message = f"request for {what} failed: {error.message}{after}"
    else:
        message = f"{what}: {error.message}{after}"
    told = retold(error, message)
    told.image_id = image_id
    return told


def retold(error: MeigenError, message: str) -> MeigenError:
    """A copy of `error` with another message: what the caller branches on stays.

    `status`, a 429's `retry_after`, a daily limit's `resets_at`: every attribute is copied.
    """
    told = copy.copy(error)
    told.args = (message,)
    told.message = message
    return told


def retries_note(retries: int) -> str:
    """What an error's message ends with after `retries` retries: " (after 2 retries)", or ""."""
    return f" (after {retries} {'retry' if retries == 1 else 'retries'})" if retries else ""


@attrs.frozen
class Retry:
    """Try again after `delay` seconds."""

    delay: float


def after_failure(error: MeigenError, retries_so_far: int, policy: RetryPolicy) -> Retry | None:
    """Whether a failed attempt is tried again, and after how long; None gives up."""
    delay = policy.delay_before_retry(retries_so_far, error)
    return None if delay is None else Retry(delay)


@attrs.frozen
class ServeStale:
    """The upstream failed for good, but an expired image may still answer."""

    image: GalleryImage


@attrs.frozen
class Raise:
    """The fetch fails with `error`; a 404 is remembered `remember_missing` seconds (0: not)."""

    error: MeigenError
    remember_missing: float = 0.0


def after_giving_up(
    error: MeigenError, *, stale: GalleryImage | None, negative_ttl: float
) -> ServeStale | Raise:
    """What a fetch that gave up ends in: `stale` for a retryable failure, else the error.

    A 404 is never masked by stale data: the image is gone, and it is remembered instead.
    """
    if isinstance(error, ImageNotFound):
        return Raise(error, remember_missing=negative_ttl)
    if stale is not None and is_retryable(error):
        return ServeStale(stale)
    return Raise(error)


# -- After a failed background refresh -----------------------------------------------------------


@attrs.frozen
class RefreshFailed:
    """The background refreshes of an id failed `failures` times in a row; none before `until`.

    `until` is on the clock `after_failed_refresh` was given (the in-process cache's).
    """

    failures: int
    until: float
    wait: float
    """Seconds from the last failure to `until`: its `Retry-After`, or the policy's backoff."""


def after_failed_refresh(
    error: BaseException, previous: RefreshFailed | None, *, now: float, policy: RetryPolicy
) -> RefreshFailed:
    """When the next background refresh of an id may start, after one failed with `error` at `now`.

    After the wait its `Retry-After` asked for, else after `policy`'s backoff for the failures
    in a row so far (growing with each); never more than `MAX_COOL_DOWN` seconds, so that a
    huge `Retry-After` cannot stop refreshes for good.
    """
    failures = 1 if previous is None else previous.failures + 1
    retry_after = error.retry_after if isinstance(error, (RateLimited, ServerError)) else None
    # The exponent capped: 2.0**1024 overflows, and a refresh can fail for hours in a row.
    wait = policy.backoff(min(failures - 1, 64)) if retry_after is None else retry_after
    wait = min(wait, MAX_COOL_DOWN)
    return RefreshFailed(failures, now + wait, wait)


def may_refresh(failed: RefreshFailed | None, now: float) -> bool:
    """Whether a background refresh of an id may start at `now`; `failed` None: none failed."""
    return failed is None or now >= failed.until


# -- Counting ------------------------------------------------------------------------------------


class _Event(enum.Enum):
    SENT = "sent"
    COALESCED = "coalesced"
    SHARED_HIT = "shared hit"
    REFRESHED = "refreshed"
    SKIPPED_HIT = "skipped hit"
    MEDIA_SENT = "media sent"
    MEDIA_RETRIED = "media retried"


SENT = _Event.SENT
"""An upstream request went out (each attempt counts)."""
COALESCED = _Event.COALESCED
"""A call joined the fetch already in flight for its id."""
SHARED_HIT = _Event.SHARED_HIT
"""The shared tier answered a miss of the in-process cache (an image or a 404)."""
REFRESHED = _Event.REFRESHED
"""A background refresh (stale-while-revalidate) got its answer."""
SKIPPED_HIT = _Event.SKIPPED_HIT
"""A search result was left out: its id is not a gallery id."""
MEDIA_SENT = _Event.MEDIA_SENT
"""A request to a media host went out (each attempt and each redirect counts)."""
MEDIA_RETRIED = _Event.MEDIA_RETRIED
"""A media download was tried again after a retryable failure."""

Outcome = Lookup | _Event | Retry | ServeStale | Raise | Refresh


class Tally:
    """The counters of a session, moved only by `record`ing the outcomes above."""

    # Weakly referable: the telemetry observes a session's counters while it lives.
    __slots__ = (
        "__weakref__",
        "coalesced",
        "errors",
        "hits",
        "media_bytes",
        "media_requests",
        "media_retries",
        "misses",
        "refreshed",
        "requests",
        "retries",
        "revalidated",
        "shared_hits",
        "skipped_hits",
        "stale_served",
    )

    def __init__(self) -> None:
        self.requests = 0
        self.hits = 0
        self.misses = 0
        self.coalesced = 0
        self.retries = 0
        self.errors = 0
        self.stale_served = 0
        self.revalidated = 0
        self.refreshed = 0
        self.shared_hits = 0
        self.skipped_hits = 0
        self.media_requests = 0
        self.media_retries = 0
        self.media_bytes = 0

    def record(self, outcome: Outcome) -> None:
        """Count one outcome."""
        # Ordered by how often each comes: a warm session mostly records hits.
        if outcome is HIT or outcome is KNOWN_MISSING or outcome is REFRESH:
            # Remembered 404s and stale-while-revalidate answers are answers from the
            # in-process cache too (a refresh is counted when it is done).
            self.hits += 1
        elif outcome is MISS or outcome is STALE:
            self.misses += 1
        elif outcome is SENT:
            self.requests += 1
        elif outcome is COALESCED:
            self.coalesced += 1
        elif isinstance(outcome, Retry):
            self.retries += 1
        elif isinstance(outcome, Refresh):
            self.revalidated += 1
        elif outcome is REFRESHED:
            self.refreshed += 1
        elif outcome is SHARED_HIT:
            # A miss of the in-process cache (counted as one) that the shared tier answered.
            self.shared_hits += 1
        elif outcome is SKIPPED_HIT:
            self.skipped_hits += 1
        elif outcome is MEDIA_SENT:
            self.media_requests += 1
        elif outcome is MEDIA_RETRIED:
            self.media_retries += 1
        elif isinstance(outcome, ServeStale):
            # A fetch that failed, rescued by stale data: an error, and a stale answer.
            self.errors += 1
            self.stale_served += 1
        else:
            self.errors += 1

    def received_media(self, size: int) -> None:
        """Count `size` bytes of a media body read."""
        self.media_bytes += size

    def snapshot(self) -> SessionStats:
        """The counters as they stand."""
        return SessionStats(
            requests=self.requests,
            cache_hits=self.hits,
            cache_misses=self.misses,
            coalesced=self.coalesced,
            retries=self.retries,
            errors=self.errors,
            stale_served=self.stale_served,
            revalidated=self.revalidated,
            refreshed=self.refreshed,
            shared_hits=self.shared_hits,
            search_hits_skipped=self.skipped_hits,
            media_requests=self.media_requests,
            media_retries=self.media_retries,
            media_bytes=self.media_bytes,
        )


def unreachable_after(concurrency: int) -> int:
    """Transport failures in a row after which a long job takes its upstream as unreachable.

    More than two full waves of requests: one network blip fails every request in flight at
    once, and should not end a long job; the ids started after it failing too should.
    """
    return max(20, 2 * concurrency)

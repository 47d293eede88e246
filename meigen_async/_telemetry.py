"""OpenTelemetry traces and metrics, when `opentelemetry-api` is installed (the `otel` extra).

The library uses the global tracer and meter providers, as instrumented libraries do: nothing
to configure here, and a no-op until the application installs an SDK. Without the package,
nothing is imported from it, and every hook below is a shared no-op.

No hook is on the hit path. Spans are for the work that does I/O: the fetch of an id that
missed (`fetch`), each upstream attempt under it (`attempt`), the shared-cache round trip
(`shared_lookup`), a search page (`search_page`), a media file's download (`media`), and a
caller that waited on another's fetch (`coalesced`, linked to that fetch). Counters are
observed from each session's `Tally` at collection time (`watch`), never moved per call.
Attribute and metric names are listed in docs/service.md; an attempt's span carries the
error's type, never its message (a server may echo a request's key in its body).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import Callable, Coroutine, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from yarl import URL

from ._version import __version__

if TYPE_CHECKING:
    from ._core import Tally
    from ._transport import RawResponse
    from .errors import MeigenError
    from .limits import Pacer
    from .media import MediaFile

try:
    from opentelemetry import metrics, trace
    from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode
except ImportError:  # the `otel` extra is not installed: every hook is a no-op
    ENABLED = False
else:
    ENABLED = True

_active = False


def active() -> bool:
    """Whether the application has installed an SDK (a tracer or a meter provider of its own).

    The API alone answers every span and instrument with a no-op, but making them still cost
    about a third more instructions per cold id (measured: 828k against 640k), so the hooks do
    nothing until an SDK is there. Providers are set once per process: once seen, for good.
    """
    global _active
    if _active:
        return True
    if not ENABLED:
        return False
    # The API's own providers (the proxy before one is set, the no-op) live in its modules.
    _active = not (
        type(trace.get_tracer_provider()).__module__.startswith("opentelemetry.trace")
        and type(metrics.get_meter_provider()).__module__.startswith("opentelemetry.metrics")
    )
    return _active


__all__ = [
    "ENABLED",
    "active",
    "answered",
    "attempt",
    "coalesced",
    "media",
    "search_page",
    "shared_lookup",
    "traced_fetch",
    "watch",
]

T = TypeVar("T")
SCOPE = "meigen_async"
"""The instrumentation scope's name, for tracers and meters."""

# Per fetch task, the context of its span: what a coalesced caller links to.
_fetch_spans: weakref.WeakKeyDictionary[asyncio.Task[Any], Any] = weakref.WeakKeyDictionary()
# Each live session's counters and its `meigen.session` name, read at collection time.
_watched: weakref.WeakKeyDictionary[Tally, str] = weakref.WeakKeyDictionary()
_instruments: dict[str, Any] = {}


def _tracer() -> Any:
    return trace.get_tracer(SCOPE, __version__)


def _fail(span: Any, error: BaseException, *, message: bool = True) -> None:
    """Mark `span` failed with `error`'s type (and message, unless it may hold a secret)."""
    kind = type(error).__name__
    span.set_attribute("error.type", kind)
    span.set_status(Status(StatusCode.ERROR, f"{kind}: {error}" if message else kind))


# -- Traces --------------------------------------------------------------------------------------


def traced_fetch(
    run: Callable[..., Coroutine[Any, Any, T]], *, refresh: bool = False
) -> Callable[..., Coroutine[Any, Any, T]]:
    """`run` (a fetch of one id, in its flight's task) in a `meigen.get_image` span.

    Decided once, when the session is made: a wrapper would put one more frame under every
    resumption of every fetch, so a session made before the SDK was installed traces no fetch.
    """
    if not active():
        return run

    async def fetch(image_id: str, *args: Any) -> T:
        from .errors import ImageNotFound

        with _tracer().start_as_current_span(
            "meigen.get_image",
            attributes={
                "meigen.image_id": image_id,
                "meigen.answer": "upstream",
                "meigen.refresh": refresh,
            },
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            task = asyncio.current_task()
            if task is not None:
                _fetch_spans[task] = span.get_span_context()
            try:
                return await run(image_id, *args)
            except ImageNotFound:
                span.set_attribute("meigen.answer", "not_found")
                raise
            except Exception as error:
                span.set_attribute("meigen.answer", "error")
                _fail(span, error)
                raise

    return fetch


def answered(how: str) -> None:
    """Say how the fetch whose span is current was answered: `shared_cache`, `stale`, ..."""
    if active():
        trace.get_current_span().set_attribute("meigen.answer", how)


async def coalesced(image_id: str, task: asyncio.Task[Any], wait: Coroutine[Any, Any, T]) -> T:
    """Await `wait`, another caller's fetch of `image_id`, in a span linked to that fetch."""
    if not active():
        return await wait
    start = time.time_ns()
    try:
        return await wait
    finally:
        # Made when the wait is over: the fetch's span exists by then (its task has run).
        found = _fetch_spans.get(task)
        links = [Link(found)] if isinstance(found, SpanContext) else []
        span = _tracer().start_span(
            "meigen.get_image",
            attributes={"meigen.image_id": image_id, "meigen.answer": "coalesced"},
            links=links,
            start_time=start,
        )
        span.end()


_NOTHING: contextlib.nullcontext[Callable[[Any], Any]] = contextlib.nullcontext(lambda seen: seen)


def attempt(
    url: URL, retries: int, waited: float, error: MeigenError | None
) -> contextlib.AbstractContextManager[Callable[[RawResponse], RawResponse]]:
    """One upstream attempt's span and duration; what it gives is to pass the response through.

    `retries` is the retries before it, `waited` the seconds slept before it, and `error` the
    failure that led to the retry (its `retry_after`, when set, was the wait's reason).
    """
    if not active():
        return _NOTHING
    return _attempt(url, retries, waited, error)


@contextlib.contextmanager
def _attempt(
    url: URL, retries: int, waited: float, error: MeigenError | None
) -> Iterator[Callable[[RawResponse], RawResponse]]:
    attributes: dict[str, Any] = {
        "http.request.method": "GET",
        "server.address": url.host or "",
        "url.path": url.path,
    }
    if url.port is not None:
        attributes["server.port"] = url.port
    if retries:
        attributes["http.request.resend_count"] = retries
        attributes["meigen.retry.wait"] = waited
        attributes["meigen.retry.reason"] = (
            "retry_after" if getattr(error, "retry_after", None) is not None else "backoff"
        )
    status: list[int] = []

    def seen(response: RawResponse) -> RawResponse:
        status.append(response.status)
        span.set_attribute("http.response.status_code", response.status)
        return response

    started = time.perf_counter()
    with _tracer().start_as_current_span(
        "GET",
        kind=SpanKind.CLIENT,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        outcome = "ok"
        try:
            yield seen
        except BaseException as failed:
            outcome = type(failed).__name__
            _fail(span, failed, message=False)
            raise
        finally:
            labels: dict[str, Any] = {"server.address": attributes["server.address"]}
            if status:
                labels["http.response.status_code"] = status[0]
            if outcome != "ok":
                labels["error.type"] = outcome
            _histogram("meigen.upstream.duration", "s", "Upstream request durations").record(
                time.perf_counter() - started, labels
            )


@contextlib.contextmanager
def _span(name: str, attributes: dict[str, Any]) -> Iterator[Any]:
    with _tracer().start_as_current_span(
        name, attributes=attributes, record_exception=False, set_status_on_exception=False
    ) as span:
        try:
            yield span
        except Exception as error:
            _fail(span, error)
            raise


class _Nobody:
    """A span that records nothing, for the hooks' callers when OpenTelemetry is absent."""

    def set_attribute(self, key: str, value: Any) -> None:
        """Record nothing."""


_NO_SPAN = contextlib.nullcontext(_Nobody())


def shared_lookup(image_id: str, backend: str) -> contextlib.AbstractContextManager[Any]:
    """The shared cache's round trip for `image_id`, in a `meigen.shared_cache.claim` span."""
    if not active():
        return _NO_SPAN
    return _span(
        "meigen.shared_cache.claim", {"meigen.image_id": image_id, "meigen.backend": backend}
    )


def search_page(query: str, limit: int, offset: int) -> contextlib.AbstractContextManager[Any]:
    """The fetch of one search page (the errors it records are told without a secret)."""
    if not active():
        return _NO_SPAN
    return _span(
        "meigen.search",
        {
            "meigen.search.query": query,
            "meigen.search.limit": limit,
            "meigen.search.offset": offset,
        },
    )


_NO_MEDIA: contextlib.nullcontext[Callable[[Any], Any]] = contextlib.nullcontext(lambda got: got)


def media(
    url: URL,
) -> contextlib.AbstractContextManager[Callable[[tuple[MediaFile, bool]], tuple[MediaFile, bool]]]:
    """One media file's download (its retries included); what it gives passes the file through."""
    if not active():
        return _NO_MEDIA
    return _media(url)


@contextlib.contextmanager
def _media(url: URL) -> Iterator[Callable[[tuple[MediaFile, bool]], tuple[MediaFile, bool]]]:
    host = url.host or ""
    size: list[int] = []

    def got(done: tuple[MediaFile, bool]) -> tuple[MediaFile, bool]:
        size.append(done[0].bytes)
        span.set_attribute("meigen.media.bytes", done[0].bytes)
        return done

    started = time.perf_counter()
    with _span("meigen.media.download", {"server.address": host, "url.path": url.path}) as span:
        outcome = "error"
        try:
            yield got
            outcome = "downloaded"
        finally:
            span.set_attribute("meigen.media.outcome", outcome)
            labels = {"server.address": host, "meigen.media.outcome": outcome}
            _histogram("meigen.media.duration", "s", "Media download durations").record(
                time.perf_counter() - started, labels
            )
            if size:
                _histogram("meigen.media.size", "By", "Media bytes downloaded").record(
                    size[0], labels
                )


# -- Metrics -------------------------------------------------------------------------------------


async def paced(pacer: Pacer) -> None:
    """`pacer.acquire()`, its wait recorded in `meigen.rate_limit.wait` (cool-downs included)."""
    started = time.perf_counter()
    try:
        await pacer.acquire()
    finally:
        _histogram(
            "meigen.rate_limit.wait", "s", "Time waited for the rate limit or a cool-down"
        ).record(time.perf_counter() - started)


def _histogram(name: str, unit: str, description: str) -> Any:
    instrument = _instruments.get(name)
    if instrument is None:
        meter = metrics.get_meter(SCOPE, __version__)
        instrument = _instruments[name] = meter.create_histogram(
            name, unit=unit, description=description
        )
    return instrument


# SessionStats' field, the counter's name, its unit and description.
_COUNTERS = (
    ("requests", "meigen.upstream.requests", "{request}", "Upstream requests sent"),
    ("hits", "meigen.cache.hits", "{call}", "Calls answered from the in-process cache"),
    ("misses", "meigen.cache.misses", "{call}", "Calls the in-process cache could not answer"),
    ("coalesced", "meigen.coalesced", "{call}", "Calls that joined a fetch in flight"),
    ("retries", "meigen.upstream.retries", "{request}", "Upstream requests sent again"),
    ("errors", "meigen.errors", "{fetch}", "Fetches that ended in an error"),
    ("stale_served", "meigen.cache.stale_served", "{call}", "Expired images served on error"),
    ("revalidated", "meigen.cache.revalidated", "{fetch}", "Images a 304 renewed"),
    ("refreshed", "meigen.cache.refreshed", "{fetch}", "Background refreshes answered"),
    ("shared_hits", "meigen.shared_cache.hits", "{fetch}", "Misses the shared cache answered"),
)


def _observe(field: str) -> Callable[[Any], Iterable[Any]]:
    def observe(options: Any) -> Iterable[Any]:
        for tally, name in list(_watched.items()):
            yield metrics.Observation(getattr(tally, field), {"meigen.session": name})

    return observe


def watch(tally: Tally, name: str) -> None:
    """Report `tally`'s counters, under `meigen.session=name`, while it lives."""
    if not ENABLED:
        return
    if not _instruments.get("counters"):
        meter = metrics.get_meter(SCOPE, __version__)
        for field, metric, unit, description in _COUNTERS:
            meter.create_observable_counter(
                metric, callbacks=[_observe(field)], unit=unit, description=description
            )
        _instruments["counters"] = True
    _watched[tally] = name

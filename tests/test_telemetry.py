"""OpenTelemetry: spans for the work that does I/O, counters read from the session's stats.

The SDK is the real one, with its in-memory exporter and reader (the `otel` fixture).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import pytest
from helpers import FAST, fast
from shared_helpers import MemorySharedCache, MemoryStore

from meigen_async import GalleryImage, GallerySession, ImageNotFound, MeigenError
from meigen_async.testing import Answer, FakeGallery, png_bytes


def _spans(exporter: Any, name: str | None = None) -> list[Any]:
    return [s for s in exporter.get_finished_spans() if name is None or s.name == name]


def _points(reader: Any, metric: str) -> list[Any]:
    data = reader.get_metrics_data()
    if data is None:  # nothing recorded yet in this process
        return []
    return [
        point
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for found in scope.metrics
        if found.name == metric
        for point in found.data.data_points
    ]


def _counter(reader: Any, metric: str, session: str) -> int:
    values = [
        p.value for p in _points(reader, metric) if p.attributes.get("meigen.session") == session
    ]
    assert len(values) == 1, values
    return int(values[0])


async def test_a_miss_is_one_get_image_span_over_its_attempt_and_a_hit_makes_none(
    otel, gallery: FakeGallery
):
    exporter, _ = otel
    image_id = gallery.ids[0]
    async with GallerySession(gallery.url) as session:
        await session.get_image(image_id)
        spans = _spans(exporter)
        await session.get_image(image_id)
        assert _spans(exporter) == spans  # the hit made none
    fetch, attempt = _spans(exporter, "meigen.get_image"), _spans(exporter, "GET")
    assert len(fetch) == len(attempt) == 1
    assert fetch[0].attributes["meigen.image_id"] == image_id
    assert fetch[0].attributes["meigen.answer"] == "upstream"
    assert attempt[0].parent.span_id == fetch[0].context.span_id
    assert attempt[0].attributes["http.response.status_code"] == 200
    assert attempt[0].attributes["server.address"] == "127.0.0.1"
    assert "http.request.resend_count" not in attempt[0].attributes


async def test_coalesced_callers_each_get_a_span_linked_to_the_one_fetch(
    otel, slow_gallery: FakeGallery
):
    exporter, _ = otel
    image_id = slow_gallery.ids[0]
    async with GallerySession(slow_gallery.url) as session:
        await asyncio.gather(*(session.get_image(image_id) for _ in range(3)))
    spans = _spans(exporter, "meigen.get_image")
    (fetch,) = [s for s in spans if s.attributes["meigen.answer"] == "upstream"]
    joined = [s for s in spans if s.attributes["meigen.answer"] == "coalesced"]
    assert len(joined) == 2
    for span in joined:
        assert [link.context.span_id for link in span.links] == [fetch.context.span_id]
    assert len(_spans(exporter, "GET")) == 1


async def test_a_retry_after_a_429_is_a_second_attempt_saying_its_wait_and_why(
    otel, gallery: FakeGallery
):
    exporter, _ = otel
    image_id = gallery.ids[0]
    gallery.script(image_id, Answer.rate_limited(0))
    async with GallerySession(gallery.url, retry=FAST) as session:
        await session.get_image(image_id)
    first, second = sorted(_spans(exporter, "GET"), key=lambda s: s.start_time)
    assert first.attributes["http.response.status_code"] == 429
    assert first.attributes["error.type"] == "RateLimited"
    assert second.attributes["http.request.resend_count"] == 1
    assert second.attributes["meigen.retry.reason"] == "retry_after"
    assert second.attributes["meigen.retry.wait"] >= 0
    assert second.attributes["http.response.status_code"] == 200
    (fetch,) = _spans(exporter, "meigen.get_image")
    assert {first.parent.span_id, second.parent.span_id} == {fetch.context.span_id}


async def test_a_404_is_answered_not_found_with_its_error_type(otel, gallery: FakeGallery):
    exporter, _ = otel
    async with GallerySession(gallery.url) as session:
        with pytest.raises(ImageNotFound):
            await session.get_image("nosuchimage1")
    (fetch,) = _spans(exporter, "meigen.get_image")
    (attempt,) = _spans(exporter, "GET")
    assert fetch.attributes["meigen.answer"] == "not_found"
    assert attempt.attributes["http.response.status_code"] == 404
    assert attempt.attributes["error.type"] == "ImageNotFound"


async def test_a_shared_cache_hit_is_a_claim_span_and_no_attempt(otel, gallery: FakeGallery):
    exporter, _ = otel
    image_id = gallery.ids[0]
    store = MemoryStore()
    async with GallerySession(gallery.url, cache=MemorySharedCache(store)) as first:
        await first.get_image(image_id)
    exporter.clear()
    async with GallerySession(gallery.url, cache=MemorySharedCache(store)) as second:
        await second.get_image(image_id)
    (fetch,) = _spans(exporter, "meigen.get_image")
    (claim,) = _spans(exporter, "meigen.shared_cache.claim")
    assert fetch.attributes["meigen.answer"] == "shared_cache"
    assert claim.parent.span_id == fetch.context.span_id
    assert claim.attributes["meigen.backend"] == "MemorySharedCache"
    assert claim.attributes["meigen.shared_cache.found"] is True
    assert _spans(exporter, "GET") == []


async def test_a_media_download_tells_its_host_bytes_and_outcome(otel, tmp_path):
    exporter, reader = otel
    body = png_bytes(5, 2)
    async with FakeGallery() as gallery:
        url = gallery.add_media("a", body, "image/png")
        image = GalleryImage(id="img1", media_urls=(url,))
        async with GallerySession(gallery.url, media_hosts=[gallery.media_host]) as session:
            await session.download_media(image, tmp_path)
        host = url.split("//")[1].split(":")[0]
        (span,) = _spans(exporter, "meigen.media.download")
        assert span.attributes["server.address"] == host
        assert span.attributes["meigen.media.bytes"] == len(body)
        assert span.attributes["meigen.media.outcome"] == "downloaded"
        sizes = [p for p in _points(reader, "meigen.media.size") if p.count]
        assert sizes
        assert any(p.sum >= len(body) for p in sizes)


async def test_counters_are_the_sessions_stats_under_its_name(otel, gallery: FakeGallery):
    _, reader = otel
    image_id = gallery.ids[0]
    async with GallerySession(gallery.url, telemetry_name="counted") as session:
        await session.get_image(image_id)
        await session.get_image(image_id)
        assert _counter(reader, "meigen.cache.hits", "counted") == 1
        assert _counter(reader, "meigen.cache.misses", "counted") == 1
        assert _counter(reader, "meigen.upstream.requests", "counted") == 1
        await session.get_image(image_id)
        assert _counter(reader, "meigen.cache.hits", "counted") == 2
    durations = _points(reader, "meigen.upstream.duration")
    assert any(p.attributes.get("http.response.status_code") == 200 for p in durations)


@pytest.mark.slow
def test_without_opentelemetry_nothing_of_it_is_imported_and_a_session_still_works():
    program = """
import asyncio, sys

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ImportError(name)

sys.meta_path.insert(0, Refuse())
from meigen_async import GallerySession
from meigen_async.testing import FakeGallery, sample_images

async def main():
    async with FakeGallery(sample_images()) as gallery:
        async with GallerySession(gallery.url) as session:
            await session.get_image(gallery.ids[0])
            await session.get_image(gallery.ids[0])
            assert session.stats.cache_hits == 1, session.stats

asyncio.run(main())
assert not [m for m in sys.modules if m.startswith("opentelemetry")]
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


async def test_time_waited_for_the_rate_limit_is_a_histogram_of_one_value_a_request(
    otel, gallery: FakeGallery
):
    _, reader = otel
    before = sum(p.count for p in _points(reader, "meigen.rate_limit.wait"))
    async with GallerySession(gallery.url, rate_limit=1000) as session:
        await session.get_images(gallery.ids[:3])
        sent = session.stats.requests
    waits = _points(reader, "meigen.rate_limit.wait")
    assert sum(p.count for p in waits) - before == sent == 3


async def test_a_search_page_is_a_span_over_its_attempt_and_its_error_never_holds_the_key(
    otel, images: list[dict[str, Any]]
):
    exporter, _ = otel
    key = "meigen_sk_telemetry_secret"
    async with (
        FakeGallery(images, api_keys=[key]) as fake,
        GallerySession(fake.url, api_key=key, retry=fast(max_retries=0)) as session,
    ):
        await session.search("city")
        # A server that echoes the key in its error: the span must not keep it.
        fake.script_search(Answer.error(400, f"bad request for Bearer {key}"))
        with pytest.raises(MeigenError):
            await session.search("neon")
    found, refused = sorted(_spans(exporter, "meigen.search"), key=lambda s: s.start_time)
    assert found.attributes["meigen.search.query"] == "city"
    (attempt,) = [s for s in _spans(exporter, "GET") if s.parent.span_id == found.context.span_id]
    assert attempt.attributes["url.path"] == "/api/search"
    assert attempt.attributes["http.response.status_code"] == 200
    assert refused.attributes["error.type"] == "ApiError"
    told = [refused.status.description or "", *(str(e.attributes) for e in refused.events)]
    assert "bad request" in " ".join(told)
    assert all(key not in text for text in told)


@pytest.mark.slow
def test_with_the_api_alone_a_session_wraps_and_traces_nothing():
    # No SDK installed (a fresh process): no-op spans on every miss cost a third more
    # instructions per cold id, so nothing is made at all.
    program = """
import asyncio
from meigen_async import GallerySession, _telemetry
from meigen_async.testing import FakeGallery, sample_images

async def main():
    assert _telemetry.ENABLED and not _telemetry.active()
    async with FakeGallery(sample_images()[:2]) as fake, GallerySession(fake.url) as session:
        fetcher = session._images._fetcher
        assert fetcher.fetch == fetcher._fetch_upstream, fetcher.fetch
        assert not session._upstream._traced
        await session.get_images(fake.ids)

asyncio.run(main())
"""
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

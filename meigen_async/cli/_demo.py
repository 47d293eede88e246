"""The `demo` command: the bundled sample gallery fetched the way a busy bot would."""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from collections import Counter

import attrs

from .._text import terminal_safe
from ..cache import MemoryCache
from ..errors import MeigenError
from ..models import (
    GalleryImage,
)
from ..prompt import PromptKind
from ..session import GallerySession
from ..testing import FakeGallery
from ._output import (
    _EXIT_OK,
    _console,
)


@attrs.frozen
class DemoReport:
    """What the demo's bulk fetch did."""

    requested: int
    """Ids in one pass, duplicates included."""
    calls: int = attrs.field(default=0, kw_only=True)
    """Every `get_image` call of the whole scenario: both passes and the burst."""
    distinct: int = attrs.field(default=0, kw_only=True)
    """Distinct ids asked for, the missing one included."""
    missing: str = attrs.field(default="", kw_only=True)
    """The id asked for on purpose that the gallery does not have."""
    fetched: int
    """Images returned over the second pass, duplicates included."""
    errors: dict[str, str]
    """The ids that failed, with their error messages."""
    requests: int
    """Upstream requests the gallery received."""
    cache_hits: int
    """Calls answered from the cache."""
    coalesced: int
    """Calls that joined a request already in flight."""
    seconds: float
    """Wall time of the whole scenario."""
    plain_prompts: int
    """Distinct images whose prompt is plain text."""
    json_prompts: int
    """Distinct images whose prompt is JSON."""
    repaired_prompts: int
    """Distinct images whose JSON prompt needed repairing to parse."""
    revalidated: int = 0
    """Expired images a 304 renewed."""
    refreshed: int = 0
    """Background refreshes done (stale-while-revalidate)."""
    media_files: int = 0
    """Pictures downloaded, from the gallery's own address, for the first few images."""
    media_bytes: int = 0
    """Their bytes, together."""
    media_images: int = 0
    """The images whose pictures were downloaded."""


_BURST = 20
_LATER = 3601.0
_PICTURED = 3  # images whose pictures the demo downloads


class _DemoClock:
    """The monotonic clock, which the demo can move an hour ahead to show what expiry does."""

    def __init__(self) -> None:
        self.ahead = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.ahead


async def run_demo(*, seed: int = 7) -> DemoReport:
    """Serve the bundled sample on loopback and bulk-fetch it the way a busy bot would.

    The ids come with duplicates and one id that does not exist; a burst of handlers asks
    for the same popular image at once; then the whole list is asked for again; then, an hour
    later (the cache's clock moved ahead), a burst asks for the popular image once more: it is
    answered at once from the expired copy while one background request revalidates it.
    Last, the pictures of a few images are downloaded, from the sample's own address, into a
    temporary directory removed afterwards: nothing is sent beyond 127.0.0.1.
    """
    async with FakeGallery.sample(delay=0.02) as gallery:
        missing = "1999999999999999999"
        ids = gallery.ids * 2 + [missing]
        random.Random(seed).shuffle(ids)
        clock = _DemoClock()
        started = time.perf_counter()
        async with GallerySession(
            gallery.url,
            concurrency=8,
            cache=MemoryCache(4096, timer=clock),
            stale_while_revalidate=_LATER,
            media_hosts=[gallery.media_host],
        ) as session:
            popular = gallery.ids[0]
            burst = asyncio.gather(*(session.get_image(popular) for _ in range(_BURST)))
            await session.get_images(ids, return_exceptions=True)
            await burst
            # A second pass, as a bot asked again later: answered from the cache.
            outcomes = await session.get_images(ids, return_exceptions=True)
            clock.ahead = _LATER  # an hour on: every image has expired
            await asyncio.gather(*(session.get_image(popular) for _ in range(_BURST)))
            for _ in range(200):  # the background refresh: one request, bounded wait
                if session.stats.refreshed:
                    break
                await asyncio.sleep(0.01)
            stats = session.stats
            with tempfile.TemporaryDirectory(prefix="meigen-async-demo-") as out:
                images = {o.id: o for o in outcomes if isinstance(o, GalleryImage)}
                chosen = list(images.values())[:_PICTURED]  # from the cache: no request
                pictured = [result async for result in session.iter_media(chosen, out)]
        seconds = time.perf_counter() - started
    errors = {i: str(o) for i, o in zip(ids, outcomes, strict=True) if isinstance(o, MeigenError)}
    distinct = {o.id: o for o in outcomes if isinstance(o, GalleryImage)}.values()
    kinds = Counter(image.prompt.kind for image in distinct)
    return DemoReport(
        requested=len(ids),
        calls=2 * len(ids) + 2 * _BURST,
        distinct=len(set(ids)),
        missing=missing,
        fetched=sum(isinstance(o, GalleryImage) for o in outcomes),
        errors=errors,
        requests=stats.requests,
        cache_hits=stats.cache_hits,
        coalesced=stats.coalesced,
        seconds=seconds,
        plain_prompts=kinds[PromptKind.PLAIN],
        json_prompts=kinds[PromptKind.JSON],
        repaired_prompts=sum(image.prompt.repaired for image in distinct),
        revalidated=stats.revalidated,
        refreshed=stats.refreshed,
        media_files=sum(len(result.files) for result in pictured),
        media_bytes=sum(file.bytes for result in pictured for file in result.files),
        media_images=sum(result.ok for result in pictured),
    )


def demo_story(report: DemoReport) -> list[str]:
    """What the demo did, as sentences: calls against requests, what was saved, the prompts."""
    saved = report.calls - report.requests
    lines = [
        f"{report.calls} get_image calls ({report.requested} ids a pass, twice, and two bursts "
        f"of {_BURST} for one popular image) were answered with {report.requests} upstream "
        f"requests: one per distinct id ({report.distinct}), and one to revalidate, in "
        f"{report.seconds:.2f} s.",
        f"{saved} requests saved: the cache answered {report.cache_hits} calls, "
        f"{report.coalesced} joined a request already in flight for their id, and "
        f"{max(saved - report.cache_hits - report.coalesced, 0)} were duplicates within one "
        "get_images call, fetched once.",
        f"An hour later the popular image had expired: the second burst was answered at once "
        f"from the expired copy, while {report.refreshed} background refresh asked the gallery "
        f"whether it had changed; {report.revalidated} answer was 304 Not Modified, no body "
        "sent.",
    ]
    if report.media_images:
        lines.append(
            f"The pictures of {report.media_images} images were downloaded: "
            f"{report.media_files} files, {report.media_bytes:,} bytes, from the sample "
            "gallery's own address."
        )
    for image_id, message in report.errors.items():
        expected = "as expected" if image_id == report.missing else "unexpectedly"
        lines.append(f"The id {image_id} failed {expected}: {message}.")
    images = report.plain_prompts + report.json_prompts
    lines.append(
        f"Prompts of the {images} images: {report.plain_prompts} plain text, "
        f"{report.json_prompts} JSON, of which {report.repaired_prompts} needed repairing "
        "to parse."
    )
    return lines


def _print_demo(report: DemoReport) -> None:
    console = _console(sys.stdout)
    console.print(
        "meigen-async demo: the bundled sample gallery on 127.0.0.1, asked the way a busy bot "
        "would: every id twice with duplicates, one id that does not exist, a burst for one "
        "popular image.",
        soft_wrap=True,
        markup=False,
        highlight=False,
    )
    for line in demo_story(report):
        # The error messages quote the gallery: shown escaped, as every server string is.
        console.print(f"- {terminal_safe(line)}", soft_wrap=True, markup=False, highlight=False)


async def _demo(args: argparse.Namespace) -> int:
    _print_demo(await run_demo())
    return _EXIT_OK

"""The ``meigen-async`` command line."""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections.abc import Sequence

import attrs

from .errors import MeigenError
from .models import GalleryImage
from .session import GallerySession
from .testing import FakeGallery

__all__ = ["DemoReport", "main", "run_demo"]


@attrs.frozen
class DemoReport:
    """What the demo's bulk fetch did."""

    requested: int
    """Ids in one pass, duplicates included."""
    fetched: int
    errors: dict[str, str]
    requests: int
    cache_hits: int
    coalesced: int
    seconds: float


async def run_demo(*, seed: int = 7) -> DemoReport:
    """Serve the bundled sample on loopback and bulk-fetch it the way a busy bot would.

    The ids come with duplicates and one id that does not exist; a burst of handlers asks
    for the same popular image at once; then the whole list is asked for again.
    """
    async with FakeGallery.sample(delay=0.02) as gallery:
        ids = gallery.ids * 2 + ["1999999999999999999"]
        random.Random(seed).shuffle(ids)
        started = time.perf_counter()
        async with GallerySession(gallery.url, concurrency=8) as session:
            popular = gallery.ids[0]
            burst = asyncio.gather(*(session.get_image(popular) for _ in range(20)))
            await session.get_images(ids, return_exceptions=True)
            await burst
            # A second pass, as a bot asked again later: answered from the cache.
            outcomes = await session.get_images(ids, return_exceptions=True)
            stats = session.stats
        seconds = time.perf_counter() - started
    errors = {i: str(o) for i, o in zip(ids, outcomes, strict=True) if isinstance(o, MeigenError)}
    return DemoReport(
        requested=len(ids),
        fetched=sum(isinstance(o, GalleryImage) for o in outcomes),
        errors=errors,
        requests=stats.requests,
        cache_hits=stats.cache_hits,
        coalesced=stats.coalesced,
        seconds=seconds,
    )


def _print_demo(report: DemoReport) -> None:
    print("meigen-async demo: the bundled sample gallery on 127.0.0.1")
    print(f"  ids requested      {report.requested} (duplicates and one missing id included)")
    print(f"  images fetched     {report.fetched}")
    print(f"  upstream requests  {report.requests}")
    print(f"  cache hits         {report.cache_hits}")
    print(f"  coalesced          {report.coalesced}")
    print(f"  errors             {len(report.errors)}")
    for image_id, message in report.errors.items():
        print(f"    {image_id}: {message}")
    print(f"  time               {report.seconds:.3f}s")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = argparse.ArgumentParser(prog="meigen-async", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="bulk-fetch the bundled sample gallery on loopback")
    args = parser.parse_args(argv)
    if args.command == "demo":
        _print_demo(asyncio.run(run_demo()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

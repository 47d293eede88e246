"""Worker processes for the SQLite cache tests, run as a script:

    python tests/sqlite_helpers.py fetch GALLERY_URL DB_PATH ID [ID ...]
    python tests/sqlite_helpers.py write DB_PATH COUNT

``fetch`` builds a `GallerySession` with a `SQLiteCache`, prints ``ready``, waits for a line on
stdin (so that a test can release several workers at the same instant), fetches the ids and
prints one JSON line: each id's outcome and the number of upstream requests it sent.
``write`` waits the same way, then stores COUNT images with 50 at once, printing ``stored N``
after each batch is committed, and then one JSON line of the warnings logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys


async def _fetch(gallery_url: str, path: str, ids: list[str]) -> None:
    from meigen_async import GallerySession, RetryPolicy
    from meigen_async.sqlite_cache import SQLiteCache

    async with (
        SQLiteCache(path) as cache,
        GallerySession(
            gallery_url, cache=cache, timeout=5.0, retry=RetryPolicy(max_retries=0)
        ) as session,
    ):
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        results = await session.get_images(ids, return_exceptions=True)
        outcomes = {
            image_id: "ok" if not isinstance(result, Exception) else type(result).__name__
            for image_id, result in zip(ids, results, strict=True)
        }
        print(json.dumps({"outcomes": outcomes, "requests": session.stats.requests}), flush=True)


async def _write(path: str, count: int) -> None:
    from meigen_async.models import structure_image
    from meigen_async.sqlite_cache import SQLiteCache
    from meigen_async.testing import sample_images

    warnings: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            warnings.append(record.getMessage())

    logging.getLogger("meigen_async").addHandler(Keep(logging.WARNING))
    image = structure_image(sample_images()[0])
    async with SQLiteCache(path) as cache:
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        stored = 0
        while stored < count:
            batch = range(stored, min(stored + 50, count))
            # Another id each, the same image: the test reads the rows, not the entries.
            await asyncio.gather(*(cache.set(f"w{i}", image, 3600, 0) for i in batch))
            stored = batch[-1] + 1
            print(f"stored {stored}", flush=True)
    print(json.dumps({"warnings": warnings}), flush=True)


if __name__ == "__main__":
    mode, *rest = sys.argv[1:]
    if mode == "fetch":
        gallery, db, *wanted = rest
        asyncio.run(_fetch(gallery, db, wanted))
    else:
        db, how_many = rest
        asyncio.run(_write(db, int(how_many)))

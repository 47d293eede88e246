"""Scenario: the SQLite cache, warm in a new process, and written under 500 concurrent misses.

Warm: one process fills a file with `ids` images, then a new process (so nothing is in its
memory) times a `get_image` for each id: every call is one read of the file. The peer is
aiohttp-client-cache's `CachedSession` on its `SQLiteBackend`, filled and read the same way.
Writes: 500 concurrent `get_image` of ids not in the file, timed, with the upstream requests
counted and the "database is locked" errors (raised or logged) counted, for both.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import Config, log, ratio_entry, summarise
from .peers import image_url
from .server import fetch_stats, image_id

__all__ = ["run"]

_WARM_IDS = 2000
_MISSES = 500


async def _ours(mode: str, url: str, path: str, ids: list[str]) -> dict[str, float]:
    from meigen_async import GallerySession
    from meigen_async.sqlite_cache import SQLiteCache

    locked: list[str] = []

    class Count(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "locked" in record.getMessage():
                locked.append(record.getMessage())

    logging.getLogger("meigen_async").addHandler(Count(logging.WARNING))
    async with SQLiteCache(path) as cache, GallerySession(url, cache=cache, concurrency=64) as s:
        started = time.perf_counter()
        if mode == "warm":
            for each in ids:
                await s.get_image(each)
        else:
            await asyncio.gather(*(s.get_image(each) for each in ids))
        seconds = time.perf_counter() - started
        return {"calls_per_s": len(ids) / seconds, "seconds": seconds, "locked": len(locked)}


async def _peer(mode: str, url: str, path: str, ids: list[str]) -> dict[str, float]:
    import aiohttp
    from aiohttp_client_cache.backends.sqlite import SQLiteBackend
    from aiohttp_client_cache.session import CachedSession

    locked = 0
    async with CachedSession(
        cache=SQLiteBackend(path, expire_after=-1),
        connector=aiohttp.TCPConnector(limit=64),
    ) as http:

        async def get(key: str) -> None:
            nonlocal locked
            try:
                async with http.get(image_url(url, key)) as resp:
                    await resp.json()
            except Exception as error:  # what a user would see
                if "locked" not in str(error):
                    raise
                locked += 1

        started = time.perf_counter()
        if mode == "warm":
            for each in ids:
                await get(each)
        else:
            await asyncio.gather(*(get(each) for each in ids))
        seconds = time.perf_counter() - started
    return {"calls_per_s": len(ids) / seconds, "seconds": seconds, "locked": float(locked)}


def _child(who: str, mode: str, url: str, path: str, first: int, count: int) -> dict[str, Any]:
    """Run one timed step in a new process; its figures."""
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.sqlite", who, mode, url, path, str(first), str(count)],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.splitlines()[-1])
    return result


async def run(url: str, config: Config) -> dict[str, Any]:
    warm_ids = 200 if config.quick else _WARM_IDS
    figures: dict[str, Any] = {}
    raw: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for who in ("ours", "aiohttp-client-cache"):
            path = str(Path(tmp) / f"{who}.sqlite")
            log(f"  sqlite: {who}: filling {warm_ids} ids, then reading them in a new process")
            await asyncio.to_thread(_child, who, "fill", url, path, 0, warm_ids)
            before = (await fetch_stats(url))["image_requests"]
            warm = await asyncio.to_thread(_child, who, "warm", url, path, 0, warm_ids)
            warm["upstream"] = (await fetch_stats(url))["image_requests"] - before
            before = (await fetch_stats(url))["image_requests"]
            misses = await asyncio.to_thread(_child, who, "misses", url, path, 10**6, _MISSES)
            misses["upstream"] = (await fetch_stats(url))["image_requests"] - before
            raw[who] = {"warm": warm, "misses": misses}
            figures[f"{who}: warm reads"] = summarise([warm])
            figures[f"{who}: 500 concurrent misses"] = summarise([misses])
    ours, peer = raw["ours"], raw["aiohttp-client-cache"]
    ratios = [
        ratio_entry(
            label="warm SQLite hits, new process: ours / aiohttp-client-cache",
            metric="calls_per_s",
            unit="calls/s",
            higher_is_better=True,
            ours=ours["warm"]["calls_per_s"],
            peer=peer["warm"]["calls_per_s"],
        ),
        ratio_entry(
            label="500 concurrent misses written: ours / aiohttp-client-cache",
            metric="seconds",
            unit="s",
            higher_is_better=False,
            ours=ours["misses"]["seconds"],
            peer=peer["misses"]["seconds"],
        ),
    ]
    return {
        "title": "SQLite cache",
        "measures": "warm reads from a SQLite file in a new process; 500 concurrent misses",
        "params": {"warm_ids": warm_ids, "misses": _MISSES, "rounds": 1},
        "figures": figures,
        "ratios": ratios,
        "raw": raw,
        "checks": {
            "database_is_locked": {who: raw[who]["misses"]["locked"] for who in raw},
            "upstream_during_warm": {who: raw[who]["warm"]["upstream"] for who in raw},
        },
    }


if __name__ == "__main__":
    who_, mode_, url_, path_, first_, count_ = sys.argv[1:]
    wanted = [image_id(n) for n in range(int(first_), int(first_) + int(count_))]
    step = _ours if who_ == "ours" else _peer
    print(json.dumps(asyncio.run(step("warm" if mode_ == "fill" else mode_, url_, path_, wanted))))

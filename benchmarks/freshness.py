"""Scenario: hot ids under churn, with and without revalidation and stale-while-revalidate.

A few hot ids, each fresh for one second (`max-age=1`), read by many tasks in a loop for a few
seconds against a server that takes 20 ms an answer. Three sessions, each on a fresh cache:

- **plain**: no validators, no stale-while-revalidate: every expiry is a full refetch;
- **revalidate**: the server sends an `ETag`: every expiry is a conditional request, which a
  bodiless 304 answers;
- **revalidate + swr**: the same, with `stale_while_revalidate=60`: an expired id is served at
  once while one background request refreshes it.

The server counts requests and the body bytes it sent; the readers time every `get_image`.
"""

from __future__ import annotations

import asyncio
import random
import statistics
from typing import Any

import aiohttp

from meigen_async import GallerySession

from .common import Config, log, perf_counter
from .server import image_id

__all__ = ["run"]

DELAY_MS = 20
HOT_IDS = 20


async def _reset(url: str) -> None:
    async with aiohttp.ClientSession() as http, http.post(f"{url}/_reset") as resp:
        resp.raise_for_status()


async def _stats(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/_stats") as resp:
        resp.raise_for_status()
        stats: dict[str, Any] = await resp.json()
        return stats


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _variant(
    url: str, *, validators: bool, swr: float, readers: int, seconds: float
) -> dict[str, Any]:
    base = f"{url}/fresh/{DELAY_MS}/{int(validators)}"
    ids = [image_id(500_000 + n) for n in range(HOT_IDS)]
    await _reset(url)
    latencies: list[float] = []
    async with GallerySession(base, concurrency=32, stale_while_revalidate=swr) as session:
        deadline = perf_counter() + seconds

        async def reader(seed: int) -> None:
            pick = random.Random(seed).choice
            while perf_counter() < deadline:
                started = perf_counter()
                await session.get_image(pick(ids))
                latencies.append(perf_counter() - started)
                await asyncio.sleep(0.005)

        await asyncio.gather(*(reader(n) for n in range(readers)))
        stats = session.stats
    server = await _stats(url)
    return {
        "gets": len(latencies),
        "requests": server["image_requests"],
        "not_modified": server["not_modified"],
        "body_bytes": server["body_bytes"],
        "revalidated": stats.revalidated,
        "refreshed": stats.refreshed,
        "p50_ms": _percentile(latencies, 0.50) * 1000,
        "p99_ms": _percentile(latencies, 0.99) * 1000,
        "mean_ms": statistics.fmean(latencies) * 1000,
    }


async def run(url: str, config: Config) -> dict[str, Any]:
    readers = 50 if config.quick else 200
    seconds = 2.0 if config.quick else 5.0
    log(f"freshness: {HOT_IDS} hot ids, max-age 1 s, {readers} readers, {seconds:g} s a variant")
    variants = {
        "plain": await _variant(url, validators=False, swr=0, readers=readers, seconds=seconds),
        "revalidate": await _variant(url, validators=True, swr=0, readers=readers, seconds=seconds),
        "revalidate + swr": await _variant(
            url, validators=True, swr=60, readers=readers, seconds=seconds
        ),
    }
    for name, figures in variants.items():
        log(
            f"  {name}: {figures['gets']:,} gets, {figures['requests']} requests "
            f"({figures['not_modified']} 304s), {figures['body_bytes']:,} body bytes, "
            f"p50 {figures['p50_ms']:.2f} ms, p99 {figures['p99_ms']:.2f} ms"
        )
    return {
        "title": "Freshness: hot ids under churn",
        "hot_ids": HOT_IDS,
        "readers": readers,
        "seconds_per_variant": seconds,
        "server_delay_ms": DELAY_MS,
        "variants": variants,
    }

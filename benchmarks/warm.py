"""Scenario 1, warm hits: ``await session.get_image(id)`` on ids already cached.

Compared with the floor for an async API, a cachetools ``TTLCache`` lookup inside a coroutine
awaited the same way, and with the two HTTP-level caches: aiohttp-client-cache's
``CachedSession`` on its in-memory backend and hishel's httpx client on an in-memory SQLite
storage (hishel 1.x and 2.x ship no dict storage). Every client is warmed with the same ids
first; the timed loop then cycles through them, and the server's counter proves that no
timed call went upstream.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from cachetools import TTLCache

from meigen_async import GallerySession

from .common import Config, Metrics, alternate, log, perf_counter, ratio_entry, summarise
from .common import target_entry as target
from .peers import available_peers, hishel_client, image_url, memory_cached_session
from .server import fetch_stats, image_id

__all__ = ["run"]

Get = Callable[[str], Awaitable[Any]]

_SLOW_CHUNK = 50
"""How often the HTTP-level caches, thousands of times slower, look at the clock."""


async def _drive(
    get: Get, ids: list[str], *, min_calls: int, budget_s: float, chunk: int = 1000
) -> Metrics:
    """Await ``get`` over ``ids``, cycling, until ``min_calls`` and ``budget_s`` both are met.

    The clock is read once per ``chunk`` calls: rarely enough not to weigh on the fast
    clients, often enough that a slow one is not held far past its budget.
    """
    chunks = [ids[i : i + chunk] for i in range(0, len(ids), chunk)]
    calls = 0
    start = perf_counter()
    while True:
        for part in chunks:
            for each in part:
                await get(each)
            calls += len(part)
            elapsed = perf_counter() - start
            if calls >= min_calls and elapsed >= budget_s:
                return {"calls_per_s": calls / elapsed, "calls": float(calls)}


async def run(url: str, config: Config) -> dict[str, Any]:
    ids = [image_id(n) for n in range(config.warm_ids)]
    cache_size = max(4096, 2 * len(ids))
    min_fast = config.warm_min_calls
    budget = config.warm_budget_s

    async def upstream() -> int:
        return int((await fetch_stats(url))["image_requests"])

    async def ours() -> Metrics:
        async with GallerySession(url, cache_size=cache_size) as session:
            await session.get_images(ids)
            before = session.stats.requests
            metrics = await _drive(session.get_image, ids, min_calls=min_fast, budget_s=budget)
            metrics["upstream_during_timing"] = float(session.stats.requests - before)
        return metrics

    # The floor holds the very objects our session returns.
    async with GallerySession(url, cache_size=cache_size) as seeding:
        images = await seeding.get_images(ids)
    floor_cache: TTLCache[str, Any] = TTLCache(maxsize=cache_size, ttl=3600)
    for image in images:
        floor_cache[image.id] = image

    async def floor_get(key: str) -> Any:
        return floor_cache[key]

    async def floor() -> Metrics:
        metrics = await _drive(floor_get, ids, min_calls=min_fast, budget_s=budget)
        metrics["upstream_during_timing"] = 0.0
        return metrics

    async def client_cache() -> Metrics:
        async with memory_cached_session() as http:

            async def get(key: str) -> Any:
                async with http.get(image_url(url, key)) as resp:
                    return await resp.json()

            for key in ids:
                await get(key)
            before = await upstream()
            metrics = await _drive(get, ids, min_calls=1, budget_s=budget, chunk=_SLOW_CHUNK)
            metrics["upstream_during_timing"] = float(await upstream() - before)
        return metrics

    async def hishel() -> Metrics:
        async with hishel_client() as http:

            async def get(key: str) -> Any:
                resp = await http.get(image_url(url, key))
                resp.raise_for_status()
                return resp.json()

            for key in ids:
                await get(key)
            before = await upstream()
            metrics = await _drive(get, ids, min_calls=1, budget_s=budget, chunk=_SLOW_CHUNK)
            metrics["upstream_during_timing"] = float(await upstream() - before)
        return metrics

    candidates = {
        "cachetools floor": floor,
        "aiohttp-client-cache": client_cache,
        "hishel": hishel,
    }
    peers, skipped = available_peers(candidates)
    for name, why in skipped.items():
        log(f"  warm: skipping {name}: {why}")
    log(f"warm hits: {len(ids)} ids, >= {budget:g} s per run, {config.warm_rounds} rounds")
    alt = await alternate(ours, peers, config.warm_rounds, label="warm")

    figures = {"ours": summarise(alt.all_ours())} | {
        name: summarise(samples) for name, samples in alt.peers.items()
    }
    ratios = [
        ratio_entry(
            label=f"ours / {name}",
            metric="calls_per_s",
            unit="calls/s",
            higher_is_better=True,
            ours=summarise(alt.ours[name])["calls_per_s"]["median"],
            peer=figures[name]["calls_per_s"]["median"],
            pair_ratios=alt.pair_ratios[name]["calls_per_s"],
        )
        for name in alt.peers
    ]
    by_peer = {row["label"].removeprefix("ours / "): row["ratio"] for row in ratios}
    targets = []
    if "cachetools floor" in by_peer:
        value = by_peer["cachetools floor"]
        targets.append(
            target(
                "warm hits vs bare cachetools lookup", value=value, goal=">= 0.5x", met=value >= 0.5
            )
        )
    if "aiohttp-client-cache" in by_peer:
        value = by_peer["aiohttp-client-cache"]
        targets.append(
            target("warm hits vs aiohttp-client-cache", value=value, goal=">= 50x", met=value >= 50)
        )
    leaked = [
        sample["upstream_during_timing"]
        for samples in [alt.all_ours(), *alt.peers.values()]
        for sample in samples
    ]
    return {
        "title": "Warm hits",
        "measures": "calls/s of awaiting one cached image, ids cycled",
        "params": {
            "ids": len(ids),
            "min_calls_ours_and_floor": min_fast,
            "budget_s_per_run": budget,
            "peers": f"budget only, the clock read every {_SLOW_CHUNK} calls",
            "rounds": config.warm_rounds,
            "cache_size": cache_size,
        },
        "figures": figures,
        "ratios": ratios,
        "targets": targets,
        "skipped_peers": skipped,
        "checks": {"upstream_requests_during_timed_loops": sum(leaked)},
    }

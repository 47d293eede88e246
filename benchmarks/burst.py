"""Scenario 3, burst: thousands of concurrent cold calls over a handful of ids.

Every client starts fresh (empty cache) and fires all its calls at once with
``asyncio.gather`` against the server's delayed route (~20 ms per answer), so the calls for one
id overlap. The server counts the image requests it receives; ours should send exactly one per
distinct id. The HTTP-level caches only store a response once it has arrived, so each
concurrent miss goes upstream. Each client keeps its own default connection pool (ours 16,
aiohttp's 100, httpx's 100): their wall times are reported, not targeted.

httpx's connection pool slows down quadratically with the number of queued requests (on the
2-core machine of docs/benchmarks.md, 1,000 concurrent calls took about a minute with plain
httpx and over two minutes through hishel; 5,000 would take most of an hour), so hishel is
paired with an ours run of the same smaller burst (``Config.burst_hishel_calls``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from meigen_async import GallerySession

from .common import Config, Metrics, alternate, log, perf_counter, ratio_entry, summarise
from .common import target_entry as target
from .peers import available_peers, hishel_client, image_url, memory_cached_session, raw_session
from .server import fetch_stats, image_id

__all__ = ["run"]


async def run(server_url: str, config: Config) -> dict[str, Any]:
    url = f"{server_url}/delay/{config.burst_delay_ms}"
    calls = config.burst_calls
    distinct = config.burst_ids
    serial = 0

    def fresh_ids() -> list[str]:
        # New ids for every run, so each run's per-id counts can be read off the server.
        nonlocal serial
        serial += 1
        return [image_id(1_000_000 * serial + n) for n in range(distinct)]

    async def measure(fire: Callable[[list[str]], Awaitable[None]], calls: int) -> Metrics:
        ids = fresh_ids()
        before = await fetch_stats(server_url)
        start = perf_counter()
        await fire([ids[k % distinct] for k in range(calls)])
        elapsed = perf_counter() - start
        after = await fetch_stats(server_url)
        per_id = [after["per_id"].get(key, 0) for key in ids]
        return {
            "upstream_requests": float(after["image_requests"] - before["image_requests"]),
            "max_requests_per_id": float(max(per_id)),
            "wall_s": elapsed,
        }

    async def fire_ours(keys: list[str]) -> None:
        async with GallerySession(url) as session:
            await asyncio.gather(*(session.get_image(key) for key in keys))

    async def ours() -> Metrics:
        return await measure(fire_ours, calls)

    async def ours_small() -> Metrics:
        return await measure(fire_ours, config.burst_hishel_calls)

    def aiohttp_burst(make_session: Callable[[], Any]) -> Callable[[], Awaitable[Metrics]]:
        """A burst through an aiohttp-compatible session: the raw loop, or a caching one."""

        async def fire(keys: list[str]) -> None:
            async with make_session() as http:

                async def one(key: str) -> Any:
                    async with http.get(image_url(url, key)) as resp:
                        resp.raise_for_status()
                        return await resp.json()

                await asyncio.gather(*(one(key) for key in keys))

        async def run_burst() -> Metrics:
            return await measure(fire, calls)

        return run_burst

    raw = aiohttp_burst(raw_session)
    client_cache = aiohttp_burst(memory_cached_session)

    async def hishel() -> Metrics:
        async def fire(keys: list[str]) -> None:
            async with hishel_client() as http:

                async def one(key: str) -> Any:
                    resp = await http.get(image_url(url, key))
                    resp.raise_for_status()
                    return resp.json()

                await asyncio.gather(*(one(key) for key in keys))

        return await measure(fire, config.burst_hishel_calls)

    candidates = {"aiohttp-client-cache": client_cache, "hishel": hishel, "raw aiohttp": raw}
    peers, skipped = available_peers(candidates)
    for name, why in skipped.items():
        log(f"  burst: skipping {name}: {why}")
    log(
        f"burst: {calls:,} concurrent calls over {distinct} ids, "
        f"{config.burst_delay_ms} ms server delay, {config.burst_rounds} rounds"
    )
    sizes = {name: calls for name in peers} | {"hishel": config.burst_hishel_calls}
    ours_runs = {name: ours_small if sizes[name] != calls else ours for name in peers}
    alt = await alternate(ours_runs, peers, config.burst_rounds, label="burst")
    runs: dict[str, list[Metrics]] = {}
    for name in alt.peers:
        size = sizes[name]
        runs.setdefault(f"ours ({size:,} calls)", []).extend(alt.ours[name])
        runs[f"{name} ({size:,} calls)"] = alt.peers[name]
    figures = {name: summarise(samples) for name, samples in runs.items()}
    ratios = []
    for name in alt.peers:
        size = sizes[name]
        for metric, unit in (("upstream_requests", "requests"), ("wall_s", "s")):
            ratios.append(
                ratio_entry(
                    label=f"ours / {name} ({size:,} calls)",
                    metric=metric,
                    unit=unit,
                    higher_is_better=False,
                    ours=summarise(alt.ours[name])[metric]["median"],
                    peer=figures[f"{name} ({size:,} calls)"][metric]["median"],
                    pair_ratios=alt.pair_ratios[name].get(metric),
                )
            )
    ours_requests = [int(sample["upstream_requests"]) for sample in alt.all_ours()]
    exact = all(count == distinct for count in ours_requests)
    return {
        "title": "Burst",
        "measures": "upstream requests and wall time of concurrent cold calls over few ids",
        "params": {
            "calls": calls,
            "hishel_calls": config.burst_hishel_calls,
            "distinct_ids": distinct,
            "server_delay_ms": config.burst_delay_ms,
            "rounds": config.burst_rounds,
        },
        "figures": figures,
        "ratios": ratios,
        "targets": [
            target(
                "burst upstream requests == distinct ids",
                value=f"{sorted(set(ours_requests))} for {distinct} ids",
                goal=f"exactly {distinct} in every run",
                met=exact,
            )
        ],
        "skipped_peers": skipped,
    }

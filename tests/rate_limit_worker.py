"""One worker process sharing a RedisRateLimiter, for tests/test_redis_limiter.py.

    python tests/rate_limit_worker.py GALLERY_URL REDIS_URL NAME RATE BURST SECONDS

It builds a ``GallerySession`` paced by ``RedisRateLimiter(rate, name, burst)``, with no cache
and no retries, prints ``ready``, waits for a line on stdin (so that a test can start several
workers at the same instant), then fetches the sample ids from 8 tasks as fast as the limiter
lets it for ``SECONDS``, and prints one JSON line: the requests it sent and its errors by
class name. The limiter's warnings go to stderr.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter

TASKS = 8


async def _work(
    gallery_url: str, redis_url: str, name: str, rate: float, burst: int, seconds: float
) -> None:
    import redis.asyncio
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    from meigen_async import GallerySession, MeigenError, RetryPolicy
    from meigen_async.redis_cache import RedisRateLimiter
    from meigen_async.testing import sample_images

    ids = [str(image["id"]) for image in sample_images()]
    # Timeouts long enough for 4 processes starting at once on 2 cores, and connected before
    # "ready": a first call slower than its timeout would send the process to local pacing
    # (seen under load: 154 requests in one second instead of 22).
    client = redis.asyncio.Redis.from_url(
        redis_url, socket_connect_timeout=1.0, socket_timeout=1.0, retry=Retry(NoBackoff(), 0)
    )
    await client.ping()
    errors: Counter[str] = Counter()
    limiter = RedisRateLimiter(client, rate=rate, name=name, burst=burst, timeout=1.0)
    async with GallerySession(
        gallery_url,
        rate_limit=limiter,
        cache_size=0,
        negative_ttl=0,
        retry=RetryPolicy(max_retries=0),
        concurrency=TASKS,
    ) as session:

        async def fetch(task: int) -> None:
            for n in range(task, 10**9, TASKS):
                try:
                    await session.get_image(ids[n % len(ids)])
                except MeigenError as error:
                    errors[type(error).__name__] += 1

        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        try:
            async with asyncio.timeout(seconds):
                await asyncio.gather(*(fetch(task) for task in range(TASKS)))
        except TimeoutError:
            pass
        print(json.dumps({"sent": session.stats.requests, "errors": errors}), flush=True)
    await client.aclose()


if __name__ == "__main__":
    url, redis_url, limiter_name, rate_, burst_, seconds_ = sys.argv[1:]
    asyncio.run(_work(url, redis_url, limiter_name, float(rate_), int(burst_), float(seconds_)))

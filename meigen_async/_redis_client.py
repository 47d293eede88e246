"""What the Redis pieces (`RedisCache`, `RedisRateLimiter`) share of a redis-py client."""

from __future__ import annotations

from typing import Any

import redis.asyncio

__all__ = ["describe"]


def describe(client: redis.asyncio.Redis) -> str:
    """Where the client connects, for log messages: never its password."""
    options: dict[str, Any] = client.connection_pool.connection_kwargs
    if "path" in options:
        return f"unix:{options['path']}"
    return f"{options.get('host', 'localhost')}:{options.get('port', 6379)}/{options.get('db', 0)}"

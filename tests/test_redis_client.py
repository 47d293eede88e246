"""What the Redis pieces say of where a client connects: never its password.

Clients are made but never connect: `describe` reads their options alone.
"""

from __future__ import annotations

import pytest

pytest.importorskip(
    "redis", reason="redis-py is not installed: pip install -e '.[redis]' to run these tests"
)
import redis.asyncio

from meigen_async._redis_client import describe


async def test_a_tcp_client_is_told_by_host_port_and_database_without_its_password() -> None:
    client = redis.asyncio.Redis.from_url("redis://user:hunter2@127.0.0.1:6390/3")

    assert describe(client) == "127.0.0.1:6390/3"
    await client.aclose()


async def test_a_unix_socket_client_is_told_by_its_path_without_its_password() -> None:
    client = redis.asyncio.Redis(unix_socket_path="/run/redis/redis.sock", password="hunter2")

    assert describe(client) == "unix:/run/redis/redis.sock"
    await client.aclose()

"""The peers, built the same way by every scenario; each is optional (the ``bench`` extra).

- aiohttp-client-cache: ``CachedSession`` on ``CacheBackend()``, its non-persistent in-memory
  backend, entries never expiring.
- hishel (2.x API): ``hishel.httpx.AsyncCacheClient`` with ``AsyncSqliteStorage`` on an
  ``anysqlite`` connection to ``:memory:``. hishel 0.x had ``AsyncInMemoryStorage``; 1.x and
  2.x only ship SQLite and Redis storages, so an in-memory SQLite database is their
  in-memory option. Its default (non-RFC) mode caches every successful GET.
"""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import aiohttp

__all__ = [
    "PEER_PACKAGES",
    "available_peers",
    "hishel_client",
    "image_url",
    "memory_cached_session",
    "raw_session",
]

T = TypeVar("T")

PEER_PACKAGES: dict[str, tuple[str, ...]] = {
    "aiohttp-client-cache": ("aiohttp_client_cache",),
    "hishel": ("hishel", "httpx", "anysqlite"),
}
"""The modules each peer needs; a peer whose modules are missing is skipped, not failed."""

_TIMEOUT_S = 120.0


def image_url(base_url: str, image_id: str) -> str:
    """The URL of one image, exactly as ``GallerySession`` builds it for numeric ids."""
    return f"{base_url}/api/images/{image_id}"


def available_peers(candidates: Mapping[str, T]) -> tuple[dict[str, T], dict[str, str]]:
    """The candidates whose packages are installed, and why the others were skipped."""
    kept: dict[str, T] = {}
    skipped: dict[str, str] = {}
    for name, value in candidates.items():
        missing = [m for m in PEER_PACKAGES.get(name, ()) if importlib.util.find_spec(m) is None]
        if missing:
            skipped[name] = f"not installed ({', '.join(missing)}): pip install -e '.[bench]'"
        else:
            kept[name] = value
    return kept, skipped


def raw_session(limit: int = 100) -> aiohttp.ClientSession:
    """A plain aiohttp session whose connector allows ``limit`` connections (aiohttp's default)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit),
        timeout=aiohttp.ClientTimeout(total=_TIMEOUT_S),
    )


def memory_cached_session() -> Any:
    """aiohttp-client-cache's ``CachedSession`` with the in-memory ``CacheBackend``."""
    from aiohttp_client_cache.backends.base import CacheBackend
    from aiohttp_client_cache.session import CachedSession

    return CachedSession(
        cache=CacheBackend(expire_after=-1),
        timeout=aiohttp.ClientTimeout(total=_TIMEOUT_S),
    )


@asynccontextmanager
async def hishel_client() -> AsyncIterator[Any]:
    """hishel's httpx client over an in-memory SQLite storage, closed on exit."""
    import anysqlite
    import httpx
    from hishel import AsyncSqliteStorage
    from hishel.httpx import AsyncCacheClient

    connection = await anysqlite.connect(":memory:", isolation_level=None)
    storage = AsyncSqliteStorage(connection=connection)
    client = AsyncCacheClient(storage=storage, timeout=httpx.Timeout(_TIMEOUT_S))
    try:
        yield client
    finally:
        await client.aclose()

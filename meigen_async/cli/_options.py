"""The option types, and the session and SQLite cache the options ask for."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .._protocol import validate_image_id
from .._transport import image_urls
from ..errors import MediaNotAllowed, MeigenError
from ..retry import RetryPolicy
from ..session import GallerySession
from ..sqlite_cache import SQLiteCache
from ._output import (
    _PROG,
    CommandError,
    _print,
)

BASE_URL_ENV = "MEIGEN_BASE_URL"
"""The environment variable that sets the default `--base-url`."""


_MAX_RETRIES = 100
"""The most `--retries`: with backoffs capped at 30 s, already some 50 minutes an id."""


def base_url_problem(value: str) -> str | None:
    """What keeps `value` from being a `GallerySession` base URL, in plain words; None if nothing.

    It must be an absolute `http://` or `https://` URL with a host, a port (if any) from 0 to
    65535, and no query or fragment: the session appends `/api/images/<id>` to it.
    """
    try:
        parts = urlsplit(value)
    except ValueError as exc:
        return f"expected an http:// or https:// URL, got {value!r}: {exc}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"expected an http:// or https:// URL, got {value!r}"
    if any(char.isspace() or not char.isprintable() for char in value):
        return f"a URL cannot hold spaces or control characters, got {value!r}"
    try:
        parts.port  # noqa: B018 - reading the port is what checks it
    except ValueError:
        return f"expected a port from 0 to 65535, got {value!r}"
    if parts.query or parts.fragment:
        return f"a base URL cannot have a query or a fragment, got {value!r}"
    try:
        image_urls(value)  # the session's own reading of it
    except ValueError as exc:
        return f"expected an http:// or https:// URL, got {value!r}: {exc}"
    return None


def _base_url(value: str) -> str:
    problem = base_url_problem(value)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return value


def _check_ids(ids: list[str]) -> None:
    """Refuse, before any request, a command line whose ids are not all gallery ids."""
    for image_id in ids:
        try:
            validate_image_id(image_id)
        except MeigenError as error:
            raise CommandError(error.message) from None


def _positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if not number > 0 or number == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value!r}")
    return number


def _int_at_least(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
        if number < minimum or (maximum is not None and number > maximum):
            bounds = f"from {minimum} to {maximum}" if maximum is not None else f">= {minimum}"
            raise argparse.ArgumentTypeError(f"expected a whole number {bounds}, got {value!r}")
        return number

    return parse


def default_cache_path() -> Path:
    """Where the CLI keeps its SQLite cache: `$XDG_CACHE_HOME/meigen-async/gallery.sqlite`.

    Without `XDG_CACHE_HOME` (or with a relative one, which the spec says to ignore), under
    `~/.cache`. Not `cache.sqlite`, the name earlier versions used: their files carry no mark
    of ours, so they cannot be told from another program's and would be refused (with a
    warning) on every run. A new name starts afresh and leaves the old file alone.
    """
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".cache"
    return root / "meigen-async" / "gallery.sqlite"


def cache_path(args: argparse.Namespace) -> Path:
    """The SQLite cache file `--cache` names, else the default one."""
    return Path(args.cache).expanduser() if args.cache is not None else default_cache_path()


def _open_cache(args: argparse.Namespace) -> SQLiteCache | None:
    """The SQLite cache the options ask for, or None (`--no-cache`, or no place for it)."""
    if getattr(args, "no_cache", True):
        return None
    path = cache_path(args)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _print(
            f"{_PROG}: warning: cannot make {str(path.parent)!r} ({exc.strerror or exc}): "
            "running without the cache",
            sys.stderr,
        )
        return None
    return SQLiteCache(path)


@asynccontextmanager
async def _session(args: argparse.Namespace) -> AsyncIterator[GallerySession]:
    """The session the options ask for, with the SQLite cache behind it unless `--no-cache`."""
    cache = _open_cache(args)
    try:
        session = GallerySession(
            args.base_url,
            timeout=args.timeout,
            retry=RetryPolicy(max_retries=args.retries),
            concurrency=getattr(args, "concurrency", 16),
            rate_limit=getattr(args, "rate_limit", None),
            cache=cache,
            # None reads $MEIGEN_API_KEY; a command with no --api-key never searches.
            api_key=getattr(args, "api_key", ""),
            **_media_options(args),
        )
    except ValueError as exc:  # the options are checked when parsed; this is a backstop
        if cache is not None:
            await cache.close()
        raise CommandError(str(exc)) from None
    try:
        async with session:
            yield session
    finally:
        if cache is not None:
            await cache.close()


def cli_message(error: MeigenError) -> str:
    """`error`'s message in the words of the command line: the flag, not the Python parameter.

    A media host refused is named with the option that allows it: `--media-host 127.0.0.1`.
    """
    message = error.message.replace("media_hosts", "--media-host")
    if isinstance(error, MediaNotAllowed) and error.host:
        message += f"; allow it with --media-host {error.host}"
    return message


def _media_options(args: argparse.Namespace) -> dict[str, Any]:
    hosts = getattr(args, "media_hosts", None)
    return {} if hosts is None else {"media_hosts": hosts}

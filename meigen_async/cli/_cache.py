"""The `cache` command: where the SQLite cache is (`path`), what it holds (`info`), `clear`."""

from __future__ import annotations

import argparse
import contextlib
import sqlite3
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from .._sqlite_file import Contents, NotOurs, clear_file, read_contents
from ..sqlite_cache import BUSY_TIMEOUT
from ._get import _in_utc
from ._options import cache_path
from ._output import _EXIT_FAILED, _EXIT_OK, _PROG, CommandError, _print, counted, human_size

_CLEAR_WAIT = 10 * BUSY_TIMEOUT
"""Seconds `clear` waits for another process's write lock: a user asked, so wait a while."""


async def _cache_path(args: argparse.Namespace) -> int:
    _print(str(cache_path(args)), sys.stdout)
    return _EXIT_OK


async def _cache_info(args: argparse.Namespace) -> int:
    path = cache_path(args)
    contents = _contents(path)
    rows = [("path", str(path))]
    if contents is None:
        rows.append(("entries", "none: no cache file yet"))
    else:
        entries = contents.images + contents.missing
        rows += [
            (
                "entries",
                f"{counted(entries, 'entry', 'entries')} "
                f"({counted(contents.images, 'image', 'images')}, {contents.missing:,} not found)",
            ),
            ("size", human_size(_size(path))),
            ("oldest", _stored(contents.oldest)),
            ("newest", _stored(contents.newest)),
        ]
    for label, value in rows:
        _print(f"{label:<9}{value}", sys.stdout)
    return _EXIT_OK


async def _cache_clear(args: argparse.Namespace) -> int:
    path = cache_path(args)
    if not path.exists():
        _print(f"{_PROG}: no cache at {path}: nothing to clear", sys.stdout)
        return _EXIT_OK
    before = _size(path)
    try:
        count = clear_file(path, _CLEAR_WAIT)
    except NotOurs as refused:
        raise CommandError(f"{path} is left as it is: {refused}", _EXIT_FAILED) from None
    except sqlite3.Error as exc:
        raise CommandError(f"cannot clear {path}: {exc}", _EXIT_FAILED) from None
    freed = max(before - _size(path), 0)
    cleared = counted(count, "entry", "entries")
    _print(f"{_PROG}: cleared {path}: {cleared}, {human_size(freed)} freed", sys.stdout)
    return _EXIT_OK


def _contents(path: Path) -> Contents | None:
    """What the file holds; None when there is no file."""
    if not path.exists():
        return None
    try:
        return read_contents(path, time.time())
    except NotOurs as refused:
        raise CommandError(f"{path} is not used as the cache: {refused}", _EXIT_FAILED) from None
    except sqlite3.Error as exc:
        raise CommandError(f"cannot read {path}: {exc}", _EXIT_FAILED) from None


def _size(path: Path) -> int:
    """The bytes of the cache file and of its write-ahead log (not its shared-memory index)."""
    total = 0
    for name in (path, path.with_name(path.name + "-wal")):
        with contextlib.suppress(OSError):  # not there (no writer has it open)
            total += name.stat().st_size
    return total


def _stored(moment: float | None) -> str:
    if moment is None:
        return "-"
    try:
        return _in_utc(datetime.fromtimestamp(moment, UTC))
    except (OverflowError, ValueError, OSError):  # not a time this machine can show
        return "unknown"

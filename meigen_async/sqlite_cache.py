"""`SQLiteCache`: a `SharedCache` in one SQLite file, for the processes of one host.

Standard library only (`sqlite3`): no server, no extra. Every statement runs on one worker
thread of the cache's own, holding one connection, so the event loop never blocks on the
file, and operations reach the file in the order they were made (a value is stored before
the lease guarding it is released). Writes made while an earlier batch is being committed
wait and go together in the next transaction.

    async with SQLiteCache("~/.cache/meigen-async/cache.sqlite") as cache:
        async with GallerySession(cache=cache) as gallery:
            image = await gallery.get_image(image_id)

Why it holds under load where other SQLite caches report "database is locked": WAL mode (readers
never wait for the writer), a busy timeout (a writer waits a moment for another process's
writer instead of failing), and every write transaction started with `BEGIN IMMEDIATE` (it takes
the write lock up front, so a transaction that has read never has to upgrade its lock, the case
SQLite refuses at once, busy timeout or not). Opening and reading never take the write lock, and
a write that cannot have it soon is skipped, with a back-off (`Backoff`, as for Redis).

Only a file marked as ours is ever written (see `_sqlite_file`): another program's database is
left byte for byte as it was.

Longer than 450 lines on purpose: one class, the `SharedCache` protocol on one connection and
one worker thread, whose methods share its batching and failure handling; what could be split
off already is (`_sqlite_file`, `_shared_codec`, `_backoff`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from ._backoff import Backoff
from ._shared_codec import (
    BadEntry,
    Stored,
    decode,
    lease_in_force,
    lease_pid,
    stored_image,
    stored_missing,
)
from ._sqlite_file import APPLICATION_ID, SCHEMA_VERSION, NotOurs, is_busy, open_file
from .models import GalleryImage
from .shared import SharedEntry

__all__ = ["APPLICATION_ID", "BUSY_TIMEOUT", "SCHEMA_VERSION", "SQLiteCache"]

logger = logging.getLogger("meigen_async")
_FIELDS = {"backend": "sqlite"}  # the `extra` of every record logged here

BUSY_TIMEOUT = 0.5
"""Seconds a write waits for another process's write lock before it is skipped.

Short: a write of this cache holds the lock for milliseconds, and a lock held longer (another
program, a process stopped mid-transaction) is waited out by the back-off, not by each write.
Reads never wait for it (WAL mode), but one queued behind a waiting write does.
"""

_T = TypeVar("_T")


# -- The cache -----------------------------------------------------------------------------------


class _Batch:
    """Writes committed together in one transaction, and the future their writers wait on."""

    def __init__(self) -> None:
        self.writes: list[Callable[[sqlite3.Connection, float], None]] = []
        self.started = False
        self.future: asyncio.Future[None] | None = None


class SQLiteCache:
    """Images and 404s in one SQLite file, shared by every process on the host that opens it.

    Give it to `GallerySession` as `cache=`; the session keeps its own in-process cache in
    front of it. The file and its table are made on first use. Of concurrent misses for one id
    in several processes, one fetches (a lease row with an expiry, as `RedisCache` uses a key).
    A lease row also names its process: one left by a process that is gone (killed mid-fetch)
    is taken over at once instead of waited out.

    At most `max_entries` images and 404s are kept: past it, those closest to expiry go first;
    expired rows are deleted as writes come. Each process trims after its own writes, so
    several processes writing at once may overshoot by a batch for a moment.

    Only a file marked as ours (`PRAGMA application_id`, and the schema version in
    `user_version`) or an empty one is written to; nothing is written, set or created before
    that is read. Another program's database (or a cache of an older release, which wrote no
    mark) gives one warning naming it, the cache answers as if it were empty for as long as it
    is open, and the file is left byte for byte as it was. So does a file that cannot be opened
    or is not a database (corrupt, a missing directory).

    The cache never raises for its file. Opening and reading never wait for the write lock.
    A write that cannot have the lock within `BUSY_TIMEOUT` (another process holds it), or any
    other failure (a full disk), gives one warning and is skipped, and so is every write for a
    back-off of 0.5 s, doubling after each failed try up to 5 s; reads go on meanwhile. The
    first write that works again logs once at INFO. A value that does not decode is a miss,
    logged and deleted,
    and a lease row that cannot be a lease is taken over; the session checks what does decode as
    it checks every shared entry.

    Args:
        path: The database file (`~` expanded). Its directory must exist.
        max_entries: Most images and 404s kept, together.
        timer: The back-off's clock, in seconds (`time.monotonic`); a fake one in tests.

    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_entries: int = 100_000,
        timer: Callable[[], float] = time.monotonic,
    ):
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.path: Path = Path(path).expanduser()
        self.max_entries: int = max_entries
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="meigen-sqlite")
        self._connection: sqlite3.Connection | None = None
        self._disabled = False
        self._closed = False
        self._finished = False  # set on the worker thread once the connection is closed
        # Used on the worker thread only: writes skipped while the lock was not to be had.
        self._timer = timer
        self._backoff = Backoff(timer=timer)
        self._lock = threading.Lock()
        self._batch: _Batch | None = None
        # Rows this process believes are in the file: counted for real only when a write
        # could take it past max_entries.
        self._estimate: int | None = None
        self._lease_ms: int | None = None  # the longest lease asked for, once one was

    # -- Lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> SQLiteCache:
        """The cache itself; the file is opened on first use."""
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the cache."""
        await self.close()

    async def close(self) -> None:
        """Commit the writes waiting, close the file and the worker thread. Idempotent.

        Afterwards every operation answers as if the cache were empty, without a word.
        """
        if self._closed:
            return
        batch = self._batch
        if batch is not None and batch.future is not None:
            await asyncio.shield(batch.future)
        self._closed = True
        await asyncio.get_running_loop().run_in_executor(self._executor, self._close_connection)
        self._executor.shutdown(wait=False)

    @property
    def closed(self) -> bool:
        """Whether `close` has been called."""
        return self._closed

    @property
    def available(self) -> bool:
        """False once the file turned out unusable (no database, not ours, cannot be opened)."""
        return not self._disabled

    def _close_connection(self) -> None:
        self._finished = True
        if self._connection is not None:
            connection, self._connection = self._connection, None
            with contextlib.suppress(sqlite3.Error):  # closing is best effort
                connection.close()

    # -- In the worker thread ------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection | None:
        """The open connection, opened and set up on first use; None once the file is unusable."""
        if self._connection is not None or self._disabled or self._finished:
            return self._connection
        if not self._backoff.ready():
            return None  # the last try met a lock: not again before the back-off has passed
        try:
            connection = open_file(self.path, BUSY_TIMEOUT)
        except NotOurs as refusal:
            self._disable(str(refusal), refused=True)
            return None
        except sqlite3.Error as error:
            if is_busy(error):
                # Another process holds the file for longer than the busy timeout: later.
                self._failed(error)
            else:
                self._disable(f"{type(error).__name__}: {error}")
            return None
        self._connection = connection
        return connection

    def _disable(self, reason: str, *, refused: bool = False) -> None:
        self._disabled = True
        if refused:
            logger.warning(
                "the SQLite cache %s is left as it is, running without it: %s",
                self.path,
                reason,
                extra=_FIELDS,
            )
        else:
            logger.warning(
                "the SQLite cache %s cannot be used (%s): running without it",
                self.path,
                reason,
                extra=_FIELDS,
            )

    def _run(
        self, operation: Callable[[sqlite3.Connection], _T], fallback: _T, *, write: bool
    ) -> _T:
        """Run `operation` on the connection; on a failure of the file, `fallback`.

        A `write` needs the write lock: it is skipped (`fallback`) during a back-off, and only
        a write that worked ends one. A read is never skipped but for a file not yet opened.
        """
        if write and not self._backoff.ready():
            return fallback
        connection = self._connect()
        if connection is None:
            return fallback
        started = self._timer()
        try:
            result = operation(connection)
        except sqlite3.Error as error:
            if connection.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    connection.execute("ROLLBACK")
            if isinstance(error, sqlite3.DatabaseError) and not isinstance(
                error, sqlite3.OperationalError
            ):
                # "file is not a database", "database disk image is malformed": it will not
                # get better by trying again.
                self._close_connection()
                self._disable(f"{type(error).__name__}: {error}")
            else:
                self._failed(error)
            return fallback
        if write and self._backoff.succeeded(started):
            failures, seconds = self._backoff.outage
            logger.info(
                "the SQLite cache %s is available again after %.1f s down (failures: %d)",
                self.path,
                seconds,
                failures,
                extra={**_FIELDS, "failures": failures},
            )
        return result

    def _failed(self, error: sqlite3.Error) -> None:
        if self._backoff.failed():
            logger.warning(
                "the SQLite cache %s failed (%s: %s): writes to it are skipped, tried again "
                "in %.1f s; using the in-process cache and the upstream meanwhile",
                self.path,
                type(error).__name__,
                error,
                self._backoff.delay,
                extra={**_FIELDS, "retry_after": self._backoff.delay},
            )
        else:
            logger.debug("the SQLite cache %s still fails: %s", self.path, error, extra=_FIELDS)

    def _commit(self, batch: _Batch) -> None:
        with self._lock:
            batch.started = True
            writes = list(batch.writes)

        def transaction(connection: sqlite3.Connection) -> None:
            now = time.time()
            connection.execute("BEGIN IMMEDIATE")
            for write in writes:
                write(connection, now)
            connection.execute("DELETE FROM entries WHERE expires <= ?", (now,))
            connection.execute("DELETE FROM leases WHERE expires <= ?", (now,))
            self._trim(connection, len(writes))
            connection.execute("COMMIT")

        self._run(transaction, None, write=True)

    def _trim(self, connection: sqlite3.Connection, written: int) -> None:
        """Keep at most `max_entries` rows: those closest to expiry go first."""
        if self._estimate is not None and self._estimate + written <= self.max_entries:
            self._estimate += written
            return
        count: int = connection.execute("SELECT count(*) FROM entries").fetchone()[0]
        if count > self.max_entries:
            connection.execute(
                "DELETE FROM entries WHERE id IN (SELECT id FROM entries ORDER BY expires LIMIT ?)",
                (count - self.max_entries,),
            )
            count = self.max_entries
        self._estimate = count

    # -- On the event loop ---------------------------------------------------------------------

    async def _call(
        self,
        operation: Callable[[sqlite3.Connection], _T],
        fallback: _T,
        *,
        write: bool = False,
    ) -> _T:
        if self._closed or self._disabled:
            return fallback
        loop = asyncio.get_running_loop()
        run = functools.partial(self._run, operation, fallback, write=write)
        try:
            return await loop.run_in_executor(self._executor, run)
        except RuntimeError:  # the executor was shut down by a close() racing this call
            return fallback

    async def _write(self, write: Callable[[sqlite3.Connection, float], None]) -> None:
        """Add `write` to the next batch and wait until it is committed (or has failed)."""
        if self._closed or self._disabled:
            return
        loop = asyncio.get_running_loop()
        with self._lock:
            batch = self._batch
            if batch is None or batch.started:
                batch = self._batch = _Batch()
            batch.writes.append(write)
        if batch.future is None:
            try:
                batch.future = asyncio.ensure_future(
                    loop.run_in_executor(self._executor, self._commit, batch)
                )
            except RuntimeError:  # shut down by a racing close()
                return
        # Shielded: a writer cancelled while waiting must not cancel the others' commit.
        await asyncio.shield(batch.future)

    # -- SharedCache ---------------------------------------------------------------------------

    async def get(self, key: str) -> SharedEntry | None:
        """The image or 404 stored under `key`; an image may be past its freshness."""

        def read(connection: sqlite3.Connection) -> tuple[object] | None:
            row = connection.execute(
                "SELECT value FROM entries WHERE id = ? AND expires > ?", (key, time.time())
            ).fetchone()
            return None if row is None else (row[0],)

        found = await self._call(read, None)
        if found is None:
            return None
        (raw,) = found
        try:
            return decode(raw)
        except BadEntry as error:
            logger.warning("SQLite cache entry %s dropped: %s", key, error, extra=_FIELDS)

            def drop(connection: sqlite3.Connection, now: float) -> None:
                # Only if unchanged: another process may have stored a good value meanwhile.
                connection.execute("DELETE FROM entries WHERE id = ? AND value = ?", (key, raw))

            await self._write(drop)
            return None

    async def set(
        self,
        key: str,
        image: GalleryImage,
        ttl: float,
        stale_window: float,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
    ) -> None:
        """Store `image` as fresh for `ttl` seconds, kept `stale_window` seconds longer.

        With validators (`etag`, `last_modified`), it is kept `VALIDATOR_KEEP` seconds longer
        still, so that a later fetch can revalidate it with a conditional request.
        """
        stored = stored_image(
            image, ttl, stale_window, now=time.time(), etag=etag, last_modified=last_modified
        )
        await self._put(key, stored)

    async def set_missing(self, key: str, ttl: float) -> None:
        """Remember a 404 under `key` for `ttl` seconds."""
        await self._put(key, stored_missing(ttl, now=time.time()))

    async def _put(self, key: str, stored: Stored | None) -> None:
        if stored is None:
            return

        def write(connection: sqlite3.Connection, now: float) -> None:
            connection.execute(
                "INSERT OR REPLACE INTO entries (id, kind, value, expires, stored) "
                "VALUES (?, ?, ?, ?, ?)",
                (key, stored.kind, stored.value, stored.until, now),
            )

        await self._write(write)

    async def invalidate(self, key: str) -> None:
        """Forget the image or 404 stored under `key`."""

        def delete(connection: sqlite3.Connection, now: float) -> None:
            connection.execute("DELETE FROM entries WHERE id = ?", (key,))

        await self._write(delete)

    async def clear(self) -> None:
        """Forget every image and 404 in the file, for every process; leases stay."""

        def delete_all(connection: sqlite3.Connection, now: float) -> None:
            connection.execute("DELETE FROM entries")

        await self._write(delete_all)

    async def try_lease(self, key: str, ms: int) -> str | None:
        """Take the lease on `key` for `ms` milliseconds, unless another process holds it.

        A lease row that holds nothing (expired, its process gone, or not a lease: an expiry
        that is no time or further ahead than a lease of `ms` lasts, a process id that is no
        process id) is taken over. While the file fails, a token is returned all the same:
        there is nobody to wait for.
        """
        token = secrets.token_hex(8)
        self._lease_ms = max(ms, self._lease_ms or 0)
        pid = os.getpid()

        def take(connection: sqlite3.Connection) -> bool:
            now = time.time()
            # One statement, so atomic: a lease row is taken if absent or expired.
            cursor = connection.execute(
                "INSERT INTO leases (id, token, expires, pid) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET token = excluded.token, "
                "expires = excluded.expires, pid = excluded.pid WHERE leases.expires <= ?",
                (key, token, now + ms / 1000, pid, now),
            )
            if cursor.rowcount == 1:
                return True
            row = _lease_row(connection, key)
            if row is None or _holds(row, now=now, ms=ms):
                return False
            # Nobody will store or release it (its process is gone), or no process wrote it:
            # taken over only if still that one, so that two takers cannot both win.
            cursor = connection.execute(
                "UPDATE leases SET token = ?, expires = ?, pid = ? WHERE id = ? AND token = ?",
                (token, now + ms / 1000, pid, key, row[0]),
            )
            return cursor.rowcount == 1

        return token if await self._call(take, True, write=True) else None

    async def lease_held(self, key: str) -> bool:
        """Whether some process holds the lease on `key` (False while the file fails)."""

        def held(connection: sqlite3.Connection) -> bool:
            row = _lease_row(connection, key)
            return row is not None and _holds(row, now=time.time(), ms=self._lease_ms)

        return await self._call(held, False)

    async def release(self, key: str, token: str) -> None:
        """Give up the lease taken with `token`; another process's lease is left alone."""

        def delete(connection: sqlite3.Connection) -> None:
            connection.execute("DELETE FROM leases WHERE id = ? AND token = ?", (key, token))

        await self._call(delete, None, write=True)


def _lease_row(connection: sqlite3.Connection, key: str) -> tuple[object, object, object] | None:
    """The token, expiry and process id of the lease row on `key`, as stored, if any."""
    row = connection.execute(
        "SELECT token, expires, pid FROM leases WHERE id = ?", (key,)
    ).fetchone()
    return None if row is None else (row[0], row[1], row[2])


def _holds(row: tuple[object, object, object], *, now: float, ms: int | None) -> bool:
    """Whether a lease row is a lease in force, of a process that runs."""
    pid = lease_pid(row[2])
    return pid is not None and lease_in_force(row[1], now=now, ms=ms) and _alive(pid)


def _alive(pid: int) -> bool:
    """Whether process `pid` runs on this host (the file is shared by one host's processes)."""
    if pid == os.getpid() or sys.platform == "win32":
        # On Windows os.kill(pid, 0) would terminate the process: trust the expiry there.
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, as another user's process
        return True
    return True

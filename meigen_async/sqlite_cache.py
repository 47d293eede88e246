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
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import math
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
from typing import Any, TypeVar

import attrs

from ._backoff import Backoff
from ._sqlite_file import APPLICATION_ID, SCHEMA_VERSION, NotOurs, is_busy, open_file
from .errors import InvalidResponse
from .models import GalleryImage, structure_image, unstructure_image
from .shared import SharedEntry, SharedImage, SharedMissing

__all__ = [
    "APPLICATION_ID",
    "BUSY_TIMEOUT",
    "SCHEMA_VERSION",
    "SQLiteCache",
    "decode_entry",
    "encode_image",
    "encode_missing",
]

logger = logging.getLogger("meigen_async")

BUSY_TIMEOUT = 0.5
"""Seconds a write waits for another process's write lock before it is skipped.

Short: a write of this cache holds the lock for milliseconds, and a lock held longer (another
program, a process stopped mid-transaction) is waited out by the back-off, not by each write.
Reads never wait for it (WAL mode), but one queued behind a waiting write does.
"""

_T = TypeVar("_T")

# -- Values (pure) -------------------------------------------------------------------------------


VALIDATOR_KEEP = 3600.0
"""Seconds an image with validators is kept past its stale window, to be revalidated."""


def encode_image(entry: SharedImage) -> str:
    """The JSON stored for an image entry: every field of `SharedImage`, the image as its `data`.

    Written from the attrs fields, so that a field added to `SharedImage` is stored without a
    change here.
    """
    value: dict[str, Any] = {}
    for field in attrs.fields(SharedImage):
        item = getattr(entry, field.name)
        value[field.name] = unstructure_image(item) if isinstance(item, GalleryImage) else item
    return json.dumps(value)


def encode_missing(entry: SharedMissing) -> str:
    """The JSON stored for a remembered 404: every field of `SharedMissing`."""
    return json.dumps(attrs.asdict(entry))


def decode_entry(kind: str, raw: str, *, image_id: str) -> SharedEntry:
    """Read what `encode_image` (`kind` "image") or `encode_missing` ("missing") wrote.

    Fields the entry class does not know are ignored, and fields it has but the value lacks
    take their defaults: a file written by a newer or older version reads as far as it can.

    Raises:
        ValueError: the value is not an entry (not a JSON object, an expiry that is not a
            finite positive time, an image that does not decode or is another id's).

    """
    try:
        value = json.loads(raw)
    except RecursionError as error:
        raise ValueError("nested too deeply") from error
    if not isinstance(value, dict):
        raise ValueError("not an entry")
    cls: type[SharedImage] | type[SharedMissing]
    if kind == "image":
        cls, expiry = SharedImage, "fresh_until"
    elif kind == "missing":
        cls, expiry = SharedMissing, "until"
    else:
        raise ValueError(f"unknown kind {kind!r}")
    if not _is_time(value.get(expiry)):
        raise ValueError("its expiry is not a time")
    fields: dict[str, Any] = {}
    for field in attrs.fields(cls):
        if field.name not in value:
            continue
        item = value[field.name]
        if field.name == "image":
            try:
                item = structure_image(item)
            except InvalidResponse as error:
                raise ValueError(str(error)) from error
            if item.id != image_id:
                raise ValueError(f"it holds image {item.id!r}")
        elif field.name == expiry:
            item = float(item)
        elif not isinstance(item, (str, int, float, type(None))):
            raise ValueError(f"its {field.name} is not a plain value")
        fields[field.name] = item
    try:
        return cls(**fields)
    except (TypeError, ValueError) as error:  # a field it needs is missing
        raise ValueError(f"not an entry: {error}") from error


def _is_time(value: object) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


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
    logged and deleted.

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
        self.path = Path(path).expanduser()
        self.max_entries = max_entries
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
                "the SQLite cache %s is left as it is, running without it: %s", self.path, reason
            )
        else:
            logger.warning(
                "the SQLite cache %s cannot be used (%s): running without it", self.path, reason
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
            logger.info("the SQLite cache %s is available again", self.path)
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
            )
        else:
            logger.debug("the SQLite cache %s still fails: %s", self.path, error)

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

    async def get(self, image_id: str) -> SharedEntry | None:
        """The image or 404 stored for `image_id`; an image may be past its freshness."""

        def read(connection: sqlite3.Connection) -> tuple[str, str] | None:
            row = connection.execute(
                "SELECT kind, value FROM entries WHERE id = ? AND expires > ?",
                (image_id, time.time()),
            ).fetchone()
            return None if row is None else (str(row[0]), str(row[1]))

        found = await self._call(read, None)
        if found is None:
            return None
        kind, raw = found
        try:
            return decode_entry(kind, raw, image_id=image_id)
        except ValueError as error:
            logger.warning("SQLite cache entry for %s dropped: %s", image_id, error)

            def drop(connection: sqlite3.Connection, now: float) -> None:
                # Only if unchanged: another process may have stored a good value meanwhile.
                connection.execute(
                    "DELETE FROM entries WHERE id = ? AND value = ?", (image_id, raw)
                )

            await self._write(drop)
            return None

    async def set(
        self,
        image_id: str,
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
        if ttl <= 0:
            return
        fresh_until = time.time() + ttl
        entry = SharedImage(
            image=image, fresh_until=fresh_until, etag=etag, last_modified=last_modified
        )
        value = encode_image(entry)
        expires = fresh_until + max(stale_window, 0.0)
        if etag is not None or last_modified is not None:
            expires += VALIDATOR_KEEP
        await self._write(_upsert(image_id, "image", value, expires))

    async def set_missing(self, image_id: str, ttl: float) -> None:
        """Remember a 404 for `image_id` for `ttl` seconds."""
        if ttl <= 0:
            return
        until = time.time() + ttl
        await self._write(_upsert(image_id, "missing", encode_missing(SharedMissing(until)), until))

    async def invalidate(self, image_id: str) -> None:
        """Forget the image or 404 stored for `image_id`."""

        def delete(connection: sqlite3.Connection, now: float) -> None:
            connection.execute("DELETE FROM entries WHERE id = ?", (image_id,))

        await self._write(delete)

    async def clear(self) -> None:
        """Forget every image and 404 in the file, for every process; leases stay."""

        def delete_all(connection: sqlite3.Connection, now: float) -> None:
            connection.execute("DELETE FROM entries")

        await self._write(delete_all)

    async def try_lease(self, image_id: str, ms: int) -> str | None:
        """Take the lease to fetch `image_id` for `ms` milliseconds, unless another holds it.

        While the file fails, a token is returned all the same: there is nobody to wait for.
        """
        token = secrets.token_hex(8)

        pid = os.getpid()

        def take(connection: sqlite3.Connection) -> bool:
            now = time.time()
            # One statement, so atomic: a lease row is taken if absent or expired.
            cursor = connection.execute(
                "INSERT INTO leases (id, token, expires, pid) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET token = excluded.token, "
                "expires = excluded.expires, pid = excluded.pid WHERE leases.expires <= ?",
                (image_id, token, now + ms / 1000, pid, now),
            )
            if cursor.rowcount == 1:
                return True
            holder = _holder(connection, image_id)
            if holder is None or _alive(holder[1]):
                return False
            # Its process is gone (killed mid-fetch): nobody will store or release it. Taken
            # over only if still that one, so that two takers cannot both win.
            cursor = connection.execute(
                "UPDATE leases SET token = ?, expires = ?, pid = ? WHERE id = ? AND token = ?",
                (token, now + ms / 1000, pid, image_id, holder[0]),
            )
            return cursor.rowcount == 1

        return token if await self._call(take, True, write=True) else None

    async def lease_held(self, image_id: str) -> bool:
        """Whether some process holds the lease to fetch `image_id` (False while the file fails)."""

        def held(connection: sqlite3.Connection) -> bool:
            holder = _holder(connection, image_id)
            return holder is not None and _alive(holder[1])

        return await self._call(held, False)

    async def release(self, image_id: str, token: str) -> None:
        """Give up the lease taken with `token`; another process's lease is left alone."""

        def delete(connection: sqlite3.Connection) -> None:
            connection.execute("DELETE FROM leases WHERE id = ? AND token = ?", (image_id, token))

        await self._call(delete, None, write=True)


def _upsert(
    image_id: str, kind: str, value: str, expires: float
) -> Callable[[sqlite3.Connection, float], None]:
    def write(connection: sqlite3.Connection, now: float) -> None:
        connection.execute(
            "INSERT OR REPLACE INTO entries (id, kind, value, expires) VALUES (?, ?, ?, ?)",
            (image_id, kind, value, expires),
        )

    return write


def _holder(connection: sqlite3.Connection, image_id: str) -> tuple[str, int] | None:
    """The token and process id of the lease on `image_id` still in force, if any."""
    row = connection.execute(
        "SELECT token, pid FROM leases WHERE id = ? AND expires > ?", (image_id, time.time())
    ).fetchone()
    return None if row is None else (str(row[0]), int(row[1]))


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

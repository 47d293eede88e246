"""Whether a SQLite file is the cache's own, and how one is made so (`sqlite3`, no asyncio).

A file is ours when its header says so: `PRAGMA application_id` is `APPLICATION_ID` and
`PRAGMA user_version` is `SCHEMA_VERSION`. That is read before anything is written, set or
created in the file (`read_marks`, reads only), and judged by a plain function (`judge`). Only
two kinds of file are ever written: ours, and an empty one (no tables, indexes, views or
triggers, and nothing in either mark), which `set_up` makes ours. Anything else
(another program's database, a cache of an older release that wrote no `application_id`, one
of ours from a newer release) is left byte for byte as it was, its journal mode included.

`read_contents` and `clear_file` are what `meigen-async cache info` and `clear` do to a file,
by the same rules: the marks first, and only a file of ours emptied.
"""

from __future__ import annotations

import contextlib
import enum
import sqlite3
import time
from pathlib import Path

import attrs

__all__ = [
    "APPLICATION_ID",
    "SCHEMA_VERSION",
    "Contents",
    "Marks",
    "NotOurs",
    "Verdict",
    "clear_file",
    "describe",
    "is_busy",
    "judge",
    "open_file",
    "read_contents",
    "read_marks",
    "set_up",
    "use_wal",
]

APPLICATION_ID = 0x4D474153
"""Kept in the file's `application_id`: "MGAS", for MeiGen async. A file without it is not ours."""

SCHEMA_VERSION = 3
"""Kept in the file's `user_version`: a file of ours of an older version is started afresh,
one of a newer version left alone, never misread. 2: the first with `APPLICATION_ID`, and
entries keyed by gallery as well as id. 3: when each entry was stored (`stored`)."""

TABLES = ("entries", "leases")
"""The tables of ours: the only ones ever dropped, and only in a file marked ours."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    expires REAL NOT NULL,
    stored REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_expires ON entries (expires);
CREATE TABLE IF NOT EXISTS leases (
    id TEXT PRIMARY KEY,
    token TEXT NOT NULL,
    expires REAL NOT NULL,
    pid INTEGER NOT NULL
);
"""


@attrs.frozen
class Marks:
    """What a file's header and schema say about it, read without writing anything."""

    application_id: int
    """The file's `PRAGMA application_id` (0 when nobody set one)."""
    user_version: int
    """The file's `PRAGMA user_version` (0 when nobody set one)."""
    objects: frozenset[str]
    """The names of its tables, indexes, views and triggers."""


class Verdict(enum.Enum):
    """What the cache may do with a file, from its `Marks`."""

    READY = "ready"
    """Ours, of this version, with its tables: used as it is, nothing written on opening."""
    SET_UP = "set up"
    """Empty, or ours but of an older version or missing a table: made ours under the write lock."""
    NEWER = "newer"
    """Ours, of a newer version: left alone."""
    FOREIGN = "foreign"
    """Not ours: left alone."""


def judge(marks: Marks) -> Verdict:
    """What may be done with a file that has `marks`."""
    if marks.application_id == APPLICATION_ID:
        if marks.user_version > SCHEMA_VERSION:
            return Verdict.NEWER
        if marks.user_version == SCHEMA_VERSION and marks.objects.issuperset(TABLES):
            return Verdict.READY
        return Verdict.SET_UP
    if marks.application_id == 0 and marks.user_version == 0 and not marks.objects:
        return Verdict.SET_UP
    return Verdict.FOREIGN


def describe(marks: Marks) -> str:
    """Why a file judged `NEWER` or `FOREIGN` is left alone, in plain words for a warning."""
    if judge(marks) is Verdict.NEWER:
        return (
            f"it was made by a newer meigen_async (schema version {marks.user_version}; "
            f"this one reads {SCHEMA_VERSION})"
        )
    return (
        f"it is not a meigen_async cache (application_id {marks.application_id}, "
        f"user_version {marks.user_version}, {len(marks.objects)} objects in its schema). "
        "If an earlier meigen_async made it, delete it, or give another path"
    )


class NotOurs(Exception):
    """A file that is not to be touched; its message says why, in plain words."""


def open_file(path: Path, wait: float) -> sqlite3.Connection:
    """A connection to `path`, a file of ours in WAL mode; made ours first if it is empty.

    Reads the marks before anything is written, set or created, and takes the write lock
    only when there is something to create: opening a file of ours that is set up waits for
    no other process's writer.

    Raises:
        NotOurs: another program's file, or one of a newer release; left as it was.
        sqlite3.Error: the file cannot be opened or read, is not a database, or is locked
            past `wait` seconds (`is_busy`).

    """
    # isolation_level=None: no transactions opened behind our back; each write says BEGIN
    # itself. timeout: the busy timeout, set without a PRAGMA.
    connection = sqlite3.connect(path, timeout=wait, isolation_level=None, check_same_thread=False)
    try:
        marks = read_marks(connection)
        if judge(marks) is Verdict.SET_UP:
            set_up(connection)
            marks = read_marks(connection)
        if judge(marks) is not Verdict.READY:
            raise NotOurs(describe(marks))
        mode = use_wal(connection, wait)
        if mode != "wal":
            raise sqlite3.OperationalError(f"WAL mode refused (journal mode {mode!r})")
        # In WAL mode, NORMAL commits without an fsync: a killed process loses nothing
        # committed; only a power cut can lose the last transactions, never the file.
        connection.execute("PRAGMA synchronous = NORMAL")
    except BaseException:
        connection.close()
        raise
    return connection


def read_marks(connection: sqlite3.Connection) -> Marks:
    """The file's marks, read in one read transaction: no lock that stops a writer, no write.

    Raises:
        sqlite3.Error: the file cannot be read (not a database, locked past the busy timeout).

    """
    connection.execute("BEGIN DEFERRED")
    try:
        marks = _marks(connection)
    except BaseException:
        _rollback(connection)
        raise
    connection.execute("COMMIT")
    return marks


def set_up(connection: sqlite3.Connection) -> None:
    """Make the file ours, if it is still to be made so once the write lock is held.

    Judged again under the lock: another process of ours may have made it ours meanwhile
    (nothing to do), or another program written to it (left alone). A file of ours of an older
    version has its tables dropped first: its entries would be misread.

    Raises:
        sqlite3.Error: the write lock was not had within the busy timeout, or the write failed.

    """
    connection.execute("BEGIN IMMEDIATE")
    try:
        marks = _marks(connection)
        if judge(marks) is Verdict.SET_UP:
            if marks.application_id == APPLICATION_ID and marks.user_version != SCHEMA_VERSION:
                for table in TABLES:
                    connection.execute(f"DROP TABLE IF EXISTS {table}")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    connection.execute(statement)
            connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        connection.execute("COMMIT")
    except BaseException:
        _rollback(connection)
        raise


def _rollback(connection: sqlite3.Connection) -> None:
    # Best effort, and never in place of the error that led here: some errors (a full disk)
    # have already rolled the transaction back.
    if connection.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            connection.execute("ROLLBACK")


def _marks(connection: sqlite3.Connection) -> Marks:
    application_id = connection.execute("PRAGMA application_id").fetchone()[0]
    user_version = connection.execute("PRAGMA user_version").fetchone()[0]
    objects = connection.execute("SELECT name FROM sqlite_master").fetchall()
    return Marks(int(application_id), int(user_version), frozenset(str(row[0]) for row in objects))


def use_wal(connection: sqlite3.Connection, wait: float) -> str:
    """Put a file of ours in WAL mode (unless it is already), trying for `wait` seconds.

    Only a file judged ours gets here: switching is a write to the file's header. Several
    processes opening a new file at once race to switch it, and SQLite answers the losers
    "database is locked" at once, without waiting out the busy timeout (seen under load with
    four processes): so try again here, in the worker thread, as the timeout would.

    Returns:
        The journal mode the file is in afterwards ("wal" unless SQLite refused).

    Raises:
        sqlite3.OperationalError: still locked after `wait` seconds.

    """
    mode = str(connection.execute("PRAGMA journal_mode").fetchone()[0]).lower()
    if mode == "wal":  # a read: opening a file already in WAL mode needs no lock
        return mode
    deadline = time.monotonic() + wait
    pause = 0.005
    while True:
        try:
            return str(connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower()
        except sqlite3.OperationalError as error:
            if not is_busy(error) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


def is_busy(error: sqlite3.Error) -> bool:
    """Whether `error` is another connection's lock ("database is locked"), which passes."""
    code = getattr(error, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


# -- Looking inside, and emptying: `meigen-async cache` -------------------------------------------


@attrs.frozen
class Contents:
    """What a cache file holds: its entries still in force, and when they were stored."""

    images: int
    """Images stored."""
    missing: int
    """404s remembered."""
    oldest: float | None
    """When the oldest entry was stored, in seconds since the epoch; None without entries."""
    newest: float | None
    """When the newest entry was stored, likewise."""


def read_contents(path: Path, now: float) -> Contents:
    """What the cache file at `path` holds at `now`, read from the file opened read-only.

    A file of ours of an older version, or an empty one, holds nothing this version reads.

    Raises:
        NotOurs: another program's file, or one of a newer release.
        sqlite3.Error: it is missing, not a database, or cannot be read.

    """
    connection = sqlite3.connect(
        f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None
    )
    try:
        marks = read_marks(connection)
        verdict = judge(marks)
        if verdict is Verdict.SET_UP:
            return Contents(images=0, missing=0, oldest=None, newest=None)
        if verdict is not Verdict.READY:
            raise NotOurs(describe(marks))
        rows = connection.execute(
            "SELECT kind, count(*), min(stored), max(stored) FROM entries WHERE expires > ? "
            "GROUP BY kind",
            (now,),
        ).fetchall()
    finally:
        connection.close()
    counts = {str(kind): int(count) for kind, count, _, _ in rows}
    # Whatever SQLite's loose typing let into the column, only numbers are times.
    times = [
        float(moment)
        for _, _, first, last in rows
        for moment in (first, last)
        if isinstance(moment, (int, float)) and not isinstance(moment, bool)
    ]
    return Contents(
        images=counts.get("image", 0),
        missing=counts.get("missing", 0),
        oldest=min(times, default=None),
        newest=max(times, default=None),
    )


def clear_file(path: Path, wait: float) -> int:
    """Delete every entry of the cache file at `path` and give the space back; how many went.

    Leases stay: they are other processes' fetches in flight. Under the write lock, as every
    write, so that processes using the file meanwhile see it whole. A file that is not ours is
    left as it was.

    Raises:
        NotOurs: another program's file, or one of a newer release.
        sqlite3.Error: it cannot be opened, or is locked past `wait` seconds.

    """
    connection = open_file(path, wait)
    try:
        connection.execute("BEGIN IMMEDIATE")
        try:
            count = int(connection.execute("SELECT count(*) FROM entries").fetchone()[0])
            connection.execute("DELETE FROM entries")
        except BaseException:
            _rollback(connection)
            raise
        connection.execute("COMMIT")
        # The space back to the file system: VACUUM waits for no reader, but another process
        # writing meanwhile makes it fail; the entries are gone all the same.
        with contextlib.suppress(sqlite3.OperationalError):
            connection.execute("VACUUM")
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        connection.close()
    return count

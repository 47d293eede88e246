"""The writing side of an export: `ExportRun`, its threads, its counts.

Posts are appended to their shards' files as they come, in a thread of the run's own (with
the bytes of their pictures when the download path kept them in memory); each closed shard
is committed in order (renames, status table, stats) in another; staged downloads (those
not kept in memory) are removed in a few more. `_export` feeds it from the event loop.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import shutil
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import attrs

from ._export_files import (
    Arrow,
    count_tail,
    remove_staged,
    write_card,
    write_metadata,
    write_stats,
    write_status,
)
from ._export_rules import STATUSES, ExportFormat, Sample
from ._export_shards import Shard, ShardRecord, Tail, shard_stats
from ._export_writers import ShardFile, shard_file
from ._media_kept import Held
from .errors import ExportError
from .export import ExportProgress

__all__ = ["Event", "ExportRun"]

_WRITERS = 2
"""Closed shards waiting for their commit, at most, while the next ones are written."""
_EVENTS = 64
"""Posts (and closes) queued for the writer, at most; the pipeline waits past that."""


Event = tuple[int, Sequence[Sample], Mapping[Path, Held]] | Shard | None
"""For the writer: a post's samples for shard number N (with the bytes of its pictures kept
in memory, by path), a shard to close, or the end."""


class ExportRun:
    """One export's writing, in threads of its own that none outlives it.

    Posts are appended to their shards' files as they come, in one thread; each closed shard
    is committed (fsync, renames, status table, stats) in another, in order; staged
    downloads are removed in a few more.
    """

    def __init__(
        self,
        out: Path,
        fmt: ExportFormat,
        shard_size: int,
        arrow: Arrow | None,
        *,
        own_staging: bool,
        staging: Path,
    ):
        self.out = out
        self.fmt = fmt
        self.shard_size = shard_size
        self.arrow = arrow
        self.own_staging = own_staging
        self.staging = staging
        self.queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=_EVENTS)
        self.writer: asyncio.Task[None] | None = None
        self.appender = _thread("write")
        self.committer = _thread("commit")
        self.cleaners = concurrent.futures.ThreadPoolExecutor(8, "meigen-export-clean")
        self.files: dict[int, ShardFile] = {}  # the appender thread's alone
        self.commits: collections.deque[concurrent.futures.Future[tuple[Shard, ShardFile]]] = (
            collections.deque()
        )
        self.cleaning: list[concurrent.futures.Future[None]] = []
        self.shards_written = 0
        self.counts = dict.fromkeys(STATUSES, 0)
        self.live = dict.fromkeys(STATUSES, 0)  # as samples are made, for progress
        self.bytes = 0
        self.live_bytes = 0
        self.duplicates = 0

    def tally(self, samples: Iterable[Sample]) -> None:
        for sample in samples:
            self.live[sample.row["status"]] += 1
            if sample.picture is not None:
                self.live_bytes += sample.picture.bytes

    def progress(self, inputs: int) -> ExportProgress:
        live = self.live
        return ExportProgress(
            inputs=inputs,
            samples=sum(live.values()),
            written=live["success"],
            failed=live["not_found"] + live["failed_to_download"] + live["refused"],
            opted_out=live["opted_out"],
            bytes=self.live_bytes,
        )

    # -- On the event loop ---------------------------------------------------------------------

    async def hand_over(self, event: Event) -> None:
        """Queue `event` for the writer, or raise the writer's failure."""
        assert self.writer is not None
        if not self.writer.done() and not self.queue.full():
            self.queue.put_nowait(event)  # no task and no wait for each post: most find room
            return
        put = asyncio.ensure_future(self.queue.put(event))
        try:
            await asyncio.wait({put, self.writer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not put.done():
                put.cancel()
        if not put.done() or put.cancelled():
            self.writer.result()  # raises what stopped the writer
            raise ExportError("the export's writer stopped")

    async def write_all(self) -> None:
        """The writer task: hands the queued events to the appender thread, a batch at a time."""
        loop = asyncio.get_running_loop()
        job: asyncio.Future[None] | None = None
        try:
            while True:
                batch = [await self.queue.get()]
                while len(batch) < _EVENTS and not self.queue.empty():
                    batch.append(self.queue.get_nowait())
                job = loop.run_in_executor(self.appender, self._apply, batch)
                await asyncio.shield(job)
                self._collect()
                if batch[-1] is None:
                    break
            while self.commits:
                await asyncio.shield(asyncio.wrap_future(self.commits[0]))
                self._collect()
        finally:
            # Threads cannot be stopped: what they write is finished (whole) first, so that
            # nothing still writes in OUT once the export has returned; open shards are dropped.
            if job is not None:
                await asyncio.gather(job, return_exceptions=True)
            await asyncio.gather(
                loop.run_in_executor(self.appender, self._discard),
                *(asyncio.wrap_future(commit) for commit in self.commits),
                return_exceptions=True,
            )

    def _collect(self) -> None:
        """Count the shards committed so far; raise what failed a commit."""
        while self.commits and self.commits[0].done():
            shard, written = self.commits.popleft().result()
            self.shards_written += 1
            self.duplicates += shard.duplicates
            self.bytes += written.size
            for sample in written.samples:
                self.counts[sample.row["status"]] += 1

    # -- In the appender thread ----------------------------------------------------------------

    def _apply(self, batch: list[Event]) -> None:
        for event in batch:
            if isinstance(event, tuple):
                number, samples, held = event
                target = self.files.get(number)
                if target is None:
                    target = self.files[number] = self._file(number)
                for sample in samples:
                    picture = sample.picture
                    target.add(sample, held.get(picture.path) if picture is not None else None)
            elif isinstance(event, Shard):
                target = self.files.pop(event.number, None) or self._file(event.number)
                target.close()
                # At most two shards wait for their commit: their rows are what is held.
                pending = [commit for commit in self.commits if not commit.done()]
                if len(pending) >= _WRITERS:
                    concurrent.futures.wait(pending[:1])
                self.commits.append(self.committer.submit(self._commit, event, target))

    def _file(self, number: int) -> ShardFile:
        try:
            return shard_file(self.out, self.fmt, number, self.arrow, verify=not self.own_staging)
        except OSError as exc:
            raise ExportError(f"cannot write shard {number} in {self.out}: {exc}") from exc

    def _discard(self) -> None:
        for open_file in self.files.values():
            open_file.discard()
        self.files.clear()

    # -- In the committer thread ---------------------------------------------------------------

    def _commit(self, shard: Shard, written: ShardFile) -> tuple[Shard, ShardFile]:
        """Rename `shard`'s data into place, then its status table and stats (it is done).

        Its staged downloads are removed after, in the cleaning threads.
        """
        try:
            written.commit()
        except OSError as exc:
            raise ExportError(f"cannot write shard {shard.number} in {self.out}: {exc}") from exc
        write_status(self.out, written, self.arrow)
        stats = shard_stats(
            attrs.evolve(shard, samples=tuple(written.samples)),
            fmt=self.fmt,
            shard_size=self.shard_size,
            size=written.size,
            started=written.opened,
            ended=datetime.now(UTC),
        )
        write_stats(self.out, shard.number, stats)
        if self.own_staging:
            # Those done are dropped: what is kept does not grow with the number of samples.
            self.cleaning = [job for job in self.cleaning if not job.done()]
            for image_id in written.staged:
                self.cleaning.append(self.cleaners.submit(remove_staged, self.staging, image_id))
        return shard, written

    def count_tail(self, tail: Tail) -> None:
        """In a thread, once every shard is committed: count `tail` in its shard's stats."""
        count_tail(self.out, tail, self.fmt, self.shard_size)
        self.duplicates += tail.duplicates

    def finish(self, records: list[ShardRecord], card: str) -> None:
        """In a thread: imagefolder's metadata, the card, and the staging directory gone."""
        concurrent.futures.wait(self.cleaning)
        if self.fmt == "imagefolder":
            write_metadata(self.out, records, self.arrow)
        write_card(self.out, card)
        if self.own_staging:
            shutil.rmtree(self.staging, ignore_errors=True)

    def shutdown(self) -> None:
        """Stop the threads (each has finished its work: `write_all` waited for it)."""
        for pool in (self.appender, self.committer, self.cleaners):
            pool.shutdown(wait=True, cancel_futures=True)


def _thread(name: str) -> concurrent.futures.ThreadPoolExecutor:
    # One thread: its jobs run one at a time, in the order given.
    return concurrent.futures.ThreadPoolExecutor(1, f"meigen-export-{name}")

"""Dataset exports, the pipeline: inputs in order, pictures through the session's own download.

Inputs are read lazily and worked on `window` at a time, each a post's data and pictures
(`get_image` and the media downloader: host, type, size and pixel checks, retries, the rate
limit, records). Without `media=`, each picture's bytes are kept in memory by the download
path (`KEEP`, at most `KEPT_BYTES` at once) and handed with its post to the writer, which
writes them once, into the shard; with it, or past the bound, the writer reads the file.
The outcomes are taken in input order, so that which shard a post lands in depends on the
input alone, never on timing. Each post's samples are appended to its shard's file as they
come (`_export_writers`, in a thread of the export's own), and each shard that
`ShardAssembler` closes is committed in order (renames, status table, stats) in another. At
most a shard filling and two waiting for their commit are held, whatever the number of
samples. The decisions are `_export_rules` and `_export_shards`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
)
from pathlib import Path

import attrs

from ._bulk import async_items, should_stop, transport_streak
from ._export_card import Card, card_text
from ._export_files import load_arrow, prepare, read_records
from ._export_rules import (
    FORMATS,
    MAX_SHARD_SIZE,
    STATUSES,
    ExportFormat,
    input_id,
    sample_rows,
)
from ._export_run import ExportRun
from ._export_shards import Marker, Shard, ShardAssembler, ShardRecord, Tail
from ._media_files import UNSYNCED
from ._media_kept import KEEP, Held, Keeper, Kept
from ._protocol import validate_image_id
from .errors import ExportError, MediaError, MeigenError, UpstreamUnreachable
from .export import ExportProgress, ExportSummary
from .media import MediaFile
from .models import GalleryImage

__all__ = ["STAGING_NAME", "export_images"]

STAGING_NAME = ".media"
"""The export's own download directory in OUT (without `media=`): emptied as shards are done."""


KEPT_BYTES = 128 * 1024 * 1024
"""The most bytes of pictures an export with its own staging holds in memory at once (those
of the posts in flight and queued for the writer, and a Parquet row group's); a picture past
it is staged in a file, as with `media=`."""

Download = Callable[[GalleryImage, Path], Awaitable[tuple[list[MediaFile], MediaError | None]]]
Item = str | GalleryImage


@attrs.frozen
class _Outcome:
    image: GalleryImage | None
    files: tuple[MediaFile, ...] = ()
    error: MeigenError | None = None
    held: Mapping[Path, Held] = attrs.field(factory=dict)
    """The bytes of the pictures kept in memory, by their `MediaFile.path`."""


_DUPLICATE = _Outcome(None)


async def export_images(
    items: Iterable[Item] | AsyncIterable[Item],
    out: str | os.PathLike[str],
    *,
    get_image: Callable[[str], Awaitable[GalleryImage]],
    download: Download,
    fmt: ExportFormat,
    shard_size: int,
    resume: bool,
    media: str | os.PathLike[str] | None,
    ignore_opt_out: bool,
    window: int,
    stop_after: int,
    progress: Callable[[ExportProgress], None] | None,
    command: str,
    gallery: str,
    source: str,
) -> ExportSummary:
    """Export `items` into `out`; see `GallerySession.export`."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if not 1 <= shard_size <= MAX_SHARD_SIZE:
        raise ValueError(f"shard_size must be from 1 to {MAX_SHARD_SIZE:,}, got {shard_size}")
    arrow = load_arrow()
    if fmt == "parquet" and arrow is None:
        raise ExportError("the parquet format needs pyarrow: pip install 'meigen-async[dataset]'")
    started = time.monotonic()
    root = Path(out)
    marker = Marker(fmt, shard_size, ignore_opt_out)
    done = await asyncio.to_thread(prepare, root, marker, resume=resume, arrow=arrow is not None)
    staging = Path(media) if media is not None else root / STAGING_NAME
    run = ExportRun(root, fmt, shard_size, arrow, own_staging=media is None, staging=staging)
    try:
        source_items = async_items(items)
        writer = asyncio.create_task(run.write_all(), name="meigen-async export writer")
        run.writer = writer
        try:
            seen = await _skip_done(source_items, done)
            start = done[-1].input_end if done else 0
            # With its own staging, the pictures' bytes go from the download to the shard in
            # memory (each written once); a picture past KEPT_BYTES, or reused from a media
            # directory, is read from its file. imagefolder's shard links staged files
            # themselves: they are synced as written.
            keeper = Keeper(KEPT_BYTES) if media is None else None
            work = _work(
                get_image,
                download,
                staging,
                sync=media is not None or fmt == "imagefolder",
                keeper=keeper,
            )
            try:
                tail = await _assemble(
                    run,
                    _outcomes(source_items, seen, start=start, work=work, window=window),
                    next_shard=len(done),
                    start=start,
                    ignore_opt_out=ignore_opt_out,
                    stop_after=stop_after,
                    progress=progress,
                )
            except UpstreamUnreachable:
                # A clean stop: the shards already handed over are written before it is told.
                await run.hand_over(None)
                await writer
                raise
            await run.hand_over(None)
            await writer
            if tail is not None:  # counted in the last shard's stats, once they are written
                await asyncio.to_thread(run.count_tail, tail)
        finally:
            with contextlib.suppress(AttributeError):
                await source_items.aclose()  # type: ignore[attr-defined]
            if not writer.done():
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError, ExportError):
                    await writer
        records = await asyncio.to_thread(read_records, root, marker)
        card = Card(
            format=fmt,
            counts=_total(records),
            shards=len(records),
            bytes=sum(record.bytes for record in records),
            command=command,
            gallery=gallery,
            source=source,
            ignore_opt_out=ignore_opt_out,
            metadata_name="metadata.parquet" if arrow is not None else "metadata.jsonl",
        )
        await asyncio.to_thread(run.finish, records, card_text(card))
        return ExportSummary(
            out=root,
            format=fmt,
            shards=len(records),
            shards_written=run.shards_written,
            counts=dict(run.counts),
            bytes=run.bytes,
            duplicates=run.duplicates,
            seconds=time.monotonic() - started,
        )
    finally:
        await asyncio.to_thread(run.shutdown)


def _total(records: Iterable[ShardRecord]) -> dict[str, int]:
    counts = dict.fromkeys(STATUSES, 0)
    for record in records:
        for status, count in record.counts.items():
            counts[status] += count
    return counts


async def _skip_done(source: AsyncIterator[Item], done: list[ShardRecord]) -> set[str]:
    """Read past the inputs of the done shards, checking they are the same; their ids."""
    seen: set[str] = set()
    if not done:
        return seen
    bounds = {record.input_start: record.first_id for record in done}
    bounds.update({record.input_end - 1: record.last_id for record in done})
    for position in range(done[-1].input_end):
        try:
            item = await anext(source)
        except StopAsyncIteration:
            raise ExportError(
                f"the input ends after {position:,} items, but the done shards hold "
                f"{done[-1].input_end:,}: resume with the input the export was started with"
            ) from None
        name = input_id(item)
        expected = bounds.get(position)
        if expected is not None and name != expected:
            raise ExportError(
                f"item {position + 1:,} of the input is {name!r} where the done shards say "
                f"{expected!r}: resume with the input the export was started with"
            )
        seen.add(name)
    return seen


def _work(
    get_image: Callable[[str], Awaitable[GalleryImage]],
    download: Download,
    staging: Path,
    *,
    sync: bool,
    keeper: Keeper | None,
) -> Callable[[Item], Awaitable[_Outcome]]:
    async def one(item: Item) -> _Outcome:
        # In this task only: staged pictures are read back into a shard that is fsynced
        # whole (tar, Parquet); syncing each first would write every byte to disk twice.
        UNSYNCED.set(not sync)
        kept = Kept(keeper) if keeper is not None else None
        KEEP.set(kept)
        try:
            image = item if isinstance(item, GalleryImage) else await get_image(item)
            validate_image_id(image.id)  # no path is made of another id
        except MeigenError as refused:
            return _Outcome(None, error=refused)
        try:
            files, failure = await download(image, staging)
        except MeigenError as failed:
            return _Outcome(image, error=failed)
        return _Outcome(image, tuple(files), failure, kept.files if kept is not None else {})

    return one


async def _outcomes(
    source: AsyncIterator[Item],
    seen: set[str],
    *,
    start: int,
    work: Callable[[Item], Awaitable[_Outcome]],
    window: int,
) -> AsyncGenerator[tuple[int, Item, _Outcome], None]:
    """Each input's outcome, in input order, with at most `window` inputs in hand.

    A duplicate (an id seen before) is given `_DUPLICATE`, and no work.
    """
    pending: collections.deque[tuple[int, Item, asyncio.Future[_Outcome]]] = collections.deque()
    position = start
    exhausted = False
    loop = asyncio.get_running_loop()
    try:
        while True:
            while not exhausted and len(pending) < window:
                try:
                    item = await anext(source)
                except StopAsyncIteration:
                    exhausted = True
                    break
                name = input_id(item)
                if name in seen:
                    future: asyncio.Future[_Outcome] = loop.create_future()
                    future.set_result(_DUPLICATE)
                else:
                    seen.add(name)
                    future = asyncio.ensure_future(work(item))
                pending.append((position, item, future))
                position += 1
            if not pending:
                return
            at, item, future = pending[0]
            outcome = await future
            pending.popleft()
            yield at, item, outcome
    finally:
        for _, _, future in pending:
            future.cancel()
        await asyncio.gather(*(f for _, _, f in pending), return_exceptions=True)


async def _assemble(
    run: ExportRun,
    outcomes: AsyncGenerator[tuple[int, Item, _Outcome], None],
    *,
    next_shard: int,
    start: int,
    ignore_opt_out: bool,
    stop_after: int,
    progress: Callable[[ExportProgress], None] | None,
) -> Tail | None:
    """Put each outcome in its shard, and hand each closed shard to the writer.

    Returns the repeats at the input's end that no shard holds, if any (see `Tail`).

    A closed shard is held while the inputs after it fail to reach the gallery or the media
    host: if that run reaches `stop_after`, the export stops, and the held shards are not
    written, so that a resume tries their inputs again.
    """
    assembler = ShardAssembler(size=run.shard_size, number=next_shard, start=start)
    held: list[Shard] = []
    streak = 0
    end = start
    seen_inputs = 0
    async with contextlib.aclosing(outcomes):
        async for position, item, outcome in outcomes:
            end = position + 1
            seen_inputs += 1
            if outcome is _DUPLICATE:
                closed = assembler.add(position, input_id(item), (), duplicate=True)
            else:
                samples = sample_rows(
                    item, outcome.image, outcome.files, outcome.error, ignore_opt_out=ignore_opt_out
                )
                closed = assembler.add(position, input_id(item), samples)
                # Written now, into the shard it went to (closed at once if it filled it).
                full = [shard for shard in closed if shard.input_end > position]
                number = full[0].number if full else assembler.number
                await run.hand_over((number, samples, outcome.held))
                run.tally(samples)
                reached = outcome.error if outcome.error is not None else outcome.image
                assert reached is not None  # a post, or why there is none
                streak = transport_streak(streak, reached)
            held.extend(closed)
            if streak == 0:
                for shard in held:
                    await run.hand_over(shard)
                held.clear()
            elif should_stop(streak, stop_after):
                raise UpstreamUnreachable(
                    f"stopped: {streak} posts in a row could not reach the gallery or their "
                    "pictures' host; the shards done are kept, and a resume goes on from them"
                ) from outcome.error
            if progress is not None:
                progress(run.progress(seen_inputs))
    last = assembler.finish(end)
    for shard in [*held, *([last] if isinstance(last, Shard) else [])]:
        await run.hand_over(shard)
    return last if isinstance(last, Tail) else None

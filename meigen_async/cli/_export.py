"""The `export` command: gallery pictures with their prompts as a dataset, resumable.

imagefolder, WebDataset or Parquet; the library's `GallerySession.export` does the work.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager

from ..errors import ExportError, MeigenError, UpstreamUnreachable
from ..export import ExportProgress, ExportSummary
from ..session import GallerySession
from ._bulk import _resume_command, _sigterm_as_interrupt
from ._input import count_ids, open_ids
from ._options import _session, cli_message
from ._output import (
    _EXIT_FAILED,
    _EXIT_OK,
    _PROG,
    CommandError,
    Interrupted,
    _print,
    counted,
    human_size,
)
from ._progress import _progress

__all__ = ["export_summary"]


async def _export(args: argparse.Namespace) -> int:
    sources = sum((args.file is not None, args.query is not None, args.all))
    if sources != 1:
        raise CommandError(
            "give the posts to export: an IDS_FILE ('-' for stdin), --query Q or --all"
            + (", only one of them" if sources else "")
        )
    _check_out(args.output)
    with _sigterm_as_interrupt(), _input(args) as (ids, total, source):
        try:
            summary = await _run(args, ids, total, source)
        except asyncio.CancelledError:
            # After the bar's last frame: the one message a Ctrl-C (or SIGTERM) gives.
            _print(f"{_PROG}: interrupted: resume with: {_resume_command(args)}", sys.stderr)
            raise Interrupted from None
    _print(export_summary(summary), sys.stderr)
    return _EXIT_FAILED if summary.failed else _EXIT_OK


def _check_out(out: str) -> None:
    """Refuse, as bad input, an OUT that is there and is no directory (a file, say)."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise CommandError(f"OUT {out!r} is not a directory: give a new or empty one")


async def _run(
    args: argparse.Namespace,
    ids: Callable[[GallerySession], AsyncIterator[str]],
    total: int | None,
    source: str,
) -> ExportSummary:
    with _progress(sys.stderr, total, doing="exporting", unit="posts") as tracker:
        last = ExportProgress(0, 0, 0, 0, 0, 0)

        def progress(now: ExportProgress) -> None:
            nonlocal last
            ok = now.failed == last.failed
            tracker.advance(ok, now.bytes - last.bytes, now.samples - last.samples)
            last = now

        try:
            async with _session(args) as session:
                return await session.export(
                    ids(session),
                    args.output,
                    format=args.format,
                    shard_size=args.shard_size,
                    resume=args.resume,
                    media=args.media,
                    ignore_opt_out=args.ignore_opt_out,
                    progress=progress,
                    command=shlex.join([_PROG, *args.argv]),
                    source=source,
                )
        except UpstreamUnreachable as error:
            raise CommandError(
                f"{error.message}; resume with: {_resume_command(args)}", _EXIT_FAILED
            ) from None
        except ExportError as error:
            raise CommandError(error.message, _EXIT_FAILED) from None
        except ValueError as exc:  # a bad query (InvalidQuery): before any request
            raise CommandError(str(exc)) from None
        except MeigenError as error:  # the search failed
            raise CommandError(
                f"{cli_message(error)}; resume with: {_resume_command(args)}", _EXIT_FAILED
            ) from None


@contextmanager
def _input(
    args: argparse.Namespace,
) -> Iterator[tuple[Callable[[GallerySession], AsyncIterator[str]], int | None, str]]:
    """What to export: the ids (given the session), how many when known, and in words."""
    if args.file is None:
        query = "" if args.all else args.query
        source = "every post of the gallery" if args.all else f"the hits of the search {query!r}"

        async def hits(session: GallerySession) -> AsyncIterator[str]:
            async for hit in session.iter_search(query, max_results=None):
                yield hit.id

        yield hits, None, source
        return
    with open_ids(args.file) as lines:

        async def listed(_: GallerySession) -> AsyncIterator[str]:
            for image_id in lines:
                yield image_id

        total = count_ids(args.file) if args.file != "-" and sys.stderr.isatty() else None
        name = "stdin" if args.file == "-" else repr(args.file)
        yield listed, total, f"the ids listed in {name}"


def export_summary(summary: ExportSummary) -> str:
    """The line `export` ends with: shards, samples by status, bytes, time."""
    counts = ", ".join(f"{count:,} {status}" for status, count in summary.counts.items() if count)
    resumed = summary.shards - summary.shards_written
    return (
        f"{_PROG}: {summary.format} in {summary.out}: "
        f"{counted(summary.shards_written, 'shard', 'shards')} written"
        + (f" ({resumed:,} done before)" if resumed else "")
        + f", {counted(summary.samples, 'sample', 'samples')} ({counts or 'none'}), "
        f"{human_size(summary.bytes)} in {summary.seconds:,.1f} s"
    )

"""The `bulk` command: ids in, JSON Lines out, with `--resume`, `--failed` and the failures."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import sys
from collections.abc import AsyncGenerator, Iterable, Iterator, Sequence
from contextlib import aclosing
from typing import Any, TextIO

from ..errors import MeigenError, UpstreamUnreachable
from ..media import MediaResult
from ..models import (
    GalleryImage,
    ImageResult,
    SessionStats,
    unstructure_image,
)
from ._options import (
    _session,
)
from ._output import (
    _EXIT_FAILED,
    _EXIT_OK,
    _PROG,
    CommandError,
    _cannot_write,
    _error,
    _flush,
    _open_input,
    _open_output,
    _print,
    _print_json,
)
from ._progress import _progress


def read_ids(lines: Iterable[str]) -> Iterator[str]:
    """Yield the ids of `lines`, one a line, whitespace stripped and blank lines skipped.

    A generator: it reads a line only when the next id is wanted.
    """
    for line in lines:
        image_id = line.strip()
        if image_id:
            yield image_id


def _count_ids(path: str) -> int | None:
    """The ids in a regular file, read once as a stream; None for a pipe or a device."""
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as lines:
            return sum(1 for _ in read_ids(lines))
    except (OSError, UnicodeDecodeError):
        return None  # reading it for real reports the problem


def read_done_ids(path: str) -> set[str]:
    """The ids of the images already in the JSON Lines file `path`, for `bulk --resume`.

    A trailing line without its newline (a run killed mid-write) is cut off the file, so that
    appending starts on a line of its own; a missing file is no ids.
    """
    done: set[str] = set()
    try:
        with open(path, "rb+") as stream:
            # Line by line: an output of millions of images is never held whole.
            complete = 0
            for line in stream:
                if not line.endswith(b"\n"):
                    stream.truncate(complete)
                    break
                complete += len(line)
                image_id = _record_id(line)
                if image_id is not None:
                    done.add(image_id)
    except FileNotFoundError:
        return done
    except OSError as exc:
        raise CommandError(f"cannot resume from {path!r}: {exc.strerror or exc}") from None
    return done


def _record_id(line: bytes) -> str | None:
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return None
    image_id = record.get("id") if isinstance(record, dict) else None
    return image_id if isinstance(image_id, str) else None


_LISTED_FAILURES = 10
"""Up to this many failures are listed one a line; more are grouped by kind."""


def failure_summary(failures: Sequence[tuple[str, str, str]], done: int) -> list[str]:
    """The lines reporting `failures` (id, kind, message) out of `done` ids, for stderr.

    A few failures are listed one a line; more are grouped by kind, with a count, a few
    example ids and one message each.
    """
    lines = [f"{_PROG}: {len(failures):,} of {done:,} ids failed:"]
    if len(failures) <= _LISTED_FAILURES:
        lines.extend(f"  {image_id}: {message}" for image_id, _, message in failures)
        return lines
    groups: dict[str, list[tuple[str, str]]] = {}
    for image_id, kind, message in failures:
        groups.setdefault(kind, []).append((image_id, message))
    for kind, members in sorted(groups.items(), key=lambda item: -len(item[1])):
        examples = ", ".join(image_id for image_id, _ in members[:3])
        more = ", ..." if len(members) > 3 else ""
        lines.append(f"  {kind}: {len(members):,} ids ({examples}{more})")
        lines.append(f"    e.g. {members[0][1]}")
    return lines


def _stop_after(concurrency: int) -> int:
    # More than two full waves of requests: one network blip fails every request in flight
    # at once, and should not end a long job; the ids started after it failing too should.
    return max(20, 2 * concurrency)


def _resume_command(args: argparse.Namespace) -> str:
    argv = list(getattr(args, "argv", None) or [])
    if "--resume" not in argv:
        argv.append("--resume")
    return shlex.join([_PROG, *argv])


async def _bulk(args: argparse.Namespace) -> int:
    failures: list[tuple[str, str, str]] = []
    done = written = read = skipped = 0
    stats: SessionStats | None = None
    to_stdout = args.output is None or args.output == "-"
    if args.resume and to_stdout:
        raise CommandError("--resume needs -o OUT: the file to read the done ids from")
    finished = read_done_ids(args.output) if args.resume else set()
    failed_out = _open_failed(args.failed)
    unreachable: UpstreamUnreachable | None = None
    not_attempted: list[str] = []
    with _open_input(args.file) as source, _open_output(args.output, append=args.resume) as out:

        def wanted() -> Iterator[str]:
            nonlocal read, skipped
            for image_id in read_ids(source):
                if image_id in finished:
                    skipped += 1
                    continue
                read += 1
                yield image_id

        ids = wanted()
        total = _count_ids(args.file) if args.file != "-" and sys.stderr.isatty() else None
        with _progress(sys.stderr, total) as advance:
            try:
                async with _session(args) as session:
                    # Closed on the way out, so that an error here cancels its fetches at once.
                    results: AsyncGenerator[ImageResult | MediaResult, None] = (
                        session.iter_images(
                            ids, stop_after_transport_failures=_stop_after(args.concurrency)
                        )
                        if args.media is None
                        else session.iter_media(ids, args.media)
                    )
                    async with aclosing(results):
                        async for result in results:
                            ok = result.ok
                            if isinstance(result.error, UpstreamUnreachable):
                                unreachable = result.error
                                not_attempted.append(result.id)
                                continue
                            done += 1
                            if result.image is not None:
                                problem = _write_image(
                                    out, args.output, result.image, _media_fields(result)
                                )
                                if problem is not None:
                                    failures.append((result.id, "WriteError", problem))
                                    ok = False
                                else:
                                    written += 1
                            elif result.error is not None:
                                kind = type(result.error).__name__
                                failures.append((result.id, kind, str(result.error)))
                            advance(ok, _media_bytes(result))
                    stats = session.stats
                if unreachable is not None:
                    not_attempted.extend(ids)
            except UnicodeDecodeError as exc:
                name = "stdin" if args.file == "-" else repr(args.file)
                raise CommandError(f"cannot read {name}: not UTF-8 text: {exc}") from None
            except asyncio.CancelledError:
                _flush(out, args.output)
                _write_failed(failed_out, failures, not_attempted)
                where = "stdout" if to_stdout else args.output
                _print(
                    f"{_PROG}: interrupted: {written:,} of {read:,} ids read were written to "
                    f"{where}" + (f" ({skipped:,} already there)" if skipped else ""),
                    sys.stderr,
                )
                if not to_stdout:
                    _print(f"{_PROG}: resume with: {_resume_command(args)}", sys.stderr)
                raise
        _flush(out, args.output)
    _write_failed(failed_out, failures, not_attempted)
    if unreachable is not None:
        cause = unreachable.__cause__
        reason = cause.message if isinstance(cause, MeigenError) else str(unreachable)
        _error(
            f"the gallery at {args.base_url} is unreachable ({reason}): stopped after "
            f"{_stop_after(args.concurrency)} ids in a row failed to reach it; "
            f"{len(not_attempted):,} ids were not attempted"
            + (f" (listed in {args.failed})" if args.failed else "")
        )
    if stats is not None and sys.stderr.isatty():
        # Beside the progress bar: a pipe's reader gets only the failures on stderr.
        _print(bulk_summary(done, stats), sys.stderr)
    if failures:
        for line in failure_summary(failures, done):
            _print(line, sys.stderr)
    if failures or unreachable is not None:
        return _EXIT_FAILED
    return _EXIT_OK


def bulk_summary(done: int, stats: SessionStats) -> str:
    """The line `bulk` ends with on a terminal: ids done, and what the session's counters say."""
    return (
        f"{_PROG}: {done:,} ids, {stats.requests:,} upstream requests, "
        f"{stats.cache_hits:,} cache hits, {stats.coalesced:,} coalesced, "
        f"{stats.revalidated:,} revalidated (304), {stats.refreshed:,} refreshed in the background"
    )


def _open_failed(path: str | None) -> TextIO | None:
    if path is None:
        return None
    try:
        return open(path, "w", encoding="utf-8")
    except OSError as exc:
        raise CommandError(f"cannot write {path!r}: {exc.strerror or exc}") from None


def _write_failed(
    stream: TextIO | None, failures: Sequence[tuple[str, str, str]], not_attempted: list[str]
) -> None:
    """Write the failed and not attempted ids, one a line, to `--failed`."""
    if stream is None or stream.closed:
        return
    try:
        with stream:
            for image_id, _, _ in failures:
                _print(image_id, stream)
            for image_id in not_attempted:
                _print(image_id, stream)
    except OSError as exc:
        raise CommandError(_cannot_write(stream.name, exc), _EXIT_FAILED) from None


def _media_fields(result: ImageResult | MediaResult) -> dict[str, Any] | None:
    """What bulk --media adds to an image's line: its `media` list."""
    if not isinstance(result, MediaResult):
        return None
    return {
        "media": [
            {
                "path": str(media.path),
                "bytes": media.bytes,
                "sha256": media.sha256,
                "content_type": media.content_type,
            }
            for media in result.files
        ]
    }


def _media_bytes(result: ImageResult | MediaResult) -> int:
    return sum(m.bytes for m in result.files) if isinstance(result, MediaResult) else 0


def _write_image(
    out: TextIO, path: str | None, image: GalleryImage, extra: dict[str, Any] | None = None
) -> str | None:
    """Write one JSON line; what went wrong with this image, or None.

    A record that cannot be written is reported and the run goes on. A stream that cannot be
    written to (a full disk) stops the run: every record after it would fail the same way.
    """
    try:
        _print_json({**unstructure_image(image), **(extra or {})}, out)
    except BrokenPipeError:
        raise  # the reader has gone: main() exits quietly
    except OSError as exc:
        raise CommandError(_cannot_write(path, exc), _EXIT_FAILED) from None
    except (UnicodeError, ValueError, TypeError) as exc:
        return f"cannot write the image: {exc}"
    return None
